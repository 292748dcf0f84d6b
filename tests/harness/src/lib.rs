//! Test support for svidgate: a proxy-wasm host on wasmtime, the scenario corpus runner, and a
//! runner for WASI command modules.
//!
//! - [`host`]: a state-based proxy-wasm ABI 0.2.1 host that loads the built modules.
//! - [`cases`]: the YAML scenario corpus under `tests/cases`, run natively and through the host.
//! - [`fixtures`]: builds the harness's own wasm fixtures for its tests.
//! - [`wasi_command`]: runs WASI command modules, such as the core's unit tests built for
//!   wasm32-wasip1 (the `svidgate-wasi-run` target runner).

pub mod cases;
pub mod fixtures;
pub mod host;
pub mod wasi_command;
