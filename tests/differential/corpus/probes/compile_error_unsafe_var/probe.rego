package probes.compile_error_unsafe_var

import rego.v1

unsafe if {
	not x == 1
	x > 0
}
