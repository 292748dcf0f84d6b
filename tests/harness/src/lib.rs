//! Test support for svidgate: a proxy-wasm host on wasmtime, and the scenario corpus runner.
//!
//! - [`host`]: a state-based proxy-wasm ABI 0.2.1 host that loads the built modules.
//! - [`cases`]: the YAML scenario corpus under `tests/cases`, run natively and through the host.

pub mod cases;
pub mod host;
