# The tool runtime's inbound policy. The runtime is an MCP server over Streamable HTTP: JSON-RPC 2.0
# messages POSTed to /mcp, one or a batch. Any agent data.allowed_tools lists may hold a session
# (initialize, notifications, ping, tools/list, GET and DELETE of /mcp); a tools/call is allowed
# only for a tool listed for the caller's SPIFFE ID, and only with arguments within that tool's
# limits (a file tool's path prefix), so a prompt-injected agent cannot reach the other tools or
# files. Every message of a batch must be allowed. A refused message is answered with a JSON-RPC
# error the MCP client reports, naming the tool. The shape of MCP gateways' tool policies, bound
# to the caller's SPIFFE ID and decided inside the proxy.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-svidgate-policy": "tool-runtime"},
	"body": "{\"error\": \"caller may not use the tool runtime\"}",
}

allow := {"allowed": true} if {
	mcp_post
	count(refused) == 0
}

allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-svidgate-policy": "tool-runtime", "content-type": "application/json"},
	"body": json.marshal(jsonrpc_errors),
} if {
	mcp_post
	count(refused) > 0
}

# The session's stream (GET) and its end (DELETE) carry no message.
allow := {"allowed": true} if {
	http_request.method in {"GET", "DELETE"}
	input.parsed_path == ["mcp"]
	tools
}

caller := input.attributes.source.principal

tools := data.allowed_tools[caller]

# One JSON-RPC message, or a batch of them.
messages := input.parsed_body if is_array(input.parsed_body)

messages := [input.parsed_body] if is_object(input.parsed_body)

mcp_post if {
	http_request.method == "POST"
	input.parsed_path == ["mcp"]
	tools
	not input.truncated_body
	count(messages) > 0
}

session_methods := {"initialize", "notifications/initialized", "notifications/cancelled", "ping", "tools/list"}

refused contains message if {
	some message in messages
	not permitted(message)
}

permitted(message) if message.method in session_methods

permitted(message) if {
	message.method == "tools/call"
	limits := tools[message.params.name]
	within(limits, object.get(message.params, "arguments", {}))
}

# A tool without limits takes any arguments.
within(limits, _) if not limits.path_prefix

# A file tool: a path under the prefix, without `..` segments.
within(limits, arguments) if {
	is_string(arguments.path)
	startswith(arguments.path, limits.path_prefix)
	not ".." in split(arguments.path, "/")
}

# The answer to a refused message: a JSON-RPC error with the message's id (a batch gets one per
# refused message).
jsonrpc_errors := [jsonrpc_error(message) | some message in refused] if is_array(input.parsed_body)

jsonrpc_errors := jsonrpc_error(input.parsed_body) if is_object(input.parsed_body)

jsonrpc_error(message) := {
	"jsonrpc": "2.0",
	"id": object.get(message, "id", null),
	"error": {"code": -32001, "message": sprintf("svidgate: %s may not call %s", [caller, what(message)])},
}

what(message) := sprintf("tool %v", [object.get(message, ["params", "name"], null)]) if {
	message.method == "tools/call"
} else := sprintf("method %v", [object.get(message, "method", null)])
