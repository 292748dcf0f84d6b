//! A real nginx serving a static directory on loopback: the bundle server Envoy's bundle cluster
//! points at, with nginx's own ETag / `If-None-Match` -> 304 handling for static files.
//!
//! nginx runs in the foreground as one process (`daemon off; master_process off;`), so killing
//! the child stops the server at once and no worker outlives it; it runs as the current user,
//! with its configuration, pid file, temp paths and access log in the run directory, and its
//! error log on stderr (`<dir>/nginx-<port>.log`, printed when a test panics).
//!
//! nginx's ETag is `"<mtime in hex>-<size in hex>"`: a file rewritten within the same second
//! with the same size keeps its ETag, and nginx answers 304 to a client holding the old one.
//! [`Nginx::publish`] moves the modification time forward so every publication gets a new ETag.

use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use serde::Deserialize;

use crate::process::{Process, free_port};

/// How long nginx may take to accept connections.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Where Debian's `nginx-light` puts the binary (not on every user's PATH).
const DEBIAN_NGINX: &str = "/usr/sbin/nginx";

/// A running (or stopped, see [`Nginx::stop`]) nginx serving one directory on one port.
pub struct Nginx {
    process: Option<Process>,
    port: u16,
    root: PathBuf,
    dir: PathBuf,
    starts: u32,
}

/// One request as nginx logged it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Served {
    /// The method.
    pub method: String,
    /// The path and query, as sent.
    pub path: String,
    /// The status nginx answered.
    pub status: u16,
    /// The `If-None-Match` header sent, empty for none.
    pub if_none_match: String,
    /// The `ETag` nginx answered with, empty for none.
    pub etag: String,
}

/// The nginx binary: `$NGINX_BIN`, else `nginx` on PATH, else Debian's `/usr/sbin/nginx`
/// (`cargo xtask setup` installs `nginx-light`).
pub fn nginx_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("NGINX_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).map(|dir| dir.join("nginx")).find(|bin| bin.is_file()))
        .unwrap_or_default();
    on_path
        .or_else(|| Some(PathBuf::from(DEBIAN_NGINX)).filter(|bin| bin.is_file()))
        .context("no nginx: set NGINX_BIN or run `cargo xtask setup` (installs Debian's nginx-light)")
}

impl Nginx {
    /// Starts nginx serving `root` on a free loopback port, with its files in `dir`, and waits
    /// until it accepts connections.
    pub fn start(root: &Path, dir: &Path) -> Result<Self> {
        ensure!(root.is_dir(), "{} is not a directory", root.display());
        let root = root.canonicalize().with_context(|| format!("resolving {}", root.display()))?;
        let dir = dir.canonicalize().with_context(|| format!("resolving {}", dir.display()))?;
        let port = free_port()?;
        let mut nginx = Self { process: None, port, root, dir, starts: 0 };
        nginx.spawn()?;
        Ok(nginx)
    }

    /// The loopback port it serves on (the same after [`Nginx::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether it is running (not stopped, not exited).
    pub fn is_running(&mut self) -> bool {
        self.process.as_mut().is_some_and(|p| p.check_running().is_ok())
    }

    /// Stops it now (SIGKILL): connections to the port are refused until [`Nginx::restart`].
    pub fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            process.stop();
        }
    }

    /// Starts it again on the same port (stopping it first if it runs) and waits until it
    /// accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn()
    }

    /// Writes `contents` to `name` (relative to the served root, sub-directories created)
    /// atomically, with a modification time later than the file it replaces, so that nginx
    /// serves a new ETag. Returns that ETag, as nginx sends it (quotes included).
    pub fn publish(&self, name: &str, contents: &[u8]) -> Result<String> {
        let path = self.root.join(name);
        ensure!(path.starts_with(&self.root) && !name.contains(".."), "{name:?} is outside the served root");
        let parent = path.parent().context("no parent directory")?;
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        let previous = std::fs::metadata(&path).and_then(|m| m.modified()).ok().map(unix_seconds).transpose()?;
        let now = unix_seconds(SystemTime::now())?;
        let mtime = previous.map_or(now, |previous| now.max(previous + 1));
        let file_name = path.file_name().context("no file name")?.to_string_lossy();
        let tmp = path.with_file_name(format!(".{file_name}.tmp"));
        std::fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
        let file =
            std::fs::File::options().write(true).open(&tmp).with_context(|| format!("opening {}", tmp.display()))?;
        file.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
            .with_context(|| format!("setting mtime of {}", tmp.display()))?;
        drop(file);
        std::fs::rename(&tmp, &path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(etag(mtime, contents.len()))
    }

    /// Every request served so far, in order, from the access log (all runs since start).
    pub fn served(&self) -> Result<Vec<Served>> {
        let path = self.access_log_path();
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        text.lines()
            .map(|line| serde_json::from_str(line).with_context(|| format!("bad nginx access log line {line:?}")))
            .collect()
    }

    /// The access log: one JSON object per request (see [`Served`]).
    pub fn access_log_path(&self) -> PathBuf {
        self.dir.join(format!("nginx-{}-access.log", self.port))
    }

    /// The end of nginx's error log, for error messages.
    pub fn log_tail(&self) -> String {
        self.process.as_ref().map(Process::log_tail).unwrap_or_default()
    }

    fn spawn(&mut self) -> Result<()> {
        self.starts += 1;
        let stem = format!("nginx-{}", self.port);
        let conf = self.dir.join(format!("{stem}.conf"));
        // nginx creates each temp path but not its parent.
        let tmp = self.dir.join(format!("{stem}-tmp"));
        std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        std::fs::write(&conf, self.config(&stem)?).with_context(|| format!("writing {}", conf.display()))?;
        let mut command = Command::new(nginx_bin()?);
        // `-e stderr`: nginx opens its compiled-in error log before reading the configuration.
        command.arg("-e").arg("stderr").arg("-p").arg(&self.dir).arg("-c").arg(&conf);
        let name = if self.starts == 1 { stem } else { format!("{stem}-run{}", self.starts) };
        let mut process = Process::spawn(&name, command, &self.dir)?;
        let address = SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port);
        // Running first: a port that accepts while nginx has exited belongs to someone else.
        process.wait_until_up(START_TIMEOUT, &format!("nginx did not listen on port {}", self.port), |process| {
            process.check_running()?;
            Ok(TcpStream::connect(address).is_ok().then_some(()))
        })?;
        self.process = Some(process);
        Ok(())
    }

    fn config(&self, stem: &str) -> Result<String> {
        let tmp = self.dir.join(format!("{stem}-tmp"));
        let q = |path: &Path| quoted(path);
        Ok(format!(
            r#"# Written by tests/e2e/src/nginx.rs for one test run.
daemon off;
master_process off;
worker_processes 1;
pid {pid};
error_log stderr info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    types {{ application/json json; application/gzip gz tgz; application/wasm wasm; }}
    log_format svidgate escape=json '{{"method":"$request_method","path":"$request_uri","status":$status,"if_none_match":"$http_if_none_match","etag":"$sent_http_etag"}}';
    access_log {access} svidgate;
    client_body_temp_path {body};
    proxy_temp_path {proxy};
    fastcgi_temp_path {fastcgi};
    uwsgi_temp_path {uwsgi};
    scgi_temp_path {scgi};
    server {{
        listen 127.0.0.1:{port};
        root {root};
        etag on;
    }}
}}
"#,
            pid = q(&self.dir.join(format!("{stem}.pid")))?,
            access = q(&self.access_log_path())?,
            body = q(&tmp.join("client_body"))?,
            proxy = q(&tmp.join("proxy"))?,
            fastcgi = q(&tmp.join("fastcgi"))?,
            uwsgi = q(&tmp.join("uwsgi"))?,
            scgi = q(&tmp.join("scgi"))?,
            port = self.port,
            root = q(&self.root)?,
        ))
    }
}

/// The ETag nginx sends for a static file with this modification time and size.
pub fn etag(mtime_unix_seconds: u64, size: usize) -> String {
    format!("\"{mtime_unix_seconds:x}-{size:x}\"")
}

/// A path as an nginx configuration string.
fn quoted(path: &Path) -> Result<String> {
    let text = path.to_str().with_context(|| format!("{} is not UTF-8", path.display()))?;
    ensure!(!text.contains(['"', '\\', '$', '\n']), "nginx cannot be configured with the path {text:?}");
    Ok(format!("\"{text}\""))
}

fn unix_seconds(time: SystemTime) -> Result<u64> {
    Ok(time.duration_since(UNIX_EPOCH).context("a time before 1970")?.as_secs())
}
