# Source pattern: public OPA Envoy policy unit tests (package envoy.authz_test,
# `authz.allow with input as {...}`; https://www.openpolicyagent.org/docs/policy-testing)
# and policies that scan request bodies with walk and debug with print.
# Shape: `with` replacing parts of input and data inside the policy itself, functions
# evaluated under `with`, walk over parsed_body, print calls in rule bodies.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

# A request body must not carry a secret-looking key anywhere.
secret_keys := {"password", "secret", "api_key", "token"}

body_has_secret if {
	walk(input.parsed_body, [path, _])
	count(path) > 0
	key := path[count(path) - 1]
	is_string(key)
	lower(key) in secret_keys
}

# All paths in the body that reach a string value, as dotted strings.
string_paths contains concat(".", [sprintf("%v", [p]) | some p in path]) if {
	walk(input.parsed_body, [path, value])
	is_string(value)
}

public_path if {
	print("checking path", http_request.path)
	http_request.method == "GET"
	startswith(http_request.path, "/public/")
}

# Reuse public_path for an arbitrary path by rebinding input under `with`.
path_is_public(p) if public_path with input.attributes.request.http.path as p with input.attributes.request.http.method as "GET"

trusted_caller if input.attributes.source.principal in data.config.trusted

# Canary traffic is trusted as if the canary identity were on the list.
trusted_with_canary if trusted_caller with data.config.trusted as array.concat(data.config.trusted, [data.config.canary])

allow if {
	public_path
}

allow if {
	http_request.method == "POST"
	trusted_with_canary
	not body_has_secret
	print("string paths:", count(string_paths))
	count(string_paths) <= 10
}

# A redirect helper: allowed when the target would itself be public.
allow if {
	http_request.method == "GET"
	input.parsed_path == ["go"]
	target := input.parsed_query.to[0]
	path_is_public(target)
}
