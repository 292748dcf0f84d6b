package probes.lang_functions

import rego.v1

sign(x) := "neg" if x < 0

sign(x) := "pos" if x > 0

sign(0) := "zero"

signs := [sign(-3), sign(0), sign(2.5)]

sign_of_string := sign("a")

sign_of_null := sign(null)

classify(x) := "string" if is_string(x)

classify(x) := "number" if is_number(x)

classify(x) := "scalar" if not is_array(x)

classify_number_overlap := classify(1)

classify_array := classify([])

nested.path.value := 3

nested.path.other := "o"

nested_read := nested

partial_set contains x if some x in [3, 1, 2, 1]

partial_object_multi[k] := v if some k, v in {"b": 2, "a": 1}
