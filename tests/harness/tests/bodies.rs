//! Request bodies through the built modules, in the host's model of Envoy's Wasm filter: a policy
//! that reads the body holds the request (headers and every chunk) until the body ends or reaches
//! `max_request_bytes`, then decides; one that reads only headers decides at once and lets every
//! chunk through as it comes. What went past the filter is what the upstream would receive.

use anyhow::{Context, Result, ensure};
use serde_json::json;
use svidgate_core::metrics::Counter;
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::{Action, Plugin, PluginOptions, Stream};
use svidgate_testpki::{ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa};

/// An MCP server's gate: `tools/call` of two tools only.
const MCP_POLICY: &str = r#"package envoy.authz
import rego.v1
default allow := false
tools := {"search", "summarize"}
allow if {
    input.attributes.request.http.method == "POST"
    input.parsed_body.method == "tools/call"
    input.parsed_body.params.name in tools
}
"#;

/// A JSON-RPC `tools/call` of `tool`, about a hundred bytes.
fn tool_call(tool: &str) -> String {
    json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": tool, "arguments": {"query": "svid rotation"}}})
        .to_string()
}

/// Starts the authz module with `policy` and `with_request_body` (none if `Null`), and presents
/// the orchestrator's SVID as the peer.
fn start(policy: &str, with_request_body: serde_json::Value, data: serde_json::Value) -> Result<Plugin> {
    let mut policy = json!({"rego": policy, "data": data});
    if let (Some(policy), false) = (policy.as_object_mut(), with_request_body.is_null()) {
        policy.insert("with_request_body".to_owned(), with_request_body);
    }
    let config = json!({"trust_domains": ["ai.internal"], "policy": policy}).to_string();
    start_module(ModuleKind::Authz, &config)
}

fn start_module(kind: ModuleKind, config: &str) -> Result<Plugin> {
    let options = PluginOptions { plugin_config: config.as_bytes().to_vec(), ..PluginOptions::default() };
    let mut plugin = kind.module()?.start(options)?;
    ensure!(plugin.configured(), "not configured: {:?}", plugin.logs());
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    plugin.set_property(&["connection", "peer_certificate"], svid.cert_pem.clone());
    plugin.set_property(&["connection", "sha256_peer_certificate_digest"], svid.sha256_hex());
    plugin.set_property(&["connection", "uri_san_peer_certificate"], ORCHESTRATOR.spiffe_id);
    Ok(plugin)
}

/// A JSON POST to the MCP endpoint, plus `extra` headers.
fn post<'a>(extra: &[(&'a str, &'a str)]) -> Vec<(&'a str, &'a str)> {
    let mut headers = vec![
        (":method", "POST"),
        (":path", "/mcp"),
        (":authority", "tool-runtime"),
        (":scheme", "https"),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    headers
}

/// `body` cut into `n` chunks of nearly equal size.
fn chunks(body: &[u8], n: usize) -> Vec<&[u8]> {
    body.chunks(body.len().div_ceil(n)).collect()
}

fn counter(plugin: &Plugin, counter: Counter) -> u64 {
    plugin.counter(counter.name()).unwrap_or(0)
}

/// The values of request header `name` as they went past the filter.
fn forwarded<'s>(stream: &'s Stream<'_>, name: &str) -> Vec<&'s str> {
    let headers = stream.forwarded_request_headers().unwrap_or_default();
    headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
}

/// Sends `body` in `n` chunks after headers that the policy holds: every chunk but the last is
/// held too, and nothing goes past the filter before the last one. Returns the last chunk's action.
fn send_held(stream: &mut Stream<'_>, headers: &[(&str, &str)], body: &[u8], n: usize) -> Result<Action> {
    ensure!(stream.request_headers(headers, false)? == Action::Pause, "a policy that reads the body holds the headers");
    ensure!(!stream.request_headers_forwarded() && stream.local_reply().is_none());
    let parts = chunks(body, n);
    let (last, first) = parts.split_last().context("no body")?;
    let mut held = Vec::new();
    for chunk in first {
        ensure!(stream.request_body(chunk, false)? == Action::Pause, "a chunk went on before the end of the body");
        held.extend_from_slice(chunk);
        ensure!(stream.buffered_request_body() == held, "Envoy buffers every held chunk");
        ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty());
    }
    stream.request_body(last, true)
}

#[test]
fn an_mcp_policy_holds_the_request_until_the_body_ends_then_allows_or_denies_the_tool() -> Result<()> {
    let mut plugin = start(MCP_POLICY, serde_json::Value::Null, json!({}))?;
    let allowed = tool_call("search");
    let mut stream = plugin.stream();
    let action = send_held(&mut stream, &post(&[]), allowed.as_bytes(), 3)?;
    ensure!(action == Action::Continue && stream.local_reply().is_none(), "{:?}", stream.local_reply());
    ensure!(stream.request_headers_forwarded(), "the headers go on with the body");
    ensure!(forwarded(&stream, ":path") == ["/mcp"]);
    ensure!(stream.forwarded_request_body() == allowed.as_bytes(), "the whole body goes on, once");
    ensure!(stream.buffered_request_body().is_empty());
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzBodyRequests) == 1);
    ensure!(counter(&plugin, Counter::AuthzBodyBytes) == allowed.len() as u64, "the policy read all of the body");
    ensure!(counter(&plugin, Counter::AuthzAllowed) == 1);

    // Two chunks this time: the decision does not depend on how the body was cut.
    let denied = tool_call("delete_everything");
    let mut stream = plugin.stream();
    let action = send_held(&mut stream, &post(&[]), denied.as_bytes(), 2)?;
    let reply = stream.local_reply().context("a tool outside the list must be denied")?.clone();
    ensure!(action == Action::Pause && reply.status == 403, "{reply:?}");
    ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty(), "nothing reaches the upstream");
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzDenied) == 1 && counter(&plugin, Counter::AuthzBodyRequests) == 2);
    Ok(())
}

#[test]
fn a_policy_that_reads_only_headers_lets_every_chunk_through_at_once() -> Result<()> {
    // The alias names the whole `http` object, but the policy reads only its method.
    let policy = "package envoy.authz\nimport rego.v1\nimport input.attributes.request.http as http_request\n\
        default allow := false\nallow if http_request.method == \"POST\"\n";
    let mut plugin = start(policy, json!({"max_request_bytes": 16}), json!({}))?;
    let body = tool_call("anything");
    let parts = chunks(body.as_bytes(), 3);
    let mut stream = plugin.stream();
    ensure!(stream.request_headers(&post(&[]), false)? == Action::Continue, "decided at the headers");
    ensure!(stream.request_headers_forwarded() && stream.local_reply().is_none());
    let mut sent = Vec::new();
    for (n, chunk) in parts.iter().enumerate() {
        let last = n + 1 == parts.len();
        ensure!(stream.request_body(chunk, last)? == Action::Continue, "chunk {n} was held");
        sent.extend_from_slice(chunk);
        ensure!(stream.forwarded_request_body() == sent, "chunk {n} did not go on at once");
        ensure!(stream.buffered_request_body().is_empty());
    }
    stream.finish()?;
    // A body longer than max_request_bytes is no concern of a policy that does not read it.
    ensure!(counter(&plugin, Counter::AuthzBodyRequests) == 0 && counter(&plugin, Counter::AuthzBodyTooLarge) == 0);
    ensure!(counter(&plugin, Counter::AuthzAllowed) == 1);

    // The same alias reading the body holds the request.
    let policy = "package envoy.authz\nimport rego.v1\nimport input.attributes.request.http as http_request\n\
        default allow := false\nallow if contains(http_request.body, \"tools/call\")\n";
    let mut plugin = start(policy, serde_json::Value::Null, json!({}))?;
    let mut stream = plugin.stream();
    ensure!(send_held(&mut stream, &post(&[]), body.as_bytes(), 2)? == Action::Continue);
    ensure!(stream.forwarded_request_body() == body.as_bytes());
    Ok(())
}

#[test]
fn a_body_longer_than_max_request_bytes_is_answered_413() -> Result<()> {
    let mut plugin = start(MCP_POLICY, json!({"max_request_bytes": 64}), json!({}))?;
    let body = tool_call("search");
    ensure!(body.len() > 64 && body.len() < 128);

    // Announced by content-length: answered at the headers; the body is then dropped unread.
    let length = body.len().to_string();
    let mut stream = plugin.stream();
    stream.request_headers(&post(&[("content-length", &length)]), false)?;
    ensure!(stream.local_reply().map(|reply| reply.status) == Some(413), "{:?}", stream.local_reply());
    ensure!(stream.request_body(body.as_bytes(), true)? == Action::Pause);
    ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty());
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzBodyTooLarge) == 1 && counter(&plugin, Counter::AuthzBodyRequests) == 0);

    // Without content-length: answered once the buffered body passes the limit, mid-body.
    let (first, rest) = body.as_bytes().split_at(40);
    let (second, third) = rest.split_at(40);
    let mut stream = plugin.stream();
    ensure!(stream.request_headers(&post(&[]), false)? == Action::Pause);
    ensure!(stream.request_body(first, false)? == Action::Pause && stream.local_reply().is_none());
    ensure!(stream.request_body(second, false)? == Action::Pause, "80 buffered bytes are over the limit");
    ensure!(stream.local_reply().map(|reply| reply.status) == Some(413), "{:?}", stream.local_reply());
    ensure!(stream.request_body(third, true)? == Action::Pause);
    ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty());
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzBodyTooLarge) == 2 && counter(&plugin, Counter::AuthzAllowed) == 0);
    Ok(())
}

#[test]
fn allow_partial_message_decides_on_the_first_max_request_bytes() -> Result<()> {
    let body = tool_call("search");
    let prefix = body.get(..64).context("short body")?;
    // The policy sees exactly the first 64 bytes, flagged truncated, and no parsed body.
    let policy = "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if {\n\
        input.truncated_body == true\n    input.parsed_body == null\n\
        input.attributes.request.http.body == data.prefix\n}\n";
    let limits = json!({"max_request_bytes": 64, "allow_partial_message": true});
    let mut plugin = start(policy, limits, json!({"prefix": prefix}))?;
    let (first, rest) = body.as_bytes().split_at(40);
    let (second, third) = rest.split_at(40);
    let mut stream = plugin.stream();
    ensure!(stream.request_headers(&post(&[]), false)? == Action::Pause);
    ensure!(stream.request_body(first, false)? == Action::Pause);
    ensure!(!stream.request_headers_forwarded());
    ensure!(stream.request_body(second, false)? == Action::Continue, "decided at 80 of 64 bytes: {:?}", stream.local_reply());
    ensure!(stream.local_reply().is_none() && stream.request_headers_forwarded());
    // Everything Envoy held goes on, not only what the policy read.
    ensure!(stream.forwarded_request_body() == [first, second].concat());
    ensure!(stream.request_body(third, true)? == Action::Continue);
    ensure!(stream.forwarded_request_body() == body.as_bytes());
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzBodyTruncated) == 1 && counter(&plugin, Counter::AuthzBodyBytes) == 64);
    ensure!(counter(&plugin, Counter::AuthzAllowed) == 1 && counter(&plugin, Counter::AuthzBodyTooLarge) == 0);
    Ok(())
}

#[test]
fn a_body_that_does_not_parse_is_answered_400() -> Result<()> {
    let mut plugin = start(MCP_POLICY, serde_json::Value::Null, json!({}))?;
    let body = br#"{"jsonrpc": "2.0", "method": "tools/call", "params": {"name": "search""#;
    let mut stream = plugin.stream();
    ensure!(send_held(&mut stream, &post(&[]), body, 2)? == Action::Pause);
    ensure!(stream.local_reply().map(|reply| reply.status) == Some(400), "{:?}", stream.local_reply());
    ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty());
    stream.finish()?;
    ensure!(counter(&plugin, Counter::AuthzBodyInvalid) == 1);
    Ok(())
}

#[test]
fn request_trailers_end_a_held_body() -> Result<()> {
    let mut plugin = start(MCP_POLICY, serde_json::Value::Null, json!({}))?;
    for (tool, allowed) in [("summarize", true), ("shell", false)] {
        let body = tool_call(tool);
        let (first, second) = body.as_bytes().split_at(30);
        let mut stream = plugin.stream();
        ensure!(stream.request_headers(&post(&[]), false)? == Action::Pause);
        ensure!(stream.request_body(first, false)? == Action::Pause);
        ensure!(stream.request_body(second, false)? == Action::Pause, "{tool}: the body has not ended yet");
        ensure!(stream.local_reply().is_none() && stream.buffered_request_body() == body.as_bytes());
        let action = stream.request_trailers(&[("x-checksum", "c0ffee")])?;
        if allowed {
            ensure!(action == Action::Continue && stream.local_reply().is_none(), "{tool}: {:?}", stream.local_reply());
            ensure!(stream.forwarded_request_body() == body.as_bytes() && forwarded(&stream, ":path") == ["/mcp"]);
            let trailers = stream.forwarded_request_trailers().context("the trailers go on")?;
            ensure!(trailers == [("x-checksum".to_string(), "c0ffee".to_string())], "{trailers:?}");
        } else {
            ensure!(action == Action::Pause && stream.local_reply().map(|reply| reply.status) == Some(403), "{tool}");
            ensure!(!stream.request_headers_forwarded() && stream.forwarded_request_body().is_empty());
            ensure!(stream.forwarded_request_trailers().is_none());
        }
        stream.finish()?;
    }
    let read = tool_call("summarize").len() + tool_call("shell").len();
    ensure!(counter(&plugin, Counter::AuthzBodyRequests) == 2 && counter(&plugin, Counter::AuthzBodyBytes) == read as u64);
    Ok(())
}

#[test]
fn identity_headers_are_stripped_from_a_request_decided_at_its_body() -> Result<()> {
    // The policy also denies if it sees an identity header: it must not.
    let policy = format!(
        "{MCP_POLICY}\ndeny_seen if input.attributes.request.http.headers[\"x-forwarded-spiffe-id\"]\n\
         deny_seen if input.attributes.request.http.headers[\"x_forwarded_spiffe_id\"]\n"
    );
    let policy = policy.replace("input.parsed_body.params.name in tools\n}", "input.parsed_body.params.name in tools\n    not deny_seen\n}");
    ensure!(policy.contains("not deny_seen"));
    let mut plugin = start(&policy, serde_json::Value::Null, json!({}))?;
    let forged = "spiffe://ai.internal/ns/agents/sa/forged-admin";
    let forged_too = "spiffe://ai.internal/ns/agents/sa/forged-again";
    let headers = post(&[("x-forwarded-spiffe-id", forged), ("x_forwarded_spiffe_id", forged_too), ("x-request-id", "r-1")]);
    let body = tool_call("search");
    let mut stream = plugin.stream();
    ensure!(send_held(&mut stream, &headers, body.as_bytes(), 2)? == Action::Continue, "{:?}", stream.local_reply());
    ensure!(forwarded(&stream, "x-forwarded-spiffe-id") == [ORCHESTRATOR.spiffe_id], "only the peer's identity goes on");
    ensure!(forwarded(&stream, "x_forwarded_spiffe_id").is_empty());
    ensure!(forwarded(&stream, "x-request-id") == ["r-1"], "other headers go on untouched");
    let all = stream.forwarded_request_headers().context("headers forwarded")?;
    ensure!(!all.iter().any(|(_, value)| value == forged || value == forged_too), "{all:?}");
    stream.finish()?;
    Ok(())
}

#[test]
fn policy_header_edits_decided_at_the_body_reach_the_upstream_and_the_client() -> Result<()> {
    let policy = r#"package envoy.authz
import rego.v1
default allow := {"allowed": false}
allow := {
    "allowed": true,
    "headers": {"x-tool": input.parsed_body.params.name},
    "request_headers_to_remove": ["x-internal-token"],
    "response_headers_to_add": {"x-decided-on": "body"},
} if input.parsed_body.method == "tools/call"
"#;
    let mut plugin = start(policy, serde_json::Value::Null, json!({}))?;
    let body = tool_call("summarize");
    let mut stream = plugin.stream();
    let headers = post(&[("x-internal-token", "secret"), ("x-tool", "set-by-client")]);
    ensure!(send_held(&mut stream, &headers, body.as_bytes(), 3)? == Action::Continue, "{:?}", stream.local_reply());
    ensure!(forwarded(&stream, "x-tool") == ["summarize"], "{:?}", stream.forwarded_request_headers());
    ensure!(forwarded(&stream, "x-internal-token").is_empty());
    ensure!(forwarded(&stream, "x-forwarded-spiffe-id") == [ORCHESTRATOR.spiffe_id]);
    ensure!(stream.forwarded_request_body() == body.as_bytes());
    ensure!(stream.response_headers(&[(":status", "200")], true)? == Action::Continue);
    let response = stream.response_header_map();
    ensure!(response.contains(&("x-decided-on".to_string(), "body".to_string())), "{response:?}");
    stream.finish()?;
    Ok(())
}

#[test]
fn the_identity_module_never_holds_a_body() -> Result<()> {
    let mut plugin = start_module(ModuleKind::Identity, r#"{"trust_domains": ["ai.internal"]}"#)?;
    let body = tool_call("search");
    let (first, second) = body.as_bytes().split_at(50);
    let mut stream = plugin.stream();
    ensure!(stream.request_headers(&post(&[]), false)? == Action::Continue);
    ensure!(forwarded(&stream, "x-forwarded-spiffe-id") == [ORCHESTRATOR.spiffe_id]);
    ensure!(stream.request_body(first, false)? == Action::Continue && stream.forwarded_request_body() == first);
    ensure!(stream.request_body(second, false)? == Action::Continue && stream.forwarded_request_body() == body.as_bytes());
    ensure!(stream.forwarded_request_trailers().is_none());
    ensure!(stream.request_trailers(&[("grpc-status", "0")])? == Action::Continue);
    ensure!(stream.forwarded_request_trailers().is_some_and(|trailers| trailers.len() == 1));
    stream.finish()?;
    Ok(())
}

#[test]
fn the_host_refuses_body_frames_no_downstream_can_send() -> Result<()> {
    let mut plugin = start_module(ModuleKind::Identity, r#"{"trust_domains": ["ai.internal"]}"#)?;
    let mut stream = plugin.stream();
    ensure!(stream.request_body(b"early", false).is_err(), "a body before the headers");
    ensure!(stream.request_trailers(&[("x", "y")]).is_err(), "trailers before the headers");
    stream.request_headers(&post(&[]), false)?;
    stream.request_body(b"last", true)?;
    ensure!(stream.request_body(b"late", false).is_err(), "a body after the end of the request");
    ensure!(stream.request_trailers(&[("x", "y")]).is_err(), "trailers after the end of the request");
    ensure!(stream.forwarded_request_body() == b"last");
    stream.finish()?;
    Ok(())
}
