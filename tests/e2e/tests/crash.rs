//! A crash of the svidgate VM under `failure_policy: FAIL_RELOAD`: Envoy answers 503 while the
//! VM is dead, nothing reaches the app unauthorized, and a fresh VM takes over.
//!
//! Uses the authz module built with the test-only `test-crash-trigger` feature (a request with
//! `x-svidgate-test-crash` panics the VM), built into its own target directory: the shipped
//! module has no such trigger.

use std::time::{Duration, Instant};

use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::paths;
use svidgate_e2e::topology::{Alone, SidecarOptions};
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, ROGUE};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
/// How long a fresh VM may take to come back.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn crashed_vm_fails_closed_with_503_then_reloads_under_fail_reload() {
    let crash_wasm = paths::crash_wasm().unwrap();
    let alone = Alone::start("crash", UPSTREAM.as_ref(), MODEL_SERVER, &SidecarOptions::new(&crash_wasm)).await.unwrap();
    let port = alone.sidecar.inbound_port;
    let app = &alone.sidecar.app;
    let orchestrator = TlsClient::new(&alone.pki.bundle(), Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let rogue = TlsClient::new(&alone.pki.bundle(), Some(&alone.pki.cert(ROGUE.name).unwrap())).unwrap();
    let generate = |marker: &str| Request::new("POST", "/v1/generate").header("x-request-marker", marker);

    let before = orchestrator.send(port, Http::H1, &generate("before")).await.unwrap();
    assert_eq!(before.status, 200, "{before:?}");

    // An allowed caller's request that crashes the VM is not let through: 503, never the app.
    let crash = orchestrator.send(port, Http::H2, &generate("crash").header("x-svidgate-test-crash", "1")).await.unwrap();
    assert_eq!(crash.status, 503, "{crash:?}");
    assert!(app.seen_with_marker("crash").unwrap().is_empty(), "the crashing request reached the app");

    // While the VM is being replaced: the rogue is never let in, and every 503 stayed out of the app.
    let started = Instant::now();
    let mut during = Vec::new();
    let recovered = loop {
        assert!(started.elapsed() < RECOVERY_TIMEOUT, "no recovery in {RECOVERY_TIMEOUT:?}: {during:?}");
        let n = during.len();
        let rogue_status = rogue.send(port, Http::H2, &generate(&format!("rogue-{n}"))).await.unwrap().status;
        let allowed = orchestrator.send(port, Http::H1, &generate(&format!("orchestrator-{n}"))).await.unwrap();
        during.push((rogue_status, allowed.status));
        assert!(matches!(rogue_status, 403 | 503), "rogue got {rogue_status} during recovery: {during:?}");
        assert!(matches!(allowed.status, 200 | 503), "orchestrator got {} during recovery", allowed.status);
        assert!(app.seen_with_marker(&format!("rogue-{n}")).unwrap().is_empty(), "a rogue request reached the app");
        let reached = app.seen_with_marker(&format!("orchestrator-{n}")).unwrap();
        if allowed.status == 503 {
            assert!(reached.is_empty(), "a 503 request reached the app");
        } else {
            assert_eq!(reached.len(), 1);
            assert_eq!(reached[0].identities, [ORCHESTRATOR.spiffe_id]);
            break during;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("recovered after {:?}; (rogue, orchestrator) statuses meanwhile: {recovered:?}", started.elapsed());
    assert_eq!(recovered.first(), Some(&(503, 503)), "the requests right after the crash must get 503");

    // The fresh VM enforces the same policy.
    let rogue_after = rogue.send(port, Http::H1, &generate("rogue-after")).await.unwrap();
    assert_eq!(rogue_after.status, 403);
    let after = orchestrator.send(port, Http::H2, &generate("after")).await.unwrap();
    assert_eq!(after.status, 200);
    let log = std::fs::read_to_string(alone.sidecar.envoy.log_path()).unwrap();
    assert!(log.contains("svidgate test crash"), "the crash is not in Envoy's log");
}
