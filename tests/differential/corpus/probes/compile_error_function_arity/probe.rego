package probes.compile_error_function_arity

import rego.v1

f(x) := x

f(x, y) := y

call := f(1)
