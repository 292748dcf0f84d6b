//! `svidgate-wasi-run MODULE.wasm [ARGS...]`: runs a WASI preview 1 command module on wasmtime
//! and exits with its exit code. Cargo's target runner for wasm32-wasip1:
//!
//! ```text
//! cargo build -p svidgate-harness --bin svidgate-wasi-run
//! CARGO_TARGET_WASM32_WASIP1_RUNNER=$PWD/target/debug/svidgate-wasi-run \
//!     cargo test -p svidgate-core --lib --target wasm32-wasip1
//! ```
//!
//! A module that traps exits with 134, as a native process that aborts; one that cannot be
//! started, with 2. A panicking Rust test traps (panic=abort on wasm32-wasip1) and takes the rest
//! of the run with it; its message shows with `-- --no-capture`.

use std::path::PathBuf;
use std::process;

use svidgate_harness::wasi_command::{self, Exit};

fn main() {
    let mut args = std::env::args_os().skip(1);
    let Some(module) = args.next().map(PathBuf::from) else {
        eprintln!("usage: svidgate-wasi-run MODULE.wasm [ARGS...]");
        process::exit(2);
    };
    let args: Vec<_> = args.collect();
    let exit = wasi_command::run(&module, &args).unwrap_or_else(|error| {
        eprintln!("svidgate-wasi-run: {}: {error:#}", module.display());
        process::exit(2);
    });
    if let Exit::Trap(error) = &exit {
        eprintln!("svidgate-wasi-run: {} trapped: {error:#}", module.display());
    }
    process::exit(exit.status());
}
