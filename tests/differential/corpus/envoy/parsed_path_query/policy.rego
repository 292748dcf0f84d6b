# Source pattern: OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer
# ("allow if input.parsed_path == [\"people\"]", parsed_query.lang == ["en"]) and
# open-policy-agent/opa-envoy-plugin:examples/istio/README.md.
# Shape: array equality on input.parsed_path, indexing into it, object-of-arrays
# input.parsed_query, and a numeric query parameter converted with to_number.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.attributes.request.http.method == "GET"
	input.parsed_path == ["people"]
}

allow if {
	input.parsed_path == ["people"]
	input.parsed_query.lang == ["en"]
	input.parsed_query.id == ["1", "2"]
}

allow if {
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "models"
	count(input.parsed_path) == 3
	input.parsed_query.stream == ["true"]
}

# Paged documentation: page must be a number in [1, 100].
allow if {
	input.parsed_path[0] == "docs"
	page := to_number(input.parsed_query.page[0])
	page >= 1
	page <= 100
}
