# Source pattern: goauthlink/authlink:test/bench/opa/bundle/policy.rego
# Shape: io.jwt.verify_hs256 then io.jwt.decode of a token carried in its own header,
# concat of a claim into a source name, membership in literal arrays (`x in [...]`).
# Uses io.jwt.*: svidgate refuses it at load.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

jwt_token := http_request.headers["jwt_token"]

claims := payload if {
	io.jwt.verify_hs256(jwt_token, "secret")
	[_, payload, _] := io.jwt.decode(jwt_token)
}

jwt_x_source := concat(":", ["jwt", claims.name])

allow if {
	jwt_x_source in ["jwt:client1", "jwt:client2"]
	http_request.path in ["/jwt_1/1", "/jwt_1/2", "/jwt_1/3"]
	lower(http_request.method) in ["get"]
}

allow if {
	jwt_x_source == "jwt:client2"
	startswith(http_request.path, "/jwt_2/")
}
