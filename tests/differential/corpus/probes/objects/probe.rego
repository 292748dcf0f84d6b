package probes.objects

import rego.v1

get_path := object.get({"a": {"b": [10, 20]}}, ["a", "b", 1], "x")

get_empty_path := object.get({"a": 1}, [], "x")

get_null_value := object.get({"a": null}, "a", "dflt")

union_deep := object.union({"a": {"b": 1, "c": 2}, "x": 1}, {"a": {"b": 9}, "y": 2})

union_replace_non_object := object.union({"a": {"b": 1}}, {"a": 5})

union_n := object.union_n([{"a": 1}, {"a": 2, "b": 1}, {"c": 3}])

remove_array_keys := object.remove({"a": 1, "b": 2, "c": 3}, ["a", "zz"])

filter_set_keys := object.filter({"a": 1, "b": 2}, {"a", "q"})

subset_nested := object.subset({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1}})

json_filter_paths := json.filter({"a": {"b": 1, "c": 2}, "d": [1, 2, 3]}, ["a/b", "d/1"])

json_filter_escaped := json.filter({"a/b": 1, "c~d": 2, "e": 3}, ["a~1b", "c~0d"])

json_remove_paths := json.remove({"a": {"b": 1, "c": 2}, "d": 3}, ["a/b", "d"])

json_filter_leading_slash := json.filter({"a": {"b": 1, "c": 2}}, ["/a/b"])
