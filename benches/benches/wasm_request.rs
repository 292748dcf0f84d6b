//! One request through each built module in the wasmtime harness: time and wasmtime fuel
//! (instructions executed, a machine-independent measure) per request. Build the modules first:
//! `cargo xtask bench` does.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_benches::{
    MCP_CALL, MCP_REQUEST, SERVICE_REQUEST, seed_policy_config, tool_runtime_policy_config, without_decision_cache,
};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::{Action, Plugin, PluginOptions};
use svidgate_testpki::{ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa};

fn plugin(kind: ModuleKind, config: &serde_json::Value) -> Plugin {
    let module = kind.module().unwrap();
    let mut plugin =
        module.start(PluginOptions { plugin_config: config.to_string().into_bytes(), ..PluginOptions::default() }).unwrap();
    assert!(plugin.configured(), "{:?}", plugin.logs());
    let svid = TrustDomainCa::new(TRUST_DOMAIN).unwrap().svid(ORCHESTRATOR).unwrap();
    plugin.set_property(&["connection", "peer_certificate"], svid.cert_pem.clone());
    plugin.set_property(&["connection", "sha256_peer_certificate_digest"], svid.sha256_hex());
    plugin.set_property(&["connection", "uri_san_peer_certificate"], ORCHESTRATOR.spiffe_id);
    plugin
}

/// One request with `headers`; returns the fuel it burned.
fn request(plugin: &mut Plugin, headers: &[(&str, &str)]) -> u64 {
    let mut stream = plugin.stream();
    let action = stream.request_headers(headers, true).unwrap();
    assert_eq!(action, Action::Continue);
    let fuel = stream.fuel_consumed_last();
    stream.finish().unwrap();
    fuel
}

/// One whole exchange: the request headers, the body (if any, in one piece), the end of the
/// stream; returns the fuel all of its callbacks burned.
fn exchange(plugin: &mut Plugin, headers: &[(&str, &str)], body: Option<&[u8]>) -> u64 {
    let before = plugin.fuel_consumed_total();
    let mut stream = plugin.stream();
    let mut action = stream.request_headers(headers, body.is_none()).unwrap();
    if let Some(body) = body {
        action = stream.request_body(body, true).unwrap();
    }
    assert_eq!(action, Action::Continue);
    assert!(stream.local_reply().is_none());
    stream.finish().unwrap();
    plugin.fuel_consumed_total() - before
}

/// A module configuration around `policy`, with the decision cache off: what one evaluation costs.
fn evaluated(policy: serde_json::Value) -> serde_json::Value {
    serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "policy": without_decision_cache(policy)})
}

fn benches(c: &mut Criterion) {
    let identity_config = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true});
    let authz_config = serde_json::json!({
        "trust_domains": ["ai.internal"],
        "require_peer": true,
        "policy": seed_policy_config().unwrap(),
    });
    let evaluated_config = evaluated(seed_policy_config().unwrap());
    // The same decision on regorus's interpreter: the seed policy's result built key by key (as
    // OPA's Envoy primer does), which the VM compiler refuses.
    let seed = seed_policy_config().unwrap();
    let policy = serde_json::json!({
        "rego": {"seed.rego": seed.get("rego"), "result.rego": "package envoy.authz\nresult[\"allowed\"] := allow.allowed\n"},
        "data": seed.get("data"),
        "entrypoint": "envoy/authz/result",
    });
    let interpreter_config = evaluated(policy);
    let headers: Vec<(&str, &str)> = SERVICE_REQUEST.into_iter().chain([("accept", "application/json")]).collect();
    let mut group = c.benchmark_group("wasm_request");
    for (kind, name, config) in [
        (ModuleKind::Identity, "svidgate_identity.wasm", &identity_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, decision cached", &authz_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, evaluated", &evaluated_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, evaluated on the interpreter", &interpreter_config),
    ] {
        let mut plugin = plugin(kind, config);
        let first = request(&mut plugin, &headers);
        let warm = request(&mut plugin, &headers);
        println!("{name}: fuel per request: first (parses the certificate) {first}, then {warm}");
        group.bench_function(name, |b| b.iter(|| black_box(request(&mut plugin, &headers))));
    }
    // A decision on the request body (the tool runtime's MCP policy, a 130-byte tools/call)
    // against one at the headers (the seed policy), each measured over the whole exchange, both
    // evaluated (a policy reading the body is never cached).
    let mcp_config = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "policy": tool_runtime_policy_config().unwrap()});
    let mut seed = plugin(ModuleKind::Authz, &evaluated_config);
    let mut mcp = plugin(ModuleKind::Authz, &mcp_config);
    // The first exchange of each parses the peer certificate; the figures are of later ones.
    exchange(&mut seed, &headers, None);
    exchange(&mut mcp, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    let at_headers = exchange(&mut seed, &headers, None);
    let on_body = exchange(&mut mcp, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    // The cost of the body alone: the same one-line policy reading the method or the tool name.
    let one_line = |condition: &str| {
        let rego = format!("package envoy.authz\nimport rego.v1\nallow if {condition}\n");
        plugin(ModuleKind::Authz, &evaluated(serde_json::json!({"rego": rego})))
    };
    let mut method = one_line("input.attributes.request.http.method == \"POST\"");
    let mut tool = one_line("input.parsed_body.params.name == \"read_file\"");
    exchange(&mut method, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    exchange(&mut tool, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    let by_method = exchange(&mut method, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    let by_tool = exchange(&mut tool, &MCP_REQUEST, Some(MCP_CALL.as_bytes()));
    println!(
        "fuel per exchange: seed policy at the headers {at_headers}, MCP policy on the body {on_body}; \
         one-line policy on the method {by_method}, on the body's tool name {by_tool}"
    );
    group.bench_function("svidgate_authz.wasm, whole exchange, one-line policy on the method", |b| {
        b.iter(|| black_box(exchange(&mut method, &MCP_REQUEST, Some(MCP_CALL.as_bytes()))));
    });
    group.bench_function("svidgate_authz.wasm, whole exchange, one-line policy on the body's tool name", |b| {
        b.iter(|| black_box(exchange(&mut tool, &MCP_REQUEST, Some(MCP_CALL.as_bytes()))));
    });
    group.bench_function("svidgate_authz.wasm, whole exchange, seed policy at the headers", |b| {
        b.iter(|| black_box(exchange(&mut seed, &headers, None)));
    });
    group.bench_function("svidgate_authz.wasm, whole exchange, MCP policy on the body", |b| {
        b.iter(|| black_box(exchange(&mut mcp, &MCP_REQUEST, Some(MCP_CALL.as_bytes()))));
    });
    group.finish();
}

criterion_group!(wasm_request, benches);
criterion_main!(wasm_request);
