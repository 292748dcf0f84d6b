//! The core decision path, natively: the seed policy on regorus's VM, input building with and
//! without the header map, peer certificate parsing against the per-digest cache, and reading and
//! compiling a new bundle.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_benches::{SEED_DATA, SEED_POLICY, SERVICE_REQUEST, seed_policy_config};
use svidgate_core::authz::bundle::Bundle;
use svidgate_core::authz::{Authorizer, AuthzConfig, InputPlan, RequestFacts, build_input};
use svidgate_core::identity::StrippedHeaders;
use svidgate_core::peer::{PeerCache, PeerCertificate};
use svidgate_testpki::{ORCHESTRATOR, ROGUE, TRUST_DOMAIN, TrustDomainCa};

fn seed_authorizer() -> Authorizer {
    let config = serde_json::json!({
        "trust_domains": ["ai.internal"],
        "policy": seed_policy_config().unwrap(),
    });
    Authorizer::new(AuthzConfig::parse(config.to_string().as_bytes()).unwrap()).unwrap()
}

/// A typical request between services: pseudo-headers plus 16 ordinary headers.
fn request_headers(authorizer: &Authorizer) -> StrippedHeaders {
    let mut headers: Vec<(String, String)> =
        SERVICE_REQUEST.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    for i in 0..14 {
        headers.push((format!("x-trace-attribute-{i}"), format!("value-{i}-{}", "v".repeat(24))));
    }
    StrippedHeaders::strip(headers, authorizer.identity())
}

fn benches(c: &mut Criterion) {
    let authorizer = seed_authorizer();
    let ca = TrustDomainCa::new(TRUST_DOMAIN).unwrap();
    let orchestrator = ca.svid(ORCHESTRATOR).unwrap();
    let rogue = ca.svid(ROGUE).unwrap();
    let rules = &authorizer.identity().svid;
    let headers = request_headers(&authorizer);
    let now = SystemTime::now();
    let peer =
        rules.inspect(orchestrator.cert_pem.as_bytes(), Some(ORCHESTRATOR.spiffe_id)).unwrap().check_time(now).unwrap();
    let rogue_peer = rules.inspect(rogue.cert_pem.as_bytes(), Some(ROGUE.spiffe_id)).unwrap().check_time(now).unwrap();
    let facts = |peer| RequestFacts {
        headers: &headers,
        peer: Ok(peer),
        source_address: Some("10.1.2.3:45678"),
        destination_address: Some("10.0.0.5:8443"),
        destination_principal: Some("spiffe://ai.internal/ns/inference/sa/model-server"),
        protocol: Some("HTTP/2"),
        now: std::time::SystemTime::now(),
    };
    assert!(authorizer.decide(&facts(&peer)).decision.is_allow());
    assert!(!authorizer.decide(&facts(&rogue_peer)).decision.is_allow());

    let mut group = c.benchmark_group("decide_seed_policy");
    group.bench_function("allow_orchestrator", |b| b.iter(|| black_box(authorizer.decide(black_box(&facts(&peer))))));
    group.bench_function("deny_rogue", |b| b.iter(|| black_box(authorizer.decide(black_box(&facts(&rogue_peer))))));
    group.finish();

    // Before/after of input planning, in one run: the seed policy reads no headers.
    let identity = authorizer.identity().resolve(Ok(&peer), &headers);
    let mut group = c.benchmark_group("build_input");
    group.bench_function("seed_plan", |b| {
        b.iter(|| black_box(build_input(&authorizer.input_plan(), black_box(&facts(&peer)), &identity)))
    });
    group.bench_function("everything", |b| {
        b.iter(|| black_box(build_input(&InputPlan::ALL, black_box(&facts(&peer)), &identity)))
    });
    group.finish();

    let mut group = c.benchmark_group("peer_identity");
    let digest = orchestrator.sha256_hex();
    let certificate = || PeerCertificate {
        pem: Some(orchestrator.cert_pem.clone().into_bytes()),
        uri_san: Some(ORCHESTRATOR.spiffe_id.to_owned()),
    };
    group.bench_function("parse_and_validate", |b| {
        b.iter(|| black_box(rules.resolve(&mut PeerCache::new(0), None, certificate, now)))
    });
    let mut cache = PeerCache::new(16);
    group.bench_function("cached_by_digest", |b| {
        b.iter(|| black_box(rules.resolve(&mut cache, Some(&digest), certificate, now)))
    });
    group.finish();

    // What a worker spends when a new bundle arrives (once per poll that brings a change).
    let archive = svidgate_cli::write_bundle(&[
        (".manifest".into(), br#"{"revision": "bench"}"#.to_vec()),
        ("envoy/authz/authz.rego".into(), SEED_POLICY.as_bytes().to_vec()),
        ("data.json".into(), SEED_DATA.as_bytes().to_vec()),
    ])
    .unwrap();
    let bundled = seed_bundle_authorizer();
    let mut group = c.benchmark_group("bundle");
    group.bench_function("read_and_activate_seed", |b| {
        b.iter(|| {
            let bundle = Bundle::from_tar_gz(black_box(&archive), 1 << 20).unwrap();
            bundled.activate(&bundle, now).unwrap();
        })
    });
    group.finish();
}

fn seed_bundle_authorizer() -> Authorizer {
    let config = r#"{"trust_domains": ["ai.internal"], "policy": {"bundle": {"cluster": "bundles"}}}"#;
    Authorizer::new(AuthzConfig::parse(config.as_bytes()).unwrap()).unwrap()
}

criterion_group!(decision, benches);
criterion_main!(decision);
