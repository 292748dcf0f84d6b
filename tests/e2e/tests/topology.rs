//! The seed's topology end to end: the perimeter strips identities, the orchestrator's calls
//! carry its identity to the services, and outbound clusters only talk to the SPIFFE ID they expect.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test helpers: a failure is the test failing")]

use svidgate_e2e::client::{self, Http, Request, TlsClient};
use svidgate_e2e::topology::{Modules, Policy, RunDir, Sidecar, SidecarOptions, Site, Topology};
use svidgate_e2e::upstream::Seen;
use svidgate_testpki::{GATEWAY, MODEL_SERVER, ORCHESTRATOR, ROGUE, TOOL_RUNTIME, VECTOR_STORE};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const ID_HEADER: &str = "x-forwarded-spiffe-id";

fn identities(seen: Vec<Seen>) -> Vec<Vec<String>> {
    seen.into_iter().map(|s| s.identities).collect()
}

/// Both scenarios share one topology (five Envoys, four apps): the perimeter one runs first, as
/// it counts the gateway's spoof attempts exactly, and the services one never goes through the gateway.
#[tokio::test]
async fn perimeter_strips_identities_and_services_see_the_orchestrator_id() {
    let run = RunDir::new("topology").unwrap();
    let t = Topology::start(run.path(), &Modules::built().unwrap(), UPSTREAM.as_ref()).await.unwrap();
    perimeter_gateway_strips_identity_headers_from_the_public_side(&t).await;
    services_see_the_orchestrator_id_when_the_orchestrator_calls_them(&t).await;
}

async fn perimeter_gateway_strips_identity_headers_from_the_public_side(t: &Topology) {
    let public = TlsClient::new(&t.pki.bundle(), None).unwrap();
    let app = &t.orchestrator.app;
    for http in [Http::H1, Http::H2] {
        let marker = format!("public-{http:?}");
        let request = Request::new("POST", "/v1/agent/plan")
            .header(ID_HEADER, ORCHESTRATOR.spiffe_id)
            .header(ID_HEADER, MODEL_SERVER.spiffe_id)
            .header("x-request-marker", &marker);
        let response = public.send(t.gateway_port, http, &request).await.unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        // The orchestrator sees the gateway (its sidecar's injected peer), not the forged callers.
        assert_eq!(identities(app.seen_with_marker(&marker).unwrap()), [[GATEWAY.spiffe_id]]);
    }
    let spoofs = t.gateway.stat("wasmcustom.svidgate.identity.spoof_attempts").await.unwrap();
    assert_eq!(spoofs, Some(2));

    // Why the strip matters: the orchestrator's sidecar trusts the gateway as a forwarder, so an
    // identity header arriving over the gateway's mTLS connection is passed on as the caller.
    // Had the gateway forwarded the public header, the app would have believed it.
    let as_gateway = TlsClient::new(&t.pki.bundle(), Some(&t.pki.cert(GATEWAY.name).unwrap())).unwrap();
    let request = Request::new("POST", "/v1/agent/plan")
        .header(ID_HEADER, ORCHESTRATOR.spiffe_id)
        .header("x-request-marker", "forwarded");
    let response = as_gateway.send(t.orchestrator.inbound_port, Http::H2, &request).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(identities(app.seen_with_marker("forwarded").unwrap()), [[ORCHESTRATOR.spiffe_id]]);

    // A public request outside the agent API gets the orchestrator policy's reply.
    let response = public.send(t.gateway_port, Http::H1, &Request::new("GET", "/admin")).await.unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.body, r#"{"error": "caller may not use the agent api"}"#);
}

async fn services_see_the_orchestrator_id_when_the_orchestrator_calls_them(t: &Topology) {
    let search = r#"{"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "search", "arguments": {}}}"#;
    let calls = [
        (MODEL_SERVER, "/v1/generate", "", &t.model_server),
        (VECTOR_STORE, "/v1/collections/product-docs/query", "", &t.vector_store),
        (TOOL_RUNTIME, "/mcp", search, &t.tool_runtime),
    ];
    for (target, path, body, sidecar) in calls {
        let marker = format!("to-{}", target.name);
        // The orchestrator app forges nothing useful: its sidecar's peer strips whatever it sends.
        let request = Request::new("POST", path)
            .header(ID_HEADER, ROGUE.spiffe_id)
            .header("x-request-marker", &marker)
            .header("content-type", "application/json")
            .body(body);
        let response = client::plain(t.outbound_port(target).unwrap(), &request).await.unwrap();
        assert_eq!(response.status, 200, "{}: {response:?}", target.name);
        let seen = sidecar.app.seen_with_marker(&marker).unwrap();
        assert_eq!(identities(seen.clone()), [[ORCHESTRATOR.spiffe_id]], "{}", target.name);
        assert_eq!(seen[0].path, path);
    }
    // A tool the orchestrator is not granted.
    let shell = r#"{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "shell", "arguments": {}}}"#;
    let request = Request::new("POST", "/mcp")
        .header("x-request-marker", "shell")
        .header("content-type", "application/json")
        .body(shell);
    let response = client::plain(t.outbound_port(TOOL_RUNTIME).unwrap(), &request).await.unwrap();
    assert_eq!(response.status, 403);
    assert_eq!(response.header_values("x-svidgate-policy"), ["tool-runtime"]);
    assert!(t.tool_runtime.app.seen_with_marker("shell").unwrap().is_empty());
}

#[tokio::test]
async fn orchestrator_refuses_an_upstream_presenting_another_spiffe_id() {
    let run = RunDir::new("pinning").unwrap();
    let modules = Modules::built().unwrap();
    let pki = svidgate_e2e::pki::MintedDomain::mint(&run.path().join("certs")).unwrap();
    let options = SidecarOptions::new(&modules.authz);
    let policy = Policy::for_workload(VECTOR_STORE).unwrap();
    let site = Site { dir: run.path(), pki: &pki, upstream_bin: UPSTREAM.as_ref() };
    let vector_store = Sidecar::start(site, VECTOR_STORE, "sidecar.yaml", policy, &options, &[]).await.unwrap();
    // Every outbound cluster of the orchestrator points at the vector store's sidecar.
    let port = vector_store.inbound_port.to_string();
    let extra = [("model_server_port", port.clone()), ("vector_store_port", port.clone()), ("tool_runtime_port", port)];
    let policy = Policy::for_workload(ORCHESTRATOR).unwrap();
    let orchestrator = Sidecar::start(site, ORCHESTRATOR, "orchestrator.yaml", policy, &options, &extra).await.unwrap();
    let out = |name: &str| {
        let envoy = &orchestrator.envoy;
        let name = format!("outbound-{name}");
        async move { envoy.listener_port(&name).await }
    };
    let query = Request::new("POST", "/v1/collections/product-docs/query").header("x-request-marker", "impostor");
    let response = client::plain(out(MODEL_SERVER.name).await.unwrap(), &query).await.unwrap();
    assert_eq!(response.status, 503, "a peer that is not the model server must not be used: {response:?}");
    assert!(vector_store.app.seen_with_marker("impostor").unwrap().is_empty());
    let query = Request::new("POST", "/v1/collections/product-docs/query").header("x-request-marker", "genuine");
    let response = client::plain(out(VECTOR_STORE.name).await.unwrap(), &query).await.unwrap();
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(identities(vector_store.app.seen_with_marker("genuine").unwrap()), [[ORCHESTRATOR.spiffe_id]]);
}
