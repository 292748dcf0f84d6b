# The tool runtime's inbound policy: an agent may invoke (POST /v1/tools/<tool>) only the tools
# data.allowed_tools lists for its SPIFFE ID, so a prompt-injected agent cannot reach the others.
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-svidgate-policy": "tool-runtime"},
	"body": "{\"error\": \"caller may not invoke this tool\"}",
}

allow := {"allowed": true} if {
	input.attributes.request.http.method == "POST"
	["v1", "tools", tool] = input.parsed_path
	tool in data.allowed_tools[input.attributes.source.principal]
}
