# Source pattern: OPA Envoy primer, "Example Policy with Additional Controls" and
# "Output Document" https://www.openpolicyagent.org/docs/envoy/primer (the JWT there is
# replaced by an API-key table so the policy needs no io.jwt builtin).
# Shape: headers/response_headers_to_add partial objects, request_headers_to_remove array,
# status_code via `else` chain, body per status, dynamic_metadata, query_parameters_to_set;
# the result object is built in a wrapper package (result.rego) as the primer suggests.
package envoy.policy

import rego.v1

import input.attributes.request.http

api_keys := {
	"k-guest-1": {"role": "guest", "owner": "alice"},
	"k-admin-1": {"role": "admin", "owner": "bob"},
}

key_info := api_keys[http.headers["x-api-key"]]

default allow := false

allow if {
	key_valid
	action_allowed
}

key_valid if key_info.role

action_allowed if {
	http.method == "GET"
	key_info.role in {"guest", "admin"}
	startswith(http.path, "/people")
}

action_allowed if {
	http.method == "POST"
	key_info.role == "admin"
	http.path == "/people"
}

headers["x-ext-auth-allow"] := "yes"

headers["x-validated-by"] := "security-checkpoint"

request_headers_to_remove := ["one-auth-header", "another-auth-header"]

response_headers_to_add["x-foo"] := "bar"

response_headers_to_add["x-owner"] := key_info.owner

query_parameters_to_set := {
	"user-role": key_info.role,
	"tags": ["main-flow", "auth-enabled"],
}

status_code := 200 if {
	allow
} else := 401 if {
	not key_valid
} else := 403

body := "Authentication Failed" if status_code == 401

body := "Unauthorized Request" if status_code == 403

dynamic_metadata := {"foo": "bar", "status": status_code}
