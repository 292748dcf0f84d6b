//! The host-side state one plugin keeps: what Envoy would hold for one Wasm VM and its contexts.
//!
//! Everything lives in [`HostState`], the `Store` data of one [`super::Plugin`], so two plugins
//! never share anything and tests can run in parallel.

use super::wasi::WasiState;
use super::{HttpCall, LocalReply, LogEntry, LogLevel, PluginOptions};
/// The header map both this host and the core's map-backed host keep, so that the native and the
/// wasm runs of the corpus apply header edits with the very same semantics.
pub(crate) use svidgate_core::host::memory::HeaderMap;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The context id of the plugin's root context; stream contexts get ids from 2 on.
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// A proxy-wasm status code, as `proxy_*` host functions return it (proxy-wasm-cpp-host `WasmResult`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    InvalidMemoryAccess = 6,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// The state behind one plugin: its configuration, clock, logs, metrics, properties and contexts.
pub(crate) struct HostState {
    pub(crate) vm_config: Vec<u8>,
    pub(crate) plugin_config: Vec<u8>,
    /// Envoy only exposes the plugin configuration while `on_vm_start`/`on_configure` run.
    pub(crate) plugin_config_visible: bool,
    pub(crate) clock: Clock,
    pub(crate) log_level: LogLevel,
    pub(crate) logs: Vec<LogEntry>,
    /// Bytes written to stdout (index 0) and stderr (index 1) not yet ended by a newline.
    stdio: [Vec<u8>; 2],
    /// Properties set by the test, keyed by the `\0`-joined path.
    pub(crate) properties: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) metrics: Metrics,
    pub(crate) shared_data: SharedData,
    pub(crate) tick_period: Option<Duration>,
    pub(crate) streams: HashMap<u32, StreamState>,
    /// The context host calls act on: the one whose callback runs, unless the module moved it
    /// with `proxy_set_effective_context` (0 outside callbacks).
    pub(crate) effective_context: u32,
    pub(crate) random: XorShift,
    pub(crate) callouts: Callouts,
    /// Calls from the module into the host (proxy-wasm and WASI imports) since it was instantiated.
    pub(crate) host_calls: u64,
}

impl HostState {
    /// Fresh state for a plugin started with `options`.
    pub(crate) fn new(options: &PluginOptions) -> Self {
        Self {
            vm_config: options.vm_config.clone(),
            plugin_config: options.plugin_config.clone(),
            plugin_config_visible: false,
            clock: Clock::new(options.now.unwrap_or_else(SystemTime::now)),
            log_level: options.log_level.unwrap_or(LogLevel::Trace),
            logs: Vec::new(),
            stdio: [Vec::new(), Vec::new()],
            properties: BTreeMap::new(),
            metrics: Metrics::default(),
            shared_data: SharedData::default(),
            tick_period: None,
            streams: HashMap::new(),
            effective_context: 0,
            random: XorShift::new(),
            callouts: Callouts::new(options.clusters.clone()),
            host_calls: 0,
        }
    }

    /// Records a log line if Envoy's log level lets it through.
    pub(crate) fn log(&mut self, level: LogLevel, message: String) {
        if level >= self.log_level {
            self.logs.push(LogEntry { level, message });
        }
    }

    /// Appends guest output on stdout (`fd` 1) or stderr (`fd` 2), logging each complete line.
    fn log_stdio(&mut self, fd: u32, bytes: &[u8]) {
        let (index, level) = if fd == 1 { (0, LogLevel::Info) } else { (1, LogLevel::Error) };
        let Some(pending) = self.stdio.get_mut(index) else {
            return;
        };
        pending.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = pending.iter().position(|&byte| byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            lines.push(line);
        }
        for line in lines {
            self.log(level, text(line.strip_suffix(b"\n").unwrap_or(&line)));
        }
    }

    /// Logs output left without a trailing newline: called after every callback, so that the
    /// last words of a guest that traps are not lost.
    pub(crate) fn flush_stdio(&mut self) {
        for (index, level) in [(0, LogLevel::Info), (1, LogLevel::Error)] {
            let pending = self.stdio.get_mut(index).map(std::mem::take).unwrap_or_default();
            if !pending.is_empty() {
                self.log(level, text(&pending));
            }
        }
    }

    /// The stream context host calls currently act on, if the effective context is a stream.
    pub(crate) fn effective_stream(&self) -> Option<&StreamState> {
        self.streams.get(&self.effective_context)
    }

    /// Mutable access to the effective stream context.
    pub(crate) fn effective_stream_mut(&mut self) -> Option<&mut StreamState> {
        self.streams.get_mut(&self.effective_context)
    }

    /// Whether `id` names a live context (`proxy_set_effective_context` accepts only those).
    pub(crate) fn has_context(&self, id: u32) -> bool {
        id == ROOT_CONTEXT_ID || self.streams.get(&id).is_some_and(|stream| stream.created)
    }

    /// A property as the effective context sees it: its own filter state first, then the
    /// properties the test set.
    pub(crate) fn property(&self, path: &[u8]) -> Option<&[u8]> {
        let own = self.effective_stream().and_then(|stream| stream.filter_state.get(path));
        own.or_else(|| self.properties.get(path)).map(Vec::as_slice)
    }

    /// The header map of `map_type` that reads see, as Envoy's `getConstMap` does.
    ///
    /// `Err` for an unknown map type; `Ok(None)` when the map is not available right now.
    pub(crate) fn readable_map(&self, map_type: u32) -> Result<Option<&HeaderMap>, Status> {
        let kind = MapType::from_raw(map_type)?;
        if kind == MapType::HttpCallResponseHeaders {
            // Envoy reads the root context's callout response, whichever context is effective.
            return Ok(self.callouts.response.as_ref().map(|response| &response.headers));
        }
        let Some(stream) = self.effective_stream() else {
            return Ok(None);
        };
        Ok(match kind {
            // In the access log phase Envoy reads the final maps of the stream (no request trailers).
            MapType::RequestHeaders if stream.log_phase => stream.request.received(),
            MapType::ResponseHeaders if stream.log_phase => stream.response.received(),
            MapType::RequestTrailers if stream.log_phase => None,
            MapType::RequestHeaders => stream.request.available(),
            MapType::RequestTrailers => stream.request_trailers.available(),
            MapType::ResponseHeaders => stream.response.available(),
            // Response trailers, gRPC metadata and callout trailers never exist in this host.
            _ => None,
        })
    }

    /// The header map of `map_type` that writes change, as Envoy's `getMap` does.
    ///
    /// `Err(BadArgument)` when the map type is unknown or the map is not available right now.
    pub(crate) fn writable_map(&mut self, map_type: u32) -> Result<&mut HeaderMap, Status> {
        let kind = MapType::from_raw(map_type)?;
        let stream = self.effective_stream_mut().ok_or(Status::BadArgument)?;
        let phase = match kind {
            MapType::RequestHeaders => &mut stream.request,
            MapType::RequestTrailers => &mut stream.request_trailers,
            MapType::ResponseHeaders => &mut stream.response,
            _ => return Err(Status::BadArgument),
        };
        if phase.available { Ok(&mut phase.headers) } else { Err(Status::BadArgument) }
    }

    /// Whether reads of a missing map answer NotFound (access log phase) rather than BadArgument.
    pub(crate) fn in_log_phase(&self) -> bool {
        self.effective_stream().is_some_and(|stream| stream.log_phase)
    }
}

/// What Envoy's modules get through WASI (proxy-wasm-cpp-host): no arguments or environment,
/// stdout and stderr as log lines (info and error), the plugin's clock, deterministic randomness.
impl WasiState for HostState {
    fn args(&self) -> &[Vec<u8>] {
        &[]
    }

    fn environ(&self) -> &[Vec<u8>] {
        &[]
    }

    fn realtime_nanos(&self) -> u64 {
        self.clock.realtime_nanos()
    }

    fn monotonic_nanos(&self) -> u64 {
        self.clock.monotonic_nanos()
    }

    fn fill_random(&mut self, buffer: &mut [u8]) -> std::io::Result<()> {
        self.random.fill(buffer);
        Ok(())
    }

    fn write_stdio(&mut self, fd: u32, bytes: &[u8]) -> std::io::Result<()> {
        self.log_stdio(fd, bytes);
        Ok(())
    }

    fn is_terminal(&self, _fd: u32) -> bool {
        true
    }
}

/// The header map types of ABI 0.2.1 (`proxy_wasm::types::MapType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    HttpCallResponseHeaders,
    /// Response trailers, gRPC metadata and HTTP callout response trailers.
    Other,
}

impl MapType {
    fn from_raw(raw: u32) -> Result<Self, Status> {
        match raw {
            0 => Ok(Self::RequestHeaders),
            1 => Ok(Self::RequestTrailers),
            2 => Ok(Self::ResponseHeaders),
            6 => Ok(Self::HttpCallResponseHeaders),
            3..=5 | 7 => Ok(Self::Other),
            _ => Err(Status::BadArgument),
        }
    }
}

/// The plugin's HTTP callouts: what Envoy's root context keeps for `proxy_http_call`.
///
/// `proxy_http_call` always dispatches on the root context (proxy-wasm-cpp-host), so the
/// response callback is `proxy_on_http_call_response(root, ...)` whichever context sent the call.
pub(crate) struct Callouts {
    /// The clusters that exist; any non-empty name does if `None`.
    clusters: Option<Vec<String>>,
    /// Calls dispatched and neither taken by the test nor answered yet.
    pub(crate) dispatched: Vec<HttpCall>,
    /// Tokens of the calls not answered yet, whether the test took them or not.
    outstanding: BTreeSet<u32>,
    next_token: u32,
    /// The response whose `proxy_on_http_call_response` runs now. `None` outside that callback
    /// and while a failed call is reported: Envoy then has no response message at all.
    pub(crate) response: Option<CalloutResponse>,
}

impl Callouts {
    fn new(clusters: Option<Vec<String>>) -> Self {
        Self { clusters, dispatched: Vec::new(), outstanding: BTreeSet::new(), next_token: 1, response: None }
    }

    /// Accepts or refuses a call with the checks of Envoy's `Context::httpCall`, in its order;
    /// returns the new call's token.
    pub(crate) fn dispatch(
        &mut self,
        cluster: String,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
        timeout_ms: u32,
    ) -> Result<u32, Status> {
        // Envoy takes the timeout as an `int`: a larger value turns negative and is refused.
        if i32::try_from(timeout_ms).is_err() {
            return Err(Status::BadArgument);
        }
        // Envoy answers BadArgument when the cluster manager has no such cluster.
        let exists = match &self.clusters {
            Some(clusters) => clusters.contains(&cluster),
            None => !cluster.is_empty(),
        };
        if !exists {
            return Err(Status::BadArgument);
        }
        // Envoy builds a request header map (names lower-cased) and needs these three in it.
        let map = HeaderMap::from_pairs(headers.iter().map(|(name, value)| (name.as_str(), value.as_str())));
        if REQUIRED_CALLOUT_HEADERS.iter().any(|name| map.first(name).is_none()) {
            return Err(Status::BadArgument);
        }
        let token = self.next_token;
        // Envoy never hands out token 0, even when its counter wraps.
        self.next_token = self.next_token.checked_add(1).unwrap_or(1);
        self.outstanding.insert(token);
        self.dispatched.push(HttpCall {
            token,
            cluster,
            headers,
            body,
            timeout: Duration::from_millis(timeout_ms.into()),
        });
        Ok(token)
    }

    /// Ends the call `token` before its response is delivered; false if it was not outstanding.
    pub(crate) fn finish(&mut self, token: u32) -> bool {
        self.dispatched.retain(|call| call.token != token);
        self.outstanding.remove(&token)
    }
}

/// The pseudo-headers Envoy requires of a callout (`Path()`, `Method()` and `Host()`).
const REQUIRED_CALLOUT_HEADERS: [&str; 3] = [":method", ":path", ":authority"];

/// A callout response while `proxy_on_http_call_response` runs.
pub(crate) struct CalloutResponse {
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

/// What the host knows about one HTTP stream context.
#[derive(Default)]
pub(crate) struct StreamState {
    /// Whether `proxy_on_context_create` ran: Envoy creates the context lazily, on request headers.
    pub(crate) created: bool,
    pub(crate) request: HeaderPhase,
    pub(crate) request_trailers: HeaderPhase,
    pub(crate) response: HeaderPhase,
    /// The request body Envoy holds for this filter: what `proxy_get_buffer_bytes(HttpRequestBody)`
    /// reads. The chunks whose body callbacks paused (StopIterationAndBuffer: Envoy's decoding
    /// buffer), then, while a body callback runs, its chunk; a callback that continues releases it.
    pub(crate) request_body: Vec<u8>,
    /// Whether the downstream ended the request (headers or body with end of stream, or trailers).
    pub(crate) request_ended: bool,
    /// What went past this filter towards the upstream.
    pub(crate) upstream: Upstream,
    /// Set while `proxy_on_log` runs: header reads then see the final maps.
    pub(crate) log_phase: bool,
    pub(crate) local_reply: Option<LocalReply>,
    /// Properties the module set with `proxy_set_property` (Envoy's per-stream filter state).
    pub(crate) filter_state: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) fuel_consumed_last: u64,
}

impl StreamState {
    /// The request side of the stream was cleared by `proxy_continue_stream`, as Envoy does.
    pub(crate) fn release_request(&mut self) {
        self.request.available = false;
        self.request_trailers.available = false;
    }

    /// The filter let the request go on (a callback returned Continue, or `proxy_continue_stream`):
    /// Envoy's `commonContinue` passes on the headers if they were stopped, then the body it
    /// buffered, then trailers that arrived. Once the stream has a local reply nothing goes on.
    pub(crate) fn forward_request(&mut self) {
        if self.local_reply.is_some() {
            return;
        }
        let upstream = &mut self.upstream;
        upstream.headers.get_or_insert_with(|| self.request.headers.entries().to_vec());
        upstream.body.append(&mut self.request_body);
        if self.request_trailers.received {
            upstream.trailers.get_or_insert_with(|| self.request_trailers.headers.entries().to_vec());
        }
    }
}

/// What a stream sent past this filter towards the upstream: snapshots taken when the filter let
/// each part go on, so that edits the module makes later (Envoy keeps the request header map of a
/// request whose headers callback paused) do not show here.
#[derive(Default)]
pub(crate) struct Upstream {
    pub(crate) headers: Option<Vec<(String, String)>>,
    pub(crate) body: Vec<u8>,
    pub(crate) trailers: Option<Vec<(String, String)>>,
}

/// One header (or trailer) map and whether the module may touch it now.
///
/// Envoy hands the module a pointer to the map only while its callback runs, and keeps it
/// afterwards only if the callback paused the stream, until `proxy_continue_stream`: the same
/// rule applies here. Envoy clears the request header pointer only when the headers callback
/// continues or at `proxy_continue_stream`, so the request header map of a request whose headers
/// callback paused stays available during its body and trailers callbacks, even after one of them
/// continued (edits made then no longer reach the upstream).
#[derive(Default)]
pub(crate) struct HeaderPhase {
    pub(crate) headers: HeaderMap,
    pub(crate) received: bool,
    pub(crate) available: bool,
}

impl HeaderPhase {
    /// Installs the map the downstream (or upstream) sent and makes it available to the module.
    pub(crate) fn receive(&mut self, headers: &[(&str, &str)]) {
        self.headers = HeaderMap::from_pairs(headers.iter().copied());
        self.received = true;
        self.available = true;
    }

    fn available(&self) -> Option<&HeaderMap> {
        self.available.then_some(&self.headers)
    }

    fn received(&self) -> Option<&HeaderMap> {
        self.received.then_some(&self.headers)
    }
}

/// The kinds of metric of `proxy_define_metric`; the value is also the low two bits of an id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum MetricKind {
    Counter = 0,
    Gauge = 1,
    Histogram = 2,
}

impl MetricKind {
    /// The kind for a raw `proxy_define_metric` type, if valid.
    pub(crate) fn from_raw(raw: u32) -> Option<Self> {
        match raw {
            0 => Some(Self::Counter),
            1 => Some(Self::Gauge),
            2 => Some(Self::Histogram),
            _ => None,
        }
    }
}

/// One metric's name and value.
#[derive(Clone, Debug)]
pub(crate) struct Metric {
    pub(crate) name: String,
    pub(crate) value: MetricValue,
}

/// A metric value; the variant is the metric's kind.
#[derive(Clone, Debug)]
pub(crate) enum MetricValue {
    Counter(u64),
    Gauge(i64),
    Histogram(Vec<u64>),
}

impl MetricValue {
    fn kind(&self) -> MetricKind {
        match self {
            Self::Counter(_) => MetricKind::Counter,
            Self::Gauge(_) => MetricKind::Gauge,
            Self::Histogram(_) => MetricKind::Histogram,
        }
    }
}

/// The plugin's metrics, with Envoy's id scheme: the kind sits in the low two bits of an id.
#[derive(Default)]
pub(crate) struct Metrics {
    metrics: Vec<Metric>,
}

impl Metrics {
    /// Defines a metric, or returns the id of the one already defined with that kind and name.
    pub(crate) fn define(&mut self, kind: MetricKind, name: &str) -> u32 {
        let existing = self.metrics.iter().position(|m| m.name == name && m.value.kind() == kind);
        let index = existing.unwrap_or_else(|| {
            let value = match kind {
                MetricKind::Counter => MetricValue::Counter(0),
                MetricKind::Gauge => MetricValue::Gauge(0),
                MetricKind::Histogram => MetricValue::Histogram(Vec::new()),
            };
            self.metrics.push(Metric { name: name.to_string(), value });
            self.metrics.len() - 1
        });
        // Tests never define 2^30 metrics; saturate rather than wrap if one ever did.
        u32::try_from(index).unwrap_or(u32::MAX >> 2) << 2 | kind as u32
    }

    /// The metric an id names, if any.
    pub(crate) fn by_id_mut(&mut self, id: u32) -> Option<&mut MetricValue> {
        let index = usize::try_from(id >> 2).ok()?;
        let metric = self.metrics.get_mut(index)?;
        (metric.value.kind() as u32 == id & 3).then_some(&mut metric.value)
    }

    /// The metric of `kind` called `name`, if defined.
    pub(crate) fn by_name(&self, kind: MetricKind, name: &str) -> Option<&MetricValue> {
        self.metrics
            .iter()
            .find(|metric| metric.name == name && metric.value.kind() == kind)
            .map(|metric| &metric.value)
    }

    /// Every metric, in definition order.
    pub(crate) fn all(&self) -> &[Metric] {
        &self.metrics
    }
}

/// Envoy's shared data: a key-value store with compare-and-swap tokens.
pub(crate) struct SharedData {
    entries: BTreeMap<Vec<u8>, (Vec<u8>, u32)>,
    next_cas: u32,
}

impl Default for SharedData {
    fn default() -> Self {
        Self { entries: BTreeMap::new(), next_cas: 1 }
    }
}

impl SharedData {
    /// The value and cas token of `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Option<(&[u8], u32)> {
        self.entries.get(key).map(|(value, cas)| (value.as_slice(), *cas))
    }

    /// Stores `value` unless `cas` is nonzero and differs from the key's current token.
    pub(crate) fn set(&mut self, key: &[u8], value: &[u8], cas: u32) -> Result<(), Status> {
        if let Some((_, current)) = self.entries.get(key)
            && cas != 0
            && cas != *current
        {
            return Err(Status::CasMismatch);
        }
        let token = self.next_cas;
        // Envoy skips 0 when the counter wraps: 0 means "no cas".
        self.next_cas = self.next_cas.checked_add(1).unwrap_or(1);
        self.entries.insert(key.to_vec(), (value.to_vec(), token));
        Ok(())
    }
}

/// The plugin's clock: a wall clock the test sets and a monotonic clock.
///
/// The monotonic clock runs in real time, as in Envoy, so budgets measured inside the module
/// (regorus's evaluation time limit, decision latency) see real elapsed time; it also moves forward
/// with the wall clock and never goes back, so `std::time::Instant` includes the time the test advanced.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    realtime: SystemTime,
    monotonic: Duration,
    started: std::time::Instant,
}

impl Clock {
    fn new(now: SystemTime) -> Self {
        // Any fixed nonzero origin will do: only differences of monotonic readings mean anything.
        Self { realtime: now, monotonic: Duration::from_secs(1), started: std::time::Instant::now() }
    }

    /// The wall clock.
    pub(crate) fn now(&self) -> SystemTime {
        self.realtime
    }

    /// Sets the wall clock; the monotonic clock follows only forward moves.
    pub(crate) fn set(&mut self, now: SystemTime) {
        if let Ok(forward) = now.duration_since(self.realtime) {
            self.monotonic = self.monotonic.saturating_add(forward);
        }
        self.realtime = now;
    }

    /// Moves both clocks forward.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.realtime = self.realtime.checked_add(by).unwrap_or(self.realtime);
        self.monotonic = self.monotonic.saturating_add(by);
    }

    /// Nanoseconds since the Unix epoch (0 before it), as `proxy_get_current_time_nanoseconds` reports.
    pub(crate) fn realtime_nanos(&self) -> u64 {
        let since_epoch = self.realtime.duration_since(UNIX_EPOCH).unwrap_or_default();
        u64::try_from(since_epoch.as_nanos()).unwrap_or(u64::MAX)
    }

    /// Nanoseconds on the monotonic clock.
    pub(crate) fn monotonic_nanos(&self) -> u64 {
        let now = self.monotonic.saturating_add(self.started.elapsed());
        u64::try_from(now.as_nanos()).unwrap_or(u64::MAX)
    }
}

/// A deterministic xorshift64* generator behind WASI `random_get`: runs are reproducible.
pub(crate) struct XorShift(u64);

impl XorShift {
    fn new() -> Self {
        Self(0x9E37_79B9_7F4A_7C15)
    }

    /// Fills `buffer` with pseudo-random bytes.
    pub(crate) fn fill(&mut self, buffer: &mut [u8]) {
        for chunk in buffer.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let bytes = self.0.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
            for (out, byte) in chunk.iter_mut().zip(bytes) {
                *out = byte;
            }
        }
    }
}

/// Guest bytes as text, replacing invalid UTF-8 (header maps and logs are strings here).
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_ids_carry_their_kind_and_redefinition_reuses_the_id() {
        let mut metrics = Metrics::default();
        let counter = metrics.define(MetricKind::Counter, "a");
        let gauge = metrics.define(MetricKind::Gauge, "a");
        assert_eq!(counter & 3, 0);
        assert_eq!(gauge & 3, 1);
        assert_eq!(metrics.define(MetricKind::Counter, "a"), counter);
        assert!(metrics.by_id_mut(counter | 2).is_none());
    }

    #[test]
    fn shared_data_checks_cas() {
        let mut shared = SharedData::default();
        assert_eq!(shared.set(b"k", b"1", 0), Ok(()));
        let (_, cas) = shared.get(b"k").unwrap();
        assert_eq!(shared.set(b"k", b"2", cas + 1), Err(Status::CasMismatch));
        assert_eq!(shared.set(b"k", b"3", cas), Ok(()));
        assert_eq!(shared.get(b"k").map(|(value, _)| value), Some(&b"3"[..]));
    }

    #[test]
    fn callouts_follow_envoys_checks_and_number_from_one() {
        let headers = |names: &[&str]| -> Vec<(String, String)> {
            names.iter().map(|name| (name.to_string(), "x".to_string())).collect()
        };
        let full = headers(&[":method", ":path", ":Authority"]);
        let mut any = Callouts::new(None);
        assert_eq!(any.dispatch("a".into(), full.clone(), vec![], 10), Ok(1));
        assert_eq!(any.dispatch("b".into(), full.clone(), vec![], 0), Ok(2));
        assert_eq!(any.dispatch(String::new(), full.clone(), vec![], 10), Err(Status::BadArgument));
        let no_path = headers(&[":method", ":authority", "host"]);
        assert_eq!(any.dispatch("a".into(), no_path, vec![], 10), Err(Status::BadArgument));
        let negative = u32::try_from(i32::MAX).unwrap() + 1;
        assert_eq!(any.dispatch("a".into(), full.clone(), vec![], negative), Err(Status::BadArgument));
        assert!(any.finish(1));
        assert!(!any.finish(1));
        assert_eq!(any.dispatched.iter().map(|call| call.token).collect::<Vec<_>>(), [2]);

        let mut listed = Callouts::new(Some(vec!["a".into()]));
        assert_eq!(listed.dispatch("b".into(), full.clone(), vec![], 10), Err(Status::BadArgument));
        assert_eq!(listed.dispatch("a".into(), full, vec![], 10), Ok(1));
    }

    #[test]
    fn monotonic_clock_never_goes_back() {
        let mut clock = Clock::new(UNIX_EPOCH + Duration::from_secs(100));
        let start = clock.monotonic_nanos();
        clock.set(UNIX_EPOCH + Duration::from_secs(50));
        let after_set_back = clock.monotonic_nanos();
        assert!(after_set_back >= start);
        // Real time passes too, but far less than the two seconds the test advances.
        clock.advance(Duration::from_secs(2));
        let advanced = clock.monotonic_nanos() - after_set_back;
        assert!((2_000_000_000..3_000_000_000).contains(&advanced), "{advanced}");
        assert_eq!(clock.realtime_nanos(), 52_000_000_000);
    }
}
