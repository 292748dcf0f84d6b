package probes.encoding_yaml

import rego.v1

marshal_object := yaml.marshal({"b": [1, "two"], "a": {"yes": true, "n": null}})

unmarshal_scalars := yaml.unmarshal("a: yes\nb: 0x10\nc: 1e3\nd: ~\ne: '1'\nf: 010\n")

unmarshal_invalid := yaml.unmarshal("a: [1, 2")

is_valid_json_text := yaml.is_valid(`{"a": 1}`)
