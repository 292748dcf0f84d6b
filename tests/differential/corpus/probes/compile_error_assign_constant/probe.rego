# `:=` with a constant in its pattern: OPA's compiler refuses it ("cannot assign to string"); the
# shape policies/tool-runtime first had (`["v1", "tools", tool] := input.parsed_path`).
package probes.compile_error_assign_constant

import rego.v1

tool := t if {
	["v1", "tools", t] := input.parsed_path
}
