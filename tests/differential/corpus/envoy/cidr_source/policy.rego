# Source pattern: OPA Envoy primer v3 input table
# https://www.openpolicyagent.org/docs/envoy/primer
# (input.attributes.source.address.socketAddress.address) with net.cidr_contains as public
# ingress allow-lists use it (BuildIt-Poland/immutable-web-platform:policy/runtime/allow.rego).
# Shape: net.cidr_contains over a CIDR list from data.json, IPv4 and IPv6 peers, the first
# x-forwarded-for hop trusted only from the load balancer range, destination port checks.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

source_ip := input.attributes.source.address.socketAddress.address

destination_port := input.attributes.destination.address.socketAddress.portValue

internal_peer if {
	some cidr in data.network.internal_cidrs
	net.cidr_contains(cidr, source_ip)
}

# Behind the load balancer the client is the first x-forwarded-for hop.
client_ip := trim_space(split(http_request.headers["x-forwarded-for"], ",")[0]) if {
	some lb in data.network.load_balancers
	net.cidr_contains(lb, source_ip)
}

client_ip := source_ip if not http_request.headers["x-forwarded-for"]

allow if {
	internal_peer
	destination_port in data.network.internal_ports
}

allow if {
	http_request.method == "GET"
	startswith(http_request.path, "/public/")
	not blocked_client
}

blocked_client if {
	some cidr in data.network.blocked_cidrs
	net.cidr_contains(cidr, client_ip)
}
