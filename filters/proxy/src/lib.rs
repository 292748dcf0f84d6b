//! The one implementation of svidgate's host port over Proxy-Wasm, and the contexts both modules
//! register with it.
//!
//! [`ProxyWasm`] answers `svidgate_core::host::Host` with the SDK's host calls; [`start`]
//! registers a root context whose callbacks, and those of its HTTP streams, go straight to
//! `svidgate_core::filter`. Nothing here decides anything.
//!
//! What the pinned SDK (proxy-wasm 0.2.5) does when Envoy answers a host call with a status it
//! does not expect: it panics, for every call this crate makes except `proxy_get_property`
//! (NotFound, SerializationFailure and InternalFailure come back as values), `proxy_get_buffer_bytes`
//! (NotFound), `proxy_http_call` (BadArgument, InternalFailure) and the metric updates (NotFound,
//! BadArgument: an id the plugin never defined, so nothing to count). A panic in the module traps the
//! Wasm VM, and Envoy applies the filter's `failure_policy`: `FAIL_CLOSED` answers 503 to every
//! request from then on, `FAIL_RELOAD` answers 503 until a fresh VM is loaded. Either way nothing
//! reaches the upstream unauthorized (`tests/e2e/tests/crash.rs`). So the port's methods that
//! return nothing are honest: there is no failure branch for them to take.

#[cfg(feature = "test-crash-trigger")]
mod crash;
mod mem;
mod raw;

use std::cell::Cell;
use std::time::{Duration, SystemTime};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel, MapType, MetricType};
use svidgate_core::config::ModuleKind;
use svidgate_core::filter::{Root, Stream, TICK};
use svidgate_core::headers::HeaderList;
use svidgate_core::host::{Action, Host, HttpCall, MetricKind};

/// The git revision the module was built from.
pub const GIT_SHA: &str = env!("SVIDGATE_GIT_SHA");

/// Sets up the VM: call it from the module's `proxy_wasm::main!` with a function that returns
/// [`root`] of the module's kind (the SDK takes a plain function pointer).
pub fn start(new_root: fn(u32) -> Box<dyn RootContext>) {
    // The SDK's logger also installs a panic hook that logs the panic message at critical level
    // before the VM traps: the one line that tells an operator why a VM was lost.
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(new_root);
}

/// The root context of `kind`'s module.
pub fn root(kind: ModuleKind) -> Box<dyn RootContext> {
    Box::new(ProxyRoot(Root::new(kind, GIT_SHA)))
}

thread_local! {
    /// Envoy's log level as last asked. It is asked again after every tick of a root context
    /// (every plugin ticks, see [`ProxyRoot::on_configure`]), so a level changed through
    /// Envoy's admin `/logging` takes effect within [`TICK`], and a request's debug line below
    /// the level costs no host call at all.
    static LOG_LEVEL: Cell<Option<LogLevel>> = const { Cell::new(None) };
}

/// The host port over the Proxy-Wasm SDK. Every call acts on the context whose callback runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProxyWasm;

impl Host for ProxyWasm {
    fn now(&self) -> SystemTime {
        // The SDK never returns Err here: it panics on any status but Ok (see the crate docs).
        // Were it to, the epoch makes every SVID not yet valid, so identity checks deny.
        hostcalls::get_current_time().unwrap_or(SystemTime::UNIX_EPOCH)
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
            let asked = hostcalls::get_log_level().ok();
            LOG_LEVEL.set(asked);
            asked
        });
        if current.is_some_and(|current| (level as u32) < (current as u32)) {
            return;
        }
        let _ = hostcalls::log(level, &message.to_string());
    }

    fn plugin_configuration(&self) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX).ok().flatten().unwrap_or_default()
    }

    fn request_headers(&self) -> HeaderList {
        // One buffer, read in place (`HeaderList`). Should Envoy answer otherwise than with a
        // serialized map, the SDK's own call decides, as before: it panics on any status but
        // Ok, which traps the VM (see the crate docs).
        raw::map(MapType::HttpRequestHeaders).and_then(HeaderList::from_proxy_wasm).unwrap_or_else(|| {
            HeaderList::from_pairs(hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default())
        })
    }

    fn remove_request_header(&self, name: &str) {
        let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
    }

    fn set_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
    }

    fn add_request_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn add_response_header(&self, name: &str, value: &str) {
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value);
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, start, len).ok().flatten()
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        // A status the SDK does not expect here: its own call decides, as before.
        raw::property(path).unwrap_or_else(|_| hostcalls::get_property(path.to_vec()).ok().flatten())
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        let _ = hostcalls::set_property(vec![key], Some(value));
    }

    fn send_local_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let _ = hostcalls::send_http_response(u32::from(status), headers, Some(body));
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        let kind = match kind {
            MetricKind::Counter => MetricType::Counter,
            MetricKind::Gauge => MetricType::Gauge,
            MetricKind::Histogram => MetricType::Histogram,
        };
        hostcalls::define_metric(kind, name).unwrap_or(u32::MAX)
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        // NotFound or BadArgument would mean an id this plugin never defined: nothing to count.
        let _ = hostcalls::increment_metric(id, i64::try_from(delta).unwrap_or(i64::MAX));
    }

    fn record_metric(&self, id: u32, value: u64) {
        let _ = hostcalls::record_metric(id, value);
    }

    fn set_tick_period(&self, period: Duration) {
        let _ = hostcalls::set_tick_period(period);
    }

    fn dispatch_http_call(&self, call: &HttpCall) -> Result<u32, String> {
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        hostcalls::dispatch_http_call(&call.cluster, headers, body, Vec::new(), call.timeout)
            .map_err(|status| format!("{status:?}"))
    }

    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        // A call that failed (reset, timeout) has no response: Envoy lists no headers then, where
        // the SDK's single-header helpers would panic.
        hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default()
    }

    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, len).ok().flatten()
    }
}

struct ProxyRoot(Root);

struct ProxyStream(Stream);

impl Context for ProxyRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.0.on_http_call_response(&ProxyWasm, token_id, body_size);
    }
}

impl RootContext for ProxyRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        self.0.on_vm_start(&ProxyWasm)
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        LOG_LEVEL.set(None);
        let configured = self.0.on_configure(&ProxyWasm);
        // Every plugin ticks, if only to ask Envoy's log level again (`LOG_LEVEL`); the core
        // asks for the same period when it polls bundles.
        ProxyWasm.set_tick_period(TICK);
        configured
    }

    fn on_tick(&mut self) {
        LOG_LEVEL.set(None);
        self.0.on_tick(&ProxyWasm);
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(ProxyStream(self.0.stream(context_id))))
    }
}

impl Context for ProxyStream {}

impl HttpContext for ProxyStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        #[cfg(feature = "test-crash-trigger")]
        crash::on_request_headers();
        action(self.0.on_request_headers(&ProxyWasm, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> proxy_wasm::types::Action {
        // Pause here is StopIterationAndBuffer: Envoy keeps the body, and `body_size` is all of it.
        action(self.0.on_request_body(&ProxyWasm, body_size, end_of_stream))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> proxy_wasm::types::Action {
        action(self.0.on_request_trailers(&ProxyWasm))
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> proxy_wasm::types::Action {
        action(self.0.on_response_headers(&ProxyWasm))
    }
}

fn action(action: Action) -> proxy_wasm::types::Action {
    match action {
        Action::Continue => proxy_wasm::types::Action::Continue,
        Action::Pause => proxy_wasm::types::Action::Pause,
    }
}
