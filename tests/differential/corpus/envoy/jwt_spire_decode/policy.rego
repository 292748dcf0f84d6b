# Source pattern: spiffe/spire-tutorials:k8s/envoy-jwt-opa/k8s/backend/config/opa-policy.rego
# Shape: svc_spiffe_id := payload.sub from io.jwt.decode of the Bearer JWT-SVID (validated
# upstream by Envoy's JWT filter, so no signature check here), exact SPIFFE ID compare,
# audience membership, glob.match("/balances/*", [], path) path rules.
# Uses io.jwt.*: svidgate refuses it at load.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	valid_path
	http_request.method == "GET"
	svc_spiffe_id == "spiffe://example.org/ns/default/sa/default/frontend"
	"spiffe://example.org/ns/default/sa/default/backend" in svid_claims.aud
}

svid_claims := payload if {
	[_, encoded_token] := split(http_request.headers.authorization, " ")
	[_, payload, _] := io.jwt.decode(encoded_token)
}

svc_spiffe_id := svid_claims.sub

valid_path if glob.match("/balances/*", [], http_request.path)

valid_path if glob.match("/profiles/*", [], http_request.path)

valid_path if glob.match("/transactions/*", [], http_request.path)
