package envoy.authz_test

import rego.v1

import data.envoy.authz

chat(principal, body) := {
	"attributes": {
		"source": {"principal": principal},
		"request": {"http": {"method": "POST", "path": "/v1/chat/completions"}},
	},
	"parsed_body": body,
	"truncated_body": false,
}

messages := [{"role": "user", "content": "Summarize the Q3 report."}]

test_orchestrator_chats_with_a_listed_model if {
	authz.allow.allowed with input as chat(orchestrator, {"model": "llama-3.1-8b-instruct", "messages": messages, "max_tokens": 512})
	authz.allow.allowed with input as chat(orchestrator, {"model": "mistral-7b-instruct", "messages": messages})
}

test_a_model_not_listed_for_the_caller_is_refused if {
	not authz.allow.allowed with input as chat(orchestrator, {"model": "gpt-4o-internal", "messages": messages})
	not authz.allow.allowed with input as chat(orchestrator, {"messages": messages})
	not authz.allow.allowed with input as chat("spiffe://ai.internal/ns/sandbox/sa/rogue-agent", {"model": "llama-3.1-8b-instruct"})
}

test_token_ceiling if {
	not authz.allow.allowed with input as chat(orchestrator, {"model": "llama-3.1-8b-instruct", "max_tokens": 4096})
	not authz.allow.allowed with input as chat(orchestrator, {"model": "llama-3.1-8b-instruct", "max_completion_tokens": 1025})
	not authz.allow.allowed with input as chat(orchestrator, {"model": "llama-3.1-8b-instruct", "max_tokens": "512"})
	authz.allow.allowed with input as chat(orchestrator, {"model": "llama-3.1-8b-instruct", "max_tokens": 1024})
}

test_a_truncated_or_missing_body_is_refused if {
	not authz.allow.allowed with input as object.union(chat(orchestrator, null), {"truncated_body": true})
	not authz.allow.allowed with input as chat(orchestrator, null)
}
