# The agent orchestrator's inbound policy: only the API gateway (data.allowed_callers.agent) may
# use the agent API under /v1/agent/.
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-svidgate-policy": "orchestrator"},
	"body": "{\"error\": \"caller may not use the agent api\"}",
}

allow := {"allowed": true} if {
	input.attributes.source.principal in data.allowed_callers.agent
	input.parsed_path[0] == "v1"
	input.parsed_path[1] == "agent"
}
