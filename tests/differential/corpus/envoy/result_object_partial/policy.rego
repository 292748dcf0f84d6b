# Source pattern: OPA Envoy primer, "Output Document"
# https://www.openpolicyagent.org/docs/envoy/primer
# Shape: the decision object assembled with partial object rules with constant keys,
# result["allowed"] := allow, result["headers"] := headers, ...; keys whose value rule is
# undefined are simply absent from the object.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allow if {
	http_request.method == "GET"
	input.parsed_path[0] == "api"
}

allow if {
	http_request.method == "POST"
	input.parsed_path == ["api", "orders"]
	http_request.headers["x-user"] != ""
}

headers["x-ext-auth-allow"] := "yes" if allow

headers["x-validated-by"] := "security-checkpoint"

headers["x-user"] := user if {
	user := http_request.headers["x-user"]
	allow
}

request_headers_to_remove := ["x-internal-token", "cookie"]

status_code := 403 if not allow

body := sprintf("%s %s is not allowed", [http_request.method, http_request.path]) if not allow

result["allowed"] := allow

result["headers"] := headers

result["request_headers_to_remove"] := request_headers_to_remove

result["http_status"] := status_code

result["body"] := body
