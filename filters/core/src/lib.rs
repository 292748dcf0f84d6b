//! svidgate's host-free core: the whole request pipeline of both modules.
//!
//! The core asks the proxy for what it needs through one port, [`host::Host`] (headers,
//! attributes, clock, metrics, local replies, filter state, logs, HTTP calls, timers), and owns
//! everything else: [`filter`] runs each phase of a request, from stripping identity headers to
//! carrying the decision out. `svidgate-proxy` implements the port over Proxy-Wasm for both
//! modules, [`host::memory`] over plain maps for native tests and benchmarks: the same code runs
//! in Envoy, in the wasmtime harness and natively.
//!
//! - [`filter`]: the root context and the request pipeline.
//! - [`host`]: the port, and a map-backed host.
//! - [`config`]: plugin configuration, parsed once or refused.
//! - [`spiffe`]: SPIFFE IDs and trust domains, parsed by the spec.
//! - [`peer`]: the peer's X509-SVID checked against the SPIFFE rules and the clock, with a cache.
//! - [`headers`]: a request's headers in one buffer, as the proxy serializes them.
//! - [`identity`]: stripping and injecting the identity header.
//! - [`jwt_svid`]: JWT-SVIDs checked against their trust domain's JWT bundle, where there is no X509-SVID.
//! - [`service`]: polling HTTP services through an Envoy cluster.
//! - [`path`]: the path guard, and `parsed_path`/`parsed_query` as OPA's Envoy plugin builds them.
//! - [`authz`] (feature `rego`): the Rego decision with the OPA Envoy plugin's input and result.
//! - [`decision`]: decisions and deny reasons.
//! - [`metrics`]: the metrics filters keep.
//! - [`hash`]: a hasher for keys no client chooses (certificate digests, context ids).

pub mod config;
pub mod decision;
pub mod filter;
pub mod hash;
#[cfg(feature = "rego")]
pub mod fuzzing;
pub mod headers;
pub mod host;
pub mod identity;
pub mod jwt_svid;
pub mod metrics;
pub mod path;
pub mod peer;
mod pem;
pub mod service;
pub mod spiffe;

#[cfg(feature = "rego")]
pub mod authz;

/// The crate version, logged once at VM start.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
