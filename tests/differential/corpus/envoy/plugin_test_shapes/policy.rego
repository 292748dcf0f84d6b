# Source pattern: open-policy-agent/opa-envoy-plugin:internal/internal_test.go
# (TestCheckAllowObjectDecisionDynamicMetadata, ...ReqQueryParamsToRemove, ...ReqQueryParamsToSet,
# ...MultiValuedHeaders, TestVersionInfoInputV3, testAuthzServerWithTruncatedBody) and
# envoyauth/response_test.go (headers given as an array of objects [{"foo": "bar"}, {"foo": "baz"}]).
# Shape: every optional member of the result object in the forms the plugin accepts.
package envoy.authz

import rego.v1

default allow := false

allow if {
	input.parsed_path == ["my", "test", "path"]
	input.version.ext_authz == "v3"
	input.version.encoding == "protojson"
	not input.truncated_body
}

allow if {
	input.parsed_path[0] == "search"
	input.parsed_query.q
}

dynamic_metadata["foo"] := "bar"

dynamic_metadata["bar"] := "baz"

dynamic_metadata["path_len"] := count(input.parsed_path)

# Headers as an array of single-key objects (repeated names allowed).
headers := [{"x-tag": "alpha"}, {"x-tag": "beta"}, {"x-path": input.attributes.request.http.path}]

response_headers_to_add["x"] := ["hello", "world"]

response_headers_to_add["y"] := "single"

request_headers_to_remove := ["foo", "bar"]

query_parameters_to_remove := [k | some k, _ in input.parsed_query; startswith(k, "utm_")]

query_parameters_to_set := {
	"foo": "value1",
	"bar": ["value2", "value3"],
}

result["allowed"] := allow

result["dynamic_metadata"] := dynamic_metadata

result["headers"] := headers

result["response_headers_to_add"] := response_headers_to_add

result["request_headers_to_remove"] := request_headers_to_remove

result["query_parameters_to_remove"] := query_parameters_to_remove

result["query_parameters_to_set"] := query_parameters_to_set

result["http_status"] := 418 if not allow
