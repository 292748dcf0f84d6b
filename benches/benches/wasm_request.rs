//! One request through each built module in the wasmtime harness: time and wasmtime fuel
//! (instructions executed, a machine-independent measure) per request. Build the modules first:
//! `cargo xtask bench` does.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_benches::{SERVICE_REQUEST, seed_policy_config};
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

fn benches(c: &mut Criterion) {
    let identity_config = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true});
    let authz_config = serde_json::json!({
        "trust_domains": ["ai.internal"],
        "require_peer": true,
        "policy": seed_policy_config().unwrap(),
    });
    // The same decision on regorus's interpreter: the seed policy's result built key by key (as
    // OPA's Envoy primer does), which the VM compiler refuses.
    let seed = seed_policy_config().unwrap();
    let policy = serde_json::json!({
        "rego": {"seed.rego": seed.get("rego"), "result.rego": "package envoy.authz\nresult[\"allowed\"] := allow.allowed\n"},
        "data": seed.get("data"),
        "entrypoint": "envoy/authz/result",
    });
    let interpreter_config = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "policy": policy});
    let headers: Vec<(&str, &str)> = SERVICE_REQUEST.into_iter().chain([("accept", "application/json")]).collect();
    let mut group = c.benchmark_group("wasm_request");
    for (kind, name, config) in [
        (ModuleKind::Identity, "svidgate_identity.wasm", &identity_config),
        (ModuleKind::Authz, "svidgate_authz.wasm", &authz_config),
        (ModuleKind::Authz, "svidgate_authz.wasm on the interpreter", &interpreter_config),
    ] {
        let mut plugin = plugin(kind, config);
        let first = request(&mut plugin, &headers);
        let warm = request(&mut plugin, &headers);
        println!("{name}: fuel per request: first (parses the certificate) {first}, then {warm}");
        group.bench_function(name, |b| b.iter(|| black_box(request(&mut plugin, &headers))));
    }
    group.finish();
}

criterion_group!(wasm_request, benches);
criterion_main!(wasm_request);
