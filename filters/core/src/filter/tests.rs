//! The pipeline on a map-backed host: what the proxy is asked to do for a request, and the root
//! context's bundle polling. Per-request decisions with certificates are specified by the
//! scenario corpus (tests/cases), which runs this same pipeline natively and in both modules.

use std::time::{Duration, SystemTime};

use super::*;
use crate::host::memory::{HttpCallResponse, LocalReply, MemoryHost};

const T0: SystemTime = SystemTime::UNIX_EPOCH;
const PERIMETER: &str = r#"{"mode": "perimeter"}"#;

/// A configured plugin on a [`MemoryHost`], driven as the proxy drives it.
struct Plugin {
    host: MemoryHost,
    root: Root,
    next_stream: u32,
}

impl Plugin {
    fn start(kind: ModuleKind, config: &str) -> Self {
        let host = MemoryHost::new(config);
        host.with(|s| s.now = Some(T0));
        let mut root = Root::new(kind, "rev0");
        assert!(root.on_vm_start(&host));
        let configured = root.on_configure(&host);
        let plugin = Self { host, root, next_stream: 2 };
        assert!(configured, "{:?}", plugin.host.state().logs);
        plugin
    }

    /// Sends a request through the request and response phases; returns the action taken on
    /// the request headers.
    fn request(&mut self, headers: &[(&str, &str)]) -> Action {
        self.host.begin_request(headers.iter().copied());
        let mut stream = self.root.stream(self.next_stream);
        self.next_stream += 1;
        let action = stream.on_request_headers(&self.host, true);
        if action == Action::Continue {
            assert_eq!(stream.on_response_headers(&self.host), Action::Continue);
        }
        action
    }

    fn upstream_headers(&self, name: &str) -> Vec<String> {
        self.host.state().request_headers.values(name).map(str::to_owned).collect()
    }

    fn reply(&self) -> Option<LocalReply> {
        self.host.state().local_reply.clone()
    }

    fn counter(&self, counter: Counter) -> u64 {
        self.host.metric(counter.name()).unwrap_or_else(|| panic!("{} is not defined", counter.name()))
    }

    fn logs_at(&self, level: Level) -> Vec<String> {
        self.host.state().logs.iter().filter(|(l, _)| *l == level).map(|(_, m)| m.clone()).collect()
    }

    fn advance(&self, by: Duration) {
        self.host.with(|s| s.now = s.now.map(|now| now + by));
    }

    /// Runs the timer; returns the token of the HTTP call it dispatched, if any.
    fn tick(&mut self) -> Option<u32> {
        let before = self.host.state().http_calls.len();
        self.root.on_tick(&self.host);
        let calls = &self.host.state().http_calls;
        (calls.len() > before).then(|| calls.last().map(|(token, _)| *token)).flatten()
    }

    /// Delivers the answer to call `token`.
    fn respond(&mut self, token: u32, status: &str, headers: &[(&str, &str)], body: &[u8]) {
        let headers =
            [(":status", status)].into_iter().chain(headers.iter().copied()).map(|(n, v)| (n.to_owned(), v.to_owned()));
        self.deliver(token, Some(HttpCallResponse { headers: headers.collect(), body: body.to_vec() }));
    }

    /// Reports call `token` as failed without a response (reset, timeout), as Envoy does.
    fn fail(&mut self, token: u32) {
        self.deliver(token, None);
    }

    fn deliver(&mut self, token: u32, response: Option<HttpCallResponse>) {
        let size = response.as_ref().map_or(0, |response| response.body.len());
        self.host.with(|s| s.http_call_response = response);
        self.root.on_http_call_response(&self.host, token, size);
        self.host.with(|s| s.http_call_response = None);
    }
}

#[test]
fn logs_version_and_revision_once_at_vm_start() {
    let plugin = Plugin::start(ModuleKind::Identity, PERIMETER);
    let starts: Vec<String> = plugin.logs_at(Level::Info).into_iter().filter(|l| l.ends_with(" starting")).collect();
    assert_eq!(starts, [format!("svidgate_identity {} (rev0) starting", crate::VERSION)]);
}

#[test]
fn refuses_a_bad_configuration_with_one_error_line() {
    for (kind, config, expected) in [
        (ModuleKind::Identity, r#"{"mode": "edge"}"#, "svidgate_identity: configuration refused: mode: unknown variant `edge`"),
        (ModuleKind::Authz, r#"{"mode": "perimeter"}"#, "svidgate_authz: configuration refused: policy with rego or a bundle"),
    ] {
        let host = MemoryHost::new(config);
        let mut root = Root::new(kind, "rev0");
        assert!(!root.on_configure(&host), "{config}");
        let errors: Vec<String> =
            host.state().logs.iter().filter(|(l, _)| *l == Level::Error).map(|(_, m)| m.clone()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with(expected), "{errors:?}");
        assert!(root.filter().is_none());
    }
}

#[test]
fn denies_a_stream_of_an_unconfigured_plugin() {
    let host = MemoryHost::new("");
    let root = Root::new(ModuleKind::Identity, "rev0");
    host.begin_request([(":path", "/")]);
    assert_eq!(root.stream(2).on_request_headers(&host, true), Action::Pause);
    assert_eq!(host.state().local_reply.as_ref().map(|r| r.status), Some(503));
}

#[test]
fn removes_every_identity_header_and_counts_the_spoof() {
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let config = match kind {
            ModuleKind::Identity => PERIMETER.to_owned(),
            _ => r#"{"mode": "perimeter", "policy": {"rego": "package envoy.authz\ndefault allow := true"}}"#.to_owned(),
        };
        let mut plugin = Plugin::start(kind, &config);
        let action = plugin.request(&[
            (":path", "/v1/generate"),
            ("X-Forwarded-SPIFFE-ID", "spiffe://ai.internal/ns/admin/sa/root"),
            ("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/agents/sa/orchestrator"),
            ("x_forwarded_spiffe_id", "spiffe://ai.internal/ns/admin/sa/root"),
            ("accept", "*/*"),
        ]);
        assert_eq!(action, Action::Continue, "{kind:?}");
        assert!(plugin.upstream_headers("x-forwarded-spiffe-id").is_empty(), "{kind:?}");
        assert!(plugin.upstream_headers("x_forwarded_spiffe_id").is_empty(), "{kind:?}");
        assert_eq!(plugin.upstream_headers("accept"), ["*/*"]);
        assert_eq!(plugin.counter(Counter::IdentitySpoofAttempts), 1, "{kind:?}");
        assert_eq!(plugin.counter(Counter::IdentityInjected), 0, "{kind:?}");
    }
}

#[test]
fn denies_a_request_without_a_peer_when_one_is_required() {
    let mut plugin = Plugin::start(ModuleKind::Identity, r#"{"trust_domains": ["ai.internal"], "require_peer": true}"#);
    let forged = [("x-forwarded-spiffe-id", "spiffe://ai.internal/forged"), ("X_Forwarded_Spiffe_Id", "spiffe://ai.internal/forged")];
    assert_eq!(plugin.request(&[&[(":path", "/")][..], &forged].concat()), Action::Pause);
    let reply = plugin.reply().unwrap();
    assert_eq!((reply.status, reply.body.as_slice()), (403, DENIED_BODY.as_bytes()));
    assert!(plugin.upstream_headers("x-forwarded-spiffe-id").is_empty(), "stripped on the deny path too");
    assert!(plugin.upstream_headers("x_forwarded_spiffe_id").is_empty(), "variants too");
    assert_eq!(plugin.counter(Counter::IdentityDenied), 1);
    assert_eq!(plugin.counter(Counter::IdentitySpoofAttempts), 1);
    assert_eq!(plugin.logs_at(Level::Debug), ["#2 deny 403 (svidgate_no_peer_identity): no valid peer identity: no peer certificate"]);
}

#[test]
fn strips_identity_headers_on_the_error_path_too() {
    // An instruction budget no evaluation fits in: the request is denied as an error.
    let policy = "package envoy.authz\nimport rego.v1\nallow if count(input.attributes.request.http.method) > 0";
    let config = serde_json::json!({"mode": "perimeter", "policy": {"rego": policy, "max_instructions": 1}}).to_string();
    let mut plugin = Plugin::start(ModuleKind::Authz, &config);
    let action = plugin.request(&[(":method", "GET"), (":path", "/"), ("x-forwarded_spiffe-id", "forged")]);
    assert_eq!(action, Action::Pause);
    assert_eq!(plugin.counter(Counter::AuthzErrorEvaluationLimit), 1);
    assert!(plugin.upstream_headers("x-forwarded_spiffe-id").is_empty());
    assert_eq!(plugin.counter(Counter::IdentitySpoofAttempts), 1);
}

#[test]
fn refuses_a_path_not_in_normal_form_before_anything_reads_it() {
    let mut plugin = Plugin::start(ModuleKind::Identity, PERIMETER);
    assert_eq!(plugin.request(&[(":path", "/v1/agent/%2e%2e/admin"), ("x_forwarded_spiffe_id", "forged")]), Action::Pause);
    assert_eq!(plugin.reply().map(|r| r.status), Some(400));
    assert!(plugin.upstream_headers("x_forwarded_spiffe_id").is_empty());
    assert_eq!(plugin.counter(Counter::PathGuardRefused), 1);
    assert_eq!(plugin.logs_at(Level::Debug), ["#2 deny 400 (svidgate_path_not_normalized): path refused: path has a dot segment"]);
}

#[test]
fn applies_policy_header_edits_and_response_headers() {
    let policy = r#"package envoy.authz
import rego.v1
allow := {"allowed": true, "headers": {"x-tenant": ["a", "b"]}, "request_headers_to_remove": ["cookie"],
          "response_headers_to_add": {"x-policy": "seed"}}"#;
    let config = serde_json::json!({"mode": "perimeter", "policy": {"rego": policy}}).to_string();
    let mut plugin = Plugin::start(ModuleKind::Authz, &config);
    assert_eq!(plugin.request(&[(":path", "/"), ("cookie", "session=1"), ("x-tenant", "forged")]), Action::Continue);
    assert_eq!(plugin.upstream_headers("x-tenant"), ["a", "b"]);
    assert!(plugin.upstream_headers("cookie").is_empty());
    assert_eq!(plugin.host.state().response_headers.values("x-policy").collect::<Vec<_>>(), ["seed"]);
    assert_eq!(plugin.counter(Counter::AuthzAllowed), 1);
}

#[test]
fn reads_only_the_attributes_the_policy_plans_for() {
    // The policy reads the source address: the host is asked for it, and nothing else optional.
    let policy = "package envoy.authz\nimport rego.v1\nallow if input.attributes.source.address.socketAddress.address == \"10.1.2.3\"";
    let config = serde_json::json!({"mode": "perimeter", "policy": {"rego": policy}}).to_string();
    let mut plugin = Plugin::start(ModuleKind::Authz, &config);
    plugin.host.set_property(property::SOURCE_ADDRESS, "10.1.2.3:45678");
    assert_eq!(plugin.request(&[(":path", "/")]), Action::Continue);
    plugin.host.set_property(property::SOURCE_ADDRESS, "10.9.9.9:45678");
    assert_eq!(plugin.request(&[(":path", "/")]), Action::Pause);
    assert_eq!(plugin.counter(Counter::AuthzDenied), 1);
}

/// Request bodies: held only for a policy that reads them, decided at the end of the body or
/// at `max_request_bytes`, fail closed.
mod bodies {
    use super::*;

    /// The MCP shape: a per-agent tool allow-list on `tools/call`, read through the import
    /// OPA-Envoy policies use.
    const TOOLS: &str = r#"package envoy.authz
import rego.v1
import input.attributes.request.http as http_request
default allow := false
allow if {
	http_request.method == "POST"
	input.parsed_body.method == "tools/call"
	input.parsed_body.params.name in {"search_docs", "read_file"}
	not input.truncated_body
}
"#;

    fn plugin(policy: &str, limits: serde_json::Value) -> Plugin {
        let mut block = serde_json::json!({"rego": policy});
        if !limits.is_null() {
            block["with_request_body"] = limits;
        }
        Plugin::start(ModuleKind::Authz, &serde_json::json!({"mode": "perimeter", "policy": block}).to_string())
    }

    const POST: [(&str, &str); 3] = [(":method", "POST"), (":path", "/mcp"), ("content-type", "application/json")];

    fn call(tool: &str) -> Vec<u8> {
        format!(r#"{{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {{"name": "{tool}", "arguments": {{}}}}}}"#)
            .into_bytes()
    }

    /// Sends headers and then `chunks` as the proxy does, buffering while the filter pauses;
    /// returns the action of every callback.
    fn send(plugin: &mut Plugin, headers: &[(&str, &str)], chunks: &[&[u8]]) -> Vec<Action> {
        plugin.host.begin_request(headers.iter().copied());
        let mut stream = plugin.root.stream(plugin.next_stream);
        plugin.next_stream += 1;
        let mut actions = vec![stream.on_request_headers(&plugin.host, chunks.is_empty())];
        for (i, chunk) in chunks.iter().enumerate() {
            if plugin.reply().is_some() {
                break;
            }
            plugin.host.with(|s| s.request_body.extend_from_slice(chunk));
            let buffered = plugin.host.state().request_body.len();
            actions.push(stream.on_request_body(&plugin.host, buffered, i + 1 == chunks.len()));
        }
        actions
    }

    #[test]
    fn holds_the_request_and_decides_on_the_whole_body() {
        let mut plugin = plugin(TOOLS, serde_json::Value::Null);
        let body = call("read_file");
        let (head, tail) = body.split_at(10);
        let actions = send(&mut plugin, &[("x-forwarded-spiffe-id", "forged"), POST[0], POST[1], POST[2]], &[head, tail]);
        assert_eq!(actions, [Action::Pause, Action::Pause, Action::Continue]);
        assert!(plugin.upstream_headers("x-forwarded-spiffe-id").is_empty(), "stripped at the headers");
        assert_eq!(plugin.counter(Counter::AuthzBodyRequests), 1);
        assert_eq!(plugin.counter(Counter::AuthzBodyBytes), body.len() as u64);
        let denied = send(&mut plugin, &POST, &[&call("delete_repo")]);
        assert_eq!(denied, [Action::Pause, Action::Pause]);
        assert_eq!(plugin.reply().map(|r| r.status), Some(403));
        // No body at all: decided at the headers, on `parsed_body: null`.
        assert_eq!(send(&mut plugin, &POST, &[]), [Action::Pause]);
        assert_eq!(plugin.counter(Counter::AuthzDenied), 2);
    }

    #[test]
    fn a_policy_that_does_not_read_the_body_decides_at_the_headers() {
        let headers_only = "package envoy.authz
import rego.v1
import input.attributes.request.http as http_request
                            allow if http_request.headers[\"content-type\"] == \"application/json\"";
        let mut plugin = plugin(headers_only, serde_json::Value::Null);
        let actions = send(&mut plugin, &POST, &[&call("read_file")]);
        assert_eq!(actions, [Action::Continue, Action::Continue]);
        assert_eq!(plugin.counter(Counter::AuthzBodyRequests), 0);
    }

    #[test]
    fn a_body_over_the_limit_is_413_unless_partial_messages_are_allowed() {
        let body = call("read_file");
        let mut strict = plugin(TOOLS, serde_json::json!({"max_request_bytes": 32}));
        // Told by content-length: refused before any body is buffered.
        let length = body.len().to_string();
        let with_length = [POST[0], POST[1], POST[2], ("content-length", length.as_str())];
        assert_eq!(send(&mut strict, &with_length, &[&body]), [Action::Pause]);
        assert_eq!(strict.reply().map(|r| r.status), Some(413));
        // Found while buffering (chunked, HTTP/2).
        assert_eq!(send(&mut strict, &POST, &[&body[..20], &body[20..]]), [Action::Pause, Action::Pause, Action::Pause]);
        assert_eq!(strict.reply().map(|r| r.status), Some(413));
        assert_eq!(strict.counter(Counter::AuthzBodyTooLarge), 2);

        // Partial: decided on the first 32 bytes, which the policy sees as truncated (it denies).
        let mut partial = plugin(TOOLS, serde_json::json!({"max_request_bytes": 32, "allow_partial_message": true}));
        assert_eq!(send(&mut partial, &POST, &[&body[..20], &body[20..]]), [Action::Pause, Action::Pause, Action::Pause]);
        assert_eq!(partial.reply().map(|r| r.status), Some(403));
        assert_eq!(partial.counter(Counter::AuthzBodyTruncated), 1);
        assert_eq!(partial.counter(Counter::AuthzBodyBytes), 32);
        let sees_partial = r#"package envoy.authz
import rego.v1
allow if {
	input.truncated_body
	input.parsed_body == null
	input.attributes.request.http.size == 50
	count(input.attributes.request.http.body) == 32
	input.attributes.request.http.headers["x-envoy-auth-partial-body"] == "true"
}
"#;
        let mut partial = plugin(sees_partial, serde_json::json!({"max_request_bytes": 32, "allow_partial_message": true}));
        let forged = [POST[0], POST[1], POST[2], ("x-envoy-auth-partial-body", "false")];
        assert_eq!(send(&mut partial, &forged, &[&[b'x'; 50]]).last(), Some(&Action::Continue));
    }

    #[test]
    fn a_body_that_does_not_parse_is_denied_as_an_input_error() {
        let mut plugin = plugin(TOOLS, serde_json::Value::Null);
        assert_eq!(send(&mut plugin, &POST, &[b"{\"method\": \"tools/call\","]).last(), Some(&Action::Pause));
        assert_eq!(plugin.reply().map(|r| r.status), Some(400));
        assert_eq!(plugin.counter(Counter::AuthzBodyInvalid), 1);
        assert_eq!(send(&mut plugin, &POST, &[&[0xff, 0xfe]]).last(), Some(&Action::Pause), "not UTF-8");
        assert_eq!(plugin.counter(Counter::AuthzBodyInvalid), 2);
    }

    #[test]
    fn trailers_end_the_body_and_identity_denials_do_not_wait_for_it() {
        let plugin = plugin(TOOLS, serde_json::Value::Null);
        plugin.host.begin_request(POST);
        let mut stream = plugin.root.stream(90);
        assert_eq!(stream.on_request_headers(&plugin.host, false), Action::Pause);
        plugin.host.with(|s| s.request_body = call("search_docs"));
        assert_eq!(stream.on_request_body(&plugin.host, call("search_docs").len(), false), Action::Pause);
        assert_eq!(stream.on_request_trailers(&plugin.host), Action::Continue);

        let config = serde_json::json!({"mode": "sidecar", "trust_domains": ["ai.internal"], "require_peer": true, "policy": {"rego": TOOLS}})
            .to_string();
        let mut strict = Plugin::start(ModuleKind::Authz, &config);
        assert_eq!(send(&mut strict, &POST, &[&call("read_file")]), [Action::Pause]);
        assert_eq!(strict.reply().map(|r| r.status), Some(403));
        assert_eq!(strict.counter(Counter::AuthzBodyRequests), 0);
    }
}

mod bundles {
    use super::*;
    use crate::authz::bundle::tests::tar_gz;

    const PATHS: &str = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.path in data.svidgate.allowed_paths
"#;

    fn bundle(revision: &str, paths: &[&str]) -> Vec<u8> {
        let manifest = format!(r#"{{"revision": "{revision}", "roots": ["envoy/authz", "svidgate"]}}"#);
        let data = serde_json::json!({"allowed_paths": paths}).to_string();
        tar_gz(&[(".manifest", &manifest), ("envoy/authz/policy.rego", PATHS), ("svidgate/data.json", &data)])
    }

    fn plugin(policy: &str) -> Plugin {
        Plugin::start(ModuleKind::Authz, &format!(r#"{{"mode": "perimeter", "policy": {policy}}}"#))
    }

    fn reason(plugin: &Plugin) -> Option<String> {
        let logs = plugin.host.state().logs.clone();
        logs.iter().rev().find_map(|(_, m)| m.split_once("(svidgate_").map(|(_, r)| r.split(')').next().unwrap_or_default().to_owned()))
    }

    #[test]
    fn a_bundle_replaces_the_bootstrap_policy_whole() {
        let mut plugin = plugin(r#"{"rego": "package envoy.authz\ndefault allow := false", "bundle": {"cluster": "b"}}"#);
        assert_eq!(plugin.request(&[(":path", "/v1/generate")]), Action::Pause);
        assert_eq!(plugin.host.state().tick_period, Some(super::TICK));
        let token = plugin.tick().unwrap();
        assert_eq!(plugin.host.state().http_calls[0].1.cluster, "b");
        plugin.respond(token, "200", &[("etag", "\"r1\"")], &bundle("r1", &["/v1/generate"]));
        assert_eq!(plugin.counter(Counter::BundleActivated), 1);
        assert_eq!(plugin.host.metric("svidgate.authz.bundle.revision.r1"), Some(1));
        assert_eq!(plugin.request(&[(":path", "/v1/generate")]), Action::Continue);
        assert_eq!(plugin.request(&[(":path", "/v1/admin")]), Action::Pause);
    }

    #[test]
    fn a_bundle_that_does_not_compile_leaves_the_active_policy() {
        let mut plugin = plugin(r#"{"bundle": {"cluster": "b", "min_delay": "1s", "max_delay": "1s"}}"#);
        assert_eq!(plugin.request(&[(":path", "/v1/generate")]), Action::Pause);
        assert_eq!(reason(&plugin).as_deref(), Some("policy_not_ready"));
        let token = plugin.tick().unwrap();
        plugin.respond(token, "200", &[], &bundle("good", &["/v1/generate"]));
        let unknown_builtin = "package envoy.authz\nimport rego.v1\nallow if crypto.no_such_builtin(input)\n";
        for source in [unknown_builtin, "package other\nallow := true\n", "package envoy.authz\nallow if {"] {
            plugin.advance(Duration::from_secs(1));
            let token = plugin.tick().unwrap();
            let archive = tar_gz(&[(".manifest", r#"{"revision": "bad", "roots": ["envoy/authz"]}"#), ("p.rego", source)]);
            plugin.respond(token, "200", &[], &archive);
        }
        assert_eq!(plugin.counter(Counter::BundleRejected), 3);
        let errors = plugin.logs_at(Level::Error);
        assert_eq!(errors.len(), 3, "{errors:?}");
        assert!(errors.iter().all(|e| e.contains("keeping the active policy")), "{errors:?}");
        assert_eq!(plugin.request(&[(":path", "/v1/generate")]), Action::Continue);
    }

    #[test]
    fn a_bundle_carries_every_routed_entrypoint_or_is_rejected() {
        let config = r#"{"bundle": {"cluster": "b", "min_delay": "1s", "max_delay": "1s"},
                         "routes": {"entrypoints": {"gen": "envoy/authz/allow", "admin": "admin/allow"}, "unlisted": "deny"}}"#;
        let mut plugin = plugin(config);
        let admin = "package admin\nimport rego.v1\nallow if input.attributes.request.http.method == \"GET\"\n";
        let manifest = r#"{"revision": "two", "roots": ["envoy/authz", "svidgate", "admin"]}"#;
        let data = serde_json::json!({"allowed_paths": ["/v1/generate"]}).to_string();
        let both = tar_gz(&[(".manifest", manifest), ("envoy/authz/policy.rego", PATHS), ("admin/policy.rego", admin), ("svidgate/data.json", &data)]);
        for (archive, activated) in [(bundle("one", &["/v1/generate"]), 0), (both, 1)] {
            plugin.advance(Duration::from_secs(1));
            let token = plugin.tick().unwrap();
            plugin.respond(token, "200", &[], &archive);
            assert_eq!(plugin.counter(Counter::BundleActivated), activated);
        }
        assert_eq!(plugin.counter(Counter::BundleRejected), 1, "the first lacks data.admin.allow");
        assert!(plugin.logs_at(Level::Error).iter().any(|e| e.contains("data.admin.allow")), "{:?}", plugin.logs_at(Level::Error));
        for (route, path, action) in [("gen", "/v1/generate", Action::Continue), ("gen", "/v1/admin", Action::Pause), ("admin", "/v1/admin", Action::Continue)] {
            plugin.host.set_property(property::ROUTE_NAME, route);
            assert_eq!(plugin.request(&[(":method", "GET"), (":path", path)]), action, "{route} {path}");
        }
    }

    #[test]
    fn past_max_policy_age_every_request_is_denied_until_the_service_confirms() {
        let mut plugin =
            plugin(r#"{"bundle": {"cluster": "b", "min_delay": "10s", "max_delay": "10s"}, "max_policy_age": "60s"}"#);
        let token = plugin.tick().unwrap();
        plugin.respond(token, "200", &[("etag", "\"r1\"")], &bundle("r1", &["/"]));
        plugin.advance(Duration::from_secs(60));
        assert_eq!(plugin.request(&[(":path", "/")]), Action::Continue);
        // The service stops answering.
        let token = plugin.tick().unwrap();
        plugin.fail(token);
        assert_eq!(plugin.counter(Counter::BundleFetchFailed), 1);
        plugin.advance(Duration::from_secs(1));
        assert_eq!(plugin.request(&[(":path", "/")]), Action::Pause);
        assert_eq!(reason(&plugin).as_deref(), Some("policy_stale"));
        assert_eq!(plugin.counter(Counter::AuthzErrorPolicyStale), 1);
        assert_eq!(plugin.host.metric(crate::metrics::POLICY_AGE_SECONDS), Some(60));
        // It answers again: 304 confirms the active policy.
        plugin.advance(Duration::from_secs(10));
        let token = plugin.tick().unwrap();
        let polled = plugin.host.state().http_calls.last().map(|(_, call)| call.headers.clone()).unwrap_or_default();
        assert!(polled.contains(&("if-none-match".to_owned(), "\"r1\"".to_owned())), "{polled:?}");
        plugin.respond(token, "304", &[], b"");
        assert_eq!(plugin.request(&[(":path", "/")]), Action::Continue);
    }

    #[test]
    fn an_unknown_cluster_counts_as_a_failed_fetch() {
        let mut plugin = plugin(r#"{"rego": "package envoy.authz\ndefault allow := true", "bundle": {"cluster": "nowhere"}}"#);
        plugin.host.with(|s| s.clusters = Some(vec!["b".to_owned()]));
        assert_eq!(plugin.tick(), None);
        assert_eq!(plugin.counter(Counter::BundleFetchFailed), 1);
        assert_eq!(plugin.request(&[(":path", "/")]), Action::Continue, "the bootstrap policy keeps deciding");
    }

    #[test]
    fn decision_ids_reach_filter_state_the_log_and_the_response_header() {
        let mut plugin = plugin(
            r#"{"bundle": {"cluster": "b", "name": "authz"}, "decision_logs": {"console": true, "decision_id_header": "x-svidgate-decision-id"}}"#,
        );
        let token = plugin.tick().unwrap();
        plugin.respond(token, "200", &[], &bundle("r5", &[]));
        // The client's x-request-id is recorded, never taken as the decision's id.
        assert_eq!(plugin.request(&[(":path", "/v1/generate"), ("x-request-id", "req-9")]), Action::Pause);
        let reply = plugin.reply().unwrap();
        let (_, id) = reply.headers.iter().find(|(name, _)| name == "x-svidgate-decision-id").cloned().unwrap();
        assert_eq!(id.len(), 36, "a UUID: {id}");
        assert_eq!(plugin.host.state().filter_state.get(DECISION_ID_FILTER_STATE), Some(&id.clone().into_bytes()));
        let record = plugin.logs_at(Level::Info).into_iter().find(|l| l.starts_with('{')).unwrap();
        let record: serde_json::Value = serde_json::from_str(&record).unwrap();
        assert_eq!(record["bundles"], serde_json::json!({"authz": {"revision": "r5"}}));
        assert_eq!(record["decision_id"], id.as_str());
        assert_eq!(record["request_context"]["http"]["headers"]["x-request-id"], serde_json::json!(["req-9"]));
        assert_eq!(record["svidgate"]["reason"], "svidgate_policy_denied");
        // The same request id again: another decision, another id.
        plugin.request(&[(":path", "/v1/generate"), ("x-request-id", "req-9")]);
        let again = plugin.host.state().filter_state.get(DECISION_ID_FILTER_STATE).cloned().unwrap();
        assert_ne!(again, id.into_bytes());
    }

    #[test]
    fn runs_what_the_vm_refuses_on_the_interpreter_and_says_so() {
        // OPA's Envoy primer builds its result key by key; regorus's VM compiler refuses that.
        let rego = r#"package envoy.authz
import rego.v1
default allow := false
allow if input.attributes.request.http.method == "GET"
headers["x-ext-auth-allow"] := "yes" if allow
result["allowed"] := allow
result["headers"] := headers
result["http_status"] := 429 if not allow"#;
        let mut plugin = plugin(&serde_json::json!({"rego": rego, "entrypoint": "envoy/authz/result"}).to_string());
        assert_eq!(plugin.host.metric(crate::metrics::POLICY_ON_INTERPRETER), Some(1));
        let warned = plugin.logs_at(Level::Warn);
        assert!(warned.iter().any(|l| l.contains("runs on regorus's interpreter")), "{warned:?}");
        assert_eq!(plugin.request(&[(":method", "GET"), (":path", "/")]), Action::Continue);
        assert_eq!(plugin.request(&[(":method", "POST"), (":path", "/")]), Action::Pause);
        assert_eq!(plugin.reply().map(|reply| reply.status), Some(429));
    }

    #[test]
    fn publishes_dynamic_metadata_and_edits_the_query_as_envoy_would() {
        let rego = r#"package envoy.authz
allow := {"allowed": true, "dynamic_metadata": {"tenant": "blue"}, "query_parameters_to_remove": ["api_key"]}"#;
        let mut plugin = plugin(&serde_json::json!({"rego": rego}).to_string());
        assert_eq!(plugin.request(&[(":path", "/v1/generate?api_key=s3cr3t&model=m")]), Action::Continue);
        let state = plugin.host.state();
        assert_eq!(state.filter_state.get(DYNAMIC_METADATA_FILTER_STATE), Some(&br#"{"tenant":"blue"}"#.to_vec()));
        let path = state.request_headers.entries().iter().find(|(name, _)| name == ":path").map(|(_, v)| v.clone());
        assert_eq!(path.as_deref(), Some("/v1/generate?model=m"));
    }
}

/// `policy.routes`: each route decided by its own entrypoint, read from the route per request.
mod routes {
    use super::*;

    /// Two packages: the MCP route reads the body, the chat route only headers and a helper.
    const MODULES: [(&str, &str); 3] = [
        ("mcp.rego", "package mcp\nimport rego.v1\ndefault allow := false\nallow if input.parsed_body.params.name == \"search\"\n"),
        (
            "chat.rego",
            "package chat\nimport rego.v1\nimport data.lib\ndefault allow := false\nallow if lib.json(input.attributes.request.http.headers)\n",
        ),
        ("lib.rego", "package lib\nimport rego.v1\njson(headers) if headers[\"content-type\"] == \"application/json\"\n"),
    ];

    fn plugin(routes: serde_json::Value) -> Plugin {
        let rego: serde_json::Map<String, serde_json::Value> =
            MODULES.iter().map(|(name, source)| ((*name).to_owned(), (*source).into())).collect();
        let policy = serde_json::json!({"rego": rego, "entrypoint": "chat/allow", "routes": routes});
        Plugin::start(ModuleKind::Authz, &serde_json::json!({"mode": "perimeter", "policy": policy}).to_string())
    }

    const POST: [(&str, &str); 3] = [(":method", "POST"), (":path", "/x"), ("content-type", "application/json")];

    /// Headers then one body chunk on route `route` (`None`: no route matched).
    fn send(plugin: &mut Plugin, route: Option<&str>, body: &[u8]) -> Vec<Action> {
        plugin.host.with(|s| match route {
            Some(route) => s.properties.insert(property::ROUTE_NAME.iter().map(|p| (*p).to_owned()).collect(), route.into()),
            None => s.properties.remove(&property::ROUTE_NAME.iter().map(|p| (*p).to_owned()).collect::<Vec<_>>()),
        });
        plugin.host.begin_request(POST);
        let mut stream = plugin.root.stream(plugin.next_stream);
        plugin.next_stream += 1;
        let mut actions = vec![stream.on_request_headers(&plugin.host, false)];
        if plugin.reply().is_none() {
            plugin.host.with(|s| s.request_body.extend_from_slice(body));
            actions.push(stream.on_request_body(&plugin.host, body.len(), true));
        }
        actions
    }

    const SEARCH: &[u8] = br#"{"method": "tools/call", "params": {"name": "search"}}"#;

    #[test]
    fn each_route_is_decided_by_its_entrypoint_and_only_the_body_route_waits() {
        let mut plugin = plugin(serde_json::json!({"entrypoints": {"mcp": "data.mcp.allow", "mcp-v2": "mcp.allow"}}));
        // The MCP route holds the request for its body; the chat route (the default
        // entrypoint, which reads headers through a helper package) decides at the headers.
        assert_eq!(send(&mut plugin, Some("mcp"), SEARCH), [Action::Pause, Action::Continue]);
        assert_eq!(send(&mut plugin, Some("mcp-v2"), SEARCH), [Action::Pause, Action::Continue]);
        assert_eq!(send(&mut plugin, Some("mcp"), br#"{"method": "tools/call", "params": {"name": "shell"}}"#), [Action::Pause, Action::Pause]);
        assert_eq!(plugin.reply().map(|r| r.status), Some(403));
        assert_eq!(send(&mut plugin, Some("chat"), SEARCH), [Action::Continue, Action::Continue]);
        assert_eq!(send(&mut plugin, None, SEARCH), [Action::Continue, Action::Continue]);
        assert_eq!(plugin.counter(Counter::AuthzBodyRequests), 3);
        assert_eq!((plugin.counter(Counter::AuthzAllowed), plugin.counter(Counter::AuthzDenied)), (4, 1));
        let configured = plugin.logs_at(Level::Info);
        assert!(configured.iter().any(|l| l.contains(r#"entrypoints ["data.chat.allow", "data.mcp.allow"]"#)), "{configured:?}");
    }

    #[test]
    fn routes_not_listed_can_be_denied() {
        let mut plugin = Plugin::start(
            ModuleKind::Authz,
            &serde_json::json!({"mode": "perimeter", "policy": {
                "rego": {"mcp.rego": MODULES[0].1},
                "routes": {"entrypoints": {"mcp": "mcp/allow"}, "unlisted": "deny"},
            }})
            .to_string(),
        );
        assert_eq!(send(&mut plugin, Some("mcp"), SEARCH), [Action::Pause, Action::Continue]);
        for route in [Some("admin"), Some(""), None] {
            assert_eq!(send(&mut plugin, route, SEARCH), [Action::Pause], "{route:?}");
            assert_eq!(plugin.reply().map(|r| r.status), Some(403), "{route:?}");
        }
        let denials = plugin.logs_at(Level::Debug);
        assert_eq!(denials.iter().filter(|l| l.contains("deny 403 (svidgate_route_not_listed)")).count(), 3, "{denials:?}");
        assert_eq!(plugin.counter(Counter::AuthzDenied), 3);
    }

    #[test]
    fn a_route_can_name_its_entry_in_its_metadata() {
        let mut plugin = plugin(serde_json::json!({"by": "metadata", "entrypoints": {"tools": "mcp.allow"}}));
        plugin.host.set_property(property::ROUTE_POLICY, "tools");
        plugin.host.set_property(property::ROUTE_NAME, "chat");
        assert_eq!(send_on_metadata(&mut plugin), [Action::Pause, Action::Continue]);
    }

    fn send_on_metadata(plugin: &mut Plugin) -> Vec<Action> {
        plugin.host.begin_request(POST);
        let mut stream = plugin.root.stream(plugin.next_stream);
        plugin.next_stream += 1;
        let first = stream.on_request_headers(&plugin.host, false);
        plugin.host.with(|s| s.request_body.extend_from_slice(SEARCH));
        vec![first, stream.on_request_body(&plugin.host, SEARCH.len(), true)]
    }

    #[test]
    fn a_policy_without_a_routed_entrypoint_is_refused_at_load() {
        let host = MemoryHost::new(
            serde_json::json!({"mode": "perimeter", "policy": {
                "rego": {"mcp.rego": MODULES[0].1},
                "routes": {"entrypoints": {"mcp": "mcp/allow", "chat": "chat/allow"}, "unlisted": "deny"},
            }})
            .to_string(),
        );
        let mut root = Root::new(ModuleKind::Authz, "rev0");
        assert!(root.on_vm_start(&host));
        assert!(!root.on_configure(&host));
        let errors: Vec<String> = host.state().logs.iter().filter(|(l, _)| *l == Level::Error).map(|(_, m)| m.clone()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].contains("data.chat.allow: "), "{errors:?}");
    }
}

/// JWT-SVIDs as the identity of requests on connections without a client certificate, with
/// tokens and bundles minted by Python's `cryptography` (jwt_svid/testdata/mint.py).
mod jwt_svid {
    use serde_json::{Value, json};

    use super::*;
    use crate::jwt_svid::testdata::{bearer as token, block, cases, now};

    /// A sidecar of `kind` taking JWT-SVIDs, with `jwt_svid` merged over the minted bundle inline.
    fn plugin(kind: ModuleKind, jwt_svid: Value) -> Plugin {
        let mut config = json!({"trust_domains": ["ai.internal"], "jwt_svid": block(jwt_svid)});
        if kind == ModuleKind::Authz {
            // Allows the JWT-SVID's caller only, from attributes.source.principal as OPA-Envoy policies read it.
            let rego = "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.attributes.source.principal == \"spiffe://ai.internal/ns/agents/sa/orchestrator\"\nallow if input.svidgate.source == \"nobody\"\n";
            config["policy"] = json!({"rego": rego});
        }
        let plugin = Plugin::start(kind, &config.to_string());
        plugin.host.with(|s| s.now = Some(now()));
        plugin
    }

    #[test]
    fn a_valid_token_is_the_identity_and_does_not_go_upstream() {
        for kind in [ModuleKind::Identity, ModuleKind::Authz] {
            let mut plugin = plugin(kind, json!({}));
            let valid = token("es256");
            let action = plugin.request(&[(":path", "/v1/generate"), ("authorization", &valid), ("x-forwarded-spiffe-id", "spiffe://ai.internal/forged")]);
            assert_eq!(action, Action::Continue, "{kind:?}: {:?}", plugin.host.state().logs);
            assert_eq!(plugin.upstream_headers("x-forwarded-spiffe-id"), ["spiffe://ai.internal/ns/agents/sa/orchestrator"], "{kind:?}");
            assert!(plugin.upstream_headers("authorization").is_empty(), "{kind:?}: the token is stripped");
            assert_eq!(plugin.counter(Counter::JwtSvidAccepted), 1, "{kind:?}");
            assert_eq!(plugin.counter(Counter::IdentityInjected), 1, "{kind:?}");
            assert_eq!(plugin.counter(Counter::IdentitySpoofAttempts), 1, "{kind:?}");
        }
    }

    #[test]
    fn forward_token_leaves_the_token_for_the_upstream() {
        let mut plugin = plugin(ModuleKind::Identity, json!({"forward_token": true}));
        let valid = token("rs256");
        assert_eq!(plugin.request(&[(":path", "/"), ("authorization", &valid)]), Action::Continue);
        assert_eq!(plugin.upstream_headers("authorization"), [valid]);
        assert_eq!(plugin.upstream_headers("x-forwarded-spiffe-id"), ["spiffe://ai.internal/ns/agents/sa/orchestrator"]);
    }

    #[test]
    fn each_bad_token_is_denied_with_its_own_reason_and_counter() {
        for kind in [ModuleKind::Identity, ModuleKind::Authz] {
            let mut plugin = plugin(kind, json!({}));
            for (case, code, counter) in [
                ("tampered claims", "svidgate_jwt_svid_forged", Counter::JwtSvidForged),
                ("expired", "svidgate_jwt_svid_expired", Counter::JwtSvidExpired),
                ("wrong audience", "svidgate_jwt_svid_wrong_audience", Counter::JwtSvidWrongAudience),
                ("foreign trust domain", "svidgate_jwt_svid_foreign_trust_domain", Counter::JwtSvidForeignTrustDomain),
                ("alg none", "svidgate_jwt_svid_forged", Counter::JwtSvidForged),
                ("no exp", "svidgate_jwt_svid_malformed", Counter::JwtSvidMalformed),
            ] {
                let bad = token(case);
                let action = plugin.request(&[(":path", "/"), ("Authorization", &bad)]);
                assert_eq!(action, Action::Pause, "{kind:?} {case}");
                assert_eq!(plugin.reply().map(|reply| reply.status), Some(403), "{kind:?} {case}");
                assert_eq!(plugin.counter(counter), if case == "alg none" { 2 } else { 1 }, "{kind:?} {case}");
                let logged = plugin.logs_at(Level::Debug);
                assert!(logged.last().is_some_and(|line| line.contains(&format!("({code}): invalid jwt-svid"))), "{kind:?} {case}: {logged:?}");
            }
            assert_eq!(plugin.counter(Counter::IdentityDenied), 6, "{kind:?}");
            assert_eq!(plugin.counter(Counter::JwtSvidAccepted), 0, "{kind:?}");
            // Two tokens, or a token without its scheme: malformed, never one of them picked.
            let valid = token("es256");
            let action = plugin.request(&[(":path", "/"), ("authorization", &valid), ("authorization", &valid)]);
            assert_eq!((action, plugin.counter(Counter::JwtSvidMalformed)), (Action::Pause, 2), "{kind:?}");
            let action = plugin.request(&[(":path", "/"), ("authorization", valid.trim_start_matches("Bearer "))]);
            assert_eq!((action, plugin.counter(Counter::JwtSvidMalformed)), (Action::Pause, 3), "{kind:?}");
        }
    }

    #[test]
    fn without_a_token_the_identity_rules_are_unchanged() {
        let mut plugin = plugin(ModuleKind::Identity, json!({}));
        assert_eq!(plugin.request(&[(":path", "/")]), Action::Continue, "require_peer is off");
        assert!(plugin.upstream_headers("x-forwarded-spiffe-id").is_empty());
        assert_eq!(plugin.counter(Counter::JwtSvidAccepted), 0);
    }

    #[test]
    fn a_polled_bundle_replaces_the_inline_one_and_a_bad_one_leaves_it() {
        let cases = cases();
        let endpoints = json!({"bundle_endpoints": {"ai.internal": {"cluster": "spire_bundle", "min_delay": "10s", "max_delay": "10s"}}});
        let mut plugin = plugin(ModuleKind::Identity, endpoints);
        assert_eq!(plugin.host.state().tick_period, Some(super::TICK));
        let valid = token("es256");
        // The bundle endpoint's first answer is refused: the inline bundle stays in force.
        let first = plugin.tick().unwrap();
        assert_eq!(plugin.host.state().http_calls[0].1.cluster, "spire_bundle");
        plugin.respond(first, "200", &[], br#"{"keys": []}"#);
        assert_eq!(plugin.counter(Counter::JwtBundleRejected), 1);
        assert_eq!(plugin.request(&[(":path", "/"), ("authorization", &valid)]), Action::Continue);
        // A failed poll leaves it too.
        plugin.advance(Duration::from_secs(10));
        let failed = plugin.tick().unwrap();
        plugin.fail(failed);
        assert_eq!(plugin.counter(Counter::JwtBundleFetchFailed), 1);
        assert_eq!(plugin.request(&[(":path", "/"), ("authorization", &valid)]), Action::Continue);
        // The key that signed the token rotated out: the token no longer verifies.
        let mut rotated = cases["bundle"].clone();
        rotated["keys"].as_array_mut().unwrap().retain(|key| key["kid"] == "rsa");
        plugin.advance(Duration::from_secs(10));
        let update = plugin.tick().unwrap();
        plugin.respond(update, "200", &[("etag", "\"s8\"")], rotated.to_string().as_bytes());
        assert_eq!(plugin.counter(Counter::JwtBundleUpdated), 1);
        assert!(plugin.logs_at(Level::Info).iter().any(|line| line.contains("jwt bundle of ai.internal from cluster spire_bundle in force") && line.contains("keys [rsa]")));
        assert_eq!(plugin.request(&[(":path", "/"), ("authorization", &valid)]), Action::Pause);
        assert_eq!(plugin.counter(Counter::JwtSvidForged), 1);
        assert_eq!(plugin.request(&[(":path", "/"), ("authorization", &token("rs256"))]), Action::Continue);
        // Later polls ask whether that bundle changed.
        plugin.advance(Duration::from_secs(10));
        plugin.tick().unwrap();
        let asked = plugin.host.state().http_calls.last().map(|(_, call)| call.headers.clone()).unwrap_or_default();
        assert!(asked.contains(&("if-none-match".to_owned(), "\"s8\"".to_owned())), "{asked:?}");
    }
}
