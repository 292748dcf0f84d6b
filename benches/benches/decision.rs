//! The core decision path, natively: the seed policy through the pipeline on the map-backed host,
//! input building with and without the header map, peer certificate parsing against the
//! per-digest cache, and reading and compiling a new bundle.

#![allow(clippy::unwrap_used, reason = "benchmark set-up: a failure must stop the run loudly")]

use std::hint::black_box;
use std::time::SystemTime;

use criterion::{Criterion, criterion_group, criterion_main};
use svidgate_benches::{SEED_DATA, SEED_POLICY, SERVICE_REQUEST, seed_policy_config};
use svidgate_core::authz::bundle::Bundle;
use svidgate_core::authz::{Authorizer, InputPlan, RequestFacts, build_input};
use svidgate_core::config::{Config, ModuleKind};
use svidgate_core::filter::Root;
use svidgate_core::host::memory::MemoryHost;
use svidgate_core::host::{Action, property};
use svidgate_core::peer::{PeerCache, PeerCertificate};
use svidgate_testpki::{Issued, ORCHESTRATOR, ROGUE, TRUST_DOMAIN, TrustDomainCa, Workload};

/// The seed policy's plugin, configured on a map-backed host.
fn seed_plugin() -> (Root, MemoryHost) {
    let config = serde_json::json!({"trust_domains": ["ai.internal"], "policy": seed_policy_config().unwrap()});
    let host = MemoryHost::new(config.to_string());
    let mut root = Root::new(ModuleKind::Authz, "bench");
    assert!(root.on_configure(&host), "{:?}", host.state().logs);
    (root, host)
}

/// A typical request between services: pseudo-headers plus 16 ordinary headers.
fn request_headers() -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> =
        SERVICE_REQUEST.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    for i in 0..14 {
        headers.push((format!("x-trace-attribute-{i}"), format!("value-{i}-{}", "v".repeat(24))));
    }
    headers
}

/// Presents `svid` as the connection's client certificate, as Envoy's attributes do.
fn present(host: &MemoryHost, svid: &Issued, workload: Workload) {
    host.set_property(property::PEER_CERTIFICATE, svid.cert_pem.clone());
    host.set_property(property::PEER_CERTIFICATE_DIGEST, svid.sha256_hex());
    host.set_property(property::PEER_URI_SAN, workload.spiffe_id);
}

fn benches(c: &mut Criterion) {
    let (root, host) = seed_plugin();
    let filter = root.filter().unwrap();
    let ca = TrustDomainCa::new(TRUST_DOMAIN).unwrap();
    let (orchestrator, rogue) = (ca.svid(ORCHESTRATOR).unwrap(), ca.svid(ROGUE).unwrap());
    let headers = request_headers();
    let pairs = || headers.iter().map(|(n, v)| (n.as_str(), v.as_str()));

    // The decision alone (identity step, policy snapshot, input, RVM evaluation, result), on a
    // request whose headers are stripped and whose peer is resolved.
    let mut group = c.benchmark_group("decide_seed_policy");
    for (name, svid, workload, allowed) in
        [("allow_orchestrator", &orchestrator, ORCHESTRATOR, true), ("deny_rogue", &rogue, ROGUE, false)]
    {
        present(&host, svid, workload);
        host.begin_request(pairs());
        let request = filter.begin(&host);
        assert_eq!(filter.decide(&host, &request).decision.is_allow(), allowed);
        group.bench_function(name, |b| b.iter(|| black_box(filter.decide(&host, black_box(&request)))));
    }
    group.finish();

    // The whole request-headers phase as the proxy runs it: strip, peer (cached), decide,
    // count, log, apply.
    present(&host, &orchestrator, ORCHESTRATOR);
    let mut group = c.benchmark_group("pipeline");
    group.bench_function("request_headers_seed_allowed", |b| {
        b.iter(|| {
            host.begin_request(pairs());
            host.with(|s| s.logs.clear());
            assert_eq!(root.stream(2).on_request_headers(&host, true), Action::Continue);
        })
    });
    group.finish();

    // Before/after of input planning, in one run: the seed policy reads no headers.
    host.begin_request(pairs());
    let request = filter.begin(&host);
    let peer = request.peer.as_ref().unwrap();
    let identity = filter.identity().resolve(Ok(peer), None, &request.headers);
    let facts = RequestFacts {
        headers: &request.headers,
        peer: Ok(peer),
        jwt_svid: None,
        source_address: Some("10.1.2.3:45678"),
        destination_address: Some("10.0.0.5:8443"),
        destination_principal: Some("spiffe://ai.internal/ns/inference/sa/model-server"),
        protocol: Some("HTTP/2"),
        tls_sni: Some("model-server.ai.internal"),
        peer_certificate: None,
        metadata_context: &[],
        body: None,
        now: SystemTime::now(),
    };
    let seed_plan = InputPlan::for_modules(&[("authz.rego".to_owned(), SEED_POLICY.to_owned())]);
    let mut group = c.benchmark_group("build_input");
    group.bench_function("seed_plan", |b| b.iter(|| black_box(build_input(&seed_plan, black_box(&facts), &identity))));
    group.bench_function("everything", |b| {
        b.iter(|| black_box(build_input(&InputPlan::ALL, black_box(&facts), &identity)))
    });
    group.finish();

    let mut group = c.benchmark_group("peer_identity");
    let rules = &filter.identity().svid;
    let now = SystemTime::now();
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
    Authorizer::new(Config::parse(ModuleKind::Authz, config.as_bytes()).unwrap().policy.unwrap()).unwrap()
}

criterion_group!(decision, benches);
criterion_main!(decision);
