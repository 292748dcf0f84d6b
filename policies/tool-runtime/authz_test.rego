package envoy.authz_test

import rego.v1

import data.envoy.authz

orchestrator := "spiffe://ai.internal/ns/agents/sa/orchestrator"

invoke(principal, tool) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": "POST", "path": concat("/", ["", "v1", "tools", tool])}},
	},
	"parsed_path": ["v1", "tools", tool],
}

test_orchestrator_invokes_search if {
	authz.allow.allowed with input as invoke(orchestrator, "search")
}

test_orchestrator_cannot_run_python if {
	not authz.allow.allowed with input as invoke(orchestrator, "python-sandbox")
}

test_code_agent_runs_python if {
	authz.allow.allowed with input as invoke("spiffe://ai.internal/ns/agents/sa/code-agent", "python-sandbox")
}

test_unlisted_agent_invokes_nothing if {
	not authz.allow.allowed with input as invoke("spiffe://ai.internal/ns/sandbox/sa/rogue-agent", "search")
}

test_nested_tool_path_denied if {
	not authz.allow.allowed with input as object.union(
		invoke(orchestrator, "search"),
		{"parsed_path": ["v1", "tools", "search", "admin"]},
	)
}
