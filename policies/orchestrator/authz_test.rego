package envoy.authz_test

import rego.v1

import data.envoy.authz

gateway := "spiffe://ai.internal/ns/edge/sa/gateway"

call(principal, path) := {
	"attributes": {"source": {"principal": principal}, "request": {"http": {"method": "POST", "path": path}}},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
}

test_gateway_uses_agent_api if {
	authz.allow.allowed with input as call(gateway, "/v1/agent/chat")
}

test_gateway_cannot_reach_admin_api if {
	not authz.allow.allowed with input as call(gateway, "/v1/admin/reset")
}

test_other_workloads_cannot_use_agent_api if {
	not authz.allow.allowed with input as call("spiffe://ai.internal/ns/inference/sa/model-server", "/v1/agent/chat")
}
