# Source pattern: opa-envoy-plugin internal/internal_test.go (TestCheckAllowObjectDecision*:
# query_parameters_to_remove, query_parameters_to_set with string and array values,
# dynamic_metadata, headers as an array of objects, request_headers_to_remove,
# response_headers_to_add) and envoyauth/response_test.go (TestGetResponseHttpStatus: which
# http_status values the plugin accepts). Written as one complete rule per outcome, the shape
# our own policies use.
# Shape: every result key of the OPA Envoy plugin, on allow and on deny, chosen by the request.
package envoy.authz

import rego.v1

default allow := {"allowed": false}

mode := input.attributes.request.http.headers["x-mode"]

allow := {
	"allowed": true,
	"query_parameters_to_remove": ["api_key"],
	"request_headers_to_remove": ["cookie"],
} if mode == "strip_api_key"

allow := {
	"allowed": true,
	"query_parameters_to_set": {"tenant": "blue", "region": ["eu", "us"]},
} if mode == "set_query"

allow := {
	"allowed": true,
	"headers": [{"x-a": "1"}, {"x-a": "2", "x-b": ["3", "4"]}],
	"response_headers_to_add": [{"x-c": "5"}],
} if mode == "header_arrays"

allow := {
	"allowed": true,
	"dynamic_metadata": {"tenant": "blue", "score": 3},
} if mode == "metadata"

allow := {"allowed": true, "dynamic_metadata": "not-an-object"} if mode == "bad_metadata"

allow := {"allowed": false, "http_status": to_number(input.attributes.request.http.headers["x-status"]), "body": "no"} if mode == "status"

allow := {"allowed": true, "query_parameters_to_remove": "api_key"} if mode == "bad_remove"

allow := {"allowed": true, "headers": [{"x-a": 1}]} if mode == "bad_header_value"
