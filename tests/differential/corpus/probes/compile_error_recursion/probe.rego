package probes.compile_error_recursion

import rego.v1

loop contains x if {
	some x in loop
}
