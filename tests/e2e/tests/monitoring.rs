//! svidgate's alert rules and dashboard (`envoy/monitoring/`) against a real Prometheus scraping
//! real Envoy running `envoy/demo/sidecar-bundle.yaml` with nginx as the bundle server: the
//! shipped rules load and evaluate without error, the traffic the test makes (forged identity
//! headers, a rejected bundle, decision-log records dropped) fires their alerts, the staleness
//! alert fires when the bundle server goes down and resolves when it returns (its threshold
//! shortened from the shipped rule), the not-reporting alert fires when Envoy stops, and every
//! query of the Grafana dashboard answers with data. The static tests keep the PrometheusRule
//! equal to the rules file, every alert with its runbook in the README, and every metric the rules
//! and the dashboard read one that svidgate or Envoy exports. The rules' own unit tests run with
//! promtool (`envoy/monitoring/svidgate-alerts.test.yaml`, `cargo xtask test`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test helpers: a failure is the test failing")]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::json;
use serde_yaml::Value as Yaml;
use svidgate_core::metrics::{BUNDLE_REVISION_PREFIX, Counter, DECISION_LATENCY_US, POLICY_AGE_SECONDS, POLICY_ON_INTERPRETER};
use svidgate_e2e::bundle_sidecar::{BUNDLE, BundleSidecar, seed_bundle_entries};
use svidgate_e2e::client::Request;
use svidgate_e2e::paths;
use svidgate_e2e::prometheus::{Alert, Prometheus, Settings};
use svidgate_e2e::wait;
use svidgate_testpki::{ORCHESTRATOR, TOOL_RUNTIME, TRUST_DOMAIN};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const RULES: &str = "envoy/monitoring/svidgate-alerts.yaml";
const PROMETHEUS_RULE: &str = "envoy/k8s/monitoring/prometheus-rule.yaml";
const DASHBOARD: &str = "envoy/monitoring/svidgate-dashboard.json";
/// Prometheus scrapes and evaluates once a second.
const INTERVAL: Duration = Duration::from_secs(1);
/// What the dashboard's `$__rate_interval` stands for here (Grafana makes it at least four scrapes).
const RATE_WINDOW: &str = "30s";
/// Requests are denied as stale past this; the staleness alert (shortened below) fires before.
const MAX_POLICY_AGE: &str = "8s";
/// The shipped rules' thresholds the live test shortens: (alert, text of its `for` or in its
/// `expr`, replacement). Every other rule runs as shipped.
const SHORTENED: [(&str, &str, &str); 2] = [
    // Older than 5 s (not 5 minutes: polls every 1-2 s keep it under 3 s), the oldest age of the
    // last 2 s (not minute).
    ("SvidgatePolicyStale", "max_over_time(svidgate_authz_policy_age_seconds[1m])) > 300", "max_over_time(svidgate_authz_policy_age_seconds[2s])) > 5"),
    // Silent for 2 s, not 5 minutes.
    ("SvidgateProxyNotReporting", "5m", "2s"),
];
/// How long any one thing may take to show in Prometheus (scrapes and evaluations every second).
const TIMEOUT: Duration = Duration::from_secs(30);

fn read(path: &str) -> String {
    std::fs::read_to_string(paths::workspace_root().join(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn yaml(path: &str) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("parsing {path}: {e}"))
}

/// Every rule of the rules file, in order.
fn rules(file: &Yaml) -> Vec<&Yaml> {
    file["groups"].as_sequence().unwrap().iter().flat_map(|g| g["rules"].as_sequence().unwrap()).collect()
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read(DASHBOARD)).unwrap_or_else(|e| panic!("parsing {DASHBOARD}: {e}"))
}

fn alert_names() -> Vec<String> {
    rules(&yaml(RULES)).iter().map(|r| r["alert"].as_str().unwrap().to_owned()).collect()
}

/// Every PromQL expression of the dashboard's panels (rows' nested panels too): (panel title, expr).
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<(String, String)> {
    fn walk(panels: &serde_json::Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or_default();
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push((title.to_owned(), target["expr"].as_str().unwrap().to_owned()));
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A dashboard query as Grafana sends it with every proxy selected.
fn as_grafana_sends(expr: &str) -> String {
    let sent = expr.replace("$__rate_interval", RATE_WINDOW).replace("$instance", ".*").replace("$job", ".*");
    // What is left is label_replace's "$1".
    let left = sent.match_indices('$').all(|(at, _)| sent[at + 1..].starts_with(|c: char| c.is_ascii_digit()));
    assert!(left, "a dashboard variable the test does not fill: {expr}");
    sent
}

/// Metric names in PromQL: words starting with `svidgate_` or `envoy_`; one ending in `_` is a
/// prefix of a name-matching regex (`svidgate_authz_error_.+`).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
    words.filter(|w| w.starts_with("svidgate_") || w.starts_with("envoy_")).map(str::to_owned).collect()
}

/// The Prometheus names of everything svidgate exports (filters/core/src/metrics.rs), as Envoy
/// writes them: dots as underscores, no `wasmcustom` prefix; the histogram's three series.
fn svidgate_exports() -> BTreeSet<String> {
    let underscored = |name: &str| name.replace('.', "_");
    let mut names: BTreeSet<String> = Counter::AUTHZ.iter().chain(&Counter::JWT_SVID).map(|c| underscored(c.name())).collect();
    names.extend([POLICY_AGE_SECONDS, POLICY_ON_INTERPRETER].map(underscored));
    names.extend(["_bucket", "_sum", "_count"].map(|suffix| underscored(DECISION_LATENCY_US) + suffix));
    names
}

#[test]
fn the_prometheus_rule_carries_the_rules_file_unchanged() {
    let rule = yaml(PROMETHEUS_RULE);
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], yaml(RULES)["groups"], "{PROMETHEUS_RULE} differs from {RULES}: copy the groups over");
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let readme = read("README.md");
    let headings: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("#### ").or_else(|| l.strip_prefix("### ")))
        .map(|h| h.trim().to_lowercase().replace(' ', "-"))
        .collect();
    let file = yaml(RULES);
    let alerts = rules(&file);
    assert_eq!(alerts.len(), 8);
    for rule in alerts {
        let name = rule["alert"].as_str().unwrap();
        for key in ["summary", "description", "runbook_url"] {
            assert!(rule["annotations"][key].as_str().is_some_and(|v| !v.is_empty()), "{name}: no {key}");
        }
        assert!(rule["labels"]["severity"].as_str().is_some_and(|s| s == "critical" || s == "warning"), "{name}: severity");
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        let anchor = url.strip_prefix("https://github.com/svidgate/svidgate/blob/main/README.md#").unwrap_or_else(|| panic!("{name}: {url}"));
        assert_eq!(anchor, name.to_lowercase(), "{name}: the runbook anchor is the alert's name");
        assert!(headings.contains(anchor), "{name}: the README has no runbook heading {name}");
        assert!(readme.contains(&format!("| [`{name}`](#{anchor}) |")), "{name}: not in the README's alerts table");
    }
}

#[test]
fn the_rules_and_the_dashboard_read_only_metrics_svidgate_and_envoy_export() {
    let exports = svidgate_exports();
    // Envoy's own stats the dashboard reads, as seen in /stats/prometheus of Envoy 1.40.0 with
    // envoy/demo/sidecar-bundle.yaml (`envoy_wasm_<plugin>_vm_reload...`, matched by prefix).
    let envoy = ["envoy_wasm_", "envoy_wasm_envoy_wasm_runtime_v8_active"];
    let known = |name: &str| {
        exports.contains(name)
            || envoy.contains(&name)
            || (name.ends_with('_') && (exports.iter().any(|e| e.starts_with(name)) || name == format!("{}_", BUNDLE_REVISION_PREFIX.replace('.', "_"))))
    };
    let file = yaml(RULES);
    let in_rules: BTreeSet<String> = rules(&file).iter().flat_map(|rule| metric_names(rule["expr"].as_str().unwrap())).collect();
    let dashboard = dashboard();
    let variables = dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["query"].as_str().unwrap().to_owned());
    let on_dashboard: BTreeSet<String> =
        dashboard_queries(&dashboard).into_iter().map(|(_, expr)| expr).chain(variables).flat_map(|expr| metric_names(&expr)).collect();
    let unknown: Vec<&String> = in_rules.iter().chain(&on_dashboard).filter(|name| !known(name)).collect();
    assert!(unknown.is_empty(), "metrics nothing exports: {unknown:?}");
    // The dashboard shows what every alert is about (a prefix: every metric it matches).
    for metric in in_rules {
        let shown = on_dashboard.iter().any(|name| *name == metric || (metric.ends_with('_') && name.starts_with(&metric)));
        assert!(shown, "{metric} is in a rule but on no panel");
    }
}

#[test]
fn the_dashboard_imports_with_a_prometheus_datasource_and_proxy_variables() {
    let dashboard = dashboard();
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 30), "schemaVersion");
    assert!(dashboard["id"].is_null(), "an exported dashboard has no id");
    let variables: Vec<&str> = dashboard["templating"]["list"].as_array().unwrap().iter().map(|v| v["name"].as_str().unwrap()).collect();
    assert_eq!(variables, ["job", "instance"]);
    let mut ids = BTreeSet::new();
    let mut panels = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "panel id {} repeated", panel["id"]);
        for key in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][key].is_u64(), "{}: gridPos.{key}", panel["title"]);
        }
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
        for target in panel["targets"].as_array().unwrap() {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", panel["title"]);
            let expr = target["expr"].as_str().unwrap();
            assert!(expr.contains(r#"job=~"$job""#) && expr.contains(r#"instance=~"$instance""#), "{}: not filtered by proxy: {expr}", panel["title"]);
        }
    }
    assert!(panels >= 10, "{panels} panels");
}

/// The shipped rules with [`SHORTENED`] applied, each change made exactly once.
fn shortened_rules() -> String {
    let mut file = yaml(RULES);
    for (alert, from, to) in SHORTENED {
        let rule = file["groups"]
            .as_sequence_mut()
            .unwrap()
            .iter_mut()
            .flat_map(|g| g["rules"].as_sequence_mut().unwrap().iter_mut())
            .find(|r| r["alert"] == alert)
            .unwrap_or_else(|| panic!("no rule {alert}"));
        let key = if rule["for"].as_str() == Some(from) { "for" } else { "expr" };
        let text = rule[key].as_str().unwrap().to_owned();
        assert_eq!(text.matches(from).count(), 1, "{alert}: {key} {text:?} should hold {from:?} once");
        rule[key] = Yaml::String(text.replace(from, to));
    }
    serde_yaml::to_string(&file).unwrap()
}

/// The seed policy with `callers` allowed on /v1/generate, as `svidgate bundle build` writes it.
fn seed_bundle(revision: &str, callers: &[&str]) -> Vec<u8> {
    svidgate_cli::write_bundle(&seed_bundle_entries(revision, callers, &[]).unwrap()).unwrap()
}

/// Polls every second for a bundle, stale past [`MAX_POLICY_AGE`]; decision logs every second into
/// a buffer of 8 KiB per VM, so that a receiver answering errors soon makes it drop records.
/// JWT-SVIDs are accepted too (an inline bundle), so that the dashboard's JWT panels have series.
fn plugin_configuration() -> serde_json::Value {
    let authority = svidgate_testpki::jwt::JwtAuthority::new("k1").unwrap();
    let jwt_bundle: serde_json::Value = serde_json::from_str(&svidgate_testpki::jwt::JwtAuthority::bundle(&[&authority], 1)).unwrap();
    json!({
        "mode": "sidecar",
        "trust_domains": [TRUST_DOMAIN],
        "require_peer": true,
        "jwt_svid": {"audiences": ["spiffe://ai.internal/ns/inference/sa/model-server"], "bundles": {TRUST_DOMAIN: jwt_bundle}},
        "policy": {
            "bundle": {"cluster": "bundle_service", "resource": format!("/{BUNDLE}"), "min_delay": "1s", "max_delay": "2s"},
            "max_policy_age": MAX_POLICY_AGE,
            "decision_logs": {
                "service": {"cluster": "decision_logs", "resource": "/logs", "min_delay": "1s", "max_delay": "1s", "max_bytes": 8192, "upload_bytes": 2048}
            }
        }
    })
}

struct Site {
    sidecar: BundleSidecar,
    prometheus: Prometheus,
    instance: String,
}

impl std::ops::Deref for Site {
    type Target = BundleSidecar;
    fn deref(&self) -> &BundleSidecar {
        &self.sidecar
    }
}

impl std::ops::DerefMut for Site {
    fn deref_mut(&mut self) -> &mut BundleSidecar {
        &mut self.sidecar
    }
}

impl Site {
    async fn start() -> Site {
        let bundle = seed_bundle("r1", &[ORCHESTRATOR.spiffe_id]);
        let sidecar = BundleSidecar::start("monitoring", UPSTREAM.as_ref(), &plugin_configuration(), &bundle).await.unwrap();
        let run = &sidecar.run;
        let instance = format!("127.0.0.1:{}", sidecar.envoy.admin_port());
        let rules = run.path().join("svidgate-alerts.yaml");
        std::fs::write(&rules, shortened_rules()).unwrap();
        let settings = Settings {
            interval: INTERVAL,
            job: "svidgate".into(),
            metrics_path: "/stats/prometheus".into(),
            targets: vec![instance.clone()],
            rule_files: vec![rules],
        };
        let prometheus = Prometheus::start(&settings, run.path()).await.unwrap();
        Site { sidecar, prometheus, instance }
    }

    /// POST /v1/generate from `caller`, with a forged identity header if `forged`.
    async fn generate(&self, caller: &str, forged: bool) -> u16 {
        let mut request = Request::new("POST", "/v1/generate");
        if forged {
            request = request.header("x-forwarded-spiffe-id", TOOL_RUNTIME.spiffe_id);
        }
        self.send(caller, &request).await.unwrap()
    }

    async fn counter(&self, name: &str) -> u64 {
        self.sidecar.counter(name).await.unwrap()
    }

    /// The alert `name` in `state` (`firing`, `pending`) with `labels` among its labels.
    async fn alert(&self, name: &str, state: &str, labels: &[(&str, &str)]) -> Option<Alert> {
        let alerts = self.prometheus.alerts().await.unwrap();
        alerts.into_iter().find(|a| {
            a.labels.get("alertname").map(String::as_str) == Some(name)
                && a.state == state
                && labels.iter().all(|(k, v)| a.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// Waits until `done` holds, checking every 100 ms; returns how long it took.
    async fn wait<F: std::future::Future<Output = bool>>(&self, what: &str, done: impl Fn() -> F) -> Duration {
        let started = Instant::now();
        let held = wait::until(Duration::from_millis(100), TIMEOUT, async || Ok(done().await.then_some(()))).await.unwrap();
        if held.is_none() {
            let alerts = self.prometheus.alerts().await.unwrap_or_default();
            panic!(
                "{what}: not within {TIMEOUT:?}\nalerts: {alerts:#?}\n--- envoy ---\n{}\n--- prometheus ---\n{}",
                self.envoy.log_tail(),
                self.prometheus.log_tail()
            );
        }
        started.elapsed()
    }

    /// Waits until Prometheus has scraped the value Envoy shows now for counter `name`.
    async fn scraped(&self, name: &str) {
        let now = self.counter(name).await;
        let query = format!("svidgate_authz_{}", name.replace('.', "_"));
        self.wait(&format!("{query} = {now} scraped"), || async {
            self.prometheus.query(&query).await.unwrap().first().is_some_and(|s| s.value >= now as f64)
        })
        .await;
    }
}

#[tokio::test]
async fn alerts_fire_and_resolve_and_every_dashboard_query_answers_in_real_prometheus() {
    let started = Instant::now();
    let mut site = Site::start().await;
    let instance = site.instance.clone();
    let proxy = [("instance", instance.as_str()), ("job", "svidgate")];
    site.wait("Envoy scraped", || async {
        site.prometheus.targets().await.unwrap().iter().any(|t| t.labels.get("instance") == Some(&site.instance) && t.health == "up")
    })
    .await;
    // Two VMs poll: the main thread's and the worker's (--concurrency 1).
    site.wait("bundle r1 active in every VM", || async { site.counter("bundle.activated").await >= 2 }).await;

    // Traffic an operator is alerted on, each through the rule as shipped.
    assert_eq!(site.generate(ORCHESTRATOR.name, false).await, 200);
    assert_eq!(site.generate(TOOL_RUNTIME.name, false).await, 403);
    assert_eq!(site.generate(ORCHESTRATOR.name, true).await, 200, "a forged header is removed, the caller allowed");
    site.nginx.publish(BUNDLE, b"\x1f\x8b\x08\0 not a bundle").unwrap();
    site.wait("the corrupt bundle rejected", || async { site.counter("bundle.rejected").await >= 1 }).await;
    // A good bundle again, or the rejected one would leave the policy ageing.
    site.nginx.publish(BUNDLE, &seed_bundle("r2", &[ORCHESTRATOR.spiffe_id])).unwrap();
    site.wait("bundle r2 active", || async { site.counter("bundle.revision.r2").await == 1 }).await;
    site.logs.set_status(503);
    site.wait("decision-log records dropped on a full buffer", || async {
        assert_eq!(site.generate(ORCHESTRATOR.name, false).await, 200);
        site.counter("decision_logs.dropped").await >= 1
    })
    .await;
    site.logs.set_status(204);
    for (alert, labels) in [
        ("SvidgateSpoofAttempts", &proxy[..]),
        ("SvidgateBundleRejected", &proxy[..]),
        ("SvidgateDecisionLogsDropped", &proxy[..]),
    ] {
        let took = site.wait(&format!("{alert} firing"), || async { site.alert(alert, "firing", labels).await.is_some() }).await;
        let fired = site.alert(alert, "firing", labels).await.unwrap();
        assert!(fired.annotations["summary"].contains(&site.instance), "{fired:?}");
        assert!(fired.annotations["runbook_url"].ends_with(&format!("#{}", alert.to_lowercase())), "{fired:?}");
        println!("{alert} firing after {took:?} more");
    }
    // The rejected bundle did not confirm the policy, r2 did: it is fresh.
    site.wait("SvidgatePolicyStale not firing before the outage", || async {
        site.alert("SvidgatePolicyStale", "firing", &proxy).await.is_none()
    })
    .await;

    // The seed's §6.3: the bundle server goes down and the policy goes stale.
    site.nginx.stop();
    let went_down = Instant::now();
    site.wait("SvidgatePolicyStale firing", || async { site.alert("SvidgatePolicyStale", "firing", &proxy).await.is_some() }).await;
    let fired_after = went_down.elapsed();
    let stale = site.alert("SvidgatePolicyStale", "firing", &proxy).await.unwrap();
    assert_eq!(stale.labels["severity"], "critical");
    assert!(stale.annotations["description"].contains(&site.instance), "{stale:?}");
    assert!(stale.value.parse::<f64>().unwrap() > 5.0, "{stale:?}");
    // Past max_policy_age svidgate denies as stale: errors of kind policy_stale, pending (the
    // errors alert waits for 5 minutes of them).
    site.wait("requests denied as stale", || async { site.generate(ORCHESTRATOR.name, false).await == 403 }).await;
    assert!(site.counter("error.policy_stale").await >= 1);
    let errors = [("kind", "policy_stale"), proxy[0]];
    site.wait("SvidgateAuthzErrors pending for policy_stale", || async { site.alert("SvidgateAuthzErrors", "pending", &errors).await.is_some() }).await;

    site.nginx.restart().unwrap();
    let came_back = Instant::now();
    site.wait("SvidgatePolicyStale resolved", || async {
        let alerts = site.prometheus.alerts().await.unwrap();
        !alerts.iter().any(|a| a.labels["alertname"] == "SvidgatePolicyStale")
    })
    .await;
    let resolved_after = came_back.elapsed();
    assert_eq!(site.generate(ORCHESTRATOR.name, false).await, 200);
    println!(
        "SvidgatePolicyStale (age > 5 s over 2 s, max_policy_age {MAX_POLICY_AGE}; polls every 1-2 s, scrapes and evaluations every {INTERVAL:?}): \
         firing {fired_after:?} after the bundle server stopped, resolved {resolved_after:?} after it came back"
    );

    // Every rule, as shipped or shortened, evaluates against real Envoy's series without error.
    let loaded = site.prometheus.rules().await.unwrap();
    let names: Vec<&str> = loaded.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, alert_names(), "the rules Prometheus loaded");
    for rule in &loaded {
        assert_eq!((rule.kind.as_str(), rule.health.as_str(), rule.last_error.as_deref().unwrap_or("")), ("alerting", "ok", ""), "{rule:?}");
    }

    // Every dashboard query, as Grafana sends it with every proxy selected, over traffic of the
    // last RATE_WINDOW: allowed, denied, forged, cached and evaluated decisions.
    for forged in [false, true] {
        assert_eq!(site.generate(ORCHESTRATOR.name, forged).await, 200);
        assert_eq!(site.generate(TOOL_RUNTIME.name, forged).await, 403);
    }
    site.scraped("allowed").await;
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    for (panel, expr) in &queries {
        let sent = as_grafana_sends(expr);
        // An error fails at once; data may trail the burst by a scrape (and the latency
        // histogram by Envoy's stats flush, every 5 s).
        let answered = wait::until(Duration::from_millis(200), TIMEOUT, async || {
            let samples = site.prometheus.query(&sent).await.unwrap_or_else(|e| panic!("{panel}: {e:#}"));
            Ok((!samples.is_empty() && samples.iter().all(|s| s.value.is_finite())).then_some(samples))
        })
        .await
        .unwrap();
        let samples = answered.unwrap_or_else(|| panic!("{panel}: no data, or not a number, for {sent} within {TIMEOUT:?}"));
        assert!(samples.iter().all(|s| s.labels.get("instance").is_none_or(|i| *i == site.instance)), "{panel}: {samples:?}");
    }
    let revision = queries.iter().find(|(panel, _)| panel.contains("bundle revision")).unwrap();
    let active = site.prometheus.query(&as_grafana_sends(&revision.1)).await.unwrap();
    assert_eq!(active.iter().map(|s| s.labels["revision"].as_str()).collect::<Vec<_>>(), ["r2"], "the active revision");
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let query = variable["query"].as_str().unwrap();
        let (selector, label) = query.strip_prefix("label_values(").and_then(|q| q.strip_suffix(')')).and_then(|q| q.rsplit_once(", ")).unwrap();
        let expected = if label == "job" { "svidgate" } else { site.instance.as_str() };
        let samples = site.prometheus.query(&as_grafana_sends(selector)).await.unwrap();
        assert!(samples.iter().any(|s| s.labels.get(label).map(String::as_str) == Some(expected)), "{query}: {samples:?}");
    }
    println!("{} dashboard queries answered with data", queries.len());

    // Envoy stops: the proxy stops reporting (`for` shortened to 2 s).
    site.envoy.stop();
    let stopped = Instant::now();
    site.wait("SvidgateProxyNotReporting firing", || async { site.alert("SvidgateProxyNotReporting", "firing", &proxy).await.is_some() }).await;
    println!("SvidgateProxyNotReporting firing {:?} after Envoy stopped", stopped.elapsed());
    println!("the whole test took {:?}", started.elapsed());
}
