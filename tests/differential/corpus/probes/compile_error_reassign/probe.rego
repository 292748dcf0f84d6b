package probes.compile_error_reassign

import rego.v1

reassigned := y if {
	y := 1
	y := 2
}
