//! The host port: everything the request pipeline and the root context need from the proxy.
//!
//! The core never names Proxy-Wasm. It asks a [`Host`] for request headers, Envoy attributes,
//! the clock, metrics, local replies, filter state, logs, HTTP callouts and timers, and the
//! proxy answers. `svidgate-proxy` implements the trait once over the Proxy-Wasm ABI for both
//! modules; [`memory::MemoryHost`] implements it over plain maps for native tests, the scenario
//! corpus and benchmarks. The same pipeline code runs on both, so the runtimes cannot drift.
//!
//! # Failures the port does not report
//!
//! Most methods return nothing, because the proxy gives a filter no way to recover:
//! `svidgate-proxy` panics on every status the ABI does not give a host call for a reason a
//! filter can meet (as the Rust SDK does), and a panic in a Wasm module traps the VM. Envoy then applies the filter's `failure_policy`: with
//! `FAIL_CLOSED` (the default) or `FAIL_RELOAD`, the stream that trapped and every later one
//! get a 503 local reply until the VM is replaced, so nothing reaches the upstream
//! unauthorized (`tests/e2e/tests/crash.rs` shows it in real Envoy). Never configure `FAIL_OPEN`.
//! Only the calls whose failures the proxy does return, and that a filter can act on, carry a
//! `Result` or an `Option` here: reading a property (absent or unreadable is `None`), reading a
//! body buffer, and dispatching an HTTP call (an unknown cluster is refused).

pub mod memory;

use std::time::{Duration, SystemTime};

use crate::headers::HeaderList;

/// Envoy attributes the core reads, as property paths.
pub mod property {
    /// `connection.peer_certificate`: the peer's leaf certificate, PEM.
    pub const PEER_CERTIFICATE: &[&str] = &["connection", "peer_certificate"];
    /// `connection.sha256_peer_certificate_digest`: 64 lower-case hex digits.
    pub const PEER_CERTIFICATE_DIGEST: &[&str] = &["connection", "sha256_peer_certificate_digest"];
    /// `connection.uri_san_peer_certificate`: the first URI SAN of the peer's certificate.
    pub const PEER_URI_SAN: &[&str] = &["connection", "uri_san_peer_certificate"];
    /// `connection.uri_san_local_certificate`: the first URI SAN of our own certificate.
    pub const LOCAL_URI_SAN: &[&str] = &["connection", "uri_san_local_certificate"];
    /// `source.address`: `ip:port` of the downstream peer.
    pub const SOURCE_ADDRESS: &[&str] = &["source", "address"];
    /// `destination.address`: `ip:port` the downstream connected to.
    pub const DESTINATION_ADDRESS: &[&str] = &["destination", "address"];
    /// `request.protocol`: `HTTP/1.1`, `HTTP/2`, ...
    pub const PROTOCOL: &[&str] = &["request", "protocol"];
    /// `connection.requested_server_name`: the TLS SNI the client sent, as ext_authz's
    /// `tlsSession.sni` takes it.
    pub const TLS_SNI: &[&str] = &["connection", "requested_server_name"];
    /// `metadata`: the stream's dynamic metadata, the bytes of an `envoy.config.core.v3.Metadata`
    /// (a map inside it does not serialize, so it is read whole).
    pub const DYNAMIC_METADATA: &[&str] = &["metadata"];
    /// `xds.route_name`: the name of the route the request matched (empty for an unnamed route,
    /// absent when none matched).
    pub const ROUTE_NAME: &[&str] = &["xds", "route_name"];
    /// The `svidgate.policy` string of the matched route's metadata; a path into the route's
    /// `Metadata` reaches a string leaf as plain UTF-8.
    pub const ROUTE_POLICY: &[&str] = &["xds", "route_metadata", "filter_metadata", "svidgate", "policy"];
}

/// What the filter asks of the proxy. One implementation per runtime; see the module docs for
/// what happens when the proxy fails a call that returns nothing.
pub trait Host {
    /// The proxy's wall clock.
    fn now(&self) -> SystemTime;

    /// Writes one line to the proxy's log; a host may skip formatting a line its log level drops.
    fn log(&self, level: log::Level, message: std::fmt::Arguments<'_>);

    /// The plugin configuration (readable while the root context is configured).
    fn plugin_configuration(&self) -> Vec<u8>;

    /// Every request header as (lower-case name, value), in the proxy's order, repeats kept.
    fn request_headers(&self) -> HeaderList;

    /// Removes every value of a request header.
    fn remove_request_header(&self, name: &str);

    /// Replaces every value of a request header by `value`.
    fn set_request_header(&self, name: &str, value: &str);

    /// Adds a value to a request header, after any it has.
    fn add_request_header(&self, name: &str, value: &str);

    /// Adds a header to the response on its way to the client.
    fn add_response_header(&self, name: &str, value: &str);

    /// `len` bytes of the buffered request body from `start`, if there is a body buffer.
    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>>;

    /// An Envoy attribute (see [`property`]); absent or unreadable is `None`.
    fn property(&self, path: &[&str]) -> Option<Vec<u8>>;

    /// Sets a filter-state value of the stream (`%FILTER_STATE(wasm.<key>:PLAIN)%`).
    fn set_filter_state(&self, key: &str, value: &[u8]);

    /// Answers the request locally; the request never reaches the upstream.
    fn send_local_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]);

    /// Defines a metric and returns its id.
    fn define_metric(&self, kind: MetricKind, name: &str) -> u32;

    /// Adds `delta` to a counter.
    fn increment_metric(&self, id: u32, delta: u64);

    /// Records a value: a gauge's new value, or one histogram sample.
    fn record_metric(&self, id: u32, value: u64);

    /// Calls the root context's tick every `period`.
    fn set_tick_period(&self, period: Duration);

    /// Sends an HTTP request through an Envoy cluster; the answer comes back on the root
    /// context with the returned token. `Err` when the proxy refuses it (an unknown cluster).
    fn dispatch_http_call(&self, call: &HttpCall) -> Result<u32, String>;

    /// The headers of the HTTP call response being delivered (none when the call failed).
    fn http_call_response_headers(&self) -> Vec<(String, String)>;

    /// The body of the HTTP call response being delivered, if any.
    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>>;
}

/// The kinds of metric the proxy keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// Only ever increases.
    Counter,
    /// Set to a value.
    Gauge,
    /// A distribution of recorded values.
    Histogram,
}

/// One HTTP call for the proxy to dispatch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The Envoy cluster.
    pub cluster: String,
    /// Request headers, pseudo-headers first.
    pub headers: Vec<(String, String)>,
    /// Request body (empty for GET).
    pub body: Vec<u8>,
    /// Call timeout.
    pub timeout: Duration,
}

/// What the proxy should do with the stream after a callback.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Go on to the next filter (and the upstream).
    Continue,
    /// Stop here: a local reply was sent, or the filter waits for more of the request.
    Pause,
}
