# Source pattern: open-policy-agent/opa-envoy-plugin:examples/istio/README.md
# (roles_for_user / required_roles over user_roles and role_perms), with the tables in
# data.json as bundle-served policies keep them.
# Shape: user -> roles -> permissions lookups in data, `some ... in`, `every`,
# partial set rules, object.keys, caller identity from the SPIFFE principal or x-user.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

caller := data.rbac.service_accounts[input.attributes.source.principal]

caller := http_request.headers["x-user"] if not input.attributes.source.principal

roles contains role if {
	some role in data.rbac.user_roles[caller]
}

permitted contains [perm.method, perm.prefix] if {
	some role in roles
	some perm in data.rbac.role_permissions[role]
}

allow if {
	some [method, prefix] in permitted
	method in {http_request.method, "*"}
	startswith(http_request.path, prefix)
	required_headers_present
	not suspended
}

# Every header the method requires must be present.
required_headers_present if {
	every name in object.get(data.rbac.required_headers, http_request.method, []) {
		name in object.keys(http_request.headers)
	}
}

suspended if caller in data.rbac.suspended
