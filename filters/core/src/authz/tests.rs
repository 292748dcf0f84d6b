//! Input planning and input shape. Decisions, result shapes and policy errors are specified by
//! the scenario corpus (tests/cases), which runs natively and through both modules.

use regorus::Value;

use super::*;
use super::body::RequestBody;
use crate::config::PolicyConfig;
use crate::decision::HeaderEdit;
use crate::headers::HeaderList;
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
    StrippedHeaders::strip(HeaderList::from_pairs(pairs.iter().copied()), &identity_config())
}

/// A leaf PEM as Envoy hands it over (`connection.peer_certificate`), shortened.
const PEER_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB+jCCAaCg/AwIBAgIU=\n-----END CERTIFICATE-----\n";

/// The request body `input_for` gives: an OpenAI-style chat request.
const BODY: &str = r#"{"model": "llama", "max_tokens": 64}"#;

fn input_for(
    plan: &InputPlan,
    headers: &StrippedHeaders,
    peer: Result<&PeerIdentity, &PeerError>,
) -> serde_json::Value {
    let metadata = vec![(
        "envoy.filters.http.jwt_authn".to_owned(),
        regorus::Value::from_json_str(r#"{"payload": {"sub": "alice"}}"#).unwrap(),
    )];
    let body = RequestBody { bytes: BODY.as_bytes().to_vec(), received: BODY.len(), truncated: false };
    let body = super::body::read(headers, &body).unwrap();
    let facts = RequestFacts {
        headers,
        peer,
        jwt_svid: None,
        source_address: Some("10.1.2.3:45678"),
        destination_address: Some("[fd00::5]:8443"),
        destination_principal: Some("spiffe://ai.internal/ns/inference/sa/model-server"),
        protocol: Some("HTTP/2"),
        tls_sni: Some("model-server.ai.internal"),
        peer_certificate: Some(PEER_PEM),
        metadata_context: &metadata,
        body: Some(&body),
        now: std::time::UNIX_EPOCH + std::time::Duration::new(1_790_000_000, 250),
    };
    let identity = identity_config().resolve(peer, None, headers);
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
    // A rule bound to a reference is read wherever rules are (the entrypoint, the result): whole.
    let p = plan("package x\nimport rego.v1\nhttp := input.attributes.request.http\nallow if http.headers.a");
    assert_eq!(p, InputPlan { headers: true, protocol: true, body: true, ..InputPlan::default() });
    let p = plan("package x\nimport rego.v1\nallow if { h := input.attributes.request; h.http.headers.a }");
    assert!(p.headers && p.protocol && p.request_time && p.body && !p.source_address);
}

#[test]
fn imports_are_followed_to_each_use() {
    // OPA-Envoy's usual import: reading headers does not make the policy wait for the body.
    let http = "package x\nimport rego.v1\nimport input.attributes.request.http as http_request\n";
    let p = plan(&format!("{http}allow if http_request.headers.a == \"x\"\nallow if http_request.method == \"GET\""));
    assert_eq!(p, InputPlan { headers: true, ..InputPlan::default() });
    let p = plan(&format!("{http}allow if http_request.body == \"x\""));
    assert_eq!(p, InputPlan { body: true, ..InputPlan::default() });
    // Used whole, or by a variable key: everything below the import.
    for use_whole in ["allow if count(http_request) > 1", "allow if { some k; http_request[k] }", "allow if object.get(http_request, \"body\", 1)"] {
        let p = plan(&format!("{http}{use_whole}"));
        assert!(p.headers && p.protocol && p.body, "{use_whole}");
    }
    // Without `as`, the import binds its last key.
    let p = plan("package x\nimport input.attributes as attrs\nimport input.parsed_body\nallow if attrs.source.address\nallow if parsed_body.model");
    assert_eq!(p, InputPlan { source_address: true, body: true, ..InputPlan::default() });
    // A package read whole can reach rules without their names: every import counts whole.
    let p = plan(&format!("{http}allow if http_request.method == \"GET\"\nall := data.x"));
    assert!(p.headers && p.body);
    let p = plan(&format!("{http}allow if http_request.method == \"GET\"\nallow if data.x[\"http_request\"].body"));
    assert!(p.body, "a name in brackets is a use too");
}

#[test]
fn an_entrypoint_plans_for_the_packages_it_can_reach() {
    let modules: Vec<(String, String)> = [
        ("mcp.rego", "package mcp\nimport rego.v1\nallow if input.parsed_body.method == \"tools/call\""),
        ("chat.rego", "package chat\nimport rego.v1\nimport data.lib.http\nallow if http.json\nallow if data.util.ok"),
        ("http.rego", "package lib.http\nimport rego.v1\njson if input.attributes.request.http.headers[\"content-type\"]"),
        ("util.rego", "package util\nimport rego.v1\nok if input.attributes.source.address"),
        ("dyn.rego", "package dyn\nimport rego.v1\nallow if data[input.parsed_path[0]].allow"),
    ]
    .iter()
    .map(|(name, source)| ((*name).to_owned(), (*source).to_owned()))
    .collect();
    let entrypoints = ["data.mcp.allow", "data.chat.allow", "data.lib", "data.dyn.allow"];
    let plans = InputPlan::for_entrypoints(&modules, &entrypoints);
    let at = |entrypoint: &str| plans[entrypoints.iter().position(|e| *e == entrypoint).unwrap()];
    assert_eq!(at("data.mcp.allow"), InputPlan { body: true, ..InputPlan::default() });
    // Through an import of another package, and a reference to a third.
    assert_eq!(at("data.chat.allow"), InputPlan { headers: true, source_address: true, ..InputPlan::default() });
    // A reference above a package (`data.lib`) reaches every package under it.
    assert_eq!(at("data.lib"), InputPlan { headers: true, ..InputPlan::default() });
    // `data[x]` can reach any package.
    assert_eq!(at("data.dyn.allow"), InputPlan { headers: true, parsed_path: true, source_address: true, body: true, ..InputPlan::default() });
    assert_eq!(at("data.dyn.allow"), InputPlan::for_modules(&modules));
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
        ("content-type", "application/json"),
        ("x-envoy-auth-partial-body", "true"),
    ]);
    let p = peer();
    let input = input_for(&InputPlan::ALL, &h, Ok(&p));
    let expected = serde_json::json!({
        "attributes": {
            "source": {
                "principal": ORCHESTRATOR,
                "address": {"socketAddress": {"address": "10.1.2.3", "portValue": 45678}},
                // Envoy's urlEncodedPemEncodedPeerCertificate: newline, space, +, / and =.
                "certificate": "-----BEGIN%20CERTIFICATE-----%0AMIIB%2BjCCAaCg%2FAwIBAgIU%3D%0A-----END%20CERTIFICATE-----%0A",
            },
            "destination": {
                "principal": "spiffe://ai.internal/ns/inference/sa/model-server",
                "address": {"socketAddress": {"address": "fd00::5", "portValue": 8443}},
            },
            // As opa-envoy-plugin builds it (protomap): `time` a Timestamp object, no `query`
            // (Envoy leaves it empty), `tlsSession.sni`; the body as ext_authz's
            // `with_request_body` sends it, and its `x-envoy-auth-partial-body` in place of the
            // client's.
            "request": {"time": {"seconds": 1_790_000_000_u64, "nanos": 250}, "http": {
                "id": "req-1",
                "method": "POST",
                "path": "/v1/gen%20erate?model=llama&model=mistral&q=a+b",
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
                    "content-type": "application/json",
                    "x-envoy-auth-partial-body": "false",
                },
                "body": BODY,
                "size": 36,
            }},
            "tlsSession": {"sni": "model-server.ai.internal"},
            "metadataContext": {"filterMetadata": {"envoy.filters.http.jwt_authn": {"payload": {"sub": "alice"}}}},
        },
        "parsed_path": ["v1", "gen erate"],
        "parsed_query": {"model": ["llama", "mistral"], "q": ["a b"]},
        "source_principal": ORCHESTRATOR,
        "truncated_body": false,
        "parsed_body": {"model": "llama", "max_tokens": 64},
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
            "source": "x509_svid",
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
fn source_certificate_only_for_a_validated_peer() {
    let h = headers(&[]);
    let plan = InputPlan { source_certificate: true, ..InputPlan::default() };
    assert_eq!(plan, InputPlan::for_modules(&[(
        "p.rego".to_owned(),
        "package p\nimport rego.v1\nallow if startswith(input.attributes.source.certificate, \"-----BEGIN\")".to_owned(),
    )]));
    // Envoy hands over the PEM of any client certificate it accepted; a peer svidgate refused
    // (here one with two URI SANs) is not a principal, and its certificate is not in the input.
    let refused = input_for(&plan, &h, Err(&PeerError::MultipleUriSans(2)));
    assert_eq!(refused["attributes"]["source"], serde_json::json!({}));
    let p = peer();
    let validated = input_for(&plan, &h, Ok(&p));
    assert!(validated["attributes"]["source"]["certificate"].as_str().is_some_and(|c| c.starts_with("-----BEGIN%20")));
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
fn policy_evaluates_to_undefined_when_no_rule_matches() {
    let modules = vec![("p.rego".into(), "package p\nimport rego.v1\nallow if input.x == 1".into())];
    let config = PolicyConfig::inline(modules, serde_json::json!({}), "data.p.allow");
    let policy = Policy::compile(&config).unwrap();
    assert_eq!(policy.evaluate(Value::from_json_str(r#"{"x": 2}"#).unwrap()), Ok(Value::Undefined));
    assert_eq!(policy.evaluate(Value::from_json_str(r#"{"x": 1}"#).unwrap()), Ok(Value::Bool(true)));
}

#[test]
fn decision_ids_are_random_version_4_uuids() {
    assert_eq!(uuid_v4([0xff; 16]), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert_eq!(uuid_v4([0; 16]), "00000000-0000-4000-8000-000000000000");
    let authorizer = Authorizer::new(PolicyConfig::inline(Vec::new(), serde_json::json!({}), "p/allow")).unwrap();
    let (a, b) = (authorizer.decision_id(), authorizer.decision_id());
    assert_ne!(a, b);
    for id in [a, b] {
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(id.chars().all(|c| c == '-' || c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{id}");
        assert_eq!(id.as_bytes()[14], b'4', "{id}");
        assert!(matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'), "{id}");
    }
}

fn decision_of(result_json: &str) -> Decision {
    let result = Value::from_json_str(result_json).unwrap_or(Value::Undefined);
    decision_for_result(&result, &identity_config(), 403)
}

#[test]
fn reads_every_result_key_of_the_opa_envoy_plugin() {
    // `headers` as a list of objects (opa-envoy-plugin's transformAnyInputToHeadersBag).
    let Decision::Allow { request_edits, response_headers } =
        decision_of(r#"{"allowed": true, "headers": [{"x-a": "1"}, {"x-a": ["2", "3"]}], "response_headers_to_add": [{"x-b": "4"}]}"#)
    else {
        panic!("denied")
    };
    let x_a = || "x-a".to_owned();
    assert_eq!(request_edits, vec![
        HeaderEdit::Set(x_a(), "1".to_owned()),
        HeaderEdit::Append(x_a(), "2".to_owned()),
        HeaderEdit::Append(x_a(), "3".to_owned()),
    ]);
    assert_eq!(response_headers, vec![("x-b".to_owned(), "4".to_owned())]);
    // Query parameter edits, applied to :path as Envoy applies them.
    let Decision::Allow { request_edits, .. } = decision_of(
        r#"{"allowed": true, "query_parameters_to_set": {"t": "b", "m": ["x", "y"]}, "query_parameters_to_remove": ["key", "t2"]}"#,
    ) else {
        panic!("denied")
    };
    let [HeaderEdit::Query(query)] = request_edits.as_slice() else { panic!("{request_edits:?}") };
    assert_eq!(query.apply("/v1/generate?key=s&m=1&z&t2=q"), "/v1/generate?m=y&t=b&z=");
    assert_eq!(query.apply("/v1/generate?key=s"), "/v1/generate?m=y&t=b");
    let remove_only = crate::decision::QueryEdit { set: Vec::new(), remove: vec!["key".to_owned()] };
    assert_eq!(remove_only.apply("/v1?key=s"), "/v1");
    // `dynamic_metadata`: an object, published as JSON on allow and deny.
    let denied = Value::from_json_str(r#"{"allowed": false, "dynamic_metadata": {"a": 1}}"#).unwrap_or(Value::Undefined);
    assert_eq!(dynamic_metadata(&denied), Ok(Some(r#"{"a":1}"#.to_owned())));
}

#[test]
fn refuses_result_values_the_opa_envoy_plugin_refuses() {
    for result in [
        r#"{"allowed": false, "http_status": 299}"#,
        r#"{"allowed": false, "http_status": 418}"#,
        r#"{"allowed": false, "http_status": 451}"#,
        r#"{"allowed": true, "dynamic_metadata": "tenant"}"#,
        r#"{"allowed": false, "dynamic_metadata": ["a"]}"#,
        r#"{"allowed": true, "query_parameters_to_remove": "key"}"#,
        r#"{"allowed": true, "query_parameters_to_set": {"a": 1}}"#,
        r#"{"allowed": true, "query_parameters_to_set": {"a": "1&admin=true"}}"#,
        r#"{"allowed": true, "query_parameters_to_set": {"a=b": "1"}}"#,
        r#"{"allowed": true, "headers": [{"x-a": 1}]}"#,
        r#"{"allowed": true, "headers": ["x-a"]}"#,
    ] {
        let decision = decision_of(result);
        assert!(
            matches!(&decision, Decision::Deny { status: 403, reason: DenyReason::InvalidResult(_), .. }),
            "{result}: {decision:?}"
        );
    }
    let Decision::Deny { status, .. } = decision_of(r#"{"allowed": false, "http_status": 429}"#) else { panic!("allowed") };
    assert_eq!(status, 429);
}

#[test]
fn the_interpreter_takes_what_the_vm_refuses_but_not_a_missing_entrypoint_or_builtin() {
    let compile = |rego: &str, entrypoint: &str| {
        let config = serde_json::json!({"policy": {"rego": rego, "entrypoint": entrypoint}, "trust_domains": ["ai.internal"]});
        let config = crate::config::Config::parse(crate::config::ModuleKind::Authz, config.to_string().as_bytes()).unwrap();
        Policy::compile(&config.policy.unwrap())
    };
    let partial = "package envoy.authz\nresult[\"allowed\"] := true\n";
    let policy = compile(partial, "envoy/authz/result").unwrap();
    assert!(policy.interpreter_reason().is_some_and(|r| !r.is_empty()), "{policy:?}");
    assert_eq!(policy.evaluate(Value::new_object()), Value::from_json_str(r#"{"allowed": true}"#).map_err(|_| unreachable!()));
    // An entrypoint no rule declares, and a builtin the build lacks, are still refused at load.
    assert!(compile(partial, "envoy/authz/resutl").is_err());
    assert!(compile("package envoy.authz\nallow if io.jwt.decode(input.t)\n", "envoy/authz/allow").is_err());
    // What the VM compiles stays on the VM.
    assert_eq!(compile("package envoy.authz\nallow := true\n", "envoy/authz/allow").unwrap().interpreter_reason(), None);
}
