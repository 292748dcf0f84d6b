package probes.objects_jsonpatch

import rego.v1

patch_ops := json.patch({"a": {"b": 1}, "l": [1, 2]}, [
	{"op": "add", "path": "/a/c", "value": 2},
	{"op": "replace", "path": "/a/b", "value": "x"},
	{"op": "add", "path": "/l/-", "value": 3},
	{"op": "move", "from": "/a/c", "path": "/m"},
	{"op": "copy", "from": "/l", "path": "/k"},
	{"op": "remove", "path": "/l/0"},
])

patch_failed_test := json.patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])

patch_missing_parent := json.patch({"a": 1}, [{"op": "add", "path": "/x/y", "value": 2}])
