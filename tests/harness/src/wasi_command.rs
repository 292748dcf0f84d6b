//! Runs a WASI preview 1 command module (one that exports `_start`) on wasmtime, such as a test
//! binary cargo built for wasm32-wasip1: the library half of `svidgate-wasi-run`, Cargo's target
//! runner for that target (`CARGO_TARGET_WASM32_WASIP1_RUNNER`).
//!
//! The module gets the arguments and the environment of this process, writes to its stdout and
//! stderr, and reads its clocks and randomness (`/dev/urandom`), through the WASI functions in
//! `host::wasi`. It has no stdin, no file system (no preopened directories), no threads
//! and no fuel limit. Other imports, if the module calls them, trap naming the import.
//!
//! A Rust panic on wasm32-wasip1 aborts (panic=abort): a failing test ends the whole test binary
//! with a trap, before libtest prints its summary. The panic message goes to stderr, except that
//! libtest's output capture swallows it: pass `--no-capture` to see it.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use std::path::Path;
//! let exit = svidgate_harness::wasi_command::run(Path::new("tests.wasm"), &["--no-capture".into()])?;
//! std::process::exit(exit.status());
//! # }
//! ```

use std::ffi::OsString;
use std::io::{IsTerminal as _, Read as _, Write as _};
use std::path::Path;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result};
use wasmtime::{Engine, Linker, Store};

use crate::host::wasi::{self, ProcExit, WasiState};
use crate::host::wasm_error;

/// How a command module ended.
#[derive(Debug)]
pub enum Exit {
    /// `_start` returned (0) or the module called `proc_exit(code)`.
    Code(i32),
    /// The module trapped, as a Rust panic does on wasm32-wasip1 (panic=abort).
    Trap(anyhow::Error),
}

impl Exit {
    /// The process exit status that reports this end: the code, or 134 for a trap, as a native
    /// process that aborts (SIGABRT) reports it.
    pub fn status(&self) -> i32 {
        match self {
            Self::Code(code) => *code,
            Self::Trap(_) => 134,
        }
    }
}

/// Runs the command module at `path` with `args` (`argv[1..]`; `argv[0]` is `path`) and this
/// process's environment, until it exits or traps. An error means it could not be started.
pub fn run(path: &Path, args: &[OsString]) -> Result<Exit> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config = wasmtime::Config::new();
    // Compiling is most of a run (the core's debug test binary has 3.4 MB of code: about 5 s
    // unoptimized, 6 s optimized, on the 2-core machines), running the tests a fraction of a second.
    config.cranelift_opt_level(wasmtime::OptLevel::None);
    let engine = Engine::new(&config).map_err(wasm_error)?;
    let module = wasmtime::Module::new(&engine, &bytes)
        .map_err(wasm_error)
        .context("compiling the module")?;
    let mut linker = Linker::new(&engine);
    wasi::add_to_linker(&mut linker).map_err(wasm_error)?;
    // Imports this runner lacks trap when called, naming the import, instead of failing to link.
    linker
        .define_unknown_imports_as_traps(&module)
        .map_err(wasm_error)?;

    let argv = std::iter::once(path.as_os_str()).chain(args.iter().map(OsString::as_os_str));
    let process = Process {
        args: argv.map(|arg| arg.as_encoded_bytes().to_vec()).collect(),
        environ: std::env::vars_os()
            .map(|(name, value)| environ_entry(&name, &value))
            .collect(),
        started: Instant::now(),
    };
    let mut store = Store::new(&engine, process);
    let instance = linker
        .instantiate(&mut store, &module)
        .map_err(wasm_error)
        .context("instantiating the module")?;
    let start = instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .map_err(wasm_error)
        .context("the module exports no `_start() -> ()`: not a command module")?;
    Ok(match start.call(&mut store, ()) {
        Ok(()) => Exit::Code(0),
        Err(error) => match error.downcast_ref::<ProcExit>() {
            Some(ProcExit(code)) => Exit::Code(code.cast_signed()),
            None => Exit::Trap(wasm_error(error)),
        },
    })
}

/// The store data of a command: what it sees of this process.
struct Process {
    args: Vec<Vec<u8>>,
    environ: Vec<Vec<u8>>,
    started: Instant,
}

impl WasiState for Process {
    fn args(&self) -> &[Vec<u8>] {
        &self.args
    }

    fn environ(&self) -> &[Vec<u8>] {
        &self.environ
    }

    fn realtime_nanos(&self) -> u64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
    }

    fn monotonic_nanos(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn fill_random(&mut self, buffer: &mut [u8]) -> std::io::Result<()> {
        std::fs::File::open("/dev/urandom")?.read_exact(buffer)
    }

    fn write_stdio(&mut self, fd: u32, bytes: &[u8]) -> std::io::Result<()> {
        // Flushed at once, so that stdout and stderr interleave as the module wrote them.
        if fd == 1 {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(bytes)?;
            stdout.flush()
        } else {
            std::io::stderr().lock().write_all(bytes)
        }
    }

    fn is_terminal(&self, fd: u32) -> bool {
        if fd == 1 {
            std::io::stdout().is_terminal()
        } else {
            std::io::stderr().is_terminal()
        }
    }
}

/// `NAME=value`, as `environ_get` hands it over.
fn environ_entry(name: &std::ffi::OsStr, value: &std::ffi::OsStr) -> Vec<u8> {
    let mut entry = name.as_encoded_bytes().to_vec();
    entry.push(b'=');
    entry.extend_from_slice(value.as_encoded_bytes());
    entry
}
