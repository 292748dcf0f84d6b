# The model server's OpenAI-compatible API, beside the seed article's /v1/generate (authz.rego,
# unchanged): POST /v1/chat/completions is allowed for a caller data.allowed_models lists, only
# for the models listed for it and with max_tokens (or max_completion_tokens) at most its
# ceiling, so a prompt-injected agent cannot switch to a larger or internal model or run up
# unbounded completions. The body is read: svidgate holds such requests until it has it.
package envoy.authz

import rego.v1

import input.attributes.request.http as http_request

allow := {"allowed": true} if {
	http_request.method == "POST"
	http_request.path == "/v1/chat/completions"
	not input.truncated_body
	limits := data.allowed_models[input.attributes.source.principal]
	input.parsed_body.model in limits.models
	every key in {"max_tokens", "max_completion_tokens"} {
		within_ceiling(object.get(input.parsed_body, key, 0), limits.max_tokens)
	}
}

within_ceiling(tokens, ceiling) if {
	is_number(tokens)
	tokens <= ceiling
}
