package envoy.authz_test

import rego.v1

import data.envoy.authz

orchestrator := "spiffe://ai.internal/ns/agents/sa/orchestrator"

ingest := "spiffe://ai.internal/ns/pipelines/sa/ingest"

request(principal, method, path) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": method, "path": path}},
	},
	"parsed_path": split(trim_prefix(path, "/"), "/"),
}

test_orchestrator_queries_product_docs if {
	authz.allow.allowed with input as request(orchestrator, "POST", "/v1/collections/product-docs/query")
}

test_orchestrator_cannot_write_product_docs if {
	not authz.allow.allowed with input as request(orchestrator, "POST", "/v1/collections/product-docs/upsert")
}

test_ingest_pipeline_writes_product_docs if {
	authz.allow.allowed with input as request(ingest, "POST", "/v1/collections/product-docs/upsert")
}

test_nobody_reads_hr_records if {
	not authz.allow.allowed with input as request(orchestrator, "POST", "/v1/collections/hr-records/query")
}

test_unknown_collection_denied if {
	not authz.allow.allowed with input as request(orchestrator, "POST", "/v1/collections/secrets/query")
}

test_unknown_operation_denied if {
	not authz.allow.allowed with input as request(orchestrator, "POST", "/v1/collections/product-docs/delete")
}

test_get_denied if {
	not authz.allow.allowed with input as request(orchestrator, "GET", "/v1/collections/product-docs/query")
}

test_denial_explains_itself if {
	deny := authz.allow with input as request(orchestrator, "POST", "/v1/collections/hr-records/query")
	deny.http_status == 403
	deny.headers["x-svidgate-policy"] == "vector-store"
}
