# Source pattern: open-policy-agent/opa-envoy-plugin:internal/internal_test.go
# (testAuthzServerWithObjectDecision: `default allow = {"allowed": false, "http_status": 301, ...}`
# then `allow = response if {...}`) and envoyproxy/envoy:examples/ext_authz/config/opa-service/policy.rego.
# Shape: the entrypoint itself is an object; deny with custom http_status, body and headers;
# two non-default definitions that can both match (an eval-time conflict for one input).
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := {
	"allowed": false,
	"http_status": 403,
	"body": "Unauthorized Request",
	"headers": {"x-reason": "default-deny", "content-type": "text/plain"},
}

allow := response if {
	http_request.method == "GET"
	user := http_request.headers["x-user"]
	user != ""
	not http_request.headers["x-rate-exceeded"]
	response := {
		"allowed": true,
		"headers": {"x-current-user": user},
		"dynamic_metadata": {"user": user, "checked": true},
	}
}

allow := {
	"allowed": false,
	"http_status": 429,
	"body": "{\"error\": \"rate limited\", \"retry_after_s\": 30}",
	"headers": {"retry-after": "30", "content-type": "application/json"},
} if http_request.headers["x-rate-exceeded"] == "true"

# Maintenance mode answers every mutating request with 503; it does not look at x-user, so
# a GET from a user during maintenance matches both this and the allow rule above.
allow := {"allowed": false, "http_status": 503, "body": "maintenance ⚙"} if {
	input.attributes.request.http.headers["x-maintenance"] == "on"
}
