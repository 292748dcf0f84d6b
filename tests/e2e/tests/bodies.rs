//! Request bodies in real Envoy: the tool runtime's MCP policy (policies/tool-runtime) decides on
//! the JSON-RPC body over HTTP/1.1 and HTTP/2; bodies too large, cut short, invalid and slow; a
//! policy that does not read the body does not hold the request.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test helpers: a failure is the test failing")]

use std::time::Duration;

use serde_json::{Value, json};
use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::topology::{Alone, Modules, Policy, SidecarOptions, plugin_configuration};
use svidgate_testpki::{ORCHESTRATOR, TOOL_RUNTIME};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const HTTPS: [Http; 2] = [Http::H1, Http::H2];

/// The tool runtime's sidecar, its policy's `with_request_body` set to `limits` (if not null) or
/// its policy replaced by `rego`.
async fn tool_runtime(label: &str, limits: Value, rego: Option<&str>) -> Alone {
    let mut plugin = plugin_configuration(&Policy::for_workload(TOOL_RUNTIME).unwrap(), &[]);
    if !limits.is_null() {
        plugin["policy"]["with_request_body"] = limits;
    }
    if let Some(rego) = rego {
        plugin["policy"]["rego"] = json!(rego);
    }
    let modules = Modules::built().unwrap();
    let options = SidecarOptions { plugin: Some(plugin), ..SidecarOptions::new(&modules.authz) };
    Alone::start(label, UPSTREAM.as_ref(), TOOL_RUNTIME, &options).await.unwrap()
}

fn orchestrator(alone: &Alone) -> TlsClient {
    TlsClient::new(&alone.pki.bundle(), Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap()
}

fn call(id: u64, tool: &str, arguments: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": tool, "arguments": arguments}})
}

fn mcp(body: impl Into<Vec<u8>>, marker: &str) -> Request {
    Request::new("POST", "/mcp")
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-request-marker", marker)
        .body(body)
}

#[tokio::test]
async fn decides_mcp_tool_calls_on_the_jsonrpc_body_over_http1_and_http2() {
    let alone = tool_runtime("bodies-mcp", Value::Null, None).await;
    let client = orchestrator(&alone);
    let port = alone.sidecar.inbound_port;
    let app = &alone.sidecar.app;
    for http in HTTPS {
        // Allowed: the whole body reaches the tool server, with the caller's identity only.
        let body = call(1, "read_file", json!({"path": "/srv/reports/q3.md"})).to_string();
        let marker = format!("allowed-{http:?}");
        let request = mcp(body.clone(), &marker).header("x-forwarded-spiffe-id", "spiffe://ai.internal/forged");
        let response = client.send(port, http, &request).await.unwrap();
        assert_eq!(response.status, 200, "{http:?}: {response:?}");
        let seen = app.seen_with_marker(&marker).unwrap();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert_eq!(seen[0].body, body);
        assert_eq!(seen[0].identities, [ORCHESTRATOR.spiffe_id]);

        // Refused: a tool the orchestrator may not use, a file outside its prefix, a batch with
        // one such call. The MCP client gets a JSON-RPC error naming the tool; the server nothing.
        let refused = [
            (call(7, "python-sandbox", json!({"code": "import os"})), "tool python-sandbox"),
            (call(8, "read_file", json!({"path": "/srv/reports/../../etc/shadow"})), "tool read_file"),
            (json!([call(9, "search", json!({})), call(10, "shell", json!({"cmd": "id"}))]), "tool shell"),
        ];
        for (i, (body, named)) in refused.into_iter().enumerate() {
            let marker = format!("refused-{i}-{http:?}");
            let response = client.send(port, http, &mcp(body.to_string(), &marker)).await.unwrap();
            assert_eq!(response.status, 403, "{http:?} {body}: {response:?}");
            assert_eq!(response.header_values("content-type"), ["application/json"]);
            let error = response.json().unwrap();
            let error = if error.is_array() { error[0].clone() } else { error };
            assert_eq!(error["error"]["code"], -32001, "{error}");
            assert!(error["error"]["message"].as_str().unwrap().contains(named), "{error}");
            assert!(app.seen_with_marker(&marker).unwrap().is_empty(), "{marker} reached the tool server");
        }

        // A body that is not the JSON its content-type says: an input error, 400.
        let marker = format!("invalid-{http:?}");
        let response = client.send(port, http, &mcp(r#"{"jsonrpc": "2.0", "method": "tools/call""#, &marker)).await.unwrap();
        assert_eq!(response.status, 400, "{http:?}: {response:?}");
        assert!(app.seen_with_marker(&marker).unwrap().is_empty());
    }
    let envoy = &alone.sidecar.envoy;
    let requests = envoy.stat("wasmcustom.svidgate.authz.body.requests").await.unwrap();
    assert_eq!(requests, Some(10), "{}", envoy.stats_matching("svidgate").await.unwrap());
    assert_eq!(envoy.stat("wasmcustom.svidgate.authz.body.invalid").await.unwrap(), Some(2));
}

#[tokio::test]
async fn bodies_over_max_request_bytes_get_413_or_a_truncated_decision() {
    // Over the limit by a few bytes, in one piece (HTTP/1.1 with content-length) or streamed.
    let long = call(1, "search", json!({"query": "q".repeat(300)})).to_string();
    let strict = tool_runtime("bodies-413", json!({"max_request_bytes": 256}), None).await;
    let client = orchestrator(&strict);
    let port = strict.sidecar.inbound_port;
    for http in HTTPS {
        let marker = format!("whole-{http:?}");
        let response = client.send(port, http, &mcp(long.clone(), &marker)).await.unwrap();
        assert_eq!(response.status, 413, "{http:?}: {response:?}");
        let marker = format!("streamed-{http:?}");
        let streaming = client.stream(port, http, &mcp(Vec::new(), &marker)).await.unwrap();
        for chunk in long.as_bytes().chunks(100) {
            // Envoy may answer 413 and reset the stream before the last chunk goes out.
            if streaming.send(chunk).await.is_err() {
                break;
            }
        }
        let response = streaming.finish().await.unwrap();
        assert_eq!(response.status, 413, "{http:?} streamed: {response:?}");
        assert!(strict.sidecar.app.seen_with_marker(&marker).unwrap().is_empty());
        // Within the limit, the same sidecar lets it through.
        let short = call(2, "search", json!({"query": "q3"})).to_string();
        assert_eq!(client.send(port, http, &mcp(short, "short")).await.unwrap().status, 200);
    }
    let too_large = strict.sidecar.envoy.stat("wasmcustom.svidgate.authz.body.too_large").await.unwrap();
    assert_eq!(too_large, Some(4));

    // allow_partial_message: decided on the first 256 bytes, which the policy sees as truncated
    // (the tool runtime's policy refuses a call it cannot read whole).
    let partial = tool_runtime("bodies-partial", json!({"max_request_bytes": 256, "allow_partial_message": true}), None).await;
    let client = orchestrator(&partial);
    for http in HTTPS {
        let response = client.send(partial.sidecar.inbound_port, http, &mcp(long.clone(), "partial")).await.unwrap();
        assert_eq!(response.status, 403, "{http:?}: {response:?}");
    }
    let truncated = partial.sidecar.envoy.stat("wasmcustom.svidgate.authz.body.truncated").await.unwrap();
    assert_eq!(truncated, Some(2));
}

/// Streams a body in two parts with a pause between them; returns whether the app had the
/// request before the second part was sent.
async fn arrived_before_the_body_ended(alone: &Alone, http: Http, marker: &str) -> bool {
    let body = call(1, "search", json!({"query": "q3 revenue"})).to_string();
    let (head, tail) = body.as_bytes().split_at(20);
    let client = orchestrator(alone);
    let streaming = client.stream(alone.sidecar.inbound_port, http, &mcp(Vec::new(), marker)).await.unwrap();
    streaming.send(head).await.unwrap();
    let mut arrived = false;
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        arrived = alone.sidecar.app.arrived(marker).unwrap();
        if arrived {
            break;
        }
    }
    streaming.send(tail).await.unwrap();
    let response = streaming.finish().await.unwrap();
    assert_eq!(response.status, 200, "{marker}: {response:?}");
    let seen = alone.sidecar.app.seen_with_marker(marker).unwrap();
    assert_eq!(seen.iter().map(|s| s.body.as_str()).collect::<Vec<_>>(), [body.as_str()], "{marker}");
    arrived
}

#[tokio::test]
async fn only_a_policy_that_reads_the_body_holds_a_slow_request() {
    let reads_body = tool_runtime("bodies-held", Value::Null, None).await;
    let headers_only = "package envoy.authz\nimport rego.v1\nimport input.attributes.request.http as http_request\n\
                        default allow := false\nallow if {\n\thttp_request.method == \"POST\"\n\t\
                        http_request.headers[\"content-type\"] == \"application/json\"\n}\n";
    let streams = tool_runtime("bodies-streamed", Value::Null, Some(headers_only)).await;
    for http in HTTPS {
        assert!(!arrived_before_the_body_ended(&reads_body, http, &format!("held-{http:?}")).await, "{http:?}");
        assert!(arrived_before_the_body_ended(&streams, http, &format!("streamed-{http:?}")).await, "{http:?}");
    }
    let held = reads_body.sidecar.envoy.stat("wasmcustom.svidgate.authz.body.requests").await.unwrap();
    assert_eq!(held, Some(2));
    let streamed = streams.sidecar.envoy.stat("wasmcustom.svidgate.authz.body.requests").await.unwrap();
    assert_eq!(streamed, Some(0));
}
