//! A real Prometheus (Debian's `prometheus` package) scraping the tests' Envoys: started on a
//! loopback port with a configuration written for the run (targets, scrape and rule evaluation
//! intervals, rule files) and its storage in the run directory, queried over its HTTP API.
//!
//! Prometheus cannot report the port it bound, so it is given a port found free just before it
//! starts (as nginx is); if another process takes it first, Prometheus exits and is started again
//! on another one. It runs in the foreground, so killing the child stops it; its log (logfmt on
//! stderr) is printed when a test panics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{self, Request};
use crate::process::{Process, free_port};

/// How long Prometheus may take to answer `/-/ready`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports to try when the one found free is taken before Prometheus binds it.
const START_ATTEMPTS: u32 = 3;

/// Where Debian's `prometheus` package puts its binaries.
const DEBIAN_BIN: &str = "/usr/bin";

/// A running Prometheus.
pub struct Prometheus {
    process: Process,
    port: u16,
}

/// What Prometheus scrapes and evaluates.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The scrape interval and the rule evaluation interval.
    pub interval: Duration,
    /// `job` name of the scrape configuration.
    pub job: String,
    /// The path scraped on each target (`/stats/prometheus` for Envoy's admin API).
    pub metrics_path: String,
    /// `host:port` of each target.
    pub targets: Vec<String>,
    /// Rule files to load.
    pub rule_files: Vec<PathBuf>,
}

/// One sample of an instant query: the series' labels and its value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The labels, `__name__` included when the query keeps it.
    pub labels: BTreeMap<String, String>,
    /// The value (`NaN` and infinities as Prometheus writes them).
    pub value: f64,
}

/// One alert as `/api/v1/alerts` lists it (pending or firing; inactive alerts are not listed).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Alert {
    /// The alert's labels, `alertname` and the rule's labels included.
    pub labels: BTreeMap<String, String>,
    /// The rendered annotations.
    pub annotations: BTreeMap<String, String>,
    /// `pending` or `firing`.
    pub state: String,
    /// The expression's value when the alert was last evaluated, as Prometheus writes it.
    pub value: String,
}

/// One rule as `/api/v1/rules` reports it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Rule {
    /// The alert's (or recording rule's) name.
    pub name: String,
    /// `ok`, `err` or `unknown` (not evaluated yet).
    pub health: String,
    /// The error of the last evaluation, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// `alerting` or `recording`.
    #[serde(rename = "type")]
    pub kind: String,
}

/// One scrape target as `/api/v1/targets` reports it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The target's labels (`job`, `instance`).
    pub labels: BTreeMap<String, String>,
    /// The URL scraped.
    pub scrape_url: String,
    /// `up`, `down` or `unknown`.
    pub health: String,
    /// The error of the last scrape, if any.
    #[serde(default)]
    pub last_error: String,
}

/// The prometheus binary: `$PROMETHEUS_BIN`, else `prometheus` on PATH, else Debian's
/// `/usr/bin/prometheus` (`cargo xtask setup` installs the `prometheus` package).
pub fn prometheus_bin() -> Result<PathBuf> {
    binary("prometheus", "PROMETHEUS_BIN")
}

/// The promtool binary of the same package: `$PROMTOOL_BIN`, else on PATH, else `/usr/bin/promtool`.
pub fn promtool_bin() -> Result<PathBuf> {
    binary("promtool", "PROMTOOL_BIN")
}

impl Settings {
    /// The `prometheus.yml` for these settings.
    pub fn config(&self) -> Result<String> {
        let interval = format!("{}ms", self.interval.as_millis());
        let quoted = |text: &str| serde_json::to_string(text);
        let targets = self.targets.iter().map(|t| quoted(t)).collect::<Result<Vec<_>, _>>()?.join(", ");
        let rules = self
            .rule_files
            .iter()
            .map(|path| quoted(&path.to_string_lossy()))
            .collect::<Result<Vec<_>, _>>()?
            .join(", ");
        // A scrape may take as long as the interval; YAML reads these JSON strings as they are.
        Ok(format!(
            "# Written by tests/e2e/src/prometheus.rs for one test run.\n\
             global: {{scrape_interval: {interval}, scrape_timeout: {interval}, evaluation_interval: {interval}}}\n\
             rule_files: [{rules}]\n\
             scrape_configs:\n\
             - job_name: {job}\n  metrics_path: {path}\n  static_configs:\n  - targets: [{targets}]\n",
            job = quoted(&self.job)?,
            path = quoted(&self.metrics_path)?,
        ))
    }
}

impl Prometheus {
    /// Starts Prometheus with `settings`, its configuration and storage in `dir`, on a free
    /// loopback port, and waits until it is ready (configuration and rules loaded).
    pub async fn start(settings: &Settings, dir: &Path) -> Result<Self> {
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let config = dir.join("prometheus.yml");
        std::fs::write(&config, settings.config()?).with_context(|| format!("writing {}", config.display()))?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let port = free_port()?;
            let mut command = Command::new(prometheus_bin()?);
            command
                .arg(format!("--config.file={}", config.display()))
                .arg(format!("--storage.tsdb.path={}", dir.join("prometheus-data").display()))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--log.level=info");
            let name = if attempt == 1 { "prometheus".to_owned() } else { format!("prometheus-{attempt}") };
            let mut process = Process::spawn(&name, command, &dir)?;
            match wait_ready(&mut process, port).await {
                Ok(()) => return Ok(Self { process, port }),
                Err(error) if attempt < START_ATTEMPTS && process.log_tail().contains("address already in use") => {
                    eprintln!("prometheus: port {port} was taken ({error:#}); trying another");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// The port of its HTTP API.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs an instant query; `Err` with Prometheus's error when the query fails.
    pub async fn query(&self, expr: &str) -> Result<Vec<Sample>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            result_type: String,
            result: Vec<Value>,
        }
        let data: Data = self.api(&format!("/api/v1/query?query={}", encode(expr))).await.with_context(|| format!("query {expr}"))?;
        ensure!(data.result_type == "vector", "query {expr}: a {} result, not a vector", data.result_type);
        data.result.iter().map(sample).collect::<Result<_>>().with_context(|| format!("query {expr}"))
    }

    /// The alerts now pending or firing.
    pub async fn alerts(&self) -> Result<Vec<Alert>> {
        #[derive(Deserialize)]
        struct Data {
            alerts: Vec<Alert>,
        }
        Ok(self.api::<Data>("/api/v1/alerts").await?.alerts)
    }

    /// Every rule of every group loaded, with its health.
    pub async fn rules(&self) -> Result<Vec<Rule>> {
        #[derive(Deserialize)]
        struct Group {
            rules: Vec<Rule>,
        }
        #[derive(Deserialize)]
        struct Data {
            groups: Vec<Group>,
        }
        Ok(self.api::<Data>("/api/v1/rules").await?.groups.into_iter().flat_map(|g| g.rules).collect())
    }

    /// The active scrape targets.
    pub async fn targets(&self) -> Result<Vec<Target>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Data {
            active_targets: Vec<Target>,
        }
        Ok(self.api::<Data>("/api/v1/targets?state=active").await?.active_targets)
    }

    /// The end of its log, for error messages.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// GET on the HTTP API: the `data` of a `success` answer, else `Err` with `error`.
    async fn api<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Answer {
            status: String,
            #[serde(default)]
            data: Option<Value>,
            #[serde(default)]
            error_type: Option<String>,
            #[serde(default)]
            error: Option<String>,
        }
        let response = client::plain(self.port, &Request::new("GET", path)).await?;
        let answer: Answer = serde_json::from_str(&response.body)
            .with_context(|| format!("GET {path}: {} {}", response.status, response.body))?;
        if answer.status != "success" {
            bail!("GET {path}: {} ({}): {}", answer.status, answer.error_type.unwrap_or_default(), answer.error.unwrap_or_default());
        }
        let data = answer.data.with_context(|| format!("GET {path}: no data"))?;
        serde_json::from_value(data).with_context(|| format!("GET {path}: unexpected data"))
    }
}

/// Waits until Prometheus answers `/-/ready` with 200 (or exits, or time is up).
async fn wait_ready(process: &mut Process, port: u16) -> Result<()> {
    let started = Instant::now();
    loop {
        process.check_running()?;
        if matches!(client::plain(port, &Request::new("GET", "/-/ready")).await, Ok(r) if r.status == 200) {
            return Ok(());
        }
        if started.elapsed() > START_TIMEOUT {
            bail!("prometheus was not ready on port {port} in {START_TIMEOUT:?}:\n{}", process.log_tail());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One vector element of a query answer: `{"metric": {...}, "value": [time, "value"]}`.
fn sample(element: &Value) -> Result<Sample> {
    let labels = element.get("metric").cloned().context("a sample without labels")?;
    let labels: BTreeMap<String, String> = serde_json::from_value(labels)?;
    let text = element.pointer("/value/1").and_then(Value::as_str).with_context(|| format!("a sample without a value: {element}"))?;
    let value = text.parse().with_context(|| format!("{text:?} is not a number"))?;
    Ok(Sample { labels, value })
}

/// A query parameter percent-encoded (everything but RFC 3986's unreserved characters).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => char::from(b).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `$<variable>`, else the binary on PATH, else Debian's.
fn binary(name: &str, variable: &str) -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os(variable) {
        return Ok(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join(name)).find(|bin| bin.is_file()))
        .unwrap_or_default();
    on_path
        .or_else(|| Some(Path::new(DEBIAN_BIN).join(name)).filter(|bin| bin.is_file()))
        .with_context(|| format!("no {name}: set {variable} or run `cargo xtask setup` (installs Debian's prometheus)"))
}
