# Arithmetic on decimals as OPA computes it (Go big.Float, 64-bit mantissa, shortest text back),
# in the shape AI-traffic policies use it: a request's cost, tokens or temperature added to or
# scaled by a budget from data and compared with a limit. Inputs in cases.yaml.
package probes.arithmetic

import rego.v1

values := [input.a + input.b, input.a - input.b, input.a * input.b, input.a / input.b, sum([input.a, input.b])]

texts := json.marshal(values)

decisions := {
	"sum_le_c": input.a + input.b <= input.c,
	"sum_eq_c": input.a + input.b == input.c,
	"sum_gt_c": input.a + input.b > input.c,
	"diff_lt_neg_c": input.a - input.b < 0 - input.c,
	"prod_gt_c": input.a * input.b > input.c,
	"prod_eq_c": input.a * input.b == input.c,
	"quo_ge_c": input.a / input.b >= input.c,
	"aggregate_sum_eq_c": sum([input.a, input.b]) == input.c,
	"aggregate_sum_le_c": sum([input.a, input.b]) <= input.c,
}
