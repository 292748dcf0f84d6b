package probes.types

import rego.v1

type_names := [type_name(null), type_name(true), type_name(1), type_name(1.5), type_name("s"), type_name([]), type_name({}), type_name(set())]

is_number_of_numeric_string := is_number("1")

null_less_than_false := null < false

true_less_than_zero := true < 0

number_less_than_string := 999 < "0"

object_less_than_set := {"a": 1} < {1}

array_lexicographic := [1, 2] < [1, 3]

object_compare := {"a": 1} < {"a": 2}

string_equals_number := "1" == 1

array_equals_set := [1] == {1}
