package probes.compile_error_type

import rego.v1

upper_of_number := upper(1)

number_plus_string := 1 + "a"
