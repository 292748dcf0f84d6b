//! svidgate's host-free core.
//!
//! Filters hand the core a plain snapshot of a request (the peer certificate, the headers with
//! identity headers already stripped, a few connection facts) and get back a [`decision::Decision`]:
//! allow with a list of header edits, or deny with a status. Nothing here names the proxy, so the
//! same code runs in the Proxy-Wasm modules, in native tests and in benchmarks.
//!
//! - [`spiffe`]: SPIFFE IDs and trust domains, parsed by the spec.
//! - [`peer`]: the peer's X509-SVID checked against the SPIFFE rules and the clock, with a cache.
//! - [`config`]: plugin configuration, parsed once or refused.
//! - [`identity`]: stripping and injecting the identity header.
//! - [`authz`] (feature `rego`): the Rego decision with the OPA Envoy plugin's input and result.
//! - [`decision`]: decisions and deny reasons.
//! - [`metrics`]: the counters filters keep.

pub mod config;
pub mod decision;
pub mod identity;
pub mod metrics;
pub mod peer;
mod pem;
pub mod spiffe;

#[cfg(feature = "rego")]
pub mod authz;

/// The crate version, logged once at VM start.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
