# Source pattern: public package envoy.authz policies for Keycloak-fronted Envoy:
# jwks = json.marshal(data.jwks), io.jwt.verify_rs256(encoded, jwks), io.jwt.decode,
# object.get(token.payload, "name", ...), `allow = response` with an x-current-user header.
# Shape: JWKS in data.json, object-valued entrypoint, default object deny, object.get
# fallbacks, nbf defaulted to 0, exp checked against time.now_ns (2100 / 2020 bounds).
# Uses io.jwt.*: svidgate refuses it at load.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

jwks := json.marshal(data.jwks)

token := {"valid": valid, "header": header, "payload": payload} if {
	[_, encoded] := split(http_request.headers.authorization, " ")
	valid := io.jwt.verify_rs256(encoded, jwks)
	[header, payload, _] := io.jwt.decode(encoded)
}

default allow := {"allowed": false, "http_status": 401, "body": "invalid or missing token"}

allow := response if {
	valid_token
	action_allowed
	username := object.get(token.payload, "name", token.payload.preferred_username)
	response := {
		"allowed": true,
		"headers": {"x-current-user": username},
	}
}

valid_token if {
	token.valid
	now := time.now_ns() / 1000000000
	nbf := object.get(token.payload, "nbf", 0)
	nbf <= now
	now < token.payload.exp
}

action_allowed if {
	http_request.method == "GET"
	"reader" in object.get(token.payload, ["realm_access", "roles"], [])
}

action_allowed if {
	http_request.method in {"POST", "PUT"}
	"writer" in object.get(token.payload, ["realm_access", "roles"], [])
}
