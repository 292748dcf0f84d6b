# Source pattern: OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer and
# open-policy-agent/opa:docs/docs/envoy/tutorial-standalone-envoy.md (also
# opa-envoy-plugin examples/envoy-uds/quick_start.yaml).
# Shape: token := {"valid": valid, "payload": payload} from io.jwt.decode_verify(encoded,
# {"secret": ...}); nbf/exp compared with time.now_ns (tokens use 2018 / 2100 bounds, or a
# 2020 expiry, so results do not depend on the run date); role + glob path rules;
# parsed_body compared with base64url.decode(sub). Uses io.jwt.*: svidgate refuses it at load.
package envoy.authz

import rego.v1

import input.attributes.request.http

default allow := false

allow if {
	is_token_valid
	action_allowed
}

is_token_valid if {
	token.valid
	now := time.now_ns() / 1000000000
	token.payload.nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "guest"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "GET"
	token.payload.role == "admin"
	glob.match("/people/*", ["/"], http.path)
}

action_allowed if {
	http.method == "POST"
	token.payload.role == "admin"
	glob.match("/people", ["/"], http.path)
	lower(input.parsed_body.firstname) != base64url.decode(token.payload.sub)
}

token := {"valid": valid, "payload": payload} if {
	[_, encoded] := split(http.headers.authorization, " ")
	[valid, _, payload] := io.jwt.decode_verify(encoded, {"secret": "secret"})
}
