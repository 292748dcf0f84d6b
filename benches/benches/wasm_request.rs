//! One request through each built module in the wasmtime harness: time and wasmtime fuel
//! (instructions executed, a machine-independent measure) per request. Build the modules first:
//! `cargo xtask bench` does.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::{Action, Plugin, PluginOptions};
use svidgate_testpki::{ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa};

const SEED_POLICY: &str = include_str!("../../policies/seed/authz.rego");
const SEED_DATA: &str = include_str!("../../policies/seed/data.json");

const REQUEST: [(&str, &str); 8] = [
    (":method", "POST"),
    (":path", "/v1/generate"),
    (":authority", "model-server.ai.internal"),
    (":scheme", "https"),
    ("x-request-id", "3f1c9a2e-8d4b-4e0f-9a57-0c2d6e4b8f11"),
    ("content-type", "application/json"),
    ("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/edge/sa/forged"),
    ("accept", "application/json"),
];

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

/// One request; returns the fuel it burned.
fn request(plugin: &mut Plugin) -> u64 {
    let mut stream = plugin.stream();
    let action = stream.request_headers(&REQUEST, true).unwrap();
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
        "policy": {"rego": SEED_POLICY, "data": serde_json::from_str::<serde_json::Value>(SEED_DATA).unwrap()},
    });
    let mut group = c.benchmark_group("wasm_request");
    for (kind, config) in [(ModuleKind::Identity, &identity_config), (ModuleKind::Authz, &authz_config)] {
        let mut plugin = plugin(kind, config);
        let first = request(&mut plugin);
        let warm = request(&mut plugin);
        println!("{}: fuel per request: first (parses the certificate) {first}, then {warm}", kind.file_name());
        group.bench_function(kind.file_name(), |b| b.iter(|| black_box(request(&mut plugin))));
    }
    group.finish();
}

criterion_group!(wasm_request, benches);
criterion_main!(wasm_request);
