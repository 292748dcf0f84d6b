//! A test-only crash: with the `test-crash-trigger` feature, a request carrying
//! [`CRASH_HEADER`] makes the module panic, which traps the wasm VM as a real bug would.
//!
//! The end-to-end tests build this variant into their own directory to show that Envoy's
//! `failure_policy: FAIL_RELOAD` answers 503 while the VM is dead, lets nothing through
//! unauthorized, and recovers with a fresh VM. The shipped module never has this feature.

use svidgate_core::host::Host;

/// The request header that crashes the VM (any value).
pub const CRASH_HEADER: &str = "x-svidgate-test-crash";

/// Panics if the request carries [`CRASH_HEADER`]; called first on every request.
#[expect(clippy::panic, reason = "crashing the VM on demand is this test-only feature's purpose")]
pub fn on_request_headers() {
    if crate::ProxyWasm.request_headers().get(CRASH_HEADER).is_some() {
        panic!("svidgate test crash: request carries {CRASH_HEADER}");
    }
}
