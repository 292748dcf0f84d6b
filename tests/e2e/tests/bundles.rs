//! Policy operations in real Envoy with real servers: nginx serves OPA bundles, a receiver in the
//! test takes decision-log uploads. A new bundle changes who may call the model server within one
//! poll period, without restarting Envoy; a corrupt bundle is rejected and the last good policy
//! stays; with the bundle server down the policy ages and, past `max_policy_age`, every request
//! is denied until the server is back.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test helpers: a failure is the test failing")]

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use svidgate_e2e::bundle_sidecar::{BUNDLE, BundleSidecar, seed_bundle_entries};
use svidgate_e2e::client::Request;
use svidgate_e2e::wait;
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, TOOL_RUNTIME, TRUST_DOMAIN};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
/// Polls every 1-2 s; the policy may be 8 s old. Normal polling never lets it get near that.
const MAX_DELAY: Duration = Duration::from_secs(2);
const MAX_POLICY_AGE: Duration = Duration::from_secs(8);
/// Envoy with `--concurrency 1` runs two root contexts that tick: the main thread's and the worker's.
const TICKING_VMS: u64 = 2;

/// The seed policy with `callers` allowed on /v1/generate, as `svidgate bundle build` writes it.
/// A rule that reads headers brings the header map into the input, and so into the decision log,
/// where the credentials in it must be masked.
fn seed_bundle(revision: &str, callers: &[&str]) -> Vec<u8> {
    let tenant = "package envoy.authz\nimport rego.v1\ntenant := input.attributes.request.http.headers[\"x-tenant\"]\n";
    svidgate_cli::write_bundle(&seed_bundle_entries(revision, callers, &[("tenant.rego", tenant)]).unwrap()).unwrap()
}

fn plugin_configuration() -> Value {
    json!({
        "mode": "sidecar",
        "trust_domains": [TRUST_DOMAIN],
        "require_peer": true,
        "policy": {
            "bundle": {"cluster": "bundle_service", "resource": format!("/{BUNDLE}"), "min_delay": "1s", "max_delay": "2s"},
            "max_policy_age": format!("{}s", MAX_POLICY_AGE.as_secs()),
            "decision_logs": {
                "service": {"cluster": "decision_logs", "resource": "/logs", "min_delay": "1s", "max_delay": "1s"},
                "decision_id_header": "x-svidgate-decision-id",
                "labels": {"cluster": "e2e"}
            }
        }
    })
}

struct Site(BundleSidecar);

impl std::ops::Deref for Site {
    type Target = BundleSidecar;
    fn deref(&self) -> &BundleSidecar {
        &self.0
    }
}

impl std::ops::DerefMut for Site {
    fn deref_mut(&mut self) -> &mut BundleSidecar {
        &mut self.0
    }
}

impl Site {
    async fn start() -> Site {
        let bundle = seed_bundle("r1", &[ORCHESTRATOR.spiffe_id]);
        Site(BundleSidecar::start("bundles", UPSTREAM.as_ref(), &plugin_configuration(), &bundle).await.unwrap())
    }

    async fn generate(&self, caller: &str, request_id: &str) -> u16 {
        let request = Request::new("POST", "/v1/generate")
            .header("x-request-id", request_id)
            .header("authorization", "Bearer e2e-secret-token");
        self.send(caller, &request).await.unwrap()
    }

    async fn counter(&self, name: &str) -> u64 {
        self.0.counter(name).await.unwrap()
    }

    /// Waits until `done` holds, checking every 100 ms; returns how long it took.
    async fn wait<F: std::future::Future<Output = bool>>(&self, what: &str, timeout: Duration, done: impl Fn() -> F) -> Duration {
        let started = Instant::now();
        let held = wait::until(Duration::from_millis(100), timeout, async || Ok(done().await.then_some(()))).await.unwrap();
        assert!(held.is_some(), "{what}: not within {timeout:?}\n{}", self.envoy.log_tail());
        started.elapsed()
    }
}

#[tokio::test]
async fn bundles_decision_logs_and_staleness_in_real_envoy() {
    let mut site = Site::start().await;
    let pid = site.envoy.pid();
    site.wait("first bundle active in every VM", Duration::from_secs(15), || async {
        site.counter("bundle.activated").await >= TICKING_VMS
    })
    .await;
    assert_eq!(site.generate(ORCHESTRATOR.name, "e2e-allowed").await, 200);
    assert_eq!(site.generate(TOOL_RUNTIME.name, "e2e-denied").await, 403);

    // The seed's promise: a new bundle adds a caller, without restarting anything.
    let r2 = seed_bundle("r2", &[ORCHESTRATOR.spiffe_id, TOOL_RUNTIME.spiffe_id]);
    site.nginx.publish(BUNDLE, &r2).unwrap();
    let took = site
        .wait("tool runtime let in by bundle r2", MAX_DELAY + Duration::from_secs(3), || async {
            site.generate(TOOL_RUNTIME.name, "e2e-r2").await == 200
        })
        .await;
    println!("bundle r2 took effect {took:?} after it was published (polls every 1-2 s)");
    assert_eq!(site.envoy.pid(), pid);
    assert_eq!(site.counter("bundle.revision.r2").await, 1);
    // Later polls are conditional: nginx answers 304 to the active bundle's ETag.
    site.wait("a 304 for r2, counted", MAX_DELAY * 3, || async {
        site.nginx.served().unwrap().iter().any(|s| s.status == 304 && s.if_none_match == s.etag)
            && site.counter("bundle.not_modified").await >= 1
    })
    .await;

    // A corrupt bundle is rejected; r2 keeps deciding.
    let rejected = site.counter("bundle.rejected").await;
    site.nginx.publish(BUNDLE, b"\x1f\x8b\x08\0 this is not a bundle").unwrap();
    site.wait("corrupt bundle rejected", MAX_DELAY * 3, || async { site.counter("bundle.rejected").await > rejected }).await;
    assert_eq!(site.generate(TOOL_RUNTIME.name, "e2e-after-corrupt").await, 200);
    assert!(std::fs::read_to_string(site.envoy.log_path()).unwrap().contains("rejected bundle svidgate"));

    // Decision logs: OPA's schema, the bundle revision, masked credentials, ids shared with the
    // access log. The client's x-request-id is recorded in request_context, never the id.
    let request_id = |e: &Value| e["request_context"]["http"]["headers"]["x-request-id"][0].as_str().map(str::to_owned);
    let events = site
        .logs
        .wait_for(|events| events.iter().any(|e| request_id(e).as_deref() == Some("e2e-after-corrupt")), Duration::from_secs(10))
        .await
        .unwrap();
    let record = events
        .iter()
        .find(|e| request_id(e).as_deref() == Some("e2e-r2") && e["result"]["allowed"] == true)
        .expect("record of an allowed r2 request");
    assert_eq!(record["path"], "envoy/authz/allow");
    assert_eq!(record["bundles"], json!({"svidgate": {"revision": "r2"}}));
    assert_eq!(record["labels"]["cluster"], "e2e");
    assert_eq!(record["input"]["attributes"]["source"]["principal"], TOOL_RUNTIME.spiffe_id);
    assert!(record["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{record}");
    assert!(record["metrics"]["timer_rego_query_eval_ns"].as_u64().is_some_and(|ns| ns > 0), "{record}");
    let denied = events.iter().find(|e| request_id(e).as_deref() == Some("e2e-denied")).expect("record of the denial");
    let decision_id = denied["decision_id"].as_str().expect("a decision id").to_owned();
    assert!(decision_id.len() == 36 && decision_id != "e2e-denied", "svidgate's own id: {decision_id}");
    assert_eq!(denied["svidgate"]["decision"], "deny");
    assert!(!serde_json::to_string(&events).unwrap().contains("e2e-secret-token"), "authorization is masked");
    assert_eq!(denied["erased"], json!(["/input/attributes/request/http/headers/authorization"]), "{denied}");
    assert_eq!(denied["input"]["attributes"]["request"]["http"]["headers"]["x-request-id"], "e2e-denied");
    assert_eq!(site.logs.malformed(), 0);
    assert!(site.logs.requests().iter().all(|r| r.content_encoding.as_deref() == Some("gzip")));
    // Envoy flushes access logs about once a second.
    let access_log = site.run.path().join(format!("{}-access.log", MODEL_SERVER.name));
    let logged = || -> Option<Value> {
        let text = std::fs::read_to_string(&access_log).ok()?;
        text.lines().filter_map(|l| serde_json::from_str(l).ok()).find(|e: &Value| e["decision_id"] == decision_id.as_str())
    };
    site.wait("decision id in the access log", Duration::from_secs(5), || async { logged().is_some() }).await;
    let entry = logged().unwrap();
    assert_eq!(entry["status"], 403);
    assert_eq!(entry["request_id"], "e2e-denied");

    // The corrupt bundle never confirmed r2, so r2 has been ageing since. Serving r2 again (the
    // same bytes under a new ETag) confirms it without compiling it: the age starts from zero.
    let confirmed = site.counter("bundle.not_modified").await;
    let activated = site.counter("bundle.activated").await;
    site.nginx.publish(BUNDLE, &r2).unwrap();
    // Each VM polls every 1-2 s: by the fourth confirmation both VMs have had time to confirm.
    site.wait("r2 confirmed again in every VM", MAX_DELAY * 4, || async {
        site.counter("bundle.not_modified").await >= confirmed + 2 * TICKING_VMS
    })
    .await;
    assert_eq!(site.counter("bundle.activated").await, activated, "the same bytes are not compiled again");

    // The bundle server goes down: the last good policy stays while it ages, then fails closed.
    site.nginx.stop();
    let went_down = Instant::now();
    assert_eq!(site.generate(ORCHESTRATOR.name, "e2e-down").await, 200);
    site.wait("policy stale", MAX_POLICY_AGE + MAX_DELAY * 2, || async {
        site.generate(ORCHESTRATOR.name, "e2e-stale").await == 403
    })
    .await;
    println!("denied as stale {:?} after the bundle server went down (max_policy_age {MAX_POLICY_AGE:?})", went_down.elapsed());
    assert!(site.counter("error.policy_stale").await >= 1);
    assert!(site.counter("bundle.fetch_failed").await >= 1);
    // The gauge is written on each tick, once a second, so it may trail the denial by a second.
    site.wait("policy age gauge past max_policy_age", Duration::from_secs(3), || async {
        site.counter("policy_age_seconds").await >= MAX_POLICY_AGE.as_secs()
    })
    .await;

    // The server comes back with bundle r3: it is activated and the policy is fresh again.
    site.nginx.publish(BUNDLE, &seed_bundle("r3", &[ORCHESTRATOR.spiffe_id])).unwrap();
    site.nginx.restart().unwrap();
    site.wait("r3 activated after the server came back", MAX_DELAY * 3, || async {
        site.generate(ORCHESTRATOR.name, "e2e-back").await == 200
    })
    .await;
    assert_eq!(site.generate(TOOL_RUNTIME.name, "e2e-r3").await, 403);

    // Repeated decisions came from the decision cache; each bundle was evaluated afresh (the
    // decisions above after each swap are those of the new bundle).
    let (hits, misses) = (site.counter("decision_cache.hits").await, site.counter("decision_cache.misses").await);
    let dump = site.envoy.admin("/stats?filter=svidgate").await.unwrap().body;
    assert!(hits >= 1 && misses >= 3, "decision cache: {hits} hits, {misses} misses\n{dump}");

    // Every metric is visible to Prometheus, without the wasmcustom prefix.
    let prometheus = site.envoy.admin("/stats/prometheus").await.unwrap();
    let text = prometheus.body;
    for metric in [
        "svidgate_authz_allowed",
        "svidgate_authz_denied",
        "svidgate_authz_errors",
        "svidgate_authz_error_policy_stale",
        "svidgate_authz_bundle_activated",
        "svidgate_authz_bundle_not_modified",
        "svidgate_authz_bundle_rejected",
        "svidgate_authz_bundle_fetch_failed",
        "svidgate_authz_policy_age_seconds",
        "svidgate_authz_decision_logs_uploaded",
        "svidgate_authz_decision_logs_dropped",
        "svidgate_authz_decision_cache_hits",
        "svidgate_authz_decision_cache_misses",
        "svidgate_identity_spoof_attempts",
        "svidgate_authz_decision_latency_us_bucket",
    ] {
        assert!(text.contains(&format!("{metric}{{")), "{metric} missing from /stats/prometheus");
    }
    assert_eq!(site.envoy.pid(), pid);
    site.envoy.check_running().unwrap();
}
