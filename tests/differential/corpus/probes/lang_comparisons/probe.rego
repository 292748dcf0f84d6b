package probes.lang_comparisons

import rego.v1

string_vs_number_equal := "1" == 1

string_vs_number_less := "10" < 9

int_vs_float_in_array := [1] == [1.0]

int_vs_float_object_key := {1: "a"}[1.0]

float_vs_int_set_member := 1.0 in {1}

big_equal_float := 100000000000000000000 == 1e20

nested_less := {"a": [1, 2]} < {"a": [1, 3]}

unify_object := v if {"k": v} = {"k": [true]}

negative_zero_key := {0: "zero"}[-0]

string_compare_unicode := "ä" > "z"
