//! The real-Envoy load benchmark (`cargo xtask bench envoy`): each variant's Envoy (one worker,
//! pinned to one CPU) behind an mTLS listener with a `direct_response` route, loaded over
//! kept-alive HTTP/1.1 connections presenting the orchestrator's SVID from the other CPU.
//! Variants run in interleaved rounds; the table gives medians.
//!
//! The cost per request is Envoy's own CPU time (every thread's, from `/proc/<pid>/task/*/schedstat`)
//! divided by the requests it answered: it holds whether Envoy or the load client is the
//! bottleneck. Requests per second, latency percentiles (seen by the client), resident memory after
//! the run and the time from exec to ready are reported beside it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::{Value, json};
use svidgate_e2e::client::{Request, TlsClient};
use svidgate_e2e::envoy::{Envoy, RunOptions, render, yaml_string};
use svidgate_e2e::paths;
use svidgate_e2e::pki::MintedDomain;
use svidgate_e2e::topology::{RunDir, path_str};
use svidgate_testpki::ORCHESTRATOR;
use svidgate_testpki::jwt::JwtAuthority;

use crate::{MCP_CALL, seed_policy_config, tool_runtime_policy_config, without_decision_cache};

/// How the benchmark runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Interleaved rounds over every variant.
    pub rounds: usize,
    /// Load before measuring, per run.
    pub warmup: Duration,
    /// Measured load, per run.
    pub measure: Duration,
    /// Kept-alive connections.
    pub connections: usize,
    /// Pin Envoy to CPU 0 (the caller pins itself to another).
    pub pin_envoy: bool,
    /// Only the variants whose name contains one of these (all when empty).
    pub only: Vec<String>,
    /// Modules built before a change (a `target/modules` copy): svidgate's variants run with
    /// them too, in the same rounds, as "(before)" rows.
    pub before: Option<PathBuf>,
    /// Also the no-op filter making host calls (`benches/noop`): what each crossing costs.
    pub host_calls: bool,
}

/// One measured run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sample {
    /// Requests answered per second.
    pub rps: f64,
    /// Envoy's CPU time per request, in microseconds.
    pub cpu_us: f64,
    /// Client-seen latency percentiles, in microseconds.
    pub p50_us: f64,
    /// See `p50_us`.
    pub p99_us: f64,
    /// Envoy's resident memory after the run, in MB.
    pub rss_mb: f64,
    /// From exec to ready, in seconds.
    pub ready_s: f64,
}

/// What Envoy runs in front of the route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Filter {
    None,
    /// Envoy's RBAC filter allowing the orchestrator's SPIFFE ID, and the route replacing the
    /// identity header with the peer's URI SAN: the native way to do svidgate's headers-only job.
    NativeRbac,
    Noop,
    /// The no-op filter making these host calls, each this many times per request (`benches/noop`).
    NoopCalling(&'static [&'static str], u32),
    Identity { before: bool },
    /// The identity module taking the caller's JWT-SVID ([`jwt_fixture`]), on a listener that
    /// asks for no client certificate.
    IdentityJwt,
    Authz { full: bool, policy: PolicyKind, before: bool },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PolicyKind {
    Seed,
    /// The seed policy with `decision_cache_entries: 0`: evaluated on every request.
    SeedEvaluated,
    Mcp,
}

/// The request every connection sends over and over.
#[derive(Clone, Copy, Debug)]
enum Load {
    /// `POST /v1/generate` without a body: allowed by the seed policy. (A body would close the
    /// HTTP/1.1 connection: the `direct_response` answers before reading it.)
    Generate,
    /// `POST /v1/admin` without a body: denied by the seed policy (a local reply after a body
    /// would close the HTTP/1.1 connection).
    Admin,
    /// `POST /mcp` with a `tools/call` body: allowed by the tool runtime's policy, which holds
    /// the request until the body is in, so the route answers a whole request.
    McpCall,
    /// `POST /v1/generate` with the orchestrator's JWT-SVID and no client certificate.
    GenerateWithJwt,
}

/// A benchmark variant.
#[derive(Clone, Debug)]
pub struct Variant {
    /// The row's name.
    pub name: String,
    filter: Filter,
    load: Load,
    expect: u16,
}

/// The baseline row: Envoy without HTTP filters but the router.
pub const NO_FILTER: &str = "no filter";
/// The floor of every Wasm filter.
pub const NO_OP: &str = "no-op Proxy-Wasm filter (benches/noop)";

/// The host calls `svidgate_identity.wasm` makes on a request like the benchmark's: the header
/// map, the clock, the peer's certificate digest, one counter, the identity header (pinned by
/// `tests/harness/tests/modules.rs`; Envoy's log level, once asked per request, is asked per tick).
const IDENTITY_CALLS: &[&str] = &["headers", "time", "property", "metric", "set_header"];

/// Every variant, in table order; with `before`, svidgate's rows again on the modules built
/// before a change; with `host_calls`, the no-op filter making host calls.
pub fn variants(before: bool, host_calls: bool) -> Vec<Variant> {
    let row = |name: &str, filter, load, expect| Variant { name: name.to_owned(), filter, load, expect };
    let svidgate = |before: bool| {
        let suffix = if before { " (before)" } else { "" };
        let seed = |full| Filter::Authz { full, policy: PolicyKind::Seed, before };
        // The modules built before a change may not know `decision_cache_entries`: the
        // evaluated row is only for the current ones.
        let evaluated = (!before).then(|| {
            row(
                "svidgate_authz.wasm, seed policy, allowed, decision cache off",
                Filter::Authz { full: false, policy: PolicyKind::SeedEvaluated, before },
                Load::Generate,
                200,
            )
        });
        let mut rows = vec![
            row(&format!("svidgate_identity.wasm, sidecar, require_peer{suffix}"), Filter::Identity { before }, Load::Generate, 200),
            row(&format!("svidgate_authz.wasm, seed policy, allowed{suffix}"), seed(false), Load::Generate, 200),
            row(&format!("svidgate_authz.wasm, seed policy, denied{suffix}"), seed(false), Load::Admin, 403),
            row(
                &format!("svidgate_authz.wasm, MCP policy on the JSON body{suffix}"),
                Filter::Authz { full: false, policy: PolicyKind::Mcp, before },
                Load::McpCall,
                200,
            ),
            row(&format!("svidgate_authz_full.wasm, seed policy, allowed{suffix}"), seed(true), Load::Generate, 200),
        ];
        if let Some(evaluated) = evaluated {
            rows.insert(2, evaluated);
        }
        // The modules built before a change may not know `jwt_svid`.
        if !before {
            rows.insert(1, row("svidgate_identity.wasm, JWT-SVID (ES256, kept), no client certificate", Filter::IdentityJwt, Load::GenerateWithJwt, 200));
        }
        rows
    };
    let mut all = vec![
        row(NO_FILTER, Filter::None, Load::Generate, 200),
        row("native RBAC + route header remove/add", Filter::NativeRbac, Load::Generate, 200),
        row(NO_OP, Filter::Noop, Load::Generate, 200),
    ];
    if host_calls {
        // Each call once, then two 20 times over: what one more call costs apart from what the
        // first one in a callback does.
        for (name, calls, times) in [
            ("no-op + read the request header map", &["headers"][..], 1),
            ("no-op + read one property (peer certificate digest)", &["property"][..], 1),
            ("no-op + set one request header", &["set_header"][..], 1),
            ("no-op + read the clock", &["time"][..], 1),
            ("no-op + read the clock 20 times", &["time"][..], 20),
            ("no-op + increment a counter 20 times", &["metric"][..], 20),
            ("no-op + the identity module's 5 host calls", IDENTITY_CALLS, 1),
        ] {
            all.push(row(name, Filter::NoopCalling(calls, times), Load::Generate, 200));
        }
    }
    all.extend(svidgate(false));
    if before {
        all.extend(svidgate(true));
    }
    all
}

impl Load {
    fn request(self) -> Result<(Request, bytes::Bytes)> {
        let json = |path: &str, body: &str| {
            (Request::new("POST", path).header("content-type", "application/json"), bytes::Bytes::from(body.to_owned()))
        };
        Ok(match self {
            Self::Generate => (Request::new("POST", "/v1/generate"), bytes::Bytes::new()),
            Self::Admin => (Request::new("POST", "/v1/admin"), bytes::Bytes::new()),
            Self::McpCall => json("/mcp", MCP_CALL),
            Self::GenerateWithJwt => {
                (Request::new("POST", "/v1/generate").header("authorization", &jwt_fixture()?.token), bytes::Bytes::new())
            }
        })
    }
}

/// A JWT authority of `ai.internal` (its SPIFFE bundle) and the orchestrator's JWT-SVID for the
/// model server, valid for a day: minted once per run.
struct JwtFixture {
    bundle: Value,
    token: String,
}

fn jwt_fixture() -> Result<&'static JwtFixture> {
    static FIXTURE: std::sync::OnceLock<Result<JwtFixture, String>> = std::sync::OnceLock::new();
    let mint = || -> Result<JwtFixture> {
        let authority = JwtAuthority::new("bench")?;
        let bundle = serde_json::from_str(&JwtAuthority::bundle(&[&authority], 1))?;
        let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 86_400;
        let claims = json!({"sub": ORCHESTRATOR.spiffe_id, "aud": [JWT_AUDIENCE], "exp": exp});
        Ok(JwtFixture { bundle, token: format!("Bearer {}", authority.sign(&claims.to_string())?) })
    };
    let fixture = FIXTURE.get_or_init(|| mint().map_err(|e| format!("minting the bench's JWT-SVID: {e:#}")));
    fixture.as_ref().map_err(|e| anyhow::anyhow!("{e}"))
}

/// The audience of the bench's JWT-SVIDs: the model server the route stands for.
const JWT_AUDIENCE: &str = "spiffe://ai.internal/ns/inference/sa/model-server";

/// The sidecar configuration both modules read; the authz module's with `policy`.
fn plugin_configuration(policy: Option<Value>) -> Value {
    let config = json!({"mode": "sidecar", "trust_domains": ["ai.internal"], "require_peer": true});
    match (config, policy) {
        (Value::Object(mut config), Some(policy)) => {
            config.insert("policy".into(), policy);
            Value::Object(config)
        }
        (config, _) => config,
    }
}

/// The Wasm filter entry of `module` with `configuration`, indented for the template.
fn wasm_filter(module: &Path, configuration: &Value) -> Result<String> {
    Ok(format!(
        r#"          - name: bench-wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: bench-wasm
                root_id: bench-wasm
                allow_on_headers_stop_iteration: true
                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: {}
                vm_config:
                  vm_id: bench-wasm
                  runtime: envoy.wasm.runtime.v8
                  code: {{ local: {{ filename: {} }} }}"#,
        yaml_string(&configuration.to_string())?,
        yaml_string(&path_str(module))?,
    ))
}

const RBAC: &str = r#"          - name: envoy.filters.http.rbac
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC
              rules:
                action: ALLOW
                policies:
                  generate:
                    permissions:
                    - and_rules:
                        rules:
                        - header: { name: ":method", string_match: { exact: POST } }
                        - url_path: { path: { exact: /v1/generate } }
                    principals:
                    - authenticated: { principal_name: { exact: "spiffe://ai.internal/ns/agents/sa/orchestrator" } }"#;

const RBAC_ROUTE: &str = r#"                request_headers_to_remove: [x-forwarded-spiffe-id]
                request_headers_to_add:
                - header: { key: x-forwarded-spiffe-id, value: "%DOWNSTREAM_PEER_URI_SAN%" }
                  append_action: OVERWRITE_IF_EXISTS_OR_ADD"#;

/// The modules a run needs, found (or built) once.
struct Modules {
    noop: PathBuf,
    /// `target/modules`, and the modules built before a change.
    now: PathBuf,
    before: Option<PathBuf>,
}

impl Modules {
    fn find(before: Option<&Path>) -> Result<Self> {
        Ok(Self { noop: paths::noop_wasm()?, now: paths::wasm_dir(), before: before.map(Path::to_path_buf) })
    }

    fn module(&self, file: &str, before: bool) -> Result<PathBuf> {
        let dir = if before { self.before.as_ref().context("no --before directory")? } else { &self.now };
        let path = dir.join(file);
        ensure!(path.is_file(), "{} is missing: run `cargo xtask build` (or set SVIDGATE_WASM_DIR)", path.display());
        Ok(path)
    }

    /// The template's `filters` and `route_options` for `filter`.
    fn placeholders(&self, filter: Filter) -> Result<(String, String)> {
        Ok(match filter {
            Filter::None => (String::new(), String::new()),
            Filter::NativeRbac => (RBAC.to_owned(), RBAC_ROUTE.to_owned()),
            Filter::Noop => (wasm_filter(&self.noop, &json!({}))?, String::new()),
            Filter::NoopCalling(calls, times) => (wasm_filter(&self.noop, &json!({"calls": calls, "times": times}))?, String::new()),
            Filter::Identity { before } => {
                (wasm_filter(&self.module("svidgate_identity.wasm", before)?, &plugin_configuration(None))?, String::new())
            }
            Filter::IdentityJwt => {
                let mut config = plugin_configuration(None);
                if let Value::Object(fields) = &mut config {
                    let bundles = json!({"ai.internal": jwt_fixture()?.bundle});
                    fields.insert("jwt_svid".into(), json!({"audiences": [JWT_AUDIENCE], "bundles": bundles}));
                }
                (wasm_filter(&self.module("svidgate_identity.wasm", false)?, &config)?, String::new())
            }
            Filter::Authz { full, policy, before } => {
                let module = self.module(if full { "svidgate_authz_full.wasm" } else { "svidgate_authz.wasm" }, before)?;
                let policy = match policy {
                    PolicyKind::Seed => seed_policy_config()?,
                    PolicyKind::SeedEvaluated => without_decision_cache(seed_policy_config()?),
                    PolicyKind::Mcp => tool_runtime_policy_config()?,
                };
                (wasm_filter(&module, &plugin_configuration(Some(policy)))?, String::new())
            }
        })
    }
}

/// Runs every selected variant `settings.rounds` times, interleaved; returns each variant's samples.
///
/// # Errors
/// If Envoy does not start, a request fails or gets another status than the variant expects.
pub async fn run(settings: &Settings) -> Result<Vec<(Variant, Vec<Sample>)>> {
    let run_dir = RunDir::new("envoy-bench")?;
    let pki = MintedDomain::mint(&run_dir.path().join("certs"))?;
    let client = TlsClient::new(&pki.bundle(), Some(&pki.cert(ORCHESTRATOR.name)?))?;
    let anonymous = TlsClient::new(&pki.bundle(), None)?;
    let modules = Modules::find(settings.before.as_deref())?;
    let template = std::fs::read_to_string(paths::workspace_root().join("benches/envoy-bench.yaml"))?;
    let variants: Vec<Variant> = variants(settings.before.is_some(), settings.host_calls)
        .into_iter()
        .filter(|v| settings.only.is_empty() || settings.only.iter().any(|only| v.name.contains(only.as_str())))
        .collect();
    ensure!(!variants.is_empty(), "no variant matches {:?}", settings.only);
    let mut results: Vec<(Variant, Vec<Sample>)> = variants.into_iter().map(|v| (v, Vec::new())).collect();
    for round in 0..settings.rounds {
        for (variant, samples) in &mut results {
            let (filters, route_options) = modules.placeholders(variant.filter)?;
            let jwt = variant.filter == Filter::IdentityJwt;
            let config = render(
                &template,
                &[
                    ("certs", path_str(pki.dir())),
                    ("filters", filters),
                    ("route_options", route_options),
                    ("require_client_certificate", (!jwt).to_string()),
                ],
            )?;
            let sample = measure(settings, &config, run_dir.path(), if jwt { &anonymous } else { &client }, variant)
                .await
                .with_context(|| format!("round {} of {:?}", round + 1, variant.name))?;
            eprintln!(
                "round {}/{}: {:<50} {:>9.0} rps {:>7.2} us/request (Envoy CPU)",
                round + 1,
                settings.rounds,
                variant.name,
                sample.rps,
                sample.cpu_us
            );
            samples.push(sample);
        }
    }
    Ok(results)
}

/// One run of one variant: start Envoy, warm up, measure, stop.
async fn measure(settings: &Settings, config: &str, dir: &Path, client: &TlsClient, variant: &Variant) -> Result<Sample> {
    let options = RunOptions { log_levels: ("warning", "main:warning"), cpu: settings.pin_envoy.then_some(0) };
    let mut envoy = Envoy::start_with("envoy-bench", config, dir, options).await?;
    let ready_s = envoy.ready_after().as_secs_f64();
    let port = envoy.listener_port("bench").await?;
    let pid = envoy.pid();
    let (request, body) = variant.load.request()?;
    let mut connections = Vec::with_capacity(settings.connections);
    for _ in 0..settings.connections {
        connections.push(client.keep_alive(port).await?);
    }
    // Warm-up, then the measured load on the same connections.
    let (connections, _) = load(connections, &request, &body, variant.expect, settings.warmup).await?;
    let cpu_before = cpu_ns(pid)?;
    let started = Instant::now();
    let (_, mut latencies) = load(connections, &request, &body, variant.expect, settings.measure).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_ns(pid)?.saturating_sub(cpu_before);
    let rss_mb = rss_kb(pid)? as f64 / 1024.0;
    envoy.check_running()?;
    envoy.stop();
    ensure!(!latencies.is_empty(), "no request completed");
    latencies.sort_unstable();
    let requests = latencies.len() as f64;
    let percentile = |p: f64| latencies.get(((requests - 1.0) * p) as usize).copied().unwrap_or_default() as f64;
    Ok(Sample {
        rps: requests / elapsed,
        cpu_us: cpu as f64 / 1000.0 / requests,
        p50_us: percentile(0.50),
        p99_us: percentile(0.99),
        rss_mb,
        ready_s,
    })
}

/// Sends `request` on every connection, one after another on each, for `duration`; returns the
/// connections and every latency in microseconds.
async fn load(
    connections: Vec<svidgate_e2e::client::KeptAlive>,
    request: &Request,
    body: &bytes::Bytes,
    expect: u16,
    duration: Duration,
) -> Result<(Vec<svidgate_e2e::client::KeptAlive>, Vec<u32>)> {
    let deadline = tokio::time::Instant::now() + duration;
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut connection| {
            let (request, body) = (request.clone(), body.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(1 << 16);
                while tokio::time::Instant::now() < deadline {
                    let sent = Instant::now();
                    let status = connection
                        .send(&request, body.clone())
                        .await
                        .with_context(|| format!("after {} requests on this connection", latencies.len()))?;
                    if status != expect {
                        bail!("{} {}: status {status}, expected {expect}", request.method, request.path);
                    }
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                }
                Ok((connection, latencies))
            })
        })
        .collect();
    let mut connections = Vec::new();
    let mut latencies = Vec::new();
    for task in tasks {
        let (connection, mut seen) = task.await??;
        connections.push(connection);
        latencies.append(&mut seen);
    }
    Ok((connections, latencies))
}

/// Every thread's time on a CPU so far, in nanoseconds.
fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let schedstat = std::fs::read_to_string(task?.path().join("schedstat")).unwrap_or_default();
        total += schedstat.split_whitespace().next().and_then(|ns| ns.parse::<u64>().ok()).unwrap_or(0);
    }
    Ok(total)
}

/// Resident memory, in kB.
fn rss_kb(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kb| kb.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS")
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => values.get(n / 2).copied().unwrap_or(f64::NAN),
        _ => (values.get(n / 2 - 1).copied().unwrap_or(f64::NAN) + values.get(n / 2).copied().unwrap_or(f64::NAN)) / 2.0,
    }
}

/// The medians of each variant's samples.
pub fn medians(samples: &[Sample]) -> Sample {
    let of = |field: fn(&Sample) -> f64| median(samples.iter().map(field).collect());
    Sample {
        rps: of(|s| s.rps),
        cpu_us: of(|s| s.cpu_us),
        p50_us: of(|s| s.p50_us),
        p99_us: of(|s| s.p99_us),
        rss_mb: of(|s| s.rss_mb),
        ready_s: of(|s| s.ready_s),
    }
}

/// The median over rounds of a variant's Envoy CPU per request minus the baseline's in the same
/// round. A round runs every variant within minutes, so a shared host that drifts between rounds
/// moves both sides of each difference alike; the difference of two medians would mix rounds.
fn over_baseline(samples: &[Sample], baseline: &[Sample]) -> f64 {
    median(samples.iter().zip(baseline).map(|(sample, base)| sample.cpu_us - base.cpu_us).collect())
}

/// The results as a Markdown table: medians, and the extra Envoy CPU per request over no filter
/// and over the no-op Wasm filter (when those ran), paired by round.
pub fn table(results: &[(Variant, Vec<Sample>)]) -> String {
    let baseline = |name: &str| results.iter().find(|(v, _)| v.name == name).map(|(_, s)| s.as_slice());
    let (none, noop) = (baseline(NO_FILTER), baseline(NO_OP));
    let over = |base: Option<&[Sample]>, samples: &[Sample]| {
        base.map_or_else(String::new, |base| format!("{:+.1}", over_baseline(samples, base)))
    };
    let mut out = String::from(
        "| variant | rps | Envoy CPU µs/request | over no filter | over no-op | p50 µs | p99 µs | RSS MB | exec → ready s |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for (variant, samples) in results {
        let m = medians(samples);
        let _ = writeln!(
            out,
            "| {} | {:.1}k | {:.1} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} |",
            variant.name,
            m.rps / 1000.0,
            m.cpu_us,
            over(none, samples),
            over(noop, samples),
            m.p50_us,
            m.p99_us,
            m.rss_mb,
            m.ready_s
        );
    }
    out
}

/// The CPUs this process may run on (`nproc`: the affinity mask; Rust's `available_parallelism`
/// also applies cgroup quotas, which do not stop pinning).
pub fn cpus() -> usize {
    let nproc = std::process::Command::new("nproc").output().ok();
    let counted = nproc.and_then(|out| String::from_utf8(out.stdout).ok()).and_then(|n| n.trim().parse().ok());
    counted.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The machine, for the table's caption: CPU count and model.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned());
    let cpus = cpuinfo.lines().filter(|l| l.starts_with("processor")).count();
    format!("{cpus} × {}, Envoy {}", model.unwrap_or_else(|| "unknown CPU".into()), paths::ENVOY_VERSION)
}

#[cfg(test)]
mod tests {
    use super::{Sample, over_baseline};

    fn cpu(cpu_us: f64) -> Sample {
        Sample { rps: 1.0, cpu_us, p50_us: 1.0, p99_us: 1.0, rss_mb: 1.0, ready_s: 1.0 }
    }

    #[test]
    fn differences_are_taken_within_each_round() {
        // The second round ran twice as slow for both; the third slowed down between the
        // baseline's run and the variant's. Rounds say +2, +2 and +10 µs; the difference of the
        // medians (20 against 10) would say +10.
        let baseline = [cpu(10.0), cpu(20.0), cpu(10.0)];
        let variant = [cpu(12.0), cpu(22.0), cpu(20.0)];
        assert!((over_baseline(&variant, &baseline) - 2.0).abs() < 1e-9);
    }
}
