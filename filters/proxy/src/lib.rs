//! The one implementation of svidgate's host port over Proxy-Wasm, and the callbacks both modules
//! export.
//!
//! [`ProxyWasm`] answers `svidgate_core::host::Host` with host calls ([`abi`]); the exported
//! callbacks go straight to `svidgate_core::filter`'s root contexts and streams. Nothing here
//! decides anything.
//!
//! svidgate speaks the ABI itself rather than through the Rust SDK, for what Envoy calls: Envoy
//! enters the VM only for the callbacks a module exports, and the SDK exports all of them, so a
//! module built on it is entered for every response, every body chunk in both directions (each
//! token of a streamed completion) and the access log. The identity module exports only what it
//! uses: context creation, request headers and deletion; the authz module adds the request body
//! and trailers and the response headers (`filters/authz`). The root context's callbacks (start,
//! configuration, tick, HTTP call responses) are exported by both.
//!
//! A host call that answers with a status the ABI does not give it for a reason svidgate can meet
//! panics ([`abi`]), as the SDK's calls did. A panic traps the VM, and Envoy applies the filter's
//! `failure_policy`: `FAIL_CLOSED` answers 503 to every request from then on, `FAIL_RELOAD`
//! answers 503 until a fresh VM is loaded. Either way nothing reaches the upstream unauthorized
//! (`tests/e2e/tests/crash.rs`). So the port's methods that return nothing are honest: there is
//! no failure branch for them to take.

mod abi;
#[cfg(feature = "test-crash-trigger")]
mod crash;
mod exports;
mod mem;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use abi::{BufferType, HeaderMap, LogLevel, MetricType};
use svidgate_core::config::ModuleKind;
use svidgate_core::filter::{Root, Stream};
use svidgate_core::hash::TrustedKeys;
use svidgate_core::headers::{HeaderList, proxy_wasm_bytes};
use svidgate_core::host::{Action, Host, HttpCall, MetricKind};

/// The git revision the module was built from.
pub const GIT_SHA: &str = env!("SVIDGATE_GIT_SHA");

/// Sets up the VM for `kind`'s module: call it from the module's `_initialize` export, which
/// the proxy calls once, before any other.
pub fn start(kind: ModuleKind) {
    exports::call_constructors();
    // The one line that tells an operator why a VM was lost, logged before the VM traps.
    std::panic::set_hook(Box::new(|panic| abi::log(LogLevel::Critical, &panic.to_string())));
    KIND.set(Some(kind));
}

thread_local! {
    /// The module's kind, set by [`start`].
    static KIND: Cell<Option<ModuleKind>> = const { Cell::new(None) };
    /// Envoy's log level as last asked. It is asked again after every tick of a root context
    /// (every plugin ticks, see `exports::proxy_on_configure`), so a level changed through Envoy's
    /// admin `/logging` takes effect within `TICK`, and a request's debug line below the
    /// level costs no host call at all.
    static LOG_LEVEL: Cell<Option<LogLevel>> = const { Cell::new(None) };
    /// The serialized property path of the last read, its buffer kept for the next.
    static PROPERTY_PATH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    /// The VM's root contexts (one per plugin sharing it) and its live HTTP streams.
    static CONTEXTS: RefCell<Contexts> = RefCell::new(Contexts::default());
}

/// The root contexts by id, few, and the HTTP streams by id.
#[derive(Default)]
struct Contexts {
    roots: Vec<(u32, Root)>,
    streams: HashMap<u32, Stream, TrustedKeys>,
}

/// The host port over Proxy-Wasm. Every call acts on the context whose callback runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyWasm;

impl Host for ProxyWasm {
    fn now(&self) -> SystemTime {
        // Were the proxy not to answer, the epoch makes every SVID not yet valid: identity
        // checks deny.
        abi::now_nanos().map_or(UNIX_EPOCH, |nanos| UNIX_EPOCH + Duration::from_nanos(nanos))
    }

    fn log(&self, level: log::Level, message: std::fmt::Arguments<'_>) {
        let level = match level {
            log::Level::Error => LogLevel::Error,
            log::Level::Warn => LogLevel::Warn,
            log::Level::Info => LogLevel::Info,
            log::Level::Debug => LogLevel::Debug,
            log::Level::Trace => LogLevel::Trace,
        };
        // Envoy drops lines below its log level (info unless raised): know it first, so that
        // the debug line of every decision costs neither formatting nor a host call.
        let current = LOG_LEVEL.get().or_else(|| {
            let asked = abi::log_level();
            LOG_LEVEL.set(asked);
            asked
        });
        if current.is_some_and(|current| level < current) {
            return;
        }
        abi::log(level, &message.to_string());
    }

    fn plugin_configuration(&self) -> Vec<u8> {
        abi::buffer(BufferType::PluginConfiguration, 0, usize::MAX).unwrap_or_default()
    }

    #[expect(clippy::panic, reason = "trapping the VM fails every request closed (crate docs)")]
    fn request_headers(&self) -> HeaderList {
        // One buffer, read in place (`HeaderList`). A proxy that has no request headers in
        // the request-headers callback, or serializes them otherwise than the ABI says, breaks
        // the ABI: without them no identity header can be stripped.
        abi::header_map(HeaderMap::Request)
            .and_then(HeaderList::from_proxy_wasm)
            .unwrap_or_else(|| panic!("proxy_get_header_map_pairs: no request header map in the ABI's serialization"))
    }

    fn remove_request_header(&self, name: &str) {
        abi::remove_header(HeaderMap::Request, name);
    }

    fn set_request_header(&self, name: &str, value: &str) {
        abi::replace_header(HeaderMap::Request, name, value);
    }

    fn add_request_header(&self, name: &str, value: &str) {
        abi::add_header(HeaderMap::Request, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        abi::add_header(HeaderMap::Response, name, value);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        abi::buffer(BufferType::HttpRequestBody, start, len)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        PROPERTY_PATH.with_borrow_mut(|serialized| {
            serialize_path(serialized, path);
            abi::property(serialized)
        })
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        abi::set_property(key.as_bytes(), value);
    }

    fn send_local_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        abi::send_local_response(u32::from(status), &proxy_wasm_bytes(headers), body);
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        abi::define_metric(kind, name)
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        abi::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
    }

    fn record_metric(&self, id: u32, value: u64) {
        abi::record_metric(id, value);
    }

    fn set_tick_period(&self, period: Duration) {
        abi::set_tick_period(period);
    }

    fn dispatch_http_call(&self, call: &HttpCall) -> Result<u32, String> {
        abi::http_call(&call.cluster, &proxy_wasm_bytes(&call.headers), &call.body, call.timeout)
            .map_err(|status| format!("status {status}"))
    }

    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        // A call that failed (reset, timeout) has no response: no headers then.
        let headers = abi::header_map(HeaderMap::CallResponse).and_then(HeaderList::from_proxy_wasm);
        headers.map(|headers| headers.iter().map(|(n, v)| (n.to_owned(), v.to_owned())).collect()).unwrap_or_default()
    }

    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        abi::buffer(BufferType::HttpCallResponseBody, 0, len)
    }
}

/// A property path as the ABI serializes it: the parts joined by NUL bytes.
fn serialize_path(serialized: &mut Vec<u8>, path: &[&str]) {
    serialized.clear();
    for part in path {
        serialized.extend_from_slice(part.as_bytes());
        serialized.push(0);
    }
    serialized.pop();
}

/// Runs `f` on root context `id`, if there is one.
fn with_root<R>(id: u32, f: impl FnOnce(&mut Root) -> R) -> Option<R> {
    CONTEXTS.with_borrow_mut(|contexts| contexts.roots.iter_mut().find(|(root, _)| *root == id).map(|(_, root)| f(root)))
}

/// Runs `f` on stream `id`, taken out of the map for the call (no borrow is held while the
/// pipeline runs), and keeps it only if a later callback has work left ([`Stream::expects_more`]).
/// A stream that is not there (dropped, or of no root context) gets a fresh stream of no
/// plugin: its request-headers callback denies, the body, trailers and response callbacks let
/// it continue (a dropped stream had nothing left to do in them).
fn with_stream(id: u32, f: impl FnOnce(&mut Stream) -> Action) -> u32 {
    let mut stream = CONTEXTS.with_borrow_mut(|contexts| contexts.streams.remove(&id)).unwrap_or_else(|| Stream::unconfigured(id));
    let action = f(&mut stream);
    if stream.expects_more() {
        CONTEXTS.with_borrow_mut(|contexts| contexts.streams.insert(id, stream));
    }
    match action {
        Action::Continue => 0,
        Action::Pause => 1,
    }
}

/// The first callback of a module that reads request bodies: export it as
/// `proxy_on_request_body(context_id, body_size, end_of_stream)`. `body_size` is all the proxy
/// holds for this filter (a pause is StopIterationAndBuffer: Envoy keeps the body).
pub fn on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    with_stream(context_id, |stream| stream.on_request_body(&ProxyWasm, body_size, end_of_stream != 0))
}

/// Request trailers, which end a body: export as `proxy_on_request_trailers(context_id, trailers)`
/// beside [`on_request_body`].
pub fn on_request_trailers(context_id: u32) -> u32 {
    with_stream(context_id, |stream| stream.on_request_trailers(&ProxyWasm))
}

/// The response headers, for a module that adds some: export as
/// `proxy_on_response_headers(context_id, headers, end_of_stream)`.
pub fn on_response_headers(context_id: u32) -> u32 {
    with_stream(context_id, |stream| stream.on_response_headers(&ProxyWasm))
}
