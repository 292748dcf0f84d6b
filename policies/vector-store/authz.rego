# The vector store's inbound policy: which agents may read (query) or write (upsert) which
# collection. POST /v1/collections/<collection>/query needs the caller in the collection's
# readers; POST /v1/collections/<collection>/upsert needs it in the writers (data.collections).
package envoy.authz

import rego.v1

default allow := {
	"allowed": false,
	"http_status": 403,
	"headers": {"x-svidgate-policy": "vector-store"},
	"body": "{\"error\": \"caller may not use this collection\"}",
}

allow := {"allowed": true} if {
	input.attributes.request.http.method == "POST"
	["v1", "collections", collection, operation] = input.parsed_path
	role := {"query": "readers", "upsert": "writers"}[operation]
	input.attributes.source.principal in data.collections[collection][role]
}
