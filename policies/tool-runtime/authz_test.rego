package envoy.authz_test

import rego.v1

import data.envoy.authz

orchestrator := "spiffe://ai.internal/ns/agents/sa/orchestrator"

# The input of a POST /mcp with `body` as its JSON body, as svidgate (and OPA-Envoy with
# ext_authz's with_request_body) builds it.
mcp(principal, body) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": "POST", "path": "/mcp"}},
	},
	"parsed_path": ["mcp"],
	"parsed_body": body,
	"truncated_body": false,
}

call(id, tool, arguments) := {"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}}

test_orchestrator_calls_search if {
	authz.allow.allowed with input as mcp(orchestrator, call(1, "search", {"query": "q3 revenue"}))
}

test_session_methods_for_listed_agents if {
	every method in ["initialize", "tools/list", "ping"] {
		authz.allow.allowed with input as mcp(orchestrator, {"jsonrpc": "2.0", "id": 1, "method": method})
	}
	authz.allow.allowed with input as mcp(orchestrator, {"jsonrpc": "2.0", "method": "notifications/initialized"})
}

test_orchestrator_cannot_run_python_and_gets_a_jsonrpc_error if {
	decision := authz.allow with input as mcp(orchestrator, call(7, "python-sandbox", {"code": "import os"}))
	not decision.allowed
	decision.http_status == 403
	error := json.unmarshal(decision.body)
	error.id == 7
	error.error.code == -32001
	contains(error.error.message, "tool python-sandbox")
}

test_code_agent_runs_python if {
	authz.allow.allowed with input as mcp("spiffe://ai.internal/ns/agents/sa/code-agent", call(1, "python-sandbox", {}))
}

test_unlisted_agent_gets_nothing if {
	rogue := "spiffe://ai.internal/ns/sandbox/sa/rogue-agent"
	not authz.allow.allowed with input as mcp(rogue, call(1, "search", {}))
	not authz.allow.allowed with input as mcp(rogue, {"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
}

test_file_tool_only_under_its_prefix if {
	authz.allow.allowed with input as mcp(orchestrator, call(1, "read_file", {"path": "/srv/reports/q3.md"}))
	not authz.allow.allowed with input as mcp(orchestrator, call(1, "read_file", {"path": "/etc/passwd"}))
	not authz.allow.allowed with input as mcp(orchestrator, call(1, "read_file", {"path": "/srv/reports/../../etc/passwd"}))
	not authz.allow.allowed with input as mcp(orchestrator, call(1, "read_file", {"path": ["/srv/reports/a"]}))
	not authz.allow.allowed with input as mcp(orchestrator, call(1, "read_file", {}))
}

test_a_batch_is_allowed_only_whole if {
	authz.allow.allowed with input as mcp(orchestrator, [call(1, "search", {}), call(2, "calculator", {"expr": "1+1"})])
	decision := authz.allow with input as mcp(orchestrator, [call(1, "search", {}), call(2, "shell", {"cmd": "id"})])
	not decision.allowed
	errors := json.unmarshal(decision.body)
	count(errors) == 1
	errors[0].id == 2
	contains(errors[0].error.message, "tool shell")
}

test_unknown_methods_and_shapes_are_refused if {
	not authz.allow.allowed with input as mcp(orchestrator, {"jsonrpc": "2.0", "id": 1, "method": "resources/read"})
	not authz.allow.allowed with input as mcp(orchestrator, [])
	not authz.allow.allowed with input as mcp(orchestrator, null)
	not authz.allow.allowed with input as mcp(orchestrator, "tools/call")
}

test_a_truncated_body_is_refused if {
	not authz.allow.allowed with input as object.union(mcp(orchestrator, null), {"truncated_body": true})
}

test_other_paths_and_methods_are_refused if {
	not authz.allow.allowed with input as object.union(mcp(orchestrator, call(1, "search", {})), {"parsed_path": ["v1", "tools", "search"]})
	get := {"attributes": {"source": {"principal": orchestrator}, "request": {"http": {"method": "GET", "path": "/mcp"}}}, "parsed_path": ["mcp"]}
	authz.allow.allowed with input as get
	not authz.allow.allowed with input as object.union(get, {"attributes": {"request": {"http": {"method": "PUT"}}}})
}
