# Source pattern: spiffe/spire-tutorials:k8s/envoy-opa/k8s/backend/config/opa-policy.rego
# (svc_spiffe_id parsed from x-forwarded-client-cert with split) and
# open-policy-agent/opa-envoy-plugin:internal/internal_test.go (input.source_principal,
# `missingId := true if not input.source_principal`).
# Shape: SPIFFE ID string compare on input.attributes.source.principal, startswith,
# split into trust domain / namespace / service account, XFCC header parsing.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

peer_id := input.attributes.source.principal

missing_id := true if not input.source_principal

trust_domain := td if {
	startswith(peer_id, "spiffe://")
	td := split(trim_prefix(peer_id, "spiffe://"), "/")[0]
}

# ["ns", <namespace>, "sa", <service account>] for the usual Kubernetes-shaped IDs.
id_path := array.slice(split(trim_prefix(peer_id, "spiffe://"), "/"), 1, 16)

namespace := id_path[1] if id_path[0] == "ns"

service_account := id_path[3] if id_path[2] == "sa"

# The orchestrator may call the inference API.
allow if {
	not missing_id
	peer_id == "spiffe://ai.internal/ns/agents/sa/orchestrator"
	input.source_principal == peer_id
	http_request.method == "POST"
	startswith(http_request.path, "/v1/")
}

# Anything in the monitoring namespace of our trust domain may scrape metrics.
allow if {
	trust_domain == "ai.internal"
	namespace == "monitoring"
	count(id_path) == 4
	http_request.method == "GET"
	http_request.path == "/metrics"
}

# SPIRE tutorial: the frontend's SVID forwarded by Envoy in x-forwarded-client-cert.
svc_spiffe_id := spiffe_id if {
	[_, _, uri_type_san] := split(http_request.headers["x-forwarded-client-cert"], ";")
	[_, spiffe_id] := split(uri_type_san, "=")
}

allow if {
	http_request.method == "GET"
	svc_spiffe_id == "spiffe://example.org/ns/default/sa/default/frontend"
	some prefix in ["/balances/", "/profiles/", "/transactions/"]
	startswith(http_request.path, prefix)
}
