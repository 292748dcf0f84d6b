//! One request through each built module in the wasmtime harness: time and wasmtime fuel
//! (instructions executed, a machine-independent measure) per request, over all the callbacks
//! of its stream at Envoy's default log level. Build the modules first: `cargo xtask bench` does.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_benches::{
    MCP_CALL, MCP_REQUEST, SERVICE_REQUEST, seed_policy_config, tool_runtime_policy_config, without_decision_cache,
};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::cases::wasm_dir;
use svidgate_harness::host::{Action, LogLevel, Module, Plugin, PluginOptions};
use svidgate_testpki::{ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa};

fn plugin(kind: ModuleKind, config: &serde_json::Value) -> Plugin {
    plugin_of(kind.module().unwrap(), config)
}

/// A plugin configured with `config`, at Envoy's default log level, `info`: a request's debug
/// lines are neither formatted nor sent, as in Envoy.
fn options(config: &serde_json::Value) -> PluginOptions {
    PluginOptions { plugin_config: config.to_string().into_bytes(), log_level: Some(LogLevel::Info), ..PluginOptions::default() }
}

fn plugin_of(module: &Module, config: &serde_json::Value) -> Plugin {
    let mut plugin = module.start(options(config)).unwrap();
    assert!(plugin.configured(), "{:?}", plugin.logs());
    let svid = TrustDomainCa::new(TRUST_DOMAIN).unwrap().svid(ORCHESTRATOR).unwrap();
    plugin.set_property(&["connection", "peer_certificate"], svid.cert_pem.clone());
    plugin.set_property(&["connection", "sha256_peer_certificate_digest"], svid.sha256_hex());
    plugin.set_property(&["connection", "uri_san_peer_certificate"], ORCHESTRATOR.spiffe_id);
    plugin
}

/// One request with `headers`, its response's headers and the end of its stream; returns the
/// fuel all the stream's callbacks burned, from its creation to its deletion: what the module
/// runs for a request in Envoy.
fn request(plugin: &mut Plugin, headers: &[(&str, &str)]) -> u64 {
    let before = plugin.fuel_consumed_total();
    let mut stream = plugin.stream();
    let action = stream.request_headers(headers, true).unwrap();
    assert_eq!(action, Action::Continue);
    stream.response_headers(&[(":status", "200"), ("content-type", "application/json")], false).unwrap();
    stream.finish().unwrap();
    plugin.fuel_consumed_total() - before
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
    // Ten more headers, as clients and proxies add them (user agents, tracing, forwarding): what
    // each header the module reads costs.
    let names: Vec<String> = (0..10).map(|i| format!("x-extra-header-{i}")).collect();
    let more: Vec<(&str, &str)> =
        headers.iter().copied().chain(names.iter().map(|name| (name.as_str(), "00-4bf92f3577b34da6a3ce929d0e0e4736-01"))).collect();
    let mut group = c.benchmark_group("wasm_request");
    for (kind, name, config) in [
        (ModuleKind::Identity, "svidgate_identity.wasm", &identity_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, decision cached", &authz_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, evaluated", &evaluated_config),
        (ModuleKind::Authz, "svidgate_authz.wasm, evaluated on the interpreter", &interpreter_config),
    ] {
        let mut plugin = plugin(kind, config);
        let first = request(&mut plugin, &headers);
        let calls_before = plugin.host_calls();
        let warm = request(&mut plugin, &headers);
        let calls = plugin.host_calls() - calls_before;
        let per_header = (request(&mut plugin, &more) - warm) / 10;
        println!(
            "{name}: fuel per request: first (parses the certificate) {first}, then {warm}; host calls per exchange {calls}; each further header {per_header}"
        );
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
    jwt(&mut group);
    jwt_svid(&mut group);
    group.finish();
}

/// The full flavor verifying a bearer token per request (`io.jwt.decode_verify`: the decision is
/// never cached, the signature's verdict is): against the same policy reading the token without
/// verifying it, the cost of one verification per algorithm, and of a request after it. Tokens and keys are the differential corpus's (probes/jwt, minted by Python).
fn jwt(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let full = Module::load(&wasm_dir().join("svidgate_authz_full.wasm")).unwrap();
    let corpus: serde_yaml::Value =
        serde_yaml::from_str(include_str!("../../tests/differential/corpus/probes/jwt/cases.yaml")).unwrap();
    // (token, key) of a corpus case.
    let input = |name: &str| -> (String, serde_json::Value) {
        let inputs = corpus.get("inputs").and_then(serde_yaml::Value::as_sequence).unwrap();
        let case = inputs.iter().find(|case| case.get("name").and_then(serde_yaml::Value::as_str) == Some(name)).unwrap();
        let input: serde_json::Value = serde_json::to_value(case.get("input").unwrap()).unwrap();
        (input.get("token").and_then(serde_json::Value::as_str).unwrap().to_owned(), input.get("key").unwrap().clone())
    };
    let policy = |call: &str, key: &serde_json::Value| {
        let rego = format!(
            "package envoy.authz\nimport rego.v1\nallow if {{\n\t[_, token] := split(input.attributes.request.http.headers.authorization, \" \")\n\t{call}\n}}\n"
        );
        plugin_of(&full, &evaluated(serde_json::json!({"rego": rego, "data": {"key": key}})))
    };
    let with_token = |token: &str| -> Vec<(String, String)> {
        SERVICE_REQUEST.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).chain([("authorization".to_owned(), format!("Bearer {token}"))]).collect()
    };
    // (the first request: parses the peer certificate and verifies the token; a later one).
    let fuel = |plugin: &mut Plugin, headers: &[(String, String)]| {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        (request(plugin, &headers), request(plugin, &headers))
    };
    let headers = with_token(&input("rs256_pem_key").0);
    let mut unverified = policy("io.jwt.decode(token)[1].aud == \"model-server\"", &serde_json::Value::Null);
    let (first_baseline, baseline) = fuel(&mut unverified, &headers);
    let mut rows = vec![format!("io.jwt.decode alone {first_baseline} then {baseline}")];
    for (case, name) in [
        ("rs256_pem_key", "RS256"),
        ("ps256_pem_key", "PS256"),
        ("es256_pem_key", "ES256"),
        ("es384_pem_key", "ES384"),
        ("es512_pem_key", "ES512"),
        ("hs256_secret", "HS256"),
    ] {
        let (token, key) = input(case);
        let headers = with_token(&token);
        let constraint = if name.starts_with("HS") { "secret" } else { "cert" };
        let call = format!("io.jwt.decode_verify(token, {{\"{constraint}\": data.key, \"aud\": \"model-server\"}})[0]");
        let mut verifying = policy(&call, &key);
        // Over the same policy without verification: the first request verifies, later ones
        // find the verdict kept (the claims are still checked).
        let (first, later) = fuel(&mut verifying, &headers);
        let over = |fuel: u64, base: u64| i128::from(fuel) - i128::from(base);
        rows.push(format!("{name} {:+} then {:+}", over(first, first_baseline), over(later, baseline)));
        if name == "RS256" || name == "ES256" {
            let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
            group.bench_function(format!("svidgate_authz_full.wasm, io.jwt.decode_verify {name}, verdict kept"), |b| {
                b.iter(|| black_box(request(&mut verifying, &headers)));
            });
        }
    }
    println!("fuel per request, full flavor, bearer token: {}", rows.join(", "));
}

/// A JWT-SVID (ES256, SPIRE's default key type) on a connection without a client certificate,
/// through the identity module: the first request verifies the signature, later ones find the
/// token kept and only check its clock. Over the same module with an X509-SVID peer.
fn jwt_svid(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let authority = svidgate_testpki::jwt::JwtAuthority::new("k1").unwrap();
    let bundle: serde_json::Value = serde_json::from_str(&svidgate_testpki::jwt::JwtAuthority::bundle(&[&authority], 1)).unwrap();
    let audience = "spiffe://ai.internal/ns/inference/sa/model-server";
    let config = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true,
        "jwt_svid": {"audiences": [audience], "bundles": {"ai.internal": bundle}}});
    let module = ModuleKind::Identity.module().unwrap();
    let mut peer = plugin_of(module, &config);
    let mut anonymous = module.start(options(&config)).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({"sub": ORCHESTRATOR.spiffe_id, "aud": [audience], "exp": exp});
    let token = format!("Bearer {}", authority.sign(&claims.to_string()).unwrap());
    let mut headers: Vec<(&str, &str)> = SERVICE_REQUEST.to_vec();
    let (peer_first, peer_later) = (request(&mut peer, &headers), request(&mut peer, &headers));
    headers.push(("authorization", &token));
    let (first, later) = (request(&mut anonymous, &headers), request(&mut anonymous, &headers));
    println!(
        "svidgate_identity.wasm: fuel per request: X509-SVID peer {peer_first} then {peer_later}; JWT-SVID ES256 {first} (verifies) then {later} (kept)"
    );
    group.bench_function("svidgate_identity.wasm, JWT-SVID ES256, kept", |b| b.iter(|| black_box(request(&mut anonymous, &headers))));
}

criterion_group!(wasm_request, benches);
criterion_main!(wasm_request);
