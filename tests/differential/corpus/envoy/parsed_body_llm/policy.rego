# Source pattern: OPA Envoy primer https://www.openpolicyagent.org/docs/envoy/primer
# (allow if input.parsed_body.firstname == "Charlie"), opa-envoy-plugin
# examples/grpc/policy.rego (parsed_body checks) and LLM-gateway model allow-lists such as
# dativo-io/talon:examples/policies/model-allowlist.rego.
# Shape: input.parsed_body JSON checks: model allow-list, numeric limits (numbers that may
# arrive as strings or floats), `every` over messages, truncated_body, absent or null body.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

default allow := false

allowed_models := {"llama-3-8b", "mistral-7b", "qwen2-7b"}

body := input.parsed_body

valid_roles := {"system", "user", "assistant"}

allow if {
	http_request.method == "POST"
	input.parsed_path == ["v1", "chat", "completions"]
	not input.truncated_body
	body.model in allowed_models
	body.max_tokens <= 4096
	count(body.messages) <= 32
	every m in body.messages {
		m.role in valid_roles
		is_string(m.content)
	}
	not streaming_forbidden
}

streaming_forbidden if {
	body.stream == true
	body.model == "qwen2-7b"
}

# Embeddings: input may be a string or an array of strings.
allow if {
	http_request.method == "POST"
	input.parsed_path == ["v1", "embeddings"]
	body.model in allowed_models
	embedding_inputs_ok
}

embedding_inputs_ok if is_string(body.input)

embedding_inputs_ok if {
	is_array(body.input)
	count(body.input) > 0
	every s in body.input {
		is_string(s)
		count(s) <= 64
	}
}

# Model listing needs no body at all.
allow if {
	http_request.method == "GET"
	input.parsed_path == ["v1", "models"]
	not input.parsed_body
}
