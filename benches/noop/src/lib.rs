//! A Proxy-Wasm HTTP filter that does nothing: every callback returns `Continue`. What Envoy
//! spends on it is the fixed cost of a Wasm filter in its V8 (creating the stream's context,
//! crossing into the VM per callback), the floor under svidgate's modules.
//!
//! Its plugin configuration can name host calls to make once per request, on the request headers
//! (`cargo xtask bench envoy --host-calls`), so that what each crossing costs in Envoy is measured
//! apart from any work in the module: `"headers"` reads the request header map as svidgate does
//! (Envoy's serialized buffer, not parsed: the SDK's `get_map_bytes` would add a `String` and a
//! `Vec` per header, work in the module, about 900 Wasm instructions per header),
//! `"property"` reads `connection.sha256_peer_certificate_digest`, `"set_header"` sets one request
//! header, `"time"`, `"log_level"` and `"metric"` read the clock, Envoy's log level and increment
//! a counter; `"times": N` makes each of them N times. Anything else in the configuration is
//! ignored.

use std::cell::RefCell;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MapType, MetricType};

/// A host call the configuration names.
#[derive(Clone, Copy)]
enum Call {
    Headers,
    Property,
    SetHeader,
    Time,
    LogLevel,
    Metric(u32),
}

thread_local! {
    static CALLS: RefCell<Vec<Call>> = const { RefCell::new(Vec::new()) };
}

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Warn);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(NoopRoot) });
}}

struct NoopRoot;

impl Context for NoopRoot {}

impl RootContext for NoopRoot {
    fn on_configure(&mut self, _configuration_size: usize) -> bool {
        let configuration = self.get_plugin_configuration().unwrap_or_default();
        let configuration = String::from_utf8_lossy(&configuration);
        let named = |name: &str| configuration.contains(&format!("\"{name}\""));
        let mut calls = Vec::new();
        for (name, call) in [
            ("headers", Call::Headers),
            ("property", Call::Property),
            ("set_header", Call::SetHeader),
            ("time", Call::Time),
            ("log_level", Call::LogLevel),
        ] {
            if named(name) {
                calls.push(call);
            }
        }
        if named("metric") {
            let id = hostcalls::define_metric(MetricType::Counter, "noop.requests").unwrap_or(0);
            calls.push(Call::Metric(id));
        }
        let times = configuration
            .split_once("\"times\":")
            .and_then(|(_, rest)| rest.trim_start().split(|c: char| !c.is_ascii_digit()).next()?.parse().ok())
            .unwrap_or(1);
        let calls = calls.iter().copied().cycle().take(calls.len() * times).collect();
        CALLS.with(|c| *c.borrow_mut() = calls);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Noop))
    }
}

struct Noop;

impl Context for Noop {}

impl HttpContext for Noop {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        CALLS.with(|calls| {
            for call in calls.borrow().iter() {
                match *call {
                    Call::Headers => drop(header_map_bytes()),
                    Call::Property => drop(hostcalls::get_property(vec!["connection", "sha256_peer_certificate_digest"])),
                    Call::SetHeader => drop(hostcalls::set_map_value(MapType::HttpRequestHeaders, "x-noop", Some("1"))),
                    Call::Time => drop(hostcalls::get_current_time()),
                    Call::LogLevel => drop(hostcalls::get_log_level()),
                    Call::Metric(id) => drop(hostcalls::increment_metric(id, 1)),
                }
            }
        });
        Action::Continue
    }
}

extern "C" {
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> u32;
}

/// The request header map as Envoy serializes it, into memory it takes from the module (as
/// `filters/proxy/src/raw.rs` reads it for svidgate).
fn header_map_bytes() -> Vec<u8> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the call writes the two out-pointers only; a non-null buffer is `size` bytes Envoy
    // allocated through the SDK's `proxy_on_memory_allocate`, now the module's.
    unsafe {
        if proxy_get_header_map_pairs(MapType::HttpRequestHeaders as u32, &mut data, &mut size) != 0 || data.is_null() {
            return Vec::new();
        }
        Vec::from_raw_parts(data, size, size)
    }
}
