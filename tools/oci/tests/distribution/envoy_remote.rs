//! Real Envoy loading the module through `vm_config.code.remote`: the bytes come out of the
//! compat image `svidgate-oci` built, over HTTP, pinned by the sha256 `svidgate-oci` printed.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use svidgate_oci::{Kind, gate, layout};

use crate::layout_gate::package;
use crate::support::{FileServer, Process, Scratch, envoy_bin, http_get, wait_for};

const MODULE_PATH: &str = "/svidgate_identity.wasm";
const FORGED: &str = "spiffe://ai.internal/ns/agents/sa/orchestrator";

/// One listener, the identity module at the perimeter (strip forged identity headers), fetched
/// from `@PORT@` and pinned by `@SHA256@`; behind it the same server echoes the request head.
const CONFIG: &str = r#"
admin:
  address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
static_resources:
  listeners:
  - name: ingress
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: svidgate
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: svidgate
                root_id: svidgate
                failure_policy: FAIL_CLOSED
                vm_config:
                  vm_id: svidgate
                  runtime: envoy.wasm.runtime.v8
                  code:
                    remote:
                      http_uri: { uri: "http://127.0.0.1:@PORT@@PATH@", cluster: module_server, timeout: 10s }
                      sha256: "@SHA256@"
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: '{"mode": "perimeter"}'
          - name: envoy.filters.http.router
            typed_config: { "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: { prefix: "/" }
                route: { cluster: module_server }
  clusters:
  - name: module_server
    type: STATIC
    connect_timeout: 2s
    load_assignment:
      cluster_name: module_server
      endpoints:
      - lb_endpoints:
        - endpoint: { address: { socket_address: { address: 127.0.0.1, port_value: @PORT@ } } }
"#;

#[test]
fn envoy_loads_the_packaged_module_by_its_sha256_and_strips_forged_identities() -> Result<()> {
    let scratch = Scratch::new("envoy-remote")?;
    let out = scratch.join("oci");
    let (revision, pins) = package(&out)?;
    let pin = pins.artifacts.iter().find(|p| p.name == "svidgate-identity" && p.kind == Kind::Compat).context("no pin")?;
    let image = layout::read(&out.join("svidgate-identity/compat"))?;
    let module = gate::istio_module(&image.manifest, |d| image.blob(d))?.wasm;
    let server = FileServer::start(MODULE_PATH, module)?;
    let envoy = Envoy::start(&scratch, server.port, &pin.wasm_sha256)?;
    let port = envoy.listener_port()?;

    let response = wait_for(Duration::from_secs(60), "the module to load and the listener to answer", || {
        Ok(http_get(port, "/v1/generate", &[("x-forwarded-spiffe-id", FORGED)]).ok().filter(|r| r.status == 200))
    })?;
    assert!(response.body.contains("get /v1/generate"), "the upstream did not get the request: {}", response.body);
    assert!(
        !response.body.contains("x-forwarded-spiffe-id"),
        "a forged identity reached the upstream:\n{}",
        response.body
    );
    assert!(server.module_fetches() >= 1, "Envoy never fetched the module");
    let started = format!("svidgate_identity {} ({revision}) starting", env!("CARGO_PKG_VERSION"));
    assert!(envoy.process.log().contains(&started), "no {started:?} in Envoy's log");
    Ok(())
}

#[test]
fn envoy_answers_503_to_everything_when_the_sha256_is_not_the_modules() -> Result<()> {
    let scratch = Scratch::new("envoy-wrong-sha")?;
    let out = scratch.join("oci");
    let (_, pins) = package(&out)?;
    let pin = pins.artifacts.iter().find(|p| p.name == "svidgate-identity" && p.kind == Kind::Compat).context("no pin")?;
    let image = layout::read(&out.join("svidgate-identity/compat"))?;
    let module = gate::istio_module(&image.manifest, |d| image.blob(d))?.wasm;
    let server = FileServer::start(MODULE_PATH, module)?;
    // The usual mistake: the image's manifest digest is what Istio pins, not what Envoy pins.
    let wrong = &pin.manifest_digest;
    ensure!(wrong.hex() != pin.wasm_sha256, "the manifest digest cannot be the module's sha256");
    let mut envoy = Envoy::start(&scratch, server.port, wrong.hex())?;
    let port = envoy.listener_port()?;

    wait_for(Duration::from_secs(60), "Envoy to fetch the module and refuse it", || {
        envoy.process.check_running()?;
        Ok((server.module_fetches() >= 1 && envoy.process.log().contains("failed to load")).then_some(()))
    })?;
    for path in ["/", "/v1/generate", "/healthz"] {
        let response = wait_for(Duration::from_secs(10), "an answer", || {
            Ok(http_get(port, path, &[("x-forwarded-spiffe-id", FORGED)]).ok())
        })?;
        assert_eq!(response.status, 503, "{path}: {}", response.body);
    }
    assert_eq!(server.upstream_requests(), 0, "a request reached the upstream without the module");
    Ok(())
}

/// Envoy on one of `CONFIG`'s renderings, its admin API on a port it picked.
struct Envoy {
    process: Process,
    admin_port: u16,
}

impl Envoy {
    fn start(scratch: &Scratch, module_port: u16, sha256: &str) -> Result<Self> {
        let config = CONFIG
            .replace("@PORT@", &module_port.to_string())
            .replace("@PATH@", MODULE_PATH)
            .replace("@SHA256@", sha256);
        let config_path = scratch.join("envoy.yaml");
        std::fs::write(&config_path, config)?;
        let admin_file = scratch.join("envoy.admin");
        let mut command = Command::new(envoy_bin()?);
        command.arg("-c").arg(&config_path);
        command.args(["--concurrency", "1", "--disable-hot-restart", "--log-level", "info"]);
        command.args(["--component-log-level", "wasm:debug,main:warning"]).arg("--admin-address-path").arg(&admin_file);
        let mut process = Process::spawn("envoy", command, scratch.path())?;
        let admin_port = wait_for(Duration::from_secs(30), "Envoy's admin address", || {
            process.check_running()?;
            Ok(read_port(&admin_file))
        })?;
        Ok(Self { process, admin_port })
    }

    /// The port the listener bound (it asks for port 0).
    fn listener_port(&self) -> Result<u16> {
        wait_for(Duration::from_secs(30), "the listener's port", || {
            let Ok(response) = http_get(self.admin_port, "/listeners?format=json", &[]) else { return Ok(None) };
            let Ok(listeners) = serde_json::from_str::<serde_json::Value>(&response.body) else { return Ok(None) };
            Ok(listeners
                .pointer("/listener_statuses/0/local_address/socket_address/port_value")
                .and_then(serde_json::Value::as_u64)
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p != 0))
        })
    }
}

fn read_port(admin_file: &Path) -> Option<u16> {
    std::fs::read_to_string(admin_file).ok()?.trim().rsplit(':').next()?.parse().ok()
}
