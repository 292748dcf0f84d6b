package probes.compile_error_rule_kinds

import rego.v1

mixed := 1

mixed contains 2
