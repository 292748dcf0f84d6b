//! Behaviour of the built modules that a single request cannot show: the per-certificate cache,
//! the clock, metrics and logs across requests. The per-request decisions are in tests/cases.

use anyhow::{Context, Result, ensure};
use svidgate_core::metrics::{Counter, DECISION_LATENCY_US};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::{Action, HttpCall, LogLevel, Plugin, PluginOptions};
use svidgate_testpki::{GATEWAY, Issued, ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa, Workload};

const IDENTITY_CONFIG: &str = r#"{"trust_domains": ["ai.internal"], "require_peer": true}"#;
const AUTHZ_CONFIG: &str = r#"{"trust_domains": ["ai.internal"], "require_peer": true,
    "policy": {"rego": "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\""}}"#;

/// `AUTHZ_CONFIG` with the decision cache off: every request evaluated.
fn authz_config_evaluated() -> String {
    AUTHZ_CONFIG.replace(r#""policy": {"#, r#""policy": {"decision_cache_entries": 0, "#)
}

/// The configuration of `kind` in the tests that run both modules.
fn config_of(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Identity => IDENTITY_CONFIG,
        ModuleKind::Authz => AUTHZ_CONFIG,
    }
}

fn start(kind: ModuleKind, config: &str) -> Result<Plugin> {
    let plugin = kind
        .module()?
        .start(PluginOptions { plugin_config: config.as_bytes().to_vec(), ..PluginOptions::default() })?;
    ensure!(plugin.configured(), "not configured: {:?}", plugin.logs());
    Ok(plugin)
}

/// `kind` with its test configuration under Envoy log level `level`.
fn start_at_level(kind: ModuleKind, level: LogLevel) -> Result<Plugin> {
    let options =
        PluginOptions { plugin_config: config_of(kind).as_bytes().to_vec(), log_level: Some(level), ..PluginOptions::default() };
    kind.module()?.start(options)
}

/// Sets the properties Envoy derives from a client certificate of `workload`.
fn present(plugin: &mut Plugin, svid: &Issued, workload: Workload) {
    plugin.set_property(&["connection", "peer_certificate"], svid.cert_pem.clone());
    plugin.set_property(&["connection", "sha256_peer_certificate_digest"], svid.sha256_hex());
    plugin.set_property(&["connection", "uri_san_peer_certificate"], workload.spiffe_id);
}

/// Sends a GET and returns whether it went upstream and the fuel it burned.
fn get(plugin: &mut Plugin, headers: &[(&str, &str)]) -> Result<(bool, u64)> {
    let mut request = vec![(":method", "GET"), (":path", "/"), (":authority", "model-server"), (":scheme", "https")];
    request.extend_from_slice(headers);
    let mut stream = plugin.stream();
    let action = stream.request_headers(&request, true)?;
    let allowed = action == Action::Continue && stream.local_reply().is_none();
    let fuel = stream.fuel_consumed_last();
    stream.finish()?;
    Ok((allowed, fuel))
}

#[test]
fn logs_version_and_git_revision_once_at_vm_start() -> Result<()> {
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let plugin = start(kind, config_of(kind))?;
        let starts: Vec<&str> = plugin
            .logs()
            .iter()
            .filter(|l| l.level == LogLevel::Info && l.message.contains(" starting"))
            .map(|l| l.message.as_str())
            .collect();
        ensure!(starts.len() == 1, "{kind:?}: {starts:?}");
        let expected = format!("{} {} (", kind.file_name().trim_end_matches(".wasm"), svidgate_core::VERSION);
        ensure!(starts[0].starts_with(&expected), "{kind:?}: {:?}", starts[0]);
    }
    Ok(())
}

#[test]
fn parses_a_certificate_once_per_digest() -> Result<()> {
    let ca = TrustDomainCa::new(TRUST_DOMAIN)?;
    let (first_svid, second_svid) = (ca.svid(ORCHESTRATOR)?, ca.svid(ORCHESTRATOR)?);
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let mut plugin = start(kind, config_of(kind))?;
        present(&mut plugin, &first_svid, ORCHESTRATOR);
        let (allowed, cold) = get(&mut plugin, &[])?;
        let (allowed_again, warm) = get(&mut plugin, &[])?;
        ensure!(allowed && allowed_again, "{kind:?}: {:?}", plugin.logs());
        // A new certificate (another digest) is parsed again.
        present(&mut plugin, &second_svid, ORCHESTRATOR);
        let (allowed_new, cold_again) = get(&mut plugin, &[])?;
        ensure!(allowed_new);
        println!("{kind:?}: fuel per request, certificate parsed {cold} / cached {warm} / new certificate {cold_again}");
        ensure!(warm * 2 < cold, "{kind:?}: a cached certificate cost {warm} fuel, parsing cost {cold}");
        ensure!(warm * 2 < cold_again, "{kind:?}: a new certificate cost only {cold_again} fuel");
    }
    Ok(())
}

#[test]
fn cached_certificate_still_expires() -> Result<()> {
    let ca = TrustDomainCa::new(TRUST_DOMAIN)?;
    let svid = ca.svid(ORCHESTRATOR)?;
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let mut plugin = start(kind, config_of(kind))?;
        present(&mut plugin, &svid, ORCHESTRATOR);
        ensure!(get(&mut plugin, &[])?.0, "{kind:?}: fresh svid denied");
        plugin.advance_time(std::time::Duration::from_secs(2 * 3600));
        ensure!(!get(&mut plugin, &[])?.0, "{kind:?}: expired svid allowed from the cache");
        ensure!(plugin.counter(Counter::IdentityDenied.name()) == Some(1));
    }
    Ok(())
}

#[test]
fn defines_every_metric_at_configuration_and_times_each_decision() -> Result<()> {
    let identity = start(ModuleKind::Identity, IDENTITY_CONFIG)?;
    for counter in Counter::IDENTITY {
        ensure!(identity.counter(counter.name()) == Some(0), "identity module lacks {}", counter.name());
    }
    ensure!(identity.histogram(DECISION_LATENCY_US).is_none());

    let mut authz = start(ModuleKind::Authz, AUTHZ_CONFIG)?;
    for counter in Counter::AUTHZ {
        ensure!(authz.counter(counter.name()) == Some(0), "authz module lacks {}", counter.name());
    }
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    present(&mut authz, &svid, ORCHESTRATOR);
    get(&mut authz, &[])?;
    get(&mut authz, &[])?;
    let timings = authz.histogram(DECISION_LATENCY_US).context("no latency histogram")?;
    ensure!(timings.len() == 2, "{timings:?}");
    ensure!(authz.counter(Counter::AuthzAllowed.name()) == Some(2));
    Ok(())
}

#[test]
fn remembers_decisions_of_a_policy_that_reads_a_few_facts() -> Result<()> {
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    let off = authz_config_evaluated();
    let mut fuel = Vec::new();
    for config in [AUTHZ_CONFIG, off.as_str()] {
        let mut plugin = start(ModuleKind::Authz, config)?;
        present(&mut plugin, &svid, ORCHESTRATOR);
        // The first GET is evaluated (and parses the certificate); the policy reads only the
        // method, so another request id or path is answered from the cache.
        ensure!(get(&mut plugin, &[("x-request-id", "1")])?.0);
        let (allowed, warm) = get(&mut plugin, &[("x-request-id", "2")])?;
        let (also_allowed, _) = get(&mut plugin, &[("x-request-id", "3"), (":path", "/other")])?;
        ensure!(allowed && also_allowed, "{:?}", plugin.logs());
        let mut post = plugin.stream();
        post.request_headers(&[(":method", "POST"), (":path", "/"), (":authority", "m"), (":scheme", "https")], true)?;
        ensure!(post.local_reply().is_some_and(|reply| reply.status == 403), "POST allowed");
        let missed = post.fuel_consumed_last();
        post.finish()?;
        let counts = (plugin.counter(Counter::AuthzDecisionCacheHits.name()), plugin.counter(Counter::AuthzDecisionCacheMisses.name()));
        let expected = if config == AUTHZ_CONFIG { (Some(2), Some(2)) } else { (Some(0), Some(0)) };
        ensure!(counts == expected, "hits and misses {counts:?}, expected {expected:?}");
        fuel.push((warm, missed));
    }
    let ((cached, missed), (evaluated, evaluated_post)) = (fuel[0], fuel[1]);
    println!("authz fuel per request: the same GET again cached {cached}, evaluated {evaluated}; a new POST missed {missed}, evaluated {evaluated_post}");
    ensure!(cached < evaluated, "a cached decision cost {cached} fuel, an evaluated one {evaluated}");
    Ok(())
}

#[test]
fn logs_decisions_without_header_values() -> Result<()> {
    let ca = TrustDomainCa::new(TRUST_DOMAIN)?;
    let mut plugin = start(ModuleKind::Authz, AUTHZ_CONFIG)?;
    present(&mut plugin, &ca.svid(GATEWAY)?, GATEWAY);
    let forged = ("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/agents/sa/forged-admin");
    get(&mut plugin, &[("authorization", "Bearer top-secret-token"), forged])?;
    let logs = plugin.take_logs();
    ensure!(logs.iter().any(|l| l.level == LogLevel::Debug && l.message.contains("allow")), "{logs:?}");
    for log in &logs {
        ensure!(!log.message.contains("top-secret-token"), "a header value leaked into the log: {log:?}");
        ensure!(!log.message.contains("forged-admin"), "a forged identity leaked into the log: {log:?}");
    }
    Ok(())
}

#[test]
fn formats_no_decision_line_envoys_log_level_drops() -> Result<()> {
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    let decision_lines =
        |plugin: &Plugin| plugin.logs().iter().filter(|l| l.message.contains(" allow: upstream identity")).count();
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let mut fuel = Vec::new();
        for level in [LogLevel::Trace, LogLevel::Info] {
            let mut plugin = start_at_level(kind, level)?;
            present(&mut plugin, &svid, ORCHESTRATOR);
            get(&mut plugin, &[])?;
            let (allowed, spent) = get(&mut plugin, &[])?;
            ensure!(allowed, "{kind:?}: {:?}", plugin.logs());
            ensure!(decision_lines(&plugin) == if level == LogLevel::Trace { 2 } else { 0 }, "{kind:?} at {level:?}");
            fuel.push(spent);
            if level == LogLevel::Info {
                // The module knows Envoy's level from its last tick: a level raised through
                // Envoy's admin takes effect at the next one.
                plugin.set_log_level(LogLevel::Debug);
                get(&mut plugin, &[])?;
                ensure!(decision_lines(&plugin) == 0, "{kind:?}: the level was asked again before a tick");
                plugin.tick()?;
                get(&mut plugin, &[])?;
                ensure!(decision_lines(&plugin) == 1, "{kind:?}: debug level not taken at the tick: {:?}", plugin.logs());
            }
        }
        // At info level the module never formats the debug line.
        println!("{kind:?}: fuel per request at trace level {}, at info level {}", fuel[0], fuel[1]);
        ensure!(fuel[1] < fuel[0], "{kind:?}: {fuel:?}");
    }
    Ok(())
}

/// Each call into Envoy costs more than most of the module's own work (README, Performance:
/// about 0.5 µs each beyond the first, in V8): a request makes only the calls it needs.
#[test]
fn a_request_crosses_into_envoy_only_for_what_it_needs() -> Result<()> {
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    // The header map, the clock, the peer certificate's digest, one counter, the identity header.
    let identity = 5;
    // The same, with the clock read again for the latency histogram and its sample, and the
    // allowed and decision-cache counters.
    let authz = identity + 4;
    for (kind, expected) in [(ModuleKind::Identity, identity), (ModuleKind::Authz, authz)] {
        let mut plugin = start_at_level(kind, LogLevel::Info)?;
        present(&mut plugin, &svid, ORCHESTRATOR);
        // The first request also reads the certificate and Envoy's log level.
        get(&mut plugin, &[])?;
        let before = plugin.host_calls();
        ensure!(get(&mut plugin, &[])?.0, "{kind:?}: {:?}", plugin.logs());
        let calls = plugin.host_calls() - before;
        ensure!(calls == expected, "{kind:?}: {calls} host calls per request, expected {expected}");
    }
    Ok(())
}

#[test]
fn requests_leave_the_vms_memory_as_they_found_it() -> Result<()> {
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    let evaluated = authz_config_evaluated();
    for (kind, config) in [
        (ModuleKind::Identity, IDENTITY_CONFIG),
        (ModuleKind::Authz, AUTHZ_CONFIG),
        (ModuleKind::Authz, evaluated.as_str()),
    ] {
        let mut plugin = start(kind, config)?;
        present(&mut plugin, &svid, ORCHESTRATOR);
        // The first requests keep what is kept across requests: the parsed certificate, the
        // remembered decision.
        for _ in 0..10 {
            ensure!(get(&mut plugin, &[])?.0, "{kind:?}: {:?}", plugin.logs());
        }
        let settled = plugin.memory_bytes();
        ensure!(settled > 0, "{kind:?}: no linear memory exported");
        // Wasm memory only grows, one 64 KiB page at a time: this catches what requests keep once
        // 1000 requests' worth of it outgrows the free space the allocator already holds.
        for id in 0..1000 {
            get(&mut plugin, &[("x-request-id", &id.to_string())])?;
        }
        let after = plugin.memory_bytes();
        ensure!(after == settled, "{kind:?} ({config}): linear memory {settled} -> {after} bytes over 1000 requests");
    }
    Ok(())
}

#[test]
fn writes_masked_opa_decision_logs_to_the_proxy_log() -> Result<()> {
    let config = r#"{"trust_domains": ["ai.internal"],
        "policy": {"rego": "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.attributes.request.http.headers[\"x-tenant\"] == \"research\"",
                   "decision_logs": {"console": true, "sample_allowed": 0, "labels": {"cluster": "eu-1"}}}}"#;
    let mut plugin = start(ModuleKind::Authz, config)?;
    present(&mut plugin, &TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?, ORCHESTRATOR);
    let records = |plugin: &mut Plugin| -> Vec<serde_json::Value> {
        plugin.take_logs().iter().filter_map(|l| serde_json::from_str(&l.message).ok()).collect()
    };
    records(&mut plugin);

    // Allowed decisions are sampled out (sample_allowed 0); denials are always logged.
    let (allowed, _) = get(&mut plugin, &[("x-tenant", "research"), ("x-request-id", "req-allowed")])?;
    ensure!(allowed && records(&mut plugin).is_empty());
    let (allowed, _) = get(&mut plugin, &[("x-request-id", "req-denied"), ("authorization", "Bearer top-secret-token")])?;
    ensure!(!allowed);
    let logged = records(&mut plugin);
    let [record] = logged.as_slice() else { anyhow::bail!("expected one record, got {logged:?}") };
    ensure!(record["request_context"]["http"]["headers"]["x-request-id"] == serde_json::json!(["req-denied"]), "{record}");
    ensure!(record["decision_id"].as_str().is_some_and(|id| id.len() == 36), "{record}");
    ensure!(record["path"] == "envoy/authz/allow");
    ensure!(record["result"] == false);
    ensure!(record["labels"]["cluster"] == "eu-1");
    ensure!(record["svidgate"] == serde_json::json!({"decision": "deny", "status": 403, "reason": "svidgate_policy_denied"}));
    ensure!(record["input"]["attributes"]["source"]["principal"] == ORCHESTRATOR.spiffe_id);
    ensure!(record["input"]["attributes"]["request"]["http"]["headers"].get("authorization").is_none());
    ensure!(record["erased"] == serde_json::json!(["/input/attributes/request/http/headers/authorization"]));
    ensure!(!record.to_string().contains("top-secret-token"));
    ensure!(record["metrics"]["timer_rego_query_eval_ns"].as_u64().is_some_and(|ns| ns > 0));
    Ok(())
}

#[test]
fn gives_the_policy_the_peer_certificate_as_envoys_ext_authz_does() -> Result<()> {
    // A policy in the shape of OPA-Envoy policies that read the client certificate: the PEM as
    // Envoy's ext_authz sends it, URL-encoded (newline, space, +, / and =).
    let config = r#"{"trust_domains": ["ai.internal"],
        "policy": {"rego": "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if startswith(input.attributes.source.certificate, \"-----BEGIN%20CERTIFICATE-----%0A\")",
                   "decision_logs": {"console": true}}}"#;
    let mut plugin = start(ModuleKind::Authz, config)?;
    let svid = TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?;
    present(&mut plugin, &svid, ORCHESTRATOR);
    plugin.take_logs();
    let (allowed, _) = get(&mut plugin, &[])?;
    ensure!(allowed, "{:?}", plugin.logs());
    let logged: Vec<serde_json::Value> = plugin.take_logs().iter().filter_map(|l| serde_json::from_str(&l.message).ok()).collect();
    let [record] = logged.as_slice() else { anyhow::bail!("expected one record, got {logged:?}") };
    let pem = svid.cert_pem.clone();
    let encoded = pem.replace('\n', "%0A").replace(' ', "%20").replace('+', "%2B").replace('/', "%2F").replace('=', "%3D");
    ensure!(record["input"]["attributes"]["source"]["certificate"] == encoded.as_str(), "{record}");
    Ok(())
}

/// The seed's rule with the callers in `data`, as an OPA bundle `svidgate bundle build` would write.
fn bundle(revision: &str, callers: &[&str], rego: &str) -> Result<Vec<u8>> {
    let manifest = serde_json::json!({"revision": revision, "roots": ["envoy/authz", "svidgate"]});
    svidgate_cli::write_bundle(&[
        (".manifest".into(), manifest.to_string().into_bytes()),
        ("envoy/authz/policy.rego".into(), rego.as_bytes().to_vec()),
        ("svidgate/data.json".into(), serde_json::json!({"allowed_callers": callers}).to_string().into_bytes()),
    ])
}

const CALLER_LIST: &str = "package envoy.authz\nimport rego.v1\ndefault allow := false\n\
    allow if input.attributes.source.principal in data.svidgate.allowed_callers\n";
const BUNDLE_CONFIG: &str = r#"{"trust_domains": ["ai.internal"], "require_peer": true,
    "policy": {"rego": "package envoy.authz\ndefault allow := false",
               "bundle": {"cluster": "bundles", "resource": "/svidgate.tar.gz", "min_delay": "10s", "max_delay": "10s"},
               "max_policy_age": "60s"}}"#;

/// Ticks once and returns the one HTTP call the module dispatched.
fn next_call(plugin: &mut Plugin) -> Result<HttpCall> {
    plugin.tick()?;
    let calls = plugin.take_http_calls();
    let [call] = calls.as_slice() else { anyhow::bail!("expected one call, got {calls:?}") };
    Ok(call.clone())
}

fn header<'a>(call: &'a HttpCall, name: &str) -> Option<&'a str> {
    call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
}

/// A gzip body (a decision-log upload) as text.
fn gunzip(body: &[u8]) -> Result<String> {
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(body), &mut text)?;
    Ok(text)
}

#[test]
fn polls_bundles_swaps_the_policy_and_keeps_the_last_good_one() -> Result<()> {
    let mut plugin = start(ModuleKind::Authz, BUNDLE_CONFIG)?;
    ensure!(plugin.tick_period() == Some(std::time::Duration::from_secs(1)));
    present(&mut plugin, &TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?, ORCHESTRATOR);
    ensure!(!get(&mut plugin, &[])?.0, "the bootstrap policy denies everyone");
    let count = |plugin: &Plugin, c: Counter| plugin.counter(c.name()).unwrap_or(0);

    let first = next_call(&mut plugin)?;
    ensure!(first.cluster == "bundles" && header(&first, ":path") == Some("/svidgate.tar.gz"), "{first:?}");
    ensure!(header(&first, ":method") == Some("GET") && header(&first, "if-none-match").is_none());
    plugin.respond_http_call(first.token, &[(":status", "200"), ("etag", "\"v1\"")], &bundle("r1", &[ORCHESTRATOR.spiffe_id], CALLER_LIST)?)?;
    ensure!(count(&plugin, Counter::BundleActivated) == 1, "{:?}", plugin.logs());
    ensure!(plugin.gauge("svidgate.authz.bundle.revision.r1") == Some(1));
    ensure!(get(&mut plugin, &[])?.0, "the bundle lets the orchestrator in");

    plugin.tick()?;
    ensure!(plugin.http_calls().is_empty(), "polled again before min_delay");
    plugin.advance_time(std::time::Duration::from_secs(10));
    let second = next_call(&mut plugin)?;
    ensure!(header(&second, "if-none-match") == Some("\"v1\""), "{second:?}");
    plugin.respond_http_call(second.token, &[(":status", "304"), ("etag", "\"v1\"")], &[])?;
    ensure!(count(&plugin, Counter::BundleNotModified) == 1);

    // Bad bundles are refused one by one; the policy of r1 keeps deciding.
    let bad: [(&str, Vec<u8>); 3] = [
        ("corrupt archive", b"\x1f\x8b\x08\0garbage".to_vec()),
        ("unknown builtin", bundle("r2", &[], "package envoy.authz\nimport rego.v1\nallow if crypto.nope(input)\n")?),
        ("wrong roots", bundle("r3", &[], "package admin\nimport rego.v1\nallow := true\n")?),
    ];
    for (n, (what, body)) in bad.iter().enumerate() {
        plugin.advance_time(std::time::Duration::from_secs(10));
        let call = next_call(&mut plugin)?;
        ensure!(header(&call, "if-none-match") == Some("\"v1\""), "{what}: only the active bundle's etag is sent");
        plugin.respond_http_call(call.token, &[(":status", "200"), ("etag", "\"bad\"")], body)?;
        ensure!(count(&plugin, Counter::BundleRejected) == n as u64 + 1, "{what}: {:?}", plugin.logs());
        ensure!(get(&mut plugin, &[])?.0, "{what}: the last good policy no longer decides");
    }
    let rejections = plugin.logs().iter().filter(|l| l.level == LogLevel::Error && l.message.contains("rejected bundle")).count();
    ensure!(rejections == 3, "{:?}", plugin.logs());

    // The service goes away: a reset, then Envoy's 503s. The policy ages past max_policy_age.
    let age = |plugin: &Plugin| plugin.gauge(svidgate_core::metrics::POLICY_AGE_SECONDS);
    plugin.advance_time(std::time::Duration::from_secs(10));
    let reset = next_call(&mut plugin)?;
    plugin.fail_http_call(reset.token)?;
    for _ in 0..2 {
        plugin.advance_time(std::time::Duration::from_secs(10));
        let down = next_call(&mut plugin)?;
        plugin.respond_http_call(down.token, &[(":status", "503")], b"upstream connect error")?;
    }
    ensure!(count(&plugin, Counter::BundleFetchFailed) == 3);
    ensure!(age(&plugin) == Some(60), "confirmed at 10 s, now 70 s: {:?}", age(&plugin));
    ensure!(get(&mut plugin, &[])?.0, "60 s old is still within max_policy_age");
    plugin.advance_time(std::time::Duration::from_secs(1));
    let mut stream = plugin.stream();
    stream.request_headers(&[(":method", "GET"), (":path", "/"), (":authority", "model-server")], true)?;
    let reply = stream.local_reply().context("a stale policy must deny")?.clone();
    stream.finish()?;
    ensure!(reply.status == 403 && count(&plugin, Counter::AuthzErrorPolicyStale) == 1, "{reply:?}");

    // The service is back: one 304 confirms r1 and requests pass again.
    plugin.advance_time(std::time::Duration::from_secs(9));
    let back = next_call(&mut plugin)?;
    plugin.respond_http_call(back.token, &[(":status", "304")], &[])?;
    ensure!(get(&mut plugin, &[])?.0);
    plugin.tick()?;
    ensure!(age(&plugin) == Some(0), "{:?}", age(&plugin));

    // A new revision drops the orchestrator; the old revision's gauge goes to 0.
    plugin.advance_time(std::time::Duration::from_secs(10));
    let update = next_call(&mut plugin)?;
    plugin.respond_http_call(update.token, &[(":status", "200"), ("etag", "\"v2\"")], &bundle("r4", &[], CALLER_LIST)?)?;
    ensure!(!get(&mut plugin, &[])?.0, "r4 denies the orchestrator");
    ensure!(plugin.gauge("svidgate.authz.bundle.revision.r1") == Some(0) && plugin.gauge("svidgate.authz.bundle.revision.r4") == Some(1));
    Ok(())
}

#[test]
fn without_a_bootstrap_policy_requests_are_denied_until_the_first_bundle() -> Result<()> {
    let config = r#"{"trust_domains": ["ai.internal"], "policy": {"bundle": {"cluster": "bundles"}}}"#;
    let mut plugin = start(ModuleKind::Authz, config)?;
    present(&mut plugin, &TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?, ORCHESTRATOR);
    ensure!(!get(&mut plugin, &[])?.0);
    ensure!(plugin.counter(Counter::AuthzErrorPolicyNotReady.name()) == Some(1));
    let call = next_call(&mut plugin)?;
    ensure!(header(&call, ":path") == Some("/bundles/bundle.tar.gz"), "OPA's default resource name");
    plugin.respond_http_call(call.token, &[(":status", "200")], &bundle("r1", &[ORCHESTRATOR.spiffe_id], CALLER_LIST)?)?;
    ensure!(get(&mut plugin, &[])?.0);
    Ok(())
}

#[test]
fn an_unknown_cluster_counts_as_a_failed_fetch() -> Result<()> {
    let mut plugin = svidgate_harness::cases::ModuleKind::Authz.module()?.start(PluginOptions {
        plugin_config: BUNDLE_CONFIG.as_bytes().to_vec(),
        clusters: Some(vec!["other".into()]),
        ..PluginOptions::default()
    })?;
    plugin.tick()?;
    ensure!(plugin.http_calls().is_empty());
    ensure!(plugin.counter(Counter::BundleFetchFailed.name()) == Some(1), "{:?}", plugin.logs());
    Ok(())
}

#[test]
fn uploads_decision_logs_in_gzip_batches_and_retries_failed_ones() -> Result<()> {
    let config = r#"{"trust_domains": ["ai.internal"], "policy": {"rego": "package envoy.authz\ndefault allow := true",
        "decision_logs": {"service": {"cluster": "siem", "resource": "/v1/logs", "min_delay": "5s", "max_delay": "5s"},
                          "decision_id_header": "x-svidgate-decision-id"}}}"#;
    let mut plugin = start(ModuleKind::Authz, config)?;
    present(&mut plugin, &TrustDomainCa::new(TRUST_DOMAIN)?.svid(ORCHESTRATOR)?, ORCHESTRATOR);
    let mut decision_ids = Vec::new();
    for n in 0..3 {
        let request_id = format!("req-{n}");
        let mut stream = plugin.stream();
        stream.request_headers(
            &[(":method", "GET"), (":path", "/"), ("x-request-id", &request_id), ("authorization", "Bearer secret")],
            true,
        )?;
        let decision_id = String::from_utf8(stream.filter_state("svidgate_decision_id").context("no decision id")?.to_vec())?;
        ensure!(decision_id.len() == 36 && decision_id != request_id, "a UUID of svidgate's: {decision_id}");
        stream.response_headers(&[(":status", "200")], true)?;
        ensure!(stream.response_header_map().contains(&("x-svidgate-decision-id".into(), decision_id.clone())));
        stream.finish()?;
        decision_ids.push(decision_id);
    }
    ensure!(!plugin.logs().iter().any(|l| l.message.starts_with('{')), "console is off");
    plugin.tick()?;
    ensure!(plugin.http_calls().is_empty(), "uploaded before min_delay");
    plugin.advance_time(std::time::Duration::from_secs(5));
    let upload = next_call(&mut plugin)?;
    ensure!(upload.cluster == "siem" && header(&upload, ":method") == Some("POST") && header(&upload, ":path") == Some("/v1/logs"));
    ensure!(header(&upload, "content-encoding") == Some("gzip") && header(&upload, "content-type") == Some("application/json"));
    let json = gunzip(&upload.body)?;
    let records: Vec<serde_json::Value> = serde_json::from_str(&json)?;
    let ids: Vec<&str> = records.iter().filter_map(|r| r["decision_id"].as_str()).collect();
    ensure!(ids == decision_ids, "{json}");
    let request_ids: Vec<&serde_json::Value> =
        records.iter().map(|r| &r["request_context"]["http"]["headers"]["x-request-id"][0]).collect();
    ensure!(request_ids == ["req-0", "req-1", "req-2"], "{json}");
    ensure!(!json.contains("Bearer secret"), "authorization is masked by default");
    plugin.respond_http_call(upload.token, &[(":status", "500")], &[])?;
    ensure!(plugin.counter(Counter::DecisionLogsUploadFailed.name()) == Some(1));

    plugin.advance_time(std::time::Duration::from_secs(5));
    let retry = next_call(&mut plugin)?;
    let again = gunzip(&retry.body)?;
    ensure!(again == json, "the failed batch is sent again, unchanged");
    plugin.respond_http_call(retry.token, &[(":status", "204")], &[])?;
    ensure!(plugin.counter(Counter::DecisionLogsUploaded.name()) == Some(3));
    ensure!(plugin.counter(Counter::DecisionLogsDropped.name()) == Some(0));
    Ok(())
}

/// The engine as the CLI and every native test build it (with the regex crate's features
/// unified with the rest of the workspace: Unicode classes on) and as the authz module ships it
/// (only what the module enables) answer the same to patterns whose meaning depends on Unicode
/// support, and answer as RE2, OPA's dialect: ASCII `\d`, `\w`, `\b`, `(?i)` folding case,
/// `\p{..}` an error (a deny) even under `not`.
#[test]
fn the_module_and_the_native_engine_agree_on_unicode_sensitive_patterns() -> Result<()> {
    let rego = "package envoy.authz\nimport rego.v1\ndefault allow := false\n\
        headers := input.attributes.request.http.headers\n\
        allow if { headers[\"x-mode\"] == \"match\"; regex.match(headers[\"x-pattern\"], headers[\"x-name\"]) }\n\
        allow if { headers[\"x-mode\"] == \"not\"; not regex.match(headers[\"x-pattern\"], headers[\"x-name\"]) }\n";
    let config = serde_json::json!({"trust_domains": ["ai.internal"], "policy": {"rego": rego}}).to_string();
    let parsed = svidgate_core::config::Config::parse(svidgate_core::config::ModuleKind::Authz, config.as_bytes())?;
    let native = svidgate_core::authz::Policy::compile(&parsed.policy.context("no policy")?)?;
    let mut module = start(ModuleKind::Authz, &config)?;
    // (mode, pattern, name, what RE2 answers)
    let cases = [
        ("match", r"(?i)^STRASSE$", "strasse", true),
        ("match", r"(?i)^k$", "\u{212a}", true),
        ("match", r"^\d+$", "345", true),
        ("match", r"^\d+$", "٣٤٥", false),
        ("match", r"^\w+$", "héllo", false),
        ("match", r"\bfoo\b", "éfooé", true),
        ("match", r"^[\s]+$", "\u{a0}", false),
        ("match", r"^\pL+$", "abc", false),
        ("not", r"^\pL+$", "abc", false),
        ("not", r"^\d+$", "٣", true),
    ];
    for (mode, pattern, name, re2) in cases {
        let headers = serde_json::json!({"x-mode": mode, "x-pattern": pattern, "x-name": name});
        let input = serde_json::json!({"attributes": {"request": {"http": {"headers": headers}}}});
        let ours = native.evaluate(regorus::Value::from_json_str(&input.to_string())?);
        let native_allows = matches!(ours, Ok(regorus::Value::Bool(true)));
        let (module_allows, _) = get(&mut module, &[("x-mode", mode), ("x-pattern", pattern), ("x-name", name)])?;
        ensure!(
            native_allows == re2 && module_allows == re2,
            "{mode} {pattern:?} on {name:?}: RE2 {re2}, native engine {ours:?}, module allows {module_allows}"
        );
    }
    Ok(())
}
