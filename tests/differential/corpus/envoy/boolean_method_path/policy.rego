# Source pattern: OPA playground Envoy "Hello World" (package envoy.http.public) and the
# OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer
# Shape: boolean `allow` with `default allow := false`, rules on
# input.attributes.request.http.{method,path,headers} through an `import ... as` alias.
package envoy.http.public

import input.attributes.request.http as http_request

default allow := false

# The landing page is public.
allow if {
	http_request.method == "GET"
	http_request.path == "/"
}

# Probes may read or HEAD the health endpoints.
allow if {
	http_request.method in {"GET", "HEAD"}
	http_request.path in {"/healthz", "/readyz"}
}

# The catalogue is read-only for everyone, no dot-dot segments.
allow if {
	http_request.method == "GET"
	startswith(http_request.path, "/catalog/")
	not contains(http_request.path, "..")
}

# The operator's demo credential may do anything.
allow if http_request.headers.authorization == "Basic b3BlcmF0b3I6ZGVtbw=="
