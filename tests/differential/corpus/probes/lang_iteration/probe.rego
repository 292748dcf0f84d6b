package probes.lang_iteration

import rego.v1

every_empty_collection if every x in [] { x > 0 }

every_false if every x in [1, -2, 3] { x > 0 }

every_object_kv if every k, v in {"a": 1, "b": 2} { is_string(k); v > 0 }

every_with_error if every s in ["1", "x"] { to_number(s) > 0 }

some_kv_object := {k | some k, v in {"a": 1, "b": 2}; v > 1}

some_index_array := [i | some i, x in ["a", "b"]; x == "b"]

some_in_set := {y | some x in {1, 2}; y := x * 2}

in_object_checks_values := [1 in {"a": 1}, "a" in {"a": 1}]

in_key_value_form := ["a", 1 in {"a": 1}, 0, "x" in ["x"]]

in_string_collection := "b" in "abc"

comprehension_builtin_error := [x | some s in ["1", "a"]; x := to_number(s)]

set_comprehension_dedup := {x | some x in [1, 1, 2, 1.0]}

wildcard_iteration := count([1 | [1, 2, 3][_]])
