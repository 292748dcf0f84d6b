package probes.strings

import rego.v1

upper_sharp_s := upper("ß")

lower_dotted_capital_i := lower("İ")

lower_final_sigma := lower("ΟΔΟΣ")

upper_ligature_fi := upper("ﬁ")

lower_kelvin_sign := lower("K")

count_astral := count("😀")

count_combining := count("e\u0301")

count_zwj_family := count("👨‍👩‍👧")

sprintf_hex_string := sprintf("%x", ["hi"])

sprintf_hex_float := sprintf("%x", [1.5])

sprintf_v_object := sprintf("%v", [{"b": 1, "a": [1, "x"]}])

sprintf_v_set := sprintf("%v", [{3, 1, 2}])

sprintf_v_big_int := sprintf("%v", [12345678901234567890])

sprintf_v_small_float := sprintf("%v", [0.000001])

sprintf_d_float := sprintf("%d", [42.5])

sprintf_d_padded_negative := sprintf("%05d", [-42])

sprintf_s_number := sprintf("%s", [42])

sprintf_f2 := sprintf("%.2f", [3.14159])

sprintf_f2_half_even := sprintf("%.2f", [2.675])

sprintf_f1_int := sprintf("%.1f", [2])

trim_space_unicode := trim_space("\u00a0\t hi \u2003\n")

trim_space_zero_width := count(trim_space("\u200bhi\u200b"))

indexof_after_accent := indexof("héllo", "l")

indexof_empty_needle := indexof("abc", "")

indexof_n_overlapping := indexof_n("aaaa", "aa")

substring_unicode := substring("héllo wörld", 1, 4)

substring_astral := substring("a😀b", 1, 1)

substring_negative_start := substring("hello", -1, 2)

replace_empty_old := replace("abc", "", "-")

format_int_float := format_int(15.9, 10)

format_int_base_36 := format_int(35, 36)

reverse_astral := strings.reverse("a😀b")

string_order_accent := "é" < "z"

string_order_astral := "\uffff" < "😀"
