use super::*;

fn identity(json: &str) -> Result<IdentityConfig, ConfigError> {
    IdentityConfig::parse(json.as_bytes())
}

fn authz(json: &str) -> Result<PolicyConfig, ConfigError> {
    Config::parse(ModuleKind::Authz, json.as_bytes()).map(|config| config.policy.unwrap())
}

fn policy(block: &str) -> Result<PolicyConfig, ConfigError> {
    authz(&format!(r#"{{"trust_domains": ["ai.internal"], "policy": {block}}}"#))
}

#[test]
fn sidecar_defaults() {
    let cfg = identity(r#"{"trust_domains": ["ai.internal"]}"#).unwrap();
    assert_eq!(cfg.mode, Mode::Sidecar);
    assert_eq!(cfg.headers, vec![DEFAULT_IDENTITY_HEADER]);
    assert_eq!(cfg.deny_status, 403);
    assert!(!cfg.require_peer);
    assert_eq!(cfg.svid.max_svid_ttl, None);
}

#[test]
fn perimeter_needs_no_trust_domain() {
    let cfg = identity(r#"{"mode": "perimeter", "identity_headers": ["X-Forwarded-SPIFFE-ID", "x-spiffe-id"]}"#).unwrap();
    assert_eq!(cfg.headers, vec!["x-forwarded-spiffe-id", "x-spiffe-id"]);
}

#[test]
fn an_empty_configuration_is_an_empty_object() {
    // As `{}`: sidecar mode, which needs trust domains.
    assert!(matches!(identity(""), Err(ConfigError::MissingTrustDomains)));
    assert!(matches!(identity("  \n"), Err(ConfigError::MissingTrustDomains)));
}

#[test]
fn refuses_bad_identity_configurations_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        ("{", "configuration does not parse"),
        ("[]", "configuration does not parse: invalid length 0, expected a json object of svidgate settings"),
        ("7", "configuration does not parse: invalid type: integer `7`, expected a json object of svidgate settings"),
        (r#"{"trust_domain": ["ai.internal"]}"#, "unknown field `trust_domain`"),
        (r#"{"mode": "edge"}"#, "mode: unknown variant `edge`"),
        (r#"{"trust_domains": "ai.internal"}"#, "trust_domains: invalid type: string \"ai.internal\", expected a sequence"),
        (r#"{"trust_domains": ["ai.internal"], "deny_status": "403"}"#, "deny_status: invalid type: string \"403\""),
        (r#"{"trust_domains": ["ai.internal"], "require_peer": 1}"#, "require_peer: invalid type: integer `1`"),
        (r#"{"trust_domains": ["ai.internal", 7]}"#, "trust_domains[1]: invalid type: integer `7`, expected a string"),
        (r#"{"identity_headers": ["a\"b", "c"], "mode": {"x": [1, {"y": 2}]}}"#, "mode.x: unknown variant `x`"),
        ("{\n  \"mode\": \"sidecar\",\n  \"deny_status\": \"x\"\n}", "deny_status: invalid type: string \"x\""),
        ("{}", "trust_domains must list at least one"),
        (r#"{"trust_domains": ["AI.internal"]}"#, "trust_domains: \"AI.internal\" is not a trust domain"),
        (r#"{"mode": "perimeter", "require_peer": true}"#, "require_peer is a sidecar option"),
        (
            r#"{"trust_domains": ["ai.internal"], "trusted_forwarders": ["spiffe://ai.internal/x/"]}"#,
            "is not a spiffe id: path must not end with '/'",
        ),
        (
            r#"{"trust_domains": ["ai.internal"], "trusted_forwarders": ["spiffe://other/x"]}"#,
            "\"spiffe://other/x\" is not in any of trust_domains",
        ),
        (r#"{"trust_domains": ["ai.internal"], "identity_headers": ["x y"]}"#, "identity_headers: \"x y\" is not a valid header"),
        (r#"{"trust_domains": ["ai.internal"], "identity_headers": [":path"]}"#, "\":path\" is not a valid header"),
        (r#"{"trust_domains": ["ai.internal"], "identity_headers": []}"#, "identity_headers: must name at least one"),
        (r#"{"trust_domains": ["ai.internal"], "max_svid_ttl": "1 hour"}"#, "max_svid_ttl: \"1 hour\" is not a duration"),
        (r#"{"trust_domains": ["ai.internal"], "deny_status": 200}"#, "deny_status: 200 is not an http error status"),
        (r#"{"trust_domains": ["ai.internal"], "policy": {}}"#, "load svidgate_authz.wasm"),
        // The identity module refuses any policy the same way, whatever it holds.
        (r#"{"trust_domains": ["ai.internal"], "policy": {"bogus": 1}}"#, "load svidgate_authz.wasm"),
    ];
    for (json, expected) in cases {
        let err = identity(json).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}: {err}");
    }
}

#[test]
fn routes_name_entrypoints_each_compiled_once() {
    let cfg = policy(r#"{"rego": "package x", "entrypoint": "x/chat", "routes": {"entrypoints": {"mcp": "x/mcp", "mcp-v2": "x.mcp", "chat": "x/chat"}}}"#).unwrap();
    let routes = cfg.routes.clone().unwrap();
    assert_eq!(routes.key, RouteKey::RouteName);
    assert!(!routes.deny_unlisted);
    assert_eq!(routes.entrypoints, [("chat", "data.x.chat"), ("mcp", "data.x.mcp"), ("mcp-v2", "data.x.mcp")].map(|(r, e)| (r.to_owned(), e.to_owned())));
    assert_eq!(cfg.entrypoints(), ["data.x.chat", "data.x.mcp"]);
    let cfg = policy(r#"{"rego": "package x", "routes": {"by": "metadata", "entrypoints": {"tools": "x/mcp"}, "unlisted": "deny"}}"#).unwrap();
    assert_eq!(cfg.routes.as_ref().map(|r| (r.key, r.deny_unlisted)), Some((RouteKey::Metadata, true)));
    assert_eq!(cfg.entrypoints(), ["data.x.mcp"], "the default entrypoint decides nothing");
}

#[test]
fn reads_the_policy_block_with_defaults() {
    let cfg = policy(r#"{"rego": "package envoy.authz\ndefault allow := false"}"#).unwrap();
    assert_eq!(cfg.modules, vec![("policy.rego".to_owned(), "package envoy.authz\ndefault allow := false".to_owned())]);
    assert_eq!(cfg.data, serde_json::json!({}));
    assert_eq!(cfg.entrypoint, DEFAULT_ENTRYPOINT);
    assert_eq!((cfg.error_status, cfg.eval_timeout, cfg.max_instructions), (403, DEFAULT_EVAL_TIMEOUT, DEFAULT_MAX_INSTRUCTIONS));
    assert!(!cfg.dry_run && cfg.decision_logs.is_none() && cfg.bundle.is_none() && cfg.max_policy_age.is_none());
    assert_eq!(cfg.decision_cache_entries, 1024);
    let cfg = policy(r#"{"rego": {"b.rego": "package b", "a.rego": "package a"}, "entrypoint": "istio/authz/allow"}"#).unwrap();
    assert_eq!(cfg.modules.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(), ["a.rego", "b.rego"]);
    assert_eq!(cfg.entrypoint, "data.istio.authz.allow");
}

#[test]
fn normalizes_entrypoints_as_opa_envoy_paths() {
    assert_eq!(normalize_entrypoint("envoy/authz/allow"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("/envoy/authz/allow/"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("envoy.authz.allow"), "data.envoy.authz.allow");
    assert_eq!(normalize_entrypoint("data.envoy.authz.allow"), "data.envoy.authz.allow");
}

#[test]
fn refuses_bad_policy_blocks_naming_the_key() {
    let cases: &[(&str, &str)] = &[
        ("{}", "policy with rego or a bundle is required"),
        (r#"{"rego": "package x", "query": "allow"}"#, "unknown field `query`"),
        (r#"{"rego": "package x", "routes": {"entrypoints": {}}}"#, "policy.routes.entrypoints: must list at least one route"),
        (r#"{"rego": "package x", "routes": {"entrypoints": {"": "x/allow"}}}"#, "route \"\" needs a name and an entrypoint"),
        (r#"{"rego": "package x", "routes": {"entrypoints": {"a": "/"}}}"#, "route \"a\" needs a name and an entrypoint"),
        (r#"{"rego": "package x", "routes": {"by": "header", "entrypoints": {"a": "x"}}}"#, "policy.routes.by: unknown variant `header`"),
        (r#"{"rego": "package x", "routes": {"entrypoints": {"a": "x"}, "unlisted": "allow"}}"#, "unknown variant `allow`"),
        (
            r#"{"rego": "package x", "entrypoint": "x/allow", "routes": {"entrypoints": {"a": "x/a"}, "unlisted": "deny"}}"#,
            "policy.entrypoint: decides nothing with policy.routes.unlisted: deny",
        ),
        (r#"{"rego": 7}"#, "policy.rego: data did not match any variant"),
        (r#"{"rego": "package x", "data": []}"#, "policy.data: must be a json object"),
        // Numbers OPA writes as written (authz/numbers.rs), in the data or a literal.
        (
            r#"{"rego": "package x\ny := sprintf(\"%v\", [data.max])", "data": {"max": 1e3}}"#,
            "policy: policy.data: the number 1e3 would be written 1000 by sprintf (OPA writes 1e3); write it as 1000",
        ),
        (r#"{"rego": "package x\ny := json.marshal([1.50])"}"#, "policy: policy.rego: the number 1.50 would be written 1.5 by json.marshal"),
        (r#"{"rego": "package x", "error_status": 302}"#, "policy.error_status: 302 is not an http error status"),
        (r#"{"rego": "package x", "eval_timeout": "0ms"}"#, "policy.eval_timeout: \"0ms\" is not a duration"),
        (r#"{"rego": "package x", "max_instructions": -1}"#, "policy.max_instructions: invalid value: integer `-1`"),
        (r#"{"rego": "package x", "decision_cache_entries": 65537}"#, "policy.decision_cache_entries: 65537 is more than 65536"),
        (r#"{"rego": "package x", "max_policy_age": "10m"}"#, "policy.max_policy_age: needs policy.bundle"),
        (r#"{"bundle": {"cluster": "b"}, "max_policy_age": "10"}"#, "policy.max_policy_age: \"10\" is not a duration"),
        (r#"{"bundle": {}}"#, "policy.bundle: missing field `cluster`"),
        (r#"{"bundle": {"cluster": ""}}"#, "policy.bundle.cluster: must name an Envoy cluster"),
        (r#"{"bundle": {"cluster": "b", "resource": "x"}}"#, "policy.bundle.resource: \"x\" must be a path"),
        (r#"{"bundle": {"cluster": "b", "min_delay": "10s", "max_delay": "5s"}}"#, "policy.bundle.max_delay: 5s is below"),
        (r#"{"bundle": {"cluster": "b", "timeout": "soon"}}"#, "policy.bundle.timeout: \"soon\" is not a duration"),
        (r#"{"bundle": {"cluster": "b", "upload_bytes": 5}}"#, "policy.bundle.upload_bytes: is a decision_logs.service"),
        (r#"{"bundle": {"cluster": "b", "polling": {}}}"#, "policy.bundle.polling: unknown field `polling`"),
        (r#"{"rego": "package x", "decision_logs": {"mask": []}}"#, "policy.decision_logs: enable console, service"),
        (r#"{"rego": "package x", "decision_logs": {"console": true, "mask": ["input/x"]}}"#, "policy.decision_logs.mask: \"input/x\" must start"),
        (r#"{"rego": "package x", "decision_logs": {"console": true, "sample_allowed": 1.5}}"#, "policy.decision_logs.sample_allowed: 1.5 is not between 0 and 1"),
        (r#"{"rego": "package x", "decision_logs": {"decision_id_header": "bad header"}}"#, "policy.decision_logs.decision_id_header: \"bad header\""),
        (r#"{"rego": "package x", "decision_logs": {"service": {"cluster": "s", "upload_bytes": 500, "max_bytes": 100}}}"#, "policy.decision_logs.service.upload_bytes: 500 must be between 1 and max_bytes (100)"),
        (r#"{"rego": "package x", "decision_logs": {"service": {"cluster": "s", "name": "n"}}}"#, "policy.decision_logs.service.name: is a policy.bundle option"),
        (r#"{"rego": "package x", "metadata_context_namespaces": ["a", ""]}"#, "policy.metadata_context_namespaces: \"\" is empty or listed twice"),
        (r#"{"rego": "package x", "metadata_context_namespaces": ["a", "a"]}"#, "policy.metadata_context_namespaces: \"a\" is empty or listed twice"),
        (r#"{"rego": "package x", "metadata_context_namespaces": "a"}"#, "policy.metadata_context_namespaces: invalid type"),
    ];
    for (block, expected) in cases {
        let err = policy(block).unwrap_err().to_string();
        assert!(err.contains(expected), "{block}: {err}");
    }
}

#[test]
fn parses_service_blocks_with_opa_defaults() {
    let cfg = policy(r#"{"bundle": {"cluster": "bundles"}, "decision_logs": {"service": {"cluster": "siem", "min_delay": "1s", "max_delay": "2s", "upload_bytes": 10, "max_bytes": 100}, "decision_id_header": "X-Decision-Id"}}"#).unwrap();
    let bundle = cfg.bundle.unwrap();
    assert_eq!(bundle.service.resource, "/bundles/bundle.tar.gz");
    assert_eq!(bundle.service.authority, "bundles");
    assert_eq!((bundle.service.min_delay, bundle.service.max_delay), BUNDLE_DELAYS);
    assert_eq!((bundle.name.as_str(), bundle.max_bytes), ("svidgate", DEFAULT_MAX_BUNDLE_BYTES));
    let logs = cfg.decision_logs.unwrap();
    assert_eq!(logs.decision_id_header.as_deref(), Some("x-decision-id"));
    assert_eq!(logs.mask, DEFAULT_MASK);
    let service = logs.service.unwrap();
    assert_eq!(service.service.resource, "/logs");
    assert_eq!((service.buffer_bytes, service.upload_bytes), (100, 10));
    assert_eq!((service.service.min_delay, service.service.max_delay), (Duration::from_secs(1), Duration::from_secs(2)));
    // A min_delay above the default max_delay moves the max up with it.
    let cfg = policy(r#"{"bundle": {"cluster": "b", "min_delay": "300s"}}"#).unwrap();
    let service = cfg.bundle.unwrap().service;
    assert_eq!((service.min_delay, service.max_delay), (Duration::from_secs(300), Duration::from_secs(300)));
}

#[test]
fn parses_durations() {
    assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("1d"), None);
    assert_eq!(parse_duration("h"), None);
    assert_eq!(parse_duration("10"), None);
}

#[test]
fn reads_the_path_guard_on_by_default() {
    let guard = |json: &str| Config::parse(ModuleKind::Identity, json.as_bytes()).map(|config| config.path_guard);
    assert_eq!(guard(r#"{"mode": "perimeter"}"#).unwrap(), PathGuard::default());
    assert!(PathGuard::default().enabled);
    assert!(!guard(r#"{"mode": "perimeter", "path_guard": false}"#).unwrap().enabled);
    assert_eq!(
        guard(r#"{"mode": "perimeter", "path_guard": {"asterisk_form": true}}"#).unwrap(),
        PathGuard { enabled: true, asterisk_form: true, authority_form: false }
    );
    for (json, expected) in [
        (r#"{"mode": "perimeter", "path_guard": "off"}"#, "path_guard: expected true, false or an object"),
        (r#"{"mode": "perimeter", "path_guard": {"asterisk": true}}"#, "path_guard: expected true, false or an object"),
    ] {
        let err = guard(json).unwrap_err().to_string();
        assert!(err.contains(expected), "{json}: {err}");
    }
}
