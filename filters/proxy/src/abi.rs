//! The Proxy-Wasm ABI (0.2.1) as svidgate uses it: the host functions it imports, each behind a
//! safe function, and the callbacks every module exports.
//!
//! A call answers with the statuses the ABI gives it for a reason svidgate can meet (NotFound
//! for a property or buffer the proxy does not have, BadArgument for an unknown cluster); any
//! other status means the proxy and the module disagree about the ABI, and the call panics,
//! which traps the VM: see the crate docs for what Envoy then does (it fails closed).
#![expect(unsafe_code, reason = "the ABI is C functions over the module's linear memory")]

use std::time::Duration;

/// `proxy_log` levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u32)]
pub enum LogLevel {
    Trace = 0,
    Debug = 1,
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

impl LogLevel {
    fn from_raw(raw: u32) -> Option<Self> {
        [Self::Trace, Self::Debug, Self::Info, Self::Warn, Self::Error, Self::Critical].into_iter().find(|level| *level as u32 == raw)
    }
}

/// Header maps: the ABI's `MapType`.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum HeaderMap {
    Request = 0,
    Response = 2,
    CallResponse = 6,
}

/// Buffers.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum BufferType {
    HttpRequestBody = 0,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// Metric kinds.
#[derive(Clone, Copy, Debug)]
#[repr(u32)]
pub enum MetricType {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

/// A Proxy-Wasm status (the host's `WasmResult`): 0 is Ok.
pub type Status = u32;

const OK: Status = 0;
const NOT_FOUND: Status = 1;
const BAD_ARGUMENT: Status = 2;
const SERIALIZATION_FAILURE: Status = 3;
const INTERNAL_FAILURE: Status = 10;

#[link(wasm_import_module = "env")]
unsafe extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> Status;
    fn proxy_get_log_level(return_level: *mut u32) -> Status;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> Status;
    fn proxy_set_tick_period_milliseconds(period: u32) -> Status;
    fn proxy_get_buffer_bytes(buffer_type: u32, start: usize, max_size: usize, return_data: *mut *mut u8, return_size: *mut usize) -> Status;
    fn proxy_get_header_map_pairs(map_type: u32, return_map_data: *mut *mut u8, return_map_size: *mut usize) -> Status;
    fn proxy_remove_header_map_value(map_type: u32, key_data: *const u8, key_size: usize) -> Status;
    fn proxy_replace_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> Status;
    fn proxy_add_header_map_value(map_type: u32, key_data: *const u8, key_size: usize, value_data: *const u8, value_size: usize) -> Status;
    fn proxy_get_property(path_data: *const u8, path_size: usize, return_value_data: *mut *mut u8, return_value_size: *mut usize) -> Status;
    fn proxy_set_property(path_data: *const u8, path_size: usize, value_data: *const u8, value_size: usize) -> Status;
    fn proxy_send_local_response(
        status_code: u32,
        details_data: *const u8,
        details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> Status;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> Status;
    fn proxy_define_metric(metric_type: u32, name_data: *const u8, name_size: usize, return_id: *mut u32) -> Status;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> Status;
    fn proxy_record_metric(metric_id: u32, value: u64) -> Status;
}

/// A status the ABI does not give `call` for any reason svidgate can meet.
#[expect(clippy::panic, reason = "trapping the VM is the one safe answer to a proxy that breaks the ABI (crate docs)")]
fn unexpected(call: &str, status: Status) -> ! {
    panic!("{call}: unexpected status {status}")
}

fn check(call: &str, status: Status) {
    if status != OK {
        unexpected(call, status);
    }
}

/// Memory the proxy filled for the module: `size` bytes at `data`, allocated through
/// [`proxy_on_memory_allocate`]; `None` for a null pointer (no value).
///
/// # Safety
/// A non-null `data` is such an allocation of exactly `size` bytes, written in full, that
/// nothing else owns.
unsafe fn take(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    // SAFETY: `proxy_on_memory_allocate` allocated a boxed slice of exactly `size` bytes with the
    // global allocator; the caller vouches that the proxy wrote it and handed it over.
    (!data.is_null()).then(|| unsafe { Vec::from_raw_parts(data, size, size) })
}

/// Writes `message` to the proxy's log. A line the proxy cannot take is dropped.
pub fn log(level: LogLevel, message: &str) {
    // SAFETY: the message is `message.len()` live bytes.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// The proxy's log level, if it says.
pub fn log_level() -> Option<LogLevel> {
    let mut level = 0;
    // SAFETY: the call writes one u32 to a live local.
    let status = unsafe { proxy_get_log_level(&raw mut level) };
    if status == OK { LogLevel::from_raw(level) } else { None }
}

/// The proxy's clock in nanoseconds since the Unix epoch; `None` if it does not answer.
pub fn now_nanos() -> Option<u64> {
    let mut now = 0;
    // SAFETY: the call writes one u64 to a live local.
    let status = unsafe { proxy_get_current_time_nanoseconds(&raw mut now) };
    (status == OK).then_some(now)
}

/// Sets the period of the root context's `proxy_on_tick` (whole milliseconds).
pub fn set_tick_period(period: Duration) {
    let millis = u32::try_from(period.as_millis()).unwrap_or(u32::MAX);
    // SAFETY: no pointers.
    check("proxy_set_tick_period_milliseconds", unsafe { proxy_set_tick_period_milliseconds(millis) });
}

/// Up to `max` bytes of `buffer` from `start`; `None` where the proxy has no such buffer.
pub fn buffer(buffer: BufferType, start: usize, max: usize) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the call writes only the two out-pointers, which point to live locals.
    match unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &raw mut data, &raw mut size) } {
        // SAFETY: the proxy hands over what it wrote (`take`).
        OK => unsafe { take(data, size) },
        NOT_FOUND => None,
        status => unexpected("proxy_get_buffer_bytes", status),
    }
}

/// The header map `map`, serialized as Proxy-Wasm serializes maps; `None` where the proxy
/// has none (an HTTP call that failed has no response headers).
pub fn header_map(map: HeaderMap) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the call writes only the two out-pointers, which point to live locals.
    match unsafe { proxy_get_header_map_pairs(map as u32, &raw mut data, &raw mut size) } {
        // SAFETY: as in `buffer`. A null pointer is an empty map.
        OK => Some(unsafe { take(data, size) }.unwrap_or_else(|| 0u32.to_le_bytes().to_vec())),
        NOT_FOUND => None,
        status => unexpected("proxy_get_header_map_pairs", status),
    }
}

/// Removes every value of header `name` from `map`.
pub fn remove_header(map: HeaderMap, name: &str) {
    // SAFETY: the name is `name.len()` live bytes.
    check("proxy_remove_header_map_value", unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) });
}

/// Replaces every value of header `name` in `map` with `value`.
pub fn replace_header(map: HeaderMap, name: &str, value: &str) {
    // SAFETY: name and value are live for their lengths.
    let status = unsafe { proxy_replace_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    check("proxy_replace_header_map_value", status);
}

/// Adds a value of header `name` to `map`.
pub fn add_header(map: HeaderMap, name: &str, value: &str) {
    // SAFETY: name and value are live for their lengths.
    let status = unsafe { proxy_add_header_map_value(map as u32, name.as_ptr(), name.len(), value.as_ptr(), value.len()) };
    check("proxy_add_header_map_value", status);
}

/// The value of the property at `path` (its parts joined by NUL bytes); `None` where the proxy
/// has none or cannot give it (NotFound, SerializationFailure, InternalFailure).
pub fn property(path: &[u8]) -> Option<Vec<u8>> {
    let (mut data, mut size) = (std::ptr::null_mut(), 0);
    // SAFETY: the path is `path.len()` live bytes; the call writes only the two out-pointers.
    match unsafe { proxy_get_property(path.as_ptr(), path.len(), &raw mut data, &raw mut size) } {
        // SAFETY: as in `buffer`.
        OK => unsafe { take(data, size) },
        NOT_FOUND | SERIALIZATION_FAILURE | INTERNAL_FAILURE => None,
        status => unexpected("proxy_get_property", status),
    }
}

/// Sets the property at `path` (parts joined by NUL bytes): for a name of its own, Envoy's filter
/// state `wasm.<name>`.
pub fn set_property(path: &[u8], value: &[u8]) {
    // SAFETY: path and value are live for their lengths.
    check("proxy_set_property", unsafe { proxy_set_property(path.as_ptr(), path.len(), value.as_ptr(), value.len()) });
}

/// Answers the request locally: `status`, the serialized header map `headers`, `body`.
pub fn send_local_response(status: u32, headers: &[u8], body: &[u8]) {
    // SAFETY: headers and body are live for their lengths; no details (null, 0).
    let status = unsafe {
        proxy_send_local_response(status, std::ptr::null(), 0, body.as_ptr(), body.len(), headers.as_ptr(), headers.len(), -1)
    };
    check("proxy_send_local_response", status);
}

/// Calls `cluster` with the serialized header map `headers` and `body`, no trailers; the token
/// `proxy_on_http_call_response` will carry, or the status the proxy refused the call with
/// (BadArgument: no such cluster; InternalFailure).
pub fn http_call(cluster: &str, headers: &[u8], body: &[u8], timeout: Duration) -> Result<u32, Status> {
    let no_trailers = 0u32.to_le_bytes();
    let timeout = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    let mut token = 0;
    let body_data = if body.is_empty() { std::ptr::null() } else { body.as_ptr() };
    // SAFETY: every buffer is live for its length; the call writes only the token.
    let status = unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body_data,
            body.len(),
            no_trailers.as_ptr(),
            no_trailers.len(),
            timeout,
            &raw mut token,
        )
    };
    match status {
        OK => Ok(token),
        BAD_ARGUMENT | INTERNAL_FAILURE => Err(status),
        status => unexpected("proxy_http_call", status),
    }
}

/// Defines metric `name` of `kind`; its id.
pub fn define_metric(kind: MetricType, name: &str) -> u32 {
    let mut id = 0;
    // SAFETY: the name is live for its length; the call writes only the id.
    check("proxy_define_metric", unsafe { proxy_define_metric(kind as u32, name.as_ptr(), name.len(), &raw mut id) });
    id
}

/// Adds `delta` to a counter or gauge. An id the proxy does not know (NotFound, BadArgument) has
/// nothing to count.
pub fn increment_metric(id: u32, delta: i64) {
    // SAFETY: no pointers.
    match unsafe { proxy_increment_metric(id, delta) } {
        OK | NOT_FOUND | BAD_ARGUMENT => {}
        status => unexpected("proxy_increment_metric", status),
    }
}

/// Records `value` in a histogram, or sets a gauge to it. As [`increment_metric`] for an
/// unknown id.
pub fn record_metric(id: u32, value: u64) {
    // SAFETY: no pointers.
    match unsafe { proxy_record_metric(id, value) } {
        OK | NOT_FOUND | BAD_ARGUMENT => {}
        status => unexpected("proxy_record_metric", status),
    }
}

/// The ABI version this module speaks, declared by the export's name.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// Memory the proxy asks for to hand the module a value (a header map, a property, a buffer):
/// `size` bytes from the global allocator, which the module takes over (see `take`).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    let memory: Box<[std::mem::MaybeUninit<u8>]> = Box::new_uninit_slice(size);
    Box::into_raw(memory).cast::<u8>()
}
