//! Policy data changes through Envoy's own reconfiguration (ECDS from a watched file) take
//! effect without restarting Envoy; a change the module refuses leaves the previous policy on.

use serde_json::json;
use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::topology::{Alone, ECDS_FAILURES, Modules, SidecarOptions};
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, ROGUE};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");

#[tokio::test]
async fn policy_data_change_through_ecds_takes_effect_without_restart() {
    let modules = Modules::built().unwrap();
    let mut alone =
        Alone::start("reconfigure", UPSTREAM.as_ref(), MODEL_SERVER, &SidecarOptions::new(&modules.authz)).await.unwrap();
    let port = alone.sidecar.inbound_port;
    let orchestrator = TlsClient::new(&alone.pki.bundle(), Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let rogue = TlsClient::new(&alone.pki.bundle(), Some(&alone.pki.cert(ROGUE.name).unwrap())).unwrap();
    let generate = Request::new("POST", "/v1/generate");
    let pid = alone.sidecar.envoy.pid();
    let status = |client: &TlsClient, http| {
        let client = client.clone();
        let generate = generate.clone();
        async move { client.send(port, http, &generate).await.map(|r| r.status) }
    };
    assert_eq!(status(&orchestrator, Http::H2).await.unwrap(), 200);
    assert_eq!(status(&rogue, Http::H2).await.unwrap(), 403);

    // The seed's §7.3 in reverse: the orchestrator is taken out of data.allowed_callers.generate.
    alone.sidecar.set_policy_data(json!({"allowed_callers": {"generate": [ROGUE.spiffe_id]}})).await.unwrap();
    assert_eq!(status(&orchestrator, Http::H2).await.unwrap(), 403);
    assert_eq!(status(&orchestrator, Http::H1).await.unwrap(), 403);
    assert_eq!(status(&rogue, Http::H1).await.unwrap(), 200);
    assert_eq!(alone.sidecar.envoy.pid(), pid);
    alone.sidecar.envoy.check_running().unwrap();

    // Data that is not an object is refused by on_configure: Envoy NACKs it, the last good policy stays.
    let failures = alone.sidecar.envoy.stat(ECDS_FAILURES).await.unwrap().unwrap_or(0);
    alone.sidecar.write_policy_data(json!(["not", "an", "object"])).unwrap();
    alone.sidecar.wait_for_stat_above(ECDS_FAILURES, failures).await.unwrap();
    // Envoy counts the attempt in config_reload too; what matters is what is enforced next.
    let log = std::fs::read_to_string(alone.sidecar.envoy.log_path()).unwrap();
    assert!(log.contains("Filesystem config update rejected"), "{log}");
    assert_eq!(status(&orchestrator, Http::H2).await.unwrap(), 403);
    assert_eq!(status(&rogue, Http::H2).await.unwrap(), 200);
    assert_eq!(alone.sidecar.envoy.pid(), pid);
}
