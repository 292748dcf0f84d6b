//! The model server's sidecar of `envoy/demo/sidecar-bundle.yaml`, run whole: nginx serving its
//! OPA bundle, a decision-log receiver, the app, Envoy, and mTLS clients for the orchestrator and
//! the tool runtime. `tests/bundles.rs` and `tests/monitoring.rs` start it with their own plugin
//! configurations.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, TOOL_RUNTIME};

use crate::client::{Http, Request, TlsClient};
use crate::envoy::{self, Envoy};
use crate::logsink::LogSink;
use crate::nginx::Nginx;
use crate::pki::MintedDomain;
use crate::topology::{Modules, Policy, RunDir, path_str};
use crate::upstream::Upstream;

/// The bundle's file name under nginx's root.
pub const BUNDLE: &str = "svidgate.tar.gz";

/// The running sidecar and the servers around it.
pub struct BundleSidecar {
    /// Envoy.
    pub envoy: Envoy,
    /// The inbound (mTLS) listener's port.
    pub port: u16,
    /// The bundle server.
    pub nginx: Nginx,
    /// The decision-log receiver.
    pub logs: LogSink,
    /// mTLS clients by workload name (orchestrator, tool runtime).
    pub clients: BTreeMap<&'static str, TlsClient>,
    /// The run directory (logs, certificates, bundles).
    pub run: RunDir,
    _app: Upstream,
}

/// The seed policy's files with `callers` allowed on /v1/generate and `extra` modules, as
/// `svidgate bundle build` lays a bundle out (write it with `svidgate_cli::write_bundle`).
pub fn seed_bundle_entries(revision: &str, callers: &[&str], extra: &[(&str, &str)]) -> Result<Vec<(String, Vec<u8>)>> {
    let policy = Policy::for_workload(MODEL_SERVER)?;
    let mut entries: Vec<(String, Vec<u8>)> =
        policy.modules.iter().map(|(name, source)| (format!("envoy/authz/{name}"), source.clone().into_bytes())).collect();
    entries.extend(extra.iter().map(|(name, source)| (format!("envoy/authz/{name}"), source.as_bytes().to_vec())));
    entries.push((".manifest".into(), json!({"revision": revision, "roots": ["envoy/authz", "allowed_callers"]}).to_string().into()));
    entries.push(("data.json".into(), json!({"allowed_callers": {"generate": callers}}).to_string().into()));
    Ok(entries)
}

impl BundleSidecar {
    /// Starts everything in a run directory labelled `label`: nginx serving `bundle`, the app
    /// (`upstream_bin`), Envoy with `plugin_configuration`.
    pub async fn start(label: &str, upstream_bin: &Path, plugin_configuration: &Value, bundle: &[u8]) -> Result<Self> {
        let run = RunDir::new(label)?;
        let pki = MintedDomain::mint(&run.path().join("certs"))?;
        let root = run.path().join("bundles");
        std::fs::create_dir_all(&root)?;
        let nginx = Nginx::start(&root, run.path())?;
        nginx.publish(BUNDLE, bundle)?;
        let logs = LogSink::start()?;
        let app = Upstream::start(upstream_bin, MODEL_SERVER.name, run.path())?;
        let modules = Modules::built()?;
        let config = envoy::render(
            &envoy::template("sidecar-bundle.yaml")?,
            &[
                ("workload", MODEL_SERVER.name.to_owned()),
                ("certs", path_str(pki.dir())),
                ("run_dir", path_str(run.path())),
                ("app_port", app.port().to_string()),
                ("authz_wasm", path_str(&modules.authz)),
                ("bundle_port", nginx.port().to_string()),
                ("logs_port", logs.port().to_string()),
                ("plugin_configuration", envoy::yaml_string(&plugin_configuration.to_string())?),
            ],
        )?;
        let envoy = Envoy::start(&format!("envoy-{label}"), &config, run.path()).await?;
        let port = envoy.listener_port("inbound").await?;
        let mut clients = BTreeMap::new();
        for workload in [ORCHESTRATOR, TOOL_RUNTIME] {
            clients.insert(workload.name, TlsClient::new(&pki.bundle(), Some(&pki.cert(workload.name)?))?);
        }
        Ok(Self { envoy, port, nginx, logs, clients, run, _app: app })
    }

    /// Sends `request` over HTTP/2 as workload `caller`; returns the status.
    pub async fn send(&self, caller: &str, request: &Request) -> Result<u16> {
        let client = self.clients.get(caller).with_context(|| format!("no client for {caller}"))?;
        Ok(client.send(self.port, Http::H2, request).await?.status)
    }

    /// A counter or gauge of the authz module (`bundle.activated`), 0 while absent.
    pub async fn counter(&self, name: &str) -> Result<u64> {
        Ok(self.envoy.stat(&format!("wasmcustom.svidgate.authz.{name}")).await?.unwrap_or(0))
    }
}
