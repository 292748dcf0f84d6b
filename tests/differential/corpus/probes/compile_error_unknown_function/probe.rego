package probes.compile_error_unknown_function

import rego.v1

calls_nothing := no_such.function(1)
