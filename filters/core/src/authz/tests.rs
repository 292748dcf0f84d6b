//! Input planning and input shape. Decisions, result shapes and policy errors are specified by
//! the scenario corpus (tests/cases), which runs natively and through both modules.

use regorus::Value;

use super::*;
use crate::identity::StrippedHeaders;
use crate::peer::{PeerError, PeerIdentity};
use crate::spiffe::SpiffeId;

const SEED: &str = include_str!("../../../../policies/seed/authz.rego");
const ORCHESTRATOR: &str = "spiffe://ai.internal/ns/agents/sa/orchestrator";

fn plan(source: &str) -> InputPlan {
    InputPlan::for_modules(&[("p.rego".to_owned(), source.to_owned())])
}

fn identity_config() -> IdentityConfig {
    IdentityConfig::parse(br#"{"trust_domains": ["ai.internal"]}"#).unwrap()
}

fn peer() -> PeerIdentity {
    PeerIdentity {
        spiffe_id: SpiffeId::parse(ORCHESTRATOR).unwrap(),
        not_before: 1_000,
        not_after: 4_600,
        ttl_remaining_s: 3_000,
    }
}

fn headers(pairs: &[(&str, &str)]) -> StrippedHeaders {
    let pairs = pairs.iter().map(|(n, v)| ((*n).to_owned(), (*v).to_owned())).collect();
    StrippedHeaders::strip(pairs, &identity_config())
}

fn input_for(
    plan: &InputPlan,
    headers: &StrippedHeaders,
    peer: Result<&PeerIdentity, &PeerError>,
) -> serde_json::Value {
    let facts = RequestFacts {
        headers,
        peer,
        source_address: Some("10.1.2.3:45678"),
        destination_address: Some("[fd00::5]:8443"),
        destination_principal: Some("spiffe://ai.internal/ns/inference/sa/model-server"),
        protocol: Some("HTTP/2"),
        now: std::time::SystemTime::now(),
    };
    let identity = identity_config().resolve(peer, headers);
    serde_json::from_str(&build_input(plan, &facts, &identity).to_json_str().unwrap()).unwrap()
}

#[test]
fn seed_policy_needs_no_headers_or_addresses() {
    assert_eq!(plan(SEED), InputPlan::default());
}

#[test]
fn header_reads_need_the_header_map() {
    let p = plan(
        r#"package x
        import rego.v1
        allow if input.attributes.request.http.headers["x-tenant"] == "a""#,
    );
    assert_eq!(p, InputPlan { headers: true, ..InputPlan::default() });
}

#[test]
fn prefix_references_keep_everything_below_them() {
    let p = plan("package x\nimport rego.v1\nhttp := input.attributes.request.http\nallow if http.headers.a");
    assert_eq!(p, InputPlan { headers: true, protocol: true, ..InputPlan::default() });
    let p = plan("package x\nimport input.attributes as attrs\nallow if attrs.source.address");
    assert!(p.headers && p.source_address && p.destination_principal && !p.parsed_query);
}

#[test]
fn whole_input_and_dynamic_keys_keep_everything() {
    assert_eq!(plan("package x\nimport rego.v1\nallow if count(input) > 0"), InputPlan::ALL);
    let p = plan("package x\nimport rego.v1\nallow if { some k; input.attributes[k] }");
    assert!(p.headers && p.source_address && p.destination_address && p.protocol && !p.svidgate);
}

#[test]
fn comments_and_strings_do_not_count_as_references() {
    let p = plan("package x\nimport rego.v1\n# input.attributes.request.http.headers\nallow if \"input\" == \"input\"");
    assert_eq!(p, InputPlan::default());
}

#[test]
fn builds_opa_envoy_v3_input() {
    let h = headers(&[
        (":method", "POST"),
        (":path", "/v1/gen%20erate?model=llama&model=mistral&q=a+b"),
        (":authority", "model-server.ai.internal"),
        (":scheme", "https"),
        ("x-request-id", "req-1"),
        ("accept", "a"),
        ("accept", "b"),
        ("x-forwarded-spiffe-id", "spiffe://ai.internal/forged"),
    ]);
    let p = peer();
    let input = input_for(&InputPlan::ALL, &h, Ok(&p));
    let expected = serde_json::json!({
        "attributes": {
            "source": {
                "principal": ORCHESTRATOR,
                "address": {"socketAddress": {"address": "10.1.2.3", "portValue": 45678}},
            },
            "destination": {
                "principal": "spiffe://ai.internal/ns/inference/sa/model-server",
                "address": {"socketAddress": {"address": "fd00::5", "portValue": 8443}},
            },
            "request": {"http": {
                "id": "req-1",
                "method": "POST",
                "path": "/v1/gen%20erate?model=llama&model=mistral&q=a+b",
                "query": "model=llama&model=mistral&q=a+b",
                "host": "model-server.ai.internal",
                "scheme": "https",
                "protocol": "HTTP/2",
                "headers": {
                    ":method": "POST",
                    ":path": "/v1/gen%20erate?model=llama&model=mistral&q=a+b",
                    ":authority": "model-server.ai.internal",
                    ":scheme": "https",
                    "x-request-id": "req-1",
                    "accept": "a,b",
                },
            }},
        },
        "parsed_path": ["v1", "gen erate"],
        "parsed_query": {"model": ["llama", "mistral"], "q": ["a b"]},
        "source_principal": ORCHESTRATOR,
        "truncated_body": false,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
        "svidgate": {
            "peer": {
                "spiffe_id": ORCHESTRATOR,
                "trust_domain": "ai.internal",
                "path": "/ns/agents/sa/orchestrator",
                "not_before": 1000,
                "not_after": 4600,
                "ttl_remaining_s": 3000,
            },
            "caller": ORCHESTRATOR,
            "forwarded": false,
        },
    });
    assert_eq!(input, expected);
}

#[test]
fn minimal_plan_leaves_out_optional_parts_and_principal_without_peer() {
    let h = headers(&[(":method", "GET"), (":path", "/healthz")]);
    let input = input_for(&InputPlan::default(), &h, Err(&PeerError::NoCertificate));
    let expected = serde_json::json!({
        "attributes": {
            "source": {},
            "destination": {},
            "request": {"http": {"id": "", "method": "GET", "path": "/healthz", "host": "", "scheme": ""}},
        },
        "truncated_body": false,
        "version": {"encoding": "protojson", "ext_authz": "v3"},
    });
    assert_eq!(input, expected);
}

#[test]
fn svidgate_namespace_reports_why_there_is_no_peer() {
    let h = headers(&[]);
    let plan = InputPlan { svidgate: true, ..InputPlan::default() };
    let input = input_for(&plan, &h, Err(&PeerError::MultipleUriSans(2)));
    assert_eq!(
        input["svidgate"],
        serde_json::json!({"peer_error": "peer certificate has 2 uri sans, an svid has exactly one", "forwarded": false})
    );
}

#[test]
fn entrypoints_accept_opa_envoy_path_syntax() {
    assert_eq!(normalize_entrypoint("envoy/authz/allow"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("/envoy/authz/allow"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("envoy.authz.allow"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("data.envoy.authz.allow"), "data.envoy.authz.allow");
}

#[test]
fn policy_evaluates_to_undefined_when_no_rule_matches() {
    let modules = vec![("p.rego".into(), "package p\nimport rego.v1\nallow if input.x == 1".into())];
    let config = PolicyConfig::inline(modules, serde_json::json!({}), "data.p.allow");
    let policy = Policy::compile(&config).unwrap();
    assert_eq!(policy.evaluate(Value::from_json_str(r#"{"x": 2}"#).unwrap()), Ok(Value::Undefined));
    assert_eq!(policy.evaluate(Value::from_json_str(r#"{"x": 1}"#).unwrap()), Ok(Value::Bool(true)));
}

mod bundles {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::authz::bundle::tests::tar_gz;

    const T0: SystemTime = SystemTime::UNIX_EPOCH;
    const ALLOW_LISTED: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.source.principal in data.svidgate.allowed_callers
"#;

    fn authorizer(policy: &str) -> Authorizer {
        let config = format!(r#"{{"trust_domains": ["ai.internal"], "policy": {policy}}}"#);
        Authorizer::new(AuthzConfig::parse(config.as_bytes()).unwrap()).unwrap()
    }

    fn decide(authorizer: &Authorizer, now: SystemTime) -> Verdict {
        let headers = headers(&[(":path", "/v1/generate"), ("x-request-id", "req-9")]);
        let peer = peer();
        let facts = RequestFacts {
            headers: &headers,
            peer: Ok(&peer),
            source_address: None,
            destination_address: None,
            destination_principal: None,
            protocol: None,
            now,
        };
        authorizer.decide(&facts)
    }

    fn bundle(revision: &str, callers: &[&str]) -> Bundle {
        let manifest = format!(r#"{{"revision": "{revision}", "roots": ["envoy/authz", "svidgate"]}}"#);
        let data = serde_json::json!({"allowed_callers": callers}).to_string();
        let archive = tar_gz(&[
            (".manifest", &manifest),
            ("envoy/authz/policy.rego", ALLOW_LISTED),
            ("svidgate/data.json", &data),
        ]);
        Bundle::from_tar_gz(&archive, 1 << 20).unwrap()
    }

    fn reason(verdict: &Verdict) -> Option<&DenyReason> {
        match &verdict.decision {
            Decision::Deny { reason, .. } => Some(reason),
            Decision::Allow { .. } => None,
        }
    }

    #[test]
    fn a_bundle_replaces_the_bootstrap_policy_whole() {
        let authorizer =
            authorizer(r#"{"rego": "package envoy.authz\ndefault allow := false", "bundle": {"cluster": "b"}}"#);
        assert_eq!(reason(&decide(&authorizer, T0)), Some(&DenyReason::PolicyDenied));
        assert_eq!(authorizer.revision(), None);
        authorizer.activate(&bundle("r1", &[ORCHESTRATOR]), T0).unwrap();
        assert_eq!(authorizer.revision().as_deref(), Some("r1"));
        assert!(decide(&authorizer, T0).decision.is_allow());
        // The plan follows the active policy: the bundle reads the source principal, not headers.
        assert_eq!(authorizer.input_plan(), InputPlan::default());
        authorizer.activate(&bundle("r2", &[]), T0).unwrap();
        assert_eq!(reason(&decide(&authorizer, T0)), Some(&DenyReason::PolicyDenied));
    }

    #[test]
    fn a_bundle_that_does_not_compile_leaves_the_active_policy() {
        let authorizer = authorizer(r#"{"bundle": {"cluster": "b"}}"#);
        assert_eq!(reason(&decide(&authorizer, T0)), Some(&DenyReason::PolicyNotReady));
        authorizer.activate(&bundle("good", &[ORCHESTRATOR]), T0).unwrap();
        let unknown_builtin = "package envoy.authz\nimport rego.v1\nallow if crypto.no_such_builtin(input)\n";
        let wrong_package = "package other\nimport rego.v1\nallow := true\n";
        for (source, expected) in [
            (unknown_builtin, "Compile"),
            (wrong_package, "OutsideRoots"),
            ("package envoy.authz\nallow if {", "Compile"),
        ] {
            let archive =
                tar_gz(&[(".manifest", r#"{"revision": "bad", "roots": ["envoy/authz"]}"#), ("p.rego", source)]);
            let error = authorizer.activate(&Bundle::from_tar_gz(&archive, 1 << 20).unwrap(), T0).unwrap_err();
            assert!(format!("{error:?}").starts_with(expected), "{source}: {error:?}");
        }
        let no_entrypoint = tar_gz(&[("p.rego", "package envoy.other\nallow := true\n")]);
        assert!(authorizer.activate(&Bundle::from_tar_gz(&no_entrypoint, 1 << 20).unwrap(), T0).is_err());
        assert_eq!(authorizer.revision().as_deref(), Some("good"));
        assert!(decide(&authorizer, T0).decision.is_allow());
    }

    #[test]
    fn past_max_policy_age_every_request_is_denied_until_the_service_confirms() {
        let authorizer = authorizer(r#"{"bundle": {"cluster": "b"}, "max_policy_age": "60s"}"#);
        authorizer.activate(&bundle("r1", &[ORCHESTRATOR]), T0).unwrap();
        assert!(decide(&authorizer, T0 + Duration::from_secs(60)).decision.is_allow());
        let stale = decide(&authorizer, T0 + Duration::from_secs(61));
        assert!(matches!(reason(&stale), Some(DenyReason::PolicyStale(_))), "{stale:?}");
        assert!(stale.events().contains(&Counter::AuthzErrors));
        assert_eq!(authorizer.policy_age(T0 + Duration::from_secs(61)), Duration::from_secs(61));
        authorizer.confirm(T0 + Duration::from_secs(62));
        assert!(decide(&authorizer, T0 + Duration::from_secs(63)).decision.is_allow());
    }

    #[test]
    fn refuses_bundle_options_without_a_bundle() {
        let parse = |policy: &str| {
            AuthzConfig::parse(format!(r#"{{"trust_domains": ["ai.internal"], "policy": {policy}}}"#).as_bytes())
                .map(|_| ())
        };
        assert!(matches!(
            parse(r#"{"rego": "package x", "max_policy_age": "5m"}"#),
            Err(ConfigError::InvalidService { .. })
        ));
        assert!(matches!(parse(r#"{"data": {}}"#), Err(ConfigError::MissingPolicy)));
        assert!(parse(r#"{"bundle": {"cluster": "b"}, "max_policy_age": "later"}"#).is_err());
    }

    #[test]
    fn decision_ids_reach_logs_and_the_response_header() {
        let authorizer = authorizer(
            r#"{"bundle": {"cluster": "b", "name": "authz"}, "decision_logs": {"console": true, "decision_id_header": "x-svidgate-decision-id"}}"#,
        );
        authorizer.activate(&bundle("r5", &[]), T0).unwrap();
        let verdict = decide(&authorizer, T0);
        assert_eq!(verdict.decision_id.as_deref(), Some("req-9"));
        let Decision::Deny { headers, .. } = &verdict.decision else { panic!("{verdict:?}") };
        assert!(headers.contains(&("x-svidgate-decision-id".to_owned(), "req-9".to_owned())));
        let record: serde_json::Value = serde_json::from_str(verdict.decision_log.as_deref().unwrap()).unwrap();
        assert_eq!(record["bundles"], serde_json::json!({"authz": {"revision": "r5"}}));
        assert_eq!(record["decision_id"], "req-9");
    }
}
