//! The two authz flavors in real Envoy: `svidgate_authz.wasm` (lean) and
//! `svidgate_authz_full.wasm` (every builtin family regorus builds for wasm32-wasip1). Both load
//! and decide the orchestrator's policy; the full one also runs a policy the lean one refuses at
//! load (`glob.match`, `base64.decode`, `time.parse_rfc3339_ns`). Prints each flavor's cost in
//! Envoy, measured in one run: from starting Envoy to the first decided request (V8 compiles the
//! module at load), and the Envoy process's resident memory after it (README "Rego builtins").

use std::time::Instant;

use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::paths;
use svidgate_e2e::topology::{Alone, Modules, SidecarOptions};
use svidgate_testpki::{GATEWAY, ORCHESTRATOR};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");

/// The Envoy process's resident set, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find(|line| line.starts_with("VmRSS:")).unwrap_or_default();
    line.split_whitespace().nth(1).and_then(|kib| kib.parse().ok()).unwrap_or_default()
}

#[tokio::test]
async fn both_flavors_load_in_envoy_and_the_full_one_runs_the_builtins_the_lean_one_lacks() {
    let modules = Modules::built().unwrap();
    let full = paths::module("svidgate_authz_full.wasm").unwrap();
    let mut measured = Vec::new();
    for (flavor, wasm) in [("lean", &modules.authz), ("full", &full)] {
        let started = Instant::now();
        let site = Alone::start(&format!("flavor-{flavor}"), UPSTREAM.as_ref(), ORCHESTRATOR, &SidecarOptions::new(wasm))
            .await
            .unwrap();
        let client = TlsClient::new(&site.pki.bundle(), Some(&site.pki.cert(GATEWAY.name).unwrap())).unwrap();
        let response =
            client.send(site.sidecar.inbound_port, Http::H1, &Request::new("POST", "/v1/agent/plan")).await.unwrap();
        assert_eq!(response.status, 200, "{flavor}: the orchestrator's policy lets the gateway plan");
        let ready = started.elapsed();
        let size = std::fs::metadata(wasm).unwrap().len();
        measured.push(format!(
            "{flavor}: {size} bytes, first decision {} ms after starting Envoy, Envoy RSS {} MiB",
            ready.as_millis(),
            rss_kib(site.sidecar.envoy.pid()) / 1024
        ));
    }

    // What only the full flavor has: glob, base64 and time builtins.
    let rego = r#"package envoy.authz
import rego.v1
default allow := false
allow if {
    glob.match("/v1/agent/*", ["/"], input.attributes.request.http.path)
    base64.decode(input.attributes.request.http.headers["x-team"]) == "agents"
    time.parse_rfc3339_ns("2026-01-01T00:00:00Z") > 0
}"#;
    let plugin = serde_json::json!({"trust_domains": ["ai.internal"], "policy": {"rego": rego}});
    let options = SidecarOptions { plugin: Some(plugin), ..SidecarOptions::new(&full) };
    let site = Alone::start("flavor-full-builtins", UPSTREAM.as_ref(), ORCHESTRATOR, &options).await.unwrap();
    let client = TlsClient::new(&site.pki.bundle(), Some(&site.pki.cert(GATEWAY.name).unwrap())).unwrap();
    let port = site.sidecar.inbound_port;
    let team = Request::new("POST", "/v1/agent/plan").header("x-team", "YWdlbnRz");
    assert_eq!(client.send(port, Http::H1, &team).await.unwrap().status, 200);
    let other = Request::new("POST", "/v1/admin").header("x-team", "YWdlbnRz");
    assert_eq!(client.send(port, Http::H1, &other).await.unwrap().status, 403);
    let no_team = Request::new("POST", "/v1/agent/plan");
    assert_eq!(client.send(port, Http::H1, &no_team).await.unwrap().status, 403);
    println!("{}", measured.join("\n"));
}
