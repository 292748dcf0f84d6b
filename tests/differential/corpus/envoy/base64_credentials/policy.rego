# Source pattern: open-policy-agent/opa-envoy-plugin:examples/istio/quick_start.yaml
# (user_name: split(authorization, " ") then split(base64url.decode(encoded), ":"), with
# user_roles / role_perms objects) and makocchan0509/opa-envoy:opa/policy.rego
# (claims := json.unmarshal(base64url.decode(...))).
# Shape: Basic credentials decoded with base64url.decode (as the Istio example does) and
# with base64.decode; a Bearer JWT whose payload is decoded by hand: split(token, "."),
# base64url.decode, json.unmarshal (no signature check).
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

auth_header := http_request.headers.authorization

# Istio example shape (base64url.decode of a standard-base64 credential), limited to the
# Basic scheme so Bearer tokens reach the hand-decoded JWT rule below.
user_name := parsed if {
	[scheme, encoded] := split(auth_header, " ")
	scheme == "Basic"
	[parsed, _] := split(base64url.decode(encoded), ":")
}

# The same with the standard alphabet, used by the admin rule.
std_user := parsed if {
	[scheme, encoded] := split(auth_header, " ")
	lower(scheme) == "basic"
	[parsed, _] := split(base64.decode(encoded), ":")
}

# A JWT payload decoded by hand.
claims := payload if {
	[scheme, token] := split(auth_header, " ")
	scheme == "Bearer"
	[_, encoded_payload, _] := split(token, ".")
	payload := json.unmarshal(base64url.decode(encoded_payload))
}

user_roles := {
	"alice": ["guest"],
	"bob": ["admin"],
	"josé": ["guest"],
}

role_perms := {
	"guest": [{"method": "GET", "path": "/productpage"}],
	"admin": [
		{"method": "GET", "path": "/productpage"},
		{"method": "GET", "path": "/api/v1/products"},
	],
}

roles_for_user contains r if {
	some r in user_roles[user_name]
}

required_roles contains r if {
	some r, perms in role_perms
	some perm in perms
	perm.method == http_request.method
	perm.path == http_request.path
}

allow if {
	some r in roles_for_user
	required_roles[r]
}

allow if {
	std_user == "root"
	http_request.method == "DELETE"
}

allow if {
	http_request.method == "GET"
	claims.resource_access.web.roles[_] == "extended"
	http_request.path == "/backend"
}
