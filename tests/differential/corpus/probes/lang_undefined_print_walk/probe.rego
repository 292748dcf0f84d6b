package probes.lang_undefined_print_walk

import rego.v1

deep_missing_ref := input.missing.deep

array_with_undefined := [1, input.missing]

comprehension_of_undefined := [x | x := input.missing]

negated_undefined if not input.missing

count_of_undefined := count(input.missing)

index_out_of_range := v if {
	arr := [1, 2]
	v := arr[count(arr) + 3]
}

print_with_undefined if {
	print("value:", input.missing, 1, "ß")
	true
}

print_result := x if {
	print("computing", {"b": 1, "a": [1, 2]}, {1, 2})
	x := 3
}

walk_paths := [p | walk({"a": [1, {"b": 2}]}, [p, _])]

walk_set := [p | walk({"s": {1, 2}}, [p, _])]
