# Source pattern: public package envoy.authz policies that gate paths with regex.match,
# e.g. regex.match("^/api/.*", http_request.path) and regex.match("^/[^/]+/u(i|i/.*)", ...)
# (see also aterribili/opa-poc:bundle/auth/ops/health.rego).
# Shape: regex.match with ASCII-only classes (^/api/v[0-9]+/), with \d, \w and \s, with the
# (?i) flag, anchored and unanchored patterns, on paths and header values.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

# ASCII-only version segment.
versioned_api if regex.match(`^/api/v[0-9]+/`, http_request.path)

# \d and \w: order ids and tenant slugs.
order_path if regex.match(`^/orders/\d{4,8}$`, http_request.path)

tenant_ok if regex.match(`^\w{3,16}$`, http_request.headers["x-tenant"])

# Case-insensitive bearer scheme, token of URL-safe characters.
bearer if regex.match(`(?i)^bearer\s+[A-Za-z0-9._~+/-]+=*$`, http_request.headers.authorization)

# Block scripted clients by user agent, case-insensitively, anywhere in the value.
scripted_client if regex.match(`(?i)(curl|wget|python-requests)/`, http_request.headers["user-agent"])

allow if {
	http_request.method == "GET"
	versioned_api
	not scripted_client
}

allow if {
	order_path
	tenant_ok
	bearer
}

# Tenant UI: /<tenant>/ui or /<tenant>/ui/...
allow if {
	http_request.method == "GET"
	regex.match(`^/[^/]+/u(i|i/.*)$`, http_request.path)
}
