# Wrapper package holding the primer's result boilerplate (see policy.rego).
package envoy.authz

import rego.v1

import data.envoy.policy

result["allowed"] := policy.allow

result["headers"] := policy.headers

result["response_headers_to_add"] := policy.response_headers_to_add

result["request_headers_to_remove"] := policy.request_headers_to_remove

result["body"] := policy.body

result["http_status"] := policy.status_code

result["dynamic_metadata"] := policy.dynamic_metadata

result["query_parameters_to_set"] := policy.query_parameters_to_set
