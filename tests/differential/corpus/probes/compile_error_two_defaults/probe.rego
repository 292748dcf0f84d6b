package probes.compile_error_two_defaults

import rego.v1

default twice := 1

default twice := 2
