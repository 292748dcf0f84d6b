//! The seed's architecture on loopback: an API gateway, an agent orchestrator, and a model
//! server, a vector store and a tool runtime, each app behind its own sidecar Envoy with
//! svidgate authz on the inbound side, mTLS between every pair with SVIDs from [`MintedDomain`].
//!
//! Start order follows the dependencies, so nobody guesses ports: the three services first, then
//! the orchestrator (its outbound clusters need their inbound ports), then the gateway.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::{Value, json};
use svidgate_testpki::{GATEWAY, MODEL_SERVER, ORCHESTRATOR, TOOL_RUNTIME, TRUST_DOMAIN, VECTOR_STORE, Workload};

use crate::envoy::{self, Envoy};
use crate::paths;
use crate::pki::MintedDomain;
use crate::upstream::Upstream;
use crate::wait;

/// How long a policy reconfiguration may take to reach the filter.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(20);

/// A scratch directory for one run: removed on drop, kept (and named) when a test panics.
pub struct RunDir {
    path: PathBuf,
    keep: bool,
}

/// The wasm modules a topology loads.
#[derive(Clone, Debug)]
pub struct Modules {
    /// `svidgate_authz.wasm` (or a test build of it).
    pub authz: PathBuf,
    /// `svidgate_identity.wasm`.
    pub identity: PathBuf,
}

/// A workload's Rego policy and the data it reads.
#[derive(Clone, Debug, PartialEq)]
pub struct Policy {
    /// Modules by file name.
    pub modules: BTreeMap<String, String>,
    /// The base document `data`.
    pub data: Value,
}

/// How to start one sidecar.
#[derive(Clone, Debug)]
pub struct SidecarOptions {
    /// The authz module to load.
    pub authz_wasm: PathBuf,
    /// Let Envoy's TLS accept expired client certificates (only to show that svidgate refuses them).
    pub allow_expired_certificate: bool,
    /// Peers whose identity header names the original caller (the orchestrator trusts the gateway).
    pub trusted_forwarders: Vec<String>,
    /// Run Envoy as it comes, without the HTTP hardening every config under `envoy/` carries
    /// (underscores refused, paths normalized): to show what svidgate holds on its own.
    pub envoy_defaults: bool,
    /// The svidgate plugin configuration, instead of the workload's sidecar configuration.
    pub plugin: Option<Value>,
    /// HTTP filters (YAML list items, indented as in the template) placed before svidgate's.
    pub filters_before: Option<String>,
    /// The inbound routes (YAML list items, indented as in the template) instead of the one
    /// catch-all route to the app.
    pub routes: Option<String>,
}

/// Where sidecars of one run start: the run directory, the trust domain, the app binary.
#[derive(Clone, Copy)]
pub struct Site<'a> {
    /// Configs, logs and ECDS files go here.
    pub dir: &'a Path,
    /// The minted trust domain.
    pub pki: &'a MintedDomain,
    /// The `svidgate-upstream` binary.
    pub upstream_bin: &'a Path,
}

/// A workload's app and its sidecar Envoy.
pub struct Sidecar {
    /// The workload.
    pub workload: Workload,
    /// Its app.
    pub app: Upstream,
    /// Its sidecar.
    pub envoy: Envoy,
    /// The sidecar's inbound (mTLS) port.
    pub inbound_port: u16,
    ecds_path: PathBuf,
    authz_wasm: PathBuf,
    trusted_forwarders: Vec<String>,
    policy: Policy,
    version: u32,
}

/// One sidecar on its own, with its trust domain and run directory (dropped in this order).
pub struct Alone {
    /// The sidecar and its app.
    pub sidecar: Sidecar,
    /// The minted trust domain.
    pub pki: MintedDomain,
    /// The run directory.
    pub run: RunDir,
}

/// The whole demo topology.
pub struct Topology {
    /// The minted trust domain (certificates on disk).
    pub pki: MintedDomain,
    /// The gateway Envoy.
    pub gateway: Envoy,
    /// The gateway's public (TLS, no client certificate) port.
    pub gateway_port: u16,
    /// The orchestrator's app and sidecar.
    pub orchestrator: Sidecar,
    /// The orchestrator sidecar's outbound ports, by target workload name.
    pub outbound: BTreeMap<&'static str, u16>,
    /// The model server's app and sidecar.
    pub model_server: Sidecar,
    /// The vector store's app and sidecar.
    pub vector_store: Sidecar,
    /// The tool runtime's app and sidecar.
    pub tool_runtime: Sidecar,
}

impl RunDir {
    /// A fresh directory under the system temp dir, named after `label`.
    pub fn new(label: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("svidgate-e2e-{label}-{}-{n}", std::process::id()));
        Self::at(&path, false)
    }

    /// `path`, created if needed and emptied of a previous run; kept on drop if `keep`.
    pub fn at(path: &Path, keep: bool) -> Result<Self> {
        if path.exists() {
            std::fs::remove_dir_all(path).with_context(|| format!("clearing {}", path.display()))?;
        }
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self { path: path.to_owned(), keep })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== run directory kept for inspection: {} ===", self.path.display());
        } else if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

impl Modules {
    /// The modules `cargo xtask build` built.
    pub fn built() -> Result<Self> {
        Ok(Self { authz: paths::module("svidgate_authz.wasm")?, identity: paths::module("svidgate_identity.wasm")? })
    }
}

impl Policy {
    /// The policy of a workload under `policies/`: the seed's (`policies/seed/`) for the model
    /// server, `policies/<name>/` for the others; every `*.rego` but the `*_test.rego` files, and `data.json`.
    pub fn for_workload(workload: Workload) -> Result<Self> {
        let name = if workload == MODEL_SERVER { "seed" } else { workload.name };
        let dir = paths::workspace_root().join("policies").join(name);
        let mut modules = BTreeMap::new();
        for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = entry?.path();
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            if file.ends_with(".rego") && !file.ends_with("_test.rego") {
                modules.insert(file, read(&path)?);
            }
        }
        let data_path = dir.join("data.json");
        let data = serde_json::from_str(&read(&data_path)?).with_context(|| format!("parsing {}", data_path.display()))?;
        Ok(Self { modules, data })
    }
}

impl SidecarOptions {
    /// A sidecar of the demo, loading `authz_wasm`.
    pub fn new(authz_wasm: &Path) -> Self {
        Self {
            authz_wasm: authz_wasm.to_owned(),
            allow_expired_certificate: false,
            trusted_forwarders: Vec::new(),
            envoy_defaults: false,
            plugin: None,
            filters_before: None,
            routes: None,
        }
    }
}

/// The plugin configuration of an inbound sidecar (both modules read the same keys).
pub fn plugin_configuration(policy: &Policy, trusted_forwarders: &[String]) -> Value {
    json!({
        "mode": "sidecar",
        "trust_domains": [TRUST_DOMAIN],
        "identity_headers": ["x-forwarded-spiffe-id"],
        "trusted_forwarders": trusted_forwarders,
        "require_peer": true,
        "max_svid_ttl": "1h",
        "deny_status": 403,
        "policy": {
            "rego": policy.modules,
            "data": policy.data,
            "entrypoint": "envoy/authz/allow",
            "error_status": 403,
            // One OPA decision-log record per decision in the Envoy log, and its id to the client.
            "decision_logs": {"console": true, "decision_id_header": "x-svidgate-decision-id"},
        },
    })
}

impl Sidecar {
    /// Starts `workload`'s app and its sidecar from `template` (`sidecar.yaml` or
    /// `orchestrator.yaml`), with `extra` placeholder values.
    pub async fn start(
        site: Site<'_>,
        workload: Workload,
        template: &str,
        policy: Policy,
        options: &SidecarOptions,
        extra: &[(&str, String)],
    ) -> Result<Self> {
        let Site { dir, pki, upstream_bin } = site;
        let app = Upstream::start(upstream_bin, workload.name, dir)?;
        let ecds_path = dir.join(format!("{}-authz.yaml", workload.name));
        let mut sidecar_vars = vec![
            ("workload", workload.name.to_owned()),
            ("certs", path_str(pki.dir())),
            ("run_dir", path_str(dir)),
            ("app_port", app.port().to_string()),
            ("allow_expired_certificate", options.allow_expired_certificate.to_string()),
        ];
        sidecar_vars.extend(extra.iter().cloned());
        let mut config = envoy::render(&envoy::template(template)?, &sidecar_vars)?;
        if options.envoy_defaults {
            config = envoy::without_http_hardening(&config);
        }
        if let Some(filters) = &options.filters_before {
            const SVIDGATE: &str = "          - name: svidgate-authz\n";
            ensure!(config.contains(SVIDGATE), "{template} has no svidgate-authz filter to put filters before");
            config = config.replacen(SVIDGATE, &format!("{filters}{SVIDGATE}"), 1);
        }
        if let Some(routes) = &options.routes {
            const CATCH_ALL: &str = "              - match: { prefix: \"/\" }\n                route: { cluster: app }\n";
            ensure!(config.contains(CATCH_ALL), "{template} has no catch-all route to replace");
            config = config.replacen(CATCH_ALL, routes, 1);
        }
        let version = 1;
        match &options.plugin {
            Some(plugin) => write_ecds_plugin(&ecds_path, version, &options.authz_wasm, plugin)?,
            None => write_ecds(&ecds_path, version, &options.authz_wasm, &policy, &options.trusted_forwarders)?,
        }
        let envoy = Envoy::start(&format!("envoy-{}", workload.name), &config, dir).await?;
        let inbound_port = envoy.listener_port("inbound").await?;
        Ok(Self {
            workload,
            app,
            envoy,
            inbound_port,
            ecds_path,
            authz_wasm: options.authz_wasm.clone(),
            trusted_forwarders: options.trusted_forwarders.clone(),
            policy,
            version,
        })
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ECDS file Envoy watches for this sidecar's svidgate filter.
    pub fn ecds_path(&self) -> &Path {
        &self.ecds_path
    }

    /// Replaces the policy data through Envoy's own reconfiguration (the ECDS file), and waits
    /// until Envoy has applied it. The Envoy process is not restarted.
    pub async fn set_policy_data(&mut self, data: Value) -> Result<()> {
        let reloads = self.ecds_reloads().await?;
        self.write_policy_data(data)?;
        self.wait_for_stat_above(ECDS_RELOADS, reloads).await
    }

    /// Rewrites the ECDS file with new policy data and returns at once: Envoy may still refuse it.
    pub fn write_policy_data(&mut self, data: Value) -> Result<()> {
        self.policy.data = data;
        self.version += 1;
        write_ecds(&self.ecds_path, self.version, &self.authz_wasm, &self.policy, &self.trusted_forwarders)
    }

    /// Waits until the stat `name` of this sidecar's Envoy exceeds `value`.
    pub async fn wait_for_stat_above(&mut self, name: &str, value: u64) -> Result<()> {
        let exceeded = wait::until(Duration::from_millis(50), RELOAD_TIMEOUT, async || {
            if self.envoy.stat(name).await?.unwrap_or(0) > value {
                return Ok(Some(()));
            }
            self.envoy.check_running()?;
            Ok(None)
        })
        .await?;
        exceeded.with_context(|| {
            format!(
                "{name} of {} did not exceed {value} in {RELOAD_TIMEOUT:?} (version {} of {}):\n{}",
                self.envoy.name(),
                self.version,
                self.ecds_path.display(),
                self.envoy.log_tail()
            )
        })
    }

    /// How many ECDS updates of the svidgate filter Envoy has applied.
    pub async fn ecds_reloads(&self) -> Result<u64> {
        Ok(self.envoy.stat(ECDS_RELOADS).await?.unwrap_or(0))
    }
}

/// Renders `authz-ecds.yaml` for one sidecar and replaces its ECDS file atomically.
fn write_ecds(path: &Path, version: u32, authz_wasm: &Path, policy: &Policy, trusted_forwarders: &[String]) -> Result<()> {
    write_ecds_plugin(path, version, authz_wasm, &plugin_configuration(policy, trusted_forwarders))
}

/// Renders `authz-ecds.yaml` with `wasm` and its plugin configuration, atomically.
fn write_ecds_plugin(path: &Path, version: u32, wasm: &Path, plugin: &Value) -> Result<()> {
    let ecds = envoy::render(
        &envoy::template("authz-ecds.yaml")?,
        &[
            ("version", version.to_string()),
            ("authz_wasm", path_str(wasm)),
            ("plugin_configuration", envoy::yaml_string(&plugin.to_string())?),
        ],
    )?;
    envoy::write_atomically(path, &ecds)
}

impl Alone {
    /// Mints a trust domain and starts `workload`'s app and sidecar with its demo policy.
    pub async fn start(label: &str, upstream_bin: &Path, workload: Workload, options: &SidecarOptions) -> Result<Self> {
        let run = RunDir::new(label)?;
        let pki = MintedDomain::mint(&run.path().join("certs"))?;
        let policy = Policy::for_workload(workload)?;
        let site = Site { dir: run.path(), pki: &pki, upstream_bin };
        let sidecar = Sidecar::start(site, workload, "sidecar.yaml", policy, options, &[]).await?;
        Ok(Self { sidecar, pki, run })
    }
}

/// The counter of applied ECDS updates of the svidgate filter.
pub const ECDS_RELOADS: &str = "extension_config_discovery.http_filter.svidgate-authz.config_reload";
/// The counter of refused ECDS updates of the svidgate filter.
pub const ECDS_FAILURES: &str = "extension_config_discovery.http_filter.svidgate-authz.config_fail";

impl Topology {
    /// Mints the trust domain into `<dir>/certs` and starts every app and Envoy.
    pub async fn start(dir: &Path, modules: &Modules, upstream_bin: &Path) -> Result<Self> {
        let pki = MintedDomain::mint(&dir.join("certs"))?;
        let options = SidecarOptions::new(&modules.authz);
        let site = Site { dir, pki: &pki, upstream_bin };
        let mut services = Vec::new();
        for workload in [MODEL_SERVER, VECTOR_STORE, TOOL_RUNTIME] {
            let policy = Policy::for_workload(workload)?;
            services.push(Sidecar::start(site, workload, "sidecar.yaml", policy, &options, &[]).await?);
        }
        let [model_server, vector_store, tool_runtime]: [Sidecar; 3] =
            services.try_into().map_err(|_| anyhow::anyhow!("expected three services"))?;
        let orchestrator_options =
            SidecarOptions { trusted_forwarders: vec![GATEWAY.spiffe_id.to_owned()], ..options.clone() };
        let orchestrator = Sidecar::start(
            site,
            ORCHESTRATOR,
            "orchestrator.yaml",
            Policy::for_workload(ORCHESTRATOR)?,
            &orchestrator_options,
            &[
                ("model_server_port", model_server.inbound_port.to_string()),
                ("vector_store_port", vector_store.inbound_port.to_string()),
                ("tool_runtime_port", tool_runtime.inbound_port.to_string()),
            ],
        )
        .await?;
        let mut outbound = BTreeMap::new();
        for target in [MODEL_SERVER, VECTOR_STORE, TOOL_RUNTIME] {
            let port = orchestrator.envoy.listener_port(&format!("outbound-{}", target.name)).await?;
            outbound.insert(target.name, port);
        }
        let gateway_config = envoy::render(
            &envoy::template("gateway.yaml")?,
            &[
                ("certs", path_str(pki.dir())),
                ("identity_wasm", path_str(&modules.identity)),
                ("orchestrator_port", orchestrator.inbound_port.to_string()),
            ],
        )?;
        let gateway = Envoy::start("envoy-gateway", &gateway_config, dir).await?;
        let gateway_port = gateway.listener_port("public").await?;
        Ok(Self { pki, gateway, gateway_port, orchestrator, outbound, model_server, vector_store, tool_runtime })
    }

    /// The app and sidecar of one of the three services.
    pub fn service(&self, workload: Workload) -> Result<&Sidecar> {
        [&self.model_server, &self.vector_store, &self.tool_runtime]
            .into_iter()
            .find(|s| s.workload == workload)
            .with_context(|| format!("{} is not a service of the topology", workload.name))
    }

    /// The orchestrator sidecar's outbound port to `target`.
    pub fn outbound_port(&self, target: Workload) -> Result<u16> {
        self.outbound.get(target.name).copied().with_context(|| format!("no outbound listener to {}", target.name))
    }
}

/// A path as a string for a config file.
pub fn path_str(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))
}
