//! svidgate in real Envoy: processes, certificates, configurations and an mTLS client, shared by
//! the end-to-end tests (`tests/`) and the demo driver (`svidgate-demo`).
//!
//! - [`paths`]: where the modules, Envoy and the config templates are.
//! - [`pki`]: the demo trust domain minted into files, standing in for SPIRE.
//! - [`process`]: child processes killed on drop, their logs printed when a test panics.
//! - [`envoy`]: templates filled by code, Envoy started and watched through its admin API.
//! - [`upstream`]: the small app behind each sidecar, reporting the identity it received.
//! - [`nginx`]: a real nginx serving bundles from a directory, with ETags and 304s; stopped and restarted at will.
//! - [`logsink`]: a decision-log collector taking OPA-style gzip JSON uploads, failing on demand.
//! - [`bundle_sidecar`]: the model server's sidecar with its bundle server and log receiver, run whole.
//! - [`prometheus`]: a real Prometheus scraping Envoy's admin API, evaluating rules, queried over its HTTP API.
//! - [`client`]: HTTP/1.1 and HTTP/2 over (m)TLS with rustls, and plain HTTP.
//! - [`topology`]: the seed's architecture: gateway, orchestrator, model server, vector store, tool runtime.
//! - [`wait`]: a check polled until it holds or time is up.

pub mod bundle_sidecar;
pub mod client;
pub mod envoy;
pub mod logsink;
pub mod nginx;
pub mod paths;
pub mod pki;
pub mod process;
pub mod prometheus;
pub mod topology;
pub mod upstream;
pub mod wait;
