# OPA keeps a number's text from the policy (a json.Number) and writes that text when a builtin
# turns the number into a string; regorus keeps the value. svidgate refuses at load a policy that
# writes numbers into strings and holds a literal regorus would write otherwise (filters/core/src/authz/numbers.rs).
package probes.number_text

marshal_floats := json.marshal([1.0, 1.5, 100, 1e2, 0.1, -0.0, 1e21, 1e-7])

marshal_int_exponent_literal := json.marshal([1e2, 100])

marshal_trailing_zero := json.marshal([1.50, 0.5])

marshal_negative_zero := json.marshal([-0, 0])

marshal_exponent_fraction := json.marshal([2.5e-1])

sprintf_exponent := sprintf("%v", [15e-1])

sprintf_exponent_int := sprintf("%d", [1e2])
