//! Child processes that cannot outlive their owner: killed and reaped on drop, even when a test
//! panics, with their log printed in that case so a failure shows what Envoy said; and a free
//! loopback port for the servers among them that cannot bind port 0 and say which they got.

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// How many log lines a failure report shows.
const LOG_TAIL_LINES: usize = 80;

/// How often [`Process::wait_until_up`] probes.
const START_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running child process with its output in files.
pub struct Process {
    name: String,
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr written to `<dir>/<name>.out` and `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.log"));
        let out = File::create(&stdout).with_context(|| format!("creating {}", stdout.display()))?;
        let err = File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child, stdout, stderr })
    }

    /// The process name given at spawn.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The OS process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The file stdout goes to.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout
    }

    /// The file stderr goes to.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr
    }

    /// Whether the process is still running; `Err` carries its exit status and log if not.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            Ok(Some(status)) => anyhow::bail!("{} exited ({status}); its log:\n{}", self.name, self.log_tail()),
            Err(e) => Err(e).with_context(|| format!("waiting for {}", self.name)),
        }
    }

    /// Blocks until `probe` gives a value (it listens, it printed its port), probing every 20 ms,
    /// and returns it. After each empty probe: `Err` with the exit status and log if the process
    /// has exited, or `"<not_up> in <timeout>"` and the log once `timeout` has passed.
    pub fn wait_until_up<T>(
        &mut self,
        timeout: Duration,
        not_up: &str,
        mut probe: impl FnMut(&mut Self) -> Result<Option<T>>,
    ) -> Result<T> {
        let started = Instant::now();
        loop {
            if let Some(value) = probe(self)? {
                return Ok(value);
            }
            self.check_running()?;
            if started.elapsed() > timeout {
                bail!("{not_up} in {timeout:?}:\n{}", self.log_tail());
            }
            std::thread::sleep(START_POLL_INTERVAL);
        }
    }

    /// The last lines of stderr (and stdout), for error messages.
    pub fn log_tail(&self) -> String {
        let mut out = String::new();
        for path in [&self.stderr, &self.stdout] {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.is_empty() {
                continue;
            }
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines.get(lines.len().saturating_sub(LOG_TAIL_LINES)..).unwrap_or_default();
            out.push_str(&format!("--- {} ({} lines, last {}) ---\n", path.display(), lines.len(), tail.len()));
            for line in tail {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stops the process now (SIGKILL) and reaps it.
    pub fn stop(&mut self) {
        // Errors mean the process is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port free right now on 127.0.0.1, for servers that cannot bind port 0 and report the port
/// they got (nginx, Prometheus); another process may take it before they bind it.
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== {} (pid {}) failed test: log follows ===\n{}", self.name, self.child.id(), self.log_tail());
        }
        self.stop();
    }
}
