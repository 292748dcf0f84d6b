//! The app behind each sidecar (`svidgate-upstream`), started as a real process.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::process::Process;

/// How the app announces a request whose body it has not read yet.
const ARRIVED: &str = r#"{"arrived":"#;

/// How long an app may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running app and the port it listens on.
pub struct Upstream {
    process: Process,
    port: u16,
}

/// One request as the app saw it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Seen {
    /// The app's name.
    pub service: String,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The request target as received: path and query, undecoded.
    pub target: String,
    /// Every header name as received, in order, repeats kept.
    pub header_names: Vec<String>,
    /// Every `x-forwarded-spiffe-id` value, in order.
    #[serde(rename = "x-forwarded-spiffe-id")]
    pub identities: Vec<String>,
    /// The `x-request-marker` header, if any.
    pub marker: Option<String>,
    /// The request body, as text.
    pub body: String,
}

impl Upstream {
    /// Starts `bin --name name`, logging into `dir`, and waits until it listens.
    pub fn start(bin: &Path, name: &str, dir: &Path) -> Result<Self> {
        let mut command = Command::new(bin);
        command.args(["--name", name]);
        let mut process = Process::spawn(&format!("app-{name}"), command, dir)?;
        let port = process.wait_until_up(START_TIMEOUT, &format!("{name} did not start listening"), |process| {
            let out = std::fs::read_to_string(process.stdout_path()).unwrap_or_default();
            let port = out.lines().next().and_then(|l| l.strip_prefix("listening 127.0.0.1:")).map(str::parse);
            port.transpose().context("app printed a bad port")
        })?;
        Ok(Self { process, port })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Every request it has answered so far.
    pub fn seen(&self) -> Result<Vec<Seen>> {
        let out = std::fs::read_to_string(self.process.stdout_path())?;
        out.lines()
            .skip(1)
            .filter(|line| !line.starts_with(ARRIVED))
            .map(|line| serde_json::from_str(line).with_context(|| format!("bad app log line {line:?}")))
            .collect()
    }

    /// Whether a request carrying `marker` has arrived, its body read or not.
    pub fn arrived(&self, marker: &str) -> Result<bool> {
        let out = std::fs::read_to_string(self.process.stdout_path())?;
        let announced = serde_json::json!({"arrived": marker}).to_string();
        Ok(out.lines().any(|line| line == announced))
    }

    /// The requests it saw carrying `marker` in `x-request-marker`.
    pub fn seen_with_marker(&self, marker: &str) -> Result<Vec<Seen>> {
        Ok(self.seen()?.into_iter().filter(|s| s.marker.as_deref() == Some(marker)).collect())
    }
}
