//! Which entrypoints get a decision cache, what their key holds, and that a cached decision is
//! the decision evaluation would have taken.

use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::authz::body::RequestBody;
use crate::authz::bundle::Bundle;
use crate::authz::{Authorizer, InputPlan, build_input};
use crate::config::IdentityConfig;
use crate::headers::HeaderList;
use crate::identity::StrippedHeaders;
use crate::peer::PeerIdentity;
use crate::spiffe::SpiffeId;

const SEED: &str = include_str!("../../../../../policies/seed/authz.rego");
const SEED_DATA: &str = include_str!("../../../../../policies/seed/data.json");
const ORCHESTRATOR: &str = "spiffe://ai.internal/ns/agents/sa/orchestrator";
const EDGE: &str = "spiffe://ai.internal/ns/edge/sa/gateway";

fn key_plan(source: &str) -> Option<KeyPlan> {
    let modules = [("p.rego".to_owned(), source.to_owned())];
    InputPlan::with_keys(&modules, &["data.x.allow"]).pop().and_then(|(_, key)| key)
}

fn identity_config() -> IdentityConfig {
    IdentityConfig::parse(br#"{"trust_domains": ["ai.internal"]}"#).unwrap()
}

fn peer(id: &str) -> PeerIdentity {
    PeerIdentity { spiffe_id: SpiffeId::parse(id).unwrap(), not_before: 1_000, not_after: 4_600, ttl_remaining_s: 3_000 }
}

fn headers(pairs: &[(&str, &str)]) -> StrippedHeaders {
    StrippedHeaders::strip(HeaderList::from_pairs(pairs.iter().copied()), &identity_config())
}

fn facts<'a>(headers: &'a StrippedHeaders, peer: &'a PeerIdentity) -> RequestFacts<'a> {
    RequestFacts {
        headers,
        peer: Ok(peer),
        jwt_svid: None,
        source_address: Some("10.1.2.3:45678"),
        destination_address: None,
        destination_principal: None,
        protocol: Some("HTTP/1.1"),
        tls_sni: None,
        peer_certificate: None,
        metadata_context: &[],
        body: None,
        now: UNIX_EPOCH + Duration::from_secs(2_000),
    }
}

#[test]
fn policies_that_read_a_few_request_facts_are_cached() {
    let rego = |body: &str| format!("package x\nimport rego.v1\n{body}");
    for cached in [
        SEED.replace("package envoy.authz", "package x"),
        rego("allow if input.attributes.request.http.headers[\"x-tenant\"] == \"a\""),
        rego("allow if input.parsed_path[0] == \"v1\""),
        rego("allow if input.attributes.destination.principal == input.attributes.source.principal"),
        rego("import input.attributes.request.http as http_request\nallow if http_request.method == \"GET\""),
        rego("allow if input.version.ext_authz == \"v3\""),
        // Named in a comment or a string, not called.
        rego("# time.now_ns()\nallow if \"time.now_ns()\" == input.attributes.request.http.path"),
    ] {
        assert!(key_plan(&cached).is_some(), "{cached}");
    }
}

#[test]
fn policies_that_can_see_a_per_request_value_or_call_the_clock_are_not() {
    let rego = |body: &str| format!("package x\nimport rego.v1\n{body}");
    for uncached in [
        rego("allow if input.attributes.request.http.id"),
        rego("allow if { some name; input.attributes.request.http.headers[name] == \"x\" }"),
        rego("allow if count(input.attributes.request.http.headers) > 1"),
        rego("allow if count(input) > 1"),
        rego("allow if { some k; input.attributes[k] }"),
        rego("http := input.attributes.request.http\nallow if http.method == \"GET\""),
        rego("import input.attributes.request.http as http_request\nallow if { some k; http_request[k] }"),
        rego("allow if input.attributes.request.time.seconds > 0"),
        rego("allow if input.svidgate.peer.ttl_remaining_s > 60"),
        rego("allow if input.attributes.metadataContext.filterMetadata"),
        rego("allow if input.attributes.source.certificate"),
        rego("allow if { input.attributes.request.http.method == \"GET\"; time.now_ns() > 0 }"),
        rego("allow if { input.attributes.request.http.method == \"GET\"; rand.intn(\"x\", 10) == 1 }"),
        rego("allow if { input.attributes.request.http.method == \"GET\"; uuid.rfc4122(\"x\") }"),
        rego("allow if { input.attributes.request.http.method == \"GET\"; print(\"seen\") }"),
    ] {
        assert_eq!(key_plan(&uncached), None, "{uncached}");
    }
    // A clock read in a package the entrypoint reaches counts; one in a package it cannot does not.
    let modules: Vec<(String, String)> = [
        ("x.rego", "package x\nimport rego.v1\nallow if data.lib.fresh"),
        ("lib.rego", "package lib\nimport rego.v1\nfresh if time.now_ns() > 0"),
        ("y.rego", "package y\nimport rego.v1\nallow if input.attributes.request.http.method == \"GET\""),
    ]
    .iter()
    .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
    .collect();
    let keys: Vec<bool> =
        InputPlan::with_keys(&modules, &["data.x.allow", "data.y.allow"]).into_iter().map(|(_, key)| key.is_some()).collect();
    assert_eq!(keys, [false, true]);
}

#[test]
fn the_key_holds_exactly_the_facts_the_policy_reads() {
    let plan = key_plan("package x\nimport rego.v1\nallow if input.attributes.request.http.headers[\"x-tenant\"] == input.attributes.request.http.method").unwrap();
    let orchestrator = peer(ORCHESTRATOR);
    let key = |pairs: &[(&str, &str)]| plan.key(&facts(&headers(pairs), &orchestrator)).unwrap();
    let base = key(&[(":method", "GET"), (":path", "/a"), ("x-tenant", "a"), ("x-request-id", "1")]);
    // Facts the policy cannot see do not change the key.
    assert_eq!(base, key(&[(":method", "GET"), (":path", "/b"), ("x-tenant", "a"), ("x-request-id", "2")]));
    // Facts it reads do; so does a repeated header (the input joins them), and its absence.
    for other in [
        key(&[(":method", "POST"), (":path", "/a"), ("x-tenant", "a")]),
        key(&[(":method", "GET"), (":path", "/a"), ("x-tenant", "b")]),
        key(&[(":method", "GET"), (":path", "/a"), ("x-tenant", "a"), ("x-tenant", "b")]),
        key(&[(":method", "GET"), (":path", "/a")]),
        key(&[(":method", "GET"), (":path", "/a"), ("x-tenant", "")]),
        // Length-prefixed: no two splits of the same bytes collide.
        key(&[(":method", "GETa"), (":path", "/a"), ("x-tenant", "")]),
    ] {
        assert_ne!(base, other);
    }
    let seed = key_plan(&SEED.replace("package envoy.authz", "package x")).unwrap();
    let (orchestrator, edge) = (peer(ORCHESTRATOR), peer(EDGE));
    let h = headers(&[(":method", "POST"), (":path", "/v1/generate")]);
    assert_ne!(seed.key(&facts(&h, &orchestrator)), seed.key(&facts(&h, &edge)), "the principal is in the key");
}

/// The seed's model server policy (`policies/seed`: `/v1/generate` at the headers,
/// `/v1/chat/completions` on the body) is cached for requests without a body, whatever their
/// `content-type`, and evaluates every request with one.
#[test]
fn a_policy_reading_the_body_is_cached_only_without_one() {
    let chat = include_str!("../../../../../policies/seed/chat.rego").replace("package envoy.authz", "package x");
    // Two modules of one package: the plan is over both.
    let modules = [
        ("authz.rego".to_owned(), SEED.replace("package envoy.authz", "package x")),
        ("chat.rego".to_owned(), chat),
    ];
    let (_, plan) = InputPlan::with_keys(&modules, &["data.x.allow"]).pop().unwrap();
    let plan = plan.unwrap();
    let orchestrator = peer(ORCHESTRATOR);
    let read = |pairs: &[(&str, &str)], raw: &[u8]| {
        let h = headers(pairs);
        let body = crate::authz::body::read(&h, &RequestBody { bytes: raw.to_vec(), received: raw.len(), truncated: false }).unwrap();
        plan.key(&RequestFacts { body: Some(&body), ..facts(&h, &orchestrator) })
    };
    let json = [(":method", "POST"), (":path", "/v1/chat/completions"), ("content-type", "application/json")];
    assert!(read(&json, br#"{"model": "m"}"#).is_none(), "a request with a body is evaluated");
    let form = [(":method", "POST"), (":path", "/v1/chat/completions"), ("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(read(&json, b""), read(&form, b""), "without a body, the content type changes nothing");
    assert!(read(&json, b"").is_some());
}

/// Every leaf of an input built with every part and every fact is covered by [`SOURCES`]: a
/// new part of the input cannot be missed by the key.
#[test]
fn every_part_of_the_input_has_a_source() {
    let orchestrator = peer(ORCHESTRATOR);
    let h = headers(&[(":method", "POST"), (":path", "/v1/x?a=1"), ("x-request-id", "1"), ("content-type", "application/json")]);
    let metadata = vec![("ns".to_owned(), regorus::Value::from_json_str(r#"{"a": 1}"#).unwrap())];
    let raw = br#"{"model": "m"}"#;
    let body = crate::authz::body::read(&h, &RequestBody { bytes: raw.to_vec(), received: raw.len(), truncated: false }).unwrap();
    let facts = RequestFacts {
        destination_address: Some("10.0.0.1:8443"),
        destination_principal: Some(EDGE),
        tls_sni: Some("sni"),
        peer_certificate: Some("-----BEGIN CERTIFICATE-----\n"),
        metadata_context: &metadata,
        body: Some(&body),
        ..facts(&h, &orchestrator)
    };
    let identity = identity_config().resolve(Ok(&orchestrator), None, &h);
    let input: serde_json::Value =
        serde_json::from_str(&build_input(&InputPlan::ALL, &facts, &identity).to_json_str().unwrap()).unwrap();
    let mut leaves = Vec::new();
    let mut stack = vec![(Vec::<String>::new(), &input)];
    while let Some((path, value)) = stack.pop() {
        match value.as_object() {
            Some(object) if !object.is_empty() => {
                stack.extend(object.iter().map(|(k, v)| ([path.as_slice(), std::slice::from_ref(k)].concat(), v)));
            }
            _ => leaves.push(path),
        }
    }
    assert!(leaves.len() > 20, "{leaves:?}");
    for leaf in leaves {
        assert!(
            SOURCES.iter().any(|(path, _)| leaf.len() >= path.len() && leaf.iter().zip(path.iter()).all(|(a, b)| a == b)),
            "input.{} has no source in the decision-cache key table",
            leaf.join(".")
        );
    }
}

fn authorizer(policy: serde_json::Value) -> Authorizer {
    let config = serde_json::json!({"trust_domains": ["ai.internal"], "policy": policy});
    let config = crate::config::Config::parse(crate::config::ModuleKind::Authz, config.to_string().as_bytes()).unwrap();
    Authorizer::new(config.policy.unwrap()).unwrap()
}

/// Decides one request; returns (allowed, whether the cache answered).
fn decide(authorizer: &Authorizer, caller: &str, pairs: &[(&str, &str)]) -> (bool, Option<bool>) {
    let (config, peer, h) = (identity_config(), peer(caller), headers(pairs));
    let identity = config.resolve(Ok(&peer), None, &h);
    let active = authorizer.policy_at(UNIX_EPOCH + Duration::from_secs(2_000)).unwrap();
    let verdict = authorizer.evaluate(&active, 0, &facts(&h, &peer), &config, identity);
    (verdict.decision.is_allow(), verdict.decision_cache)
}

#[test]
fn a_cached_decision_is_the_one_evaluation_takes() {
    let seed = authorizer(serde_json::json!({"rego": SEED, "data": serde_json::from_str::<serde_json::Value>(SEED_DATA).unwrap()}));
    let generate = [(":method", "POST"), (":path", "/v1/generate"), ("x-request-id", "1")];
    let admin = [(":method", "POST"), (":path", "/v1/admin"), ("x-request-id", "2")];
    assert_eq!(decide(&seed, ORCHESTRATOR, &generate), (true, Some(false)));
    assert_eq!(decide(&seed, ORCHESTRATOR, &generate), (true, Some(true)));
    // Another request id is the same decision; another path, caller or method is not.
    assert_eq!(decide(&seed, ORCHESTRATOR, &[(":method", "POST"), (":path", "/v1/generate"), ("x-request-id", "3")]), (true, Some(true)));
    assert_eq!(decide(&seed, ORCHESTRATOR, &admin), (false, Some(false)));
    assert_eq!(decide(&seed, ORCHESTRATOR, &admin), (false, Some(true)));
    assert_eq!(decide(&seed, EDGE, &generate), (false, Some(false)));
    assert_eq!(decide(&seed, EDGE, &generate), (false, Some(true)));
    assert_eq!(decide(&seed, ORCHESTRATOR, &[(":method", "GET"), (":path", "/v1/generate")]), (false, Some(false)));
    assert_eq!(decide(&seed, ORCHESTRATOR, &generate), (true, Some(true)));

    // Off, and for a policy reading the request id: evaluated every time.
    let off = authorizer(serde_json::json!({"rego": SEED, "data": serde_json::from_str::<serde_json::Value>(SEED_DATA).unwrap(), "decision_cache_entries": 0}));
    assert_eq!(decide(&off, ORCHESTRATOR, &generate), (true, None));
    let by_id = authorizer(serde_json::json!({"rego": "package envoy.authz\nimport rego.v1\nallow if input.attributes.request.http.id == \"1\""}));
    assert_eq!(decide(&by_id, ORCHESTRATOR, &generate), (true, None));
    assert_eq!(decide(&by_id, ORCHESTRATOR, &admin), (false, None));
}

#[test]
fn a_new_bundle_starts_with_an_empty_cache() {
    let rego = |allowed: &str| format!("package envoy.authz\nimport rego.v1\nallow if input.attributes.request.http.method == \"{allowed}\"");
    let authorizer = authorizer(serde_json::json!({"rego": rego("GET")}));
    let get = [(":method", "GET"), (":path", "/")];
    assert_eq!(decide(&authorizer, ORCHESTRATOR, &get), (true, Some(false)));
    assert_eq!(decide(&authorizer, ORCHESTRATOR, &get), (true, Some(true)));
    let bundle = Bundle {
        revision: "2".to_owned(),
        roots: vec![String::new()],
        modules: vec![("p.rego".to_owned(), rego("POST"))],
        data: serde_json::json!({}),
    };
    authorizer.activate(&bundle, UNIX_EPOCH + Duration::from_secs(2_000)).unwrap();
    assert_eq!(decide(&authorizer, ORCHESTRATOR, &get), (false, Some(false)));
}

#[test]
fn the_cache_is_bounded() {
    let cache = DecisionCache::new(KeyPlan { facts: vec![Fact::Principal] }, 2);
    for key in [b"a".to_vec(), b"b".to_vec()] {
        cache.insert(key, &regorus::Value::Bool(true));
    }
    assert_eq!(cache.len(), 2);
    // Full: it starts over.
    cache.insert(b"c".to_vec(), &regorus::Value::Bool(false));
    assert_eq!((cache.len(), cache.get(b"a"), cache.get(b"c")), (1, None, Some(regorus::Value::Bool(false))));
    // A key too long to keep is not kept.
    cache.insert(vec![b'x'; MAX_KEY_BYTES + 1], &regorus::Value::Bool(true));
    assert_eq!(cache.len(), 1);
}

/// Every policy under `policies/`, as (name, modules, data); compiled in, as the core's tests
/// also run as WASI commands without the file system. A new policy directory belongs here.
fn project_policies() -> Vec<(&'static str, serde_json::Value, serde_json::Value)> {
    macro_rules! policy {
        ($dir:literal, [$($file:literal),+]) => {
            (
                $dir,
                serde_json::json!({$($file: include_str!(concat!("../../../../../policies/", $dir, "/", $file))),+}),
                serde_json::from_str(include_str!(concat!("../../../../../policies/", $dir, "/data.json"))).unwrap(),
            )
        };
    }
    vec![
        policy!("seed", ["authz.rego", "chat.rego"]),
        policy!("orchestrator", ["authz.rego"]),
        policy!("tool-runtime", ["authz.rego"]),
        policy!("vector-store", ["authz.rego"]),
    ]
}

/// The project's policies decide a long mixed sequence of bodiless requests, with repeats, the
/// same with the cache on as evaluated every time: the key misses nothing those policies read.
#[test]
fn the_project_policies_decide_the_same_cached_and_evaluated() {
    let callers = [ORCHESTRATOR, EDGE, "spiffe://ai.internal/ns/agents/sa/code-agent", "spiffe://ai.internal/ns/pipelines/sa/ingest"];
    let methods = ["GET", "POST", "DELETE"];
    let paths = ["/v1/generate", "/v1/admin", "/v1/agent/run", "/v1/chat/completions", "/mcp", "/v1/collections/product-docs/query", "/v1/collections/product-docs/upsert", "/v1/collections/hr-records/query", "/v1/generate?x=1"];
    let tenants = [None, Some("a"), Some("b")];
    for (name, rego, data) in project_policies() {
        let cached = authorizer(serde_json::json!({"rego": rego, "data": data}));
        let evaluated = authorizer(serde_json::json!({"rego": rego, "data": data, "decision_cache_entries": 0}));
        // A fixed pseudo-random walk: the same sequence every run.
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = |n: usize| {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            usize::try_from(state >> 33).unwrap() % n
        };
        let (mut hits, mut allowed) = (0, 0);
        for i in 0..400 {
            let caller = callers[next(callers.len())];
            let mut pairs = vec![(":method", methods[next(methods.len())]), (":path", paths[next(paths.len())])];
            let id = i.to_string();
            pairs.push(("x-request-id", id.as_str()));
            if let Some(tenant) = tenants[next(tenants.len())] {
                pairs.push(("x-tenant", tenant));
            }
            let (config, peer, h) = (identity_config(), peer(caller), headers(&pairs));
            let verdict = |authorizer: &Authorizer| {
                let active = authorizer.policy_at(UNIX_EPOCH + Duration::from_secs(2_000)).unwrap();
                authorizer.evaluate(&active, 0, &facts(&h, &peer), &config, config.resolve(Ok(&peer), None, &h))
            };
            let (cached_verdict, evaluated_verdict) = (verdict(&cached), verdict(&evaluated));
            assert_eq!(
                format!("{:?}", cached_verdict.decision),
                format!("{:?}", evaluated_verdict.decision),
                "{name}: {caller} {pairs:?}"
            );
            hits += usize::from(cached_verdict.decision_cache == Some(true));
            allowed += usize::from(cached_verdict.decision.is_allow());
        }
        println!("{name}: {hits} of 400 answered from the cache, {allowed} allowed");
        assert!(hits > 100 && allowed > 0, "{name}: {hits} hits, {allowed} allowed");
    }
}
