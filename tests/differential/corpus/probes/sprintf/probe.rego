# sprintf as OPA runs it: Go's fmt.Sprintf over the arguments OPA converts (integers to int64 or
# *big.Int, numbers with a fraction or exponent to float64, strings, anything else to its Rego
# text). The pattern of public policies is sprintf for deny messages and for lookup keys
# (`sprintf("%s:%s", [method, path])` in data); the inputs (cases.yaml) cross verbs, flags,
# widths and precisions with every argument kind.
package probes.sprintf

import rego.v1

formatted := sprintf(input.f, input.args)
