package probes.lang_defaults_else

import rego.v1

default default_only := "d"

default overridden := false

overridden if input.n > 0

grade := "a" if {
	input.n > 90
} else := "b" if {
	input.n > 50
} else := "c"

else_after_undefined := 1 if {
	input.missing == 1
} else := 2

else_after_error := 1 if {
	to_number(input.s) > 0
} else := 2

false_valued := false

false_used_in_body if false_valued

not_false_valued if not false_valued

default fdefault(_) := "fallback"

fdefault(x) := "pos" if x > 0

fdefault_pos := fdefault(5)

fdefault_neg := fdefault(-5)
