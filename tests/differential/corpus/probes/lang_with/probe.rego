package probes.lang_with

import rego.v1

reads_input := input.x

reads_data := data.probes_cfg.v

uses_rule := reads_input + 1

with_input_whole := v if {
	v := reads_input with input as {"x": 42}
}

with_input_path_then_whole := v if {
	v := reads_input with input.x as 7 with input as 5
}

with_data_base := v if {
	v := reads_data with data.probes_cfg.v as "over"
}

with_data_virtual := v if {
	v := uses_rule with data.probes.lang_with.reads_input as 100
}

with_in_comprehension := [v | some i in [1, 2, 3]; v := reads_input with input.x as i]

with_does_not_leak := [a, b] if {
	a := reads_input with input.x as 9
	b := reads_input
}

with_input_deep_new_path := v if {
	v := input.a.b.c with input.a.b.c as "deep"
}
