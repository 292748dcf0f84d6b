# Source pattern: spiffe/spire-tutorials:k8s/envoy-opa/k8s/backend/config/opa-policy.rego
# (glob.match("/balances/*", [], path): empty delimiters, so "." is the delimiter),
# the OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer
# (glob.match("/people/*", ["/"], path)) and opa-envoy-plugin examples/envoy-uds
# (glob.match("/people*", [], path)).
# Shape: glob.match on paths and hosts with [], ["/"], ["."] and null delimiters,
# `**`, `?`, character classes and {a,b} alternatives.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

host_name := split(http_request.host, ":")[0]

# SPIRE tutorial shape: [] means the default delimiter ".", so "*" spans "/".
valid_path if glob.match("/balances/*", [], http_request.path)

valid_path if glob.match("/profiles/*", [], http_request.path)

# Primer shape: "*" stops at "/".
valid_path if glob.match("/people/*", ["/"], http_request.path)

# envoy-uds example shape.
valid_path if glob.match("/catalog*", [], http_request.path)

# "**" crosses delimiters; "?" is one character; classes and alternatives.
valid_path if glob.match("/static/**.{css,js}", ["/"], http_request.path)

valid_path if glob.match("/v?/items/[0-9]*", ["/"], http_request.path)

# null delimiters: no delimiter at all.
valid_path if glob.match("/files/*.txt", null, http_request.path)

allow if {
	http_request.method == "GET"
	valid_path
	internal_host
}

internal_host if glob.match("*.ai.internal", ["."], host_name)

internal_host if glob.match("localhost", [], host_name)
