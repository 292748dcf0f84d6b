//! Envoy as a real process: configurations from the templates under `envoy/demo/`, started with
//! an admin API on a free port, watched until ready, queried for ports and stats.
//!
//! Envoy configurations cannot read environment variables, so templates hold `{{name}}`
//! placeholders that [`render`] fills; every listener binds port 0 and [`Envoy::listener_port`]
//! asks the admin API which port it got, so tests never race for ports.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::client::{self, Request};
use crate::paths;
use crate::process::Process;

/// How long Envoy may take to become ready (V8 compiles each module at load, ~1 s per MB).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A running Envoy.
pub struct Envoy {
    process: Process,
    admin_port: u16,
    /// From exec to ready (admin `/ready` answers 200: listeners up, Wasm VMs loaded).
    ready_after: Duration,
}

/// Fills `{{name}}` placeholders; refuses a template with a placeholder left unfilled.
pub fn render(template: &str, vars: &[(&str, String)]) -> Result<String> {
    let mut out = template.to_owned();
    for (name, value) in vars {
        out = out.replace(&format!("{{{{{name}}}}}"), value);
    }
    if let Some(start) = out.find("{{") {
        let rest = out.get(start..).unwrap_or_default();
        let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
        bail!("placeholder {} is not filled", rest.get(..end).unwrap_or(rest));
    }
    Ok(out)
}

/// Reads a template under `envoy/demo/`.
pub fn template(name: &str) -> Result<String> {
    let path = paths::envoy_dir().join("demo").join(name);
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// A config as Envoy runs without the HTTP hardening of the configs under `envoy/`
/// (`headers_with_underscores_action`, `normalize_path`, `merge_slashes`,
/// `path_with_escaped_slashes_action`): Envoy's defaults, which forward all of it.
pub fn without_http_hardening(config: &str) -> String {
    const KEYS: [&str; 5] = [
        "common_http_protocol_options:",
        "headers_with_underscores_action:",
        "normalize_path:",
        "merge_slashes:",
        "path_with_escaped_slashes_action:",
    ];
    let kept: Vec<&str> = config.lines().filter(|line| !KEYS.iter().any(|key| line.trim_start().starts_with(key))).collect();
    kept.join("\n") + "\n"
}

/// A JSON string literal of `value`, which YAML reads as the same string.
pub fn yaml_string(value: &str) -> Result<String> {
    Ok(serde_json::to_string(value)?)
}

/// Writes `contents` to `path` atomically (write a sibling, then rename), as Envoy's file-based
/// config sources expect: a watched file must change by a move, never be seen half-written.
pub fn write_atomically(path: &Path, contents: &str) -> Result<()> {
    let file_name = path.file_name().context("no file name")?.to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

/// Runs `envoy --mode validate -c config`; `Err` carries Envoy's output.
pub fn validate(config: &Path) -> Result<()> {
    let envoy = paths::envoy_bin()?;
    let out = Command::new(&envoy)
        .args(["--mode", "validate", "--disable-hot-restart", "-c"])
        .arg(config)
        .output()
        .with_context(|| format!("starting {}", envoy.display()))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    ensure!(out.status.success(), "{} does not validate:\n{text}", config.display());
    ensure!(text.contains("configuration") && text.contains("OK"), "unexpected validate output:\n{text}");
    Ok(())
}

/// How to run Envoy beyond its configuration.
#[derive(Clone, Copy, Debug)]
pub struct RunOptions {
    /// `--log-level` and `--component-log-level`.
    pub log_levels: (&'static str, &'static str),
    /// Pin Envoy (all its threads) to this CPU, with `taskset`.
    pub cpu: Option<usize>,
}

impl Default for RunOptions {
    /// As the tests run it: svidgate's decisions are debug lines; main's start-up inventory is
    /// noise in test output.
    fn default() -> Self {
        Self { log_levels: ("info", "wasm:debug,main:warning"), cpu: None }
    }
}

impl Envoy {
    /// Writes `config` to `<dir>/<name>.yaml`, starts Envoy on it and waits until it is ready.
    pub async fn start(name: &str, config: &str, dir: &Path) -> Result<Self> {
        Self::start_with(name, config, dir, RunOptions::default()).await
    }

    /// [`Envoy::start`] with `options`.
    pub async fn start_with(name: &str, config: &str, dir: &Path, options: RunOptions) -> Result<Self> {
        let config_path = dir.join(format!("{name}.yaml"));
        std::fs::write(&config_path, config).with_context(|| format!("writing {}", config_path.display()))?;
        let admin_file = dir.join(format!("{name}.admin"));
        let _ = std::fs::remove_file(&admin_file);
        let envoy = paths::envoy_bin()?;
        let mut command = match options.cpu {
            // taskset execs Envoy: same process, every thread it starts on that CPU.
            Some(cpu) => {
                let mut taskset = Command::new("taskset");
                taskset.args(["-c", &cpu.to_string()]).arg(envoy);
                taskset
            }
            None => Command::new(envoy),
        };
        let (level, components) = options.log_levels;
        command
            .arg("-c")
            .arg(&config_path)
            .args(["--concurrency", "1", "--disable-hot-restart", "--log-level", level])
            .args(["--component-log-level", components])
            .arg("--admin-address-path")
            .arg(&admin_file);
        let started = Instant::now();
        let mut process = Process::spawn(name, command, dir)?;
        loop {
            process.check_running()?;
            if started.elapsed() > START_TIMEOUT {
                bail!("{name} was not ready in {START_TIMEOUT:?}:\n{}", process.log_tail());
            }
            let admin = std::fs::read_to_string(&admin_file).unwrap_or_default();
            if let Some(port) = admin.trim().rsplit(':').next().and_then(|p| p.parse().ok())
                && ready(port).await
            {
                return Ok(Self { process, admin_port: port, ready_after: started.elapsed() });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// How long Envoy took from exec to ready.
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// The process name.
    pub fn name(&self) -> &str {
        self.process.name()
    }

    /// The OS process id (unchanged by reconfiguration).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// The admin API port.
    pub fn admin_port(&self) -> u16 {
        self.admin_port
    }

    /// The port a named listener is bound to.
    pub async fn listener_port(&self, listener: &str) -> Result<u16> {
        let body = self.admin("/listeners?format=json").await?.json()?;
        let statuses = body.get("listener_statuses").and_then(|s| s.as_array()).context("no listener_statuses")?;
        statuses
            .iter()
            .find(|s| s.get("name").and_then(|n| n.as_str()) == Some(listener))
            .and_then(|s| s.pointer("/local_address/socket_address/port_value"))
            .and_then(serde_json::Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .with_context(|| format!("{} has no listener {listener:?}: {body}", self.name()))
    }

    /// A counter or gauge by exact name (absent is `None`).
    pub async fn stat(&self, name: &str) -> Result<Option<u64>> {
        let text = self.admin(&format!("/stats?filter=^{}$", name.replace('.', "\\."))).await?.body;
        Ok(text.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(": ")?.trim().parse().ok()))
    }

    /// Every stat line containing `part`, for diagnostics.
    pub async fn stats_matching(&self, part: &str) -> Result<String> {
        Ok(self.admin(&format!("/stats?filter={part}")).await?.body)
    }

    /// GET on the admin API.
    pub async fn admin(&self, path: &str) -> Result<client::Response> {
        client::plain(self.admin_port, &Request::new("GET", path)).await
    }

    /// Whether the process still runs; `Err` carries its log if not.
    pub fn check_running(&mut self) -> Result<()> {
        self.process.check_running()
    }

    /// The end of Envoy's log.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }

    /// The full log file.
    pub fn log_path(&self) -> PathBuf {
        self.process.stderr_path().to_owned()
    }

    /// Stops Envoy now.
    pub fn stop(&mut self) {
        self.process.stop();
    }
}

/// Whether the Envoy with its admin API on `admin_port` answers `/ready` with 200.
async fn ready(admin_port: u16) -> bool {
    matches!(client::plain(admin_port, &Request::new("GET", "/ready")).await, Ok(r) if r.status == 200)
}
