package envoy.authz_test

import rego.v1

import data.envoy.authz

orchestrator := "spiffe://ai.internal/ns/agents/sa/orchestrator"

generate(principal) := {"attributes": {
	"source": {"principal": principal},
	"request": {"http": {"method": "POST", "path": "/v1/generate"}},
}}

test_allows_orchestrator_to_generate if {
	authz.allow.allowed with input as generate(orchestrator)
}

test_denies_caller_missing_from_allowed_callers if {
	not authz.allow.allowed with input as generate("spiffe://ai.internal/ns/sandbox/sa/rogue-agent")
}

test_denies_listed_caller_of_foreign_trust_domain if {
	not authz.allow.allowed with input as generate("spiffe://partner.example/ns/agents/sa/orchestrator")
		with data.allowed_callers.generate as ["spiffe://partner.example/ns/agents/sa/orchestrator"]
}

test_denies_get_on_generate if {
	not authz.allow.allowed with input as object.union(
		generate(orchestrator),
		{"attributes": {"request": {"http": {"method": "GET"}}}},
	)
}

test_denies_other_paths if {
	not authz.allow.allowed with input as object.union(
		generate(orchestrator),
		{"attributes": {"request": {"http": {"path": "/v1/admin"}}}},
	)
}

test_denies_request_without_principal if {
	not authz.allow.allowed with input as {"attributes": {"request": {"http": {"method": "POST", "path": "/v1/generate"}}}}
}

test_removing_caller_from_data_denies_it if {
	not authz.allow.allowed with input as generate(orchestrator) with data.allowed_callers.generate as []
}
