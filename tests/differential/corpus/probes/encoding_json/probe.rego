package probes.encoding_json

import rego.v1

marshal_big_int := json.marshal(12345678901234567890123)

marshal_html_chars := json.marshal("<a href='x'>&</a>")

marshal_unicode := json.marshal("ß😀\u2028\u0007")

marshal_set := json.marshal({3, "a", 1})

unmarshal_numbers := json.unmarshal(`[1, 1.0, 1e2, -0, 12345678901234567890123, 0.1]`)

unmarshal_duplicate_keys := json.unmarshal(`{"a": 1, "a": 2}`)

unmarshal_invalid := json.unmarshal(`{"a": }`)

is_valid_single_quotes := json.is_valid(`{'a': 1}`)

marshal_with_indent := json.marshal_with_options({"b": [1, 2], "a": {"c": true}}, {"pretty": true, "indent": "  ", "prefix": ""})

marshal_controls := json.marshal("a\bb\fc\u0001d\u007fe\"\\")

marshal_nested_sorted := json.marshal({"b": {"z": [], "a": {}}, "a": [{"y": 1, "x": null}], "é": true})

marshal_with_prefix := json.marshal_with_options({"a": [1, {}], "b": []}, {"pretty": true, "indent": "  ", "prefix": ">"})

marshal_pretty_default_indent := json.marshal_with_options({"k": ["v<"]}, {"pretty": true})

marshal_body := json.marshal({"model": "gpt-4o", "temperature": 0.7, "max_tokens": 256, "messages": [{"role": "user", "content": "<b>hi</b> & bye"}]})

