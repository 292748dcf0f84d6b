//! Behaviour of the built modules that a single request cannot show: the per-certificate cache,
//! the clock, metrics and logs across requests. The per-request decisions are in tests/cases.

use anyhow::{Context, Result, ensure};
use svidgate_core::metrics::{Counter, DECISION_LATENCY_US};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::{Action, LogLevel, Plugin, PluginOptions};
use svidgate_testpki::{GATEWAY, Issued, ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa, Workload};

const IDENTITY_CONFIG: &str = r#"{"trust_domains": ["ai.internal"], "require_peer": true}"#;
const AUTHZ_CONFIG: &str = r#"{"trust_domains": ["ai.internal"], "require_peer": true,
    "policy": {"rego": "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow if input.attributes.request.http.method == \"GET\""}}"#;

fn start(kind: ModuleKind, config: &str) -> Result<Plugin> {
    let plugin = kind
        .module()?
        .start(PluginOptions { plugin_config: config.as_bytes().to_vec(), ..PluginOptions::default() })?;
    ensure!(plugin.configured(), "not configured: {:?}", plugin.logs());
    Ok(plugin)
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
        let plugin = start(kind, if kind == ModuleKind::Identity { IDENTITY_CONFIG } else { AUTHZ_CONFIG })?;
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
        let mut plugin = start(kind, if kind == ModuleKind::Identity { IDENTITY_CONFIG } else { AUTHZ_CONFIG })?;
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
        let mut plugin = start(kind, if kind == ModuleKind::Identity { IDENTITY_CONFIG } else { AUTHZ_CONFIG })?;
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
    ensure!(record["decision_id"] == "req-denied", "{record}");
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
