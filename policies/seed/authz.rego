# The policy of the seed article ("Zero Trust Architectures for AI Services", §4), unchanged:
# who may call the model server's /v1/generate is data (data.allowed_callers.generate).
package envoy.authz

import rego.v1

default allow := {"allowed": false}

allow := {"allowed": true} if {
	input.attributes.source.principal == valid_caller
	request_allowed
}

# extract SPIFFE ID from peer certificate
valid_caller := principal if {
	principal := input.attributes.source.principal
	startswith(principal, "spiffe://ai.internal/")
}

request_allowed if {
	input.attributes.request.http.method == "POST"
	input.attributes.request.http.path == "/v1/generate"
	input.attributes.source.principal in data.allowed_callers.generate
}
