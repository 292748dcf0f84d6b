//! A state-based proxy-wasm host (ABI 0.2.1) on wasmtime, for testing filters without Envoy.
//!
//! The host does not script expected calls: it keeps what Envoy would keep for one Wasm VM
//! (header maps, properties, metrics, logs, local replies, a clock) and lets the module change
//! it through the ABI; tests drive callbacks and inspect the state afterwards.
//!
//! ```no_run
//! # fn main() -> anyhow::Result<()> {
//! use svidgate_harness::host::{Action, Module, PluginOptions};
//! let module = Module::load(std::path::Path::new("filter.wasm"))?;
//! let mut plugin = module.start(PluginOptions { plugin_config: b"{}".to_vec(), ..Default::default() })?;
//! assert!(plugin.configured());
//! let mut stream = plugin.stream();
//! let action = stream.request_headers(&[(":method", "GET"), (":path", "/")], true)?;
//! assert_eq!(action, Action::Continue);
//! stream.finish()?;
//! # Ok(())
//! # }
//! ```
//!
//! Where a test can observe it, the host follows Envoy 1.40 (`source/extensions/common/wasm` and
//! proxy-wasm-cpp-host):
//! - header names are lower-cased, order and repeats are kept, pseudo-headers stay first;
//!   `proxy_get_header_map_value` returns the *first* value of a repeated header;
//! - a header map is only reachable while its headers callback runs, or after it if the callback
//!   paused (until `proxy_continue_stream`); the SDK panics when it is not (status BadArgument).
//!   Envoy clears its request header pointer only then, so the request header map of a request
//!   whose headers callback paused stays reachable in the body and trailers callbacks, even after
//!   one of them continued; request trailers follow the same rule as headers;
//! - request bodies as Envoy's Wasm filter buffers them: [`Stream::request_body`] delivers data
//!   frames, also while the headers callback has paused the request. A body callback that returns
//!   Pause is StopIterationAndBuffer: Envoy keeps the chunk, appends the next one, and
//!   `proxy_on_request_body` gets the length of all it holds, which `proxy_get_buffer_bytes`
//!   (HttpRequestBody) reads, during the body and trailers callbacks and after them; one that
//!   returns Continue passes on the held headers and body, and the next chunk is alone. What went
//!   past the filter is recorded ([`Stream::request_headers_forwarded`],
//!   [`Stream::forwarded_request_headers`], [`Stream::forwarded_request_body`]); nothing does once
//!   the stream has a local reply, and Envoy then delivers no more request data to the filter;
//!   [`Stream::request_trailers`] ends the request;
//! - stream contexts are created lazily, on request headers; `finish` runs `proxy_on_log`, then
//!   `proxy_on_done` and `proxy_on_delete`, Envoy's order;
//! - a trap crashes the VM: the stream gets Envoy's fail-closed local reply (503,
//!   `wasm_fail_stream`) and every later call fails with "vm crashed";
//! - HTTP callouts: `proxy_http_call` is refused with BadArgument, as Envoy refuses it, for a
//!   timeout above `i32::MAX` ms, an unknown cluster (see [`PluginOptions::clusters`]; the empty
//!   name never exists) or headers without `:method`, `:path` or `:authority`. An accepted call
//!   waits in [`Plugin::http_calls`] until the test answers it with [`Plugin::respond_http_call`]
//!   or [`Plugin::fail_http_call`]; either runs `proxy_on_http_call_response` on the root context,
//!   where Envoy runs it whichever context dispatched the call. The response headers and body
//!   are readable only during that callback.
//!
//! Not modelled: response bodies and trailers, `proxy_set_buffer_bytes` (body edits), the request
//! trailers Envoy adds when a module asks for them in the last body callback, body statuses other
//! than Continue and StopIterationAndBuffer (any nonzero return buffers), Envoy's own buffer limit
//! (its 413), callout trailers (neither sent nor received), gRPC callouts, `proxy_get_status`
//! (Envoy reports "reset" there while a failed callout is reported), shared queues, and the
//! re-entry of a local reply into the filter's own `proxy_on_response_headers` (call
//! `response_headers` yourself to test that path). HTTP callout tokens count 1, 2, 3, ... per
//! plugin, where Envoy counts 4, 8, 12, ... per VM (the low two bits tag the callout kind); tests
//! should use the token of the [`HttpCall`] rather than assume either.

mod abi;
mod memory;
mod state;
pub(crate) mod wasi;

use anyhow::{Context as _, Result, anyhow};
use state::{CalloutResponse, HeaderMap, HostState, MetricKind, MetricValue, ROOT_CONTEXT_ID, StreamState};
use std::path::Path;
use std::time::{Duration, SystemTime};
use wasmtime::{CallHook, Engine, Instance, InstancePre, Linker, Store, TypedFunc, WasmParams, WasmResults};

/// A compiled module, cheap to clone, shared by many tests (compile once: wasmtime compile of a 1 MB module takes a while).
#[derive(Clone)]
pub struct Module {
    engine: Engine,
    pre: InstancePre<HostState>,
}

impl Module {
    /// Reads and compiles the `.wasm` module at `path`.
    pub fn load(path: &Path) -> Result<Module> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        Self::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
    }

    /// Compiles a `.wasm` module and links it against this host.
    pub fn from_bytes(bytes: &[u8]) -> Result<Module> {
        let mut config = wasmtime::Config::new();
        config.consume_fuel(true);
        // For profiling (examples/profile_request.rs): perf names the module's functions.
        if std::env::var_os("SVIDGATE_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(wasm_error)?;
        let module = wasmtime::Module::new(&engine, bytes).map_err(wasm_error).context("compiling the module")?;
        // Envoy refuses modules that do not declare the ABI version they were built for.
        if !module.exports().any(|export| export.name() == ABI_VERSION_EXPORT) {
            return Err(anyhow!("the module does not export `{ABI_VERSION_EXPORT}`"));
        }
        let mut linker = Linker::new(&engine);
        abi::add_to_linker(&mut linker).map_err(wasm_error)?;
        wasi::add_to_linker(&mut linker).map_err(wasm_error)?;
        // Imports this host lacks trap when called, naming the import, instead of failing to link.
        linker.define_unknown_imports_as_traps(&module).map_err(wasm_error)?;
        let pre = linker.instantiate_pre(&module).map_err(wasm_error).context("linking the module")?;
        Ok(Module { engine, pre })
    }

    /// Instantiates, runs `_initialize` (and `_start` if exported), creates root context id 1 (proxy_on_context_create(1, 0)),
    /// calls proxy_on_vm_start(1, len(vm_config)) then proxy_on_configure(1, len(plugin_config)).
    /// Returns Ok(plugin) even when on_vm_start/on_configure return false (tests check `plugin.configured()`); Err only on trap/instantiation failure.
    pub fn start(&self, options: PluginOptions) -> Result<Plugin> {
        let mut store = Store::new(&self.engine, HostState::new(&options));
        store.set_fuel(INITIAL_FUEL).map_err(wasm_error)?;
        store.call_hook(|mut context, hook| {
            if matches!(hook, CallHook::CallingHost) {
                context.data_mut().host_calls += 1;
            }
            Ok(())
        });
        let instance = self.pre.instantiate(&mut store).map_err(wasm_error).context("instantiating the module")?;
        let guest = Guest::resolve(&mut store, &instance)?;
        let mut plugin =
            Plugin { store, guest, configured: false, crashed: None, next_context_id: ROOT_CONTEXT_ID + 1 };
        plugin.boot(&options)?;
        Ok(plugin)
    }
}

/// How to start a plugin: its configuration buffers, initial clock and Envoy log level.
#[derive(Clone, Debug, Default)]
pub struct PluginOptions {
    /// The VM configuration (`vm_config.configuration`), returned for buffer type VmConfiguration.
    pub vm_config: Vec<u8>,
    /// The plugin configuration (`configuration`), returned for buffer type PluginConfiguration.
    pub plugin_config: Vec<u8>,
    /// The plugin clock's start time; `SystemTime::now()` at start if `None`.
    pub now: Option<SystemTime>,
    /// Envoy's log level: lower log lines are dropped; `Trace` if `None`.
    pub log_level: Option<LogLevel>,
    /// The upstream clusters `proxy_http_call` may name; any non-empty name if `None`.
    pub clusters: Option<Vec<String>>,
}

/// A running plugin: one VM instance with its root context, and the host state around it.
pub struct Plugin {
    store: Store<HostState>,
    guest: Guest,
    configured: bool,
    /// Why the VM crashed, once it has: every later call fails.
    crashed: Option<String>,
    next_context_id: u32,
}

impl Plugin {
    /// Whether `proxy_on_vm_start` and `proxy_on_configure` both returned true.
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Sets a property (raw bytes, as Envoy serializes them) for `proxy_get_property`.
    pub fn set_property(&mut self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.store.data_mut().properties.insert(property_key(path), value.into());
    }

    /// Removes a property: `proxy_get_property` then reports NotFound.
    pub fn remove_property(&mut self, path: &[&str]) {
        self.store.data_mut().properties.remove(&property_key(path));
    }

    /// Sets the plugin clock (proxy time, and WASI realtime; monotonic time only moves forward).
    pub fn set_time(&mut self, now: SystemTime) {
        self.store.data_mut().clock.set(now);
    }

    /// Moves the plugin clock forward (proxy, WASI realtime and monotonic time).
    pub fn advance_time(&mut self, by: Duration) {
        self.store.data_mut().clock.advance(by);
    }

    /// The plugin clock's current time.
    pub fn now(&self) -> SystemTime {
        self.store.data().clock.now()
    }

    /// Calls `proxy_on_tick` on the root context.
    pub fn tick(&mut self) -> Result<()> {
        let on_tick = self.guest.on_tick.clone();
        self.call(ROOT_CONTEXT_ID, "proxy_on_tick", on_tick, ROOT_CONTEXT_ID)?;
        Ok(())
    }

    /// The tick period the module set with `proxy_set_tick_period_milliseconds`, if any.
    pub fn tick_period(&self) -> Option<Duration> {
        self.store.data().tick_period
    }

    /// The HTTP callouts the module dispatched that the test has neither taken nor answered.
    pub fn http_calls(&self) -> &[HttpCall] {
        &self.store.data().callouts.dispatched
    }

    /// Removes and returns the dispatched callouts; they stay outstanding until answered.
    pub fn take_http_calls(&mut self) -> Vec<HttpCall> {
        std::mem::take(&mut self.store.data_mut().callouts.dispatched)
    }

    /// Answers callout `token` with a response (`:status` included in `headers` by the test):
    /// calls `proxy_on_http_call_response(root, token, headers, body size, 0)`.
    ///
    /// Envoy also reports timeouts and connection failures this way, as responses of its router:
    /// 504 `upstream request timeout`, 503 `no healthy upstream`, or 503 `upstream connect error
    /// or disconnect/reset before headers. ...`.
    pub fn respond_http_call(&mut self, token: u32, headers: &[(&str, &str)], body: &[u8]) -> Result<()> {
        let response = CalloutResponse { headers: HeaderMap::from_pairs(headers.iter().copied()), body: body.to_vec() };
        self.deliver_http_call(token, Some(response))
    }

    /// Fails callout `token` as Envoy does when the request is reset: calls
    /// `proxy_on_http_call_response(root, token, 0, 0, 0)` with no response at all, so reading
    /// the header pairs gives none, reading the body gives NotFound and reading one header gives
    /// BadArgument (the Rust SDK panics on that, in Envoy too).
    pub fn fail_http_call(&mut self, token: u32) -> Result<()> {
        self.deliver_http_call(token, None)
    }

    /// Opens a new HTTP stream; its context is created on its first callback, as in Envoy.
    pub fn stream(&mut self) -> Stream<'_> {
        let id = self.next_context_id;
        self.next_context_id = self.next_context_id.wrapping_add(1);
        self.store.data_mut().streams.insert(id, StreamState::default());
        Stream { plugin: self, id }
    }

    /// Every log line so far: `proxy_log`, plus stdout (Info) and stderr (Error) lines.
    pub fn logs(&self) -> &[LogEntry] {
        &self.store.data().logs
    }

    /// Returns the log lines so far and clears them.
    pub fn take_logs(&mut self) -> Vec<LogEntry> {
        std::mem::take(&mut self.store.data_mut().logs)
    }

    /// The value of the counter called `name`, if the module defined it.
    pub fn counter(&self, name: &str) -> Option<u64> {
        match self.store.data().metrics.by_name(MetricKind::Counter, name)? {
            MetricValue::Counter(value) => Some(*value),
            _ => None,
        }
    }

    /// The value of the gauge called `name`, if the module defined it.
    pub fn gauge(&self, name: &str) -> Option<i64> {
        match self.store.data().metrics.by_name(MetricKind::Gauge, name)? {
            MetricValue::Gauge(value) => Some(*value),
            _ => None,
        }
    }

    /// Every value recorded in the histogram called `name`, if the module defined it.
    pub fn histogram(&self, name: &str) -> Option<&[u64]> {
        match self.store.data().metrics.by_name(MetricKind::Histogram, name)? {
            MetricValue::Histogram(values) => Some(values),
            _ => None,
        }
    }

    /// The names of every metric the module defined, in definition order.
    pub fn metric_names(&self) -> Vec<String> {
        self.store.data().metrics.all().iter().map(|metric| metric.name.clone()).collect()
    }

    /// Changes Envoy's log level, as its admin `/logging` endpoint does.
    pub fn set_log_level(&mut self, level: LogLevel) {
        self.store.data_mut().log_level = level;
    }

    /// Calls the module made into the host (proxy-wasm and WASI imports) since it was
    /// instantiated: each is a crossing out of the VM, which costs more in Envoy than most of
    /// the module's own work (README, Performance).
    pub fn host_calls(&self) -> u64 {
        self.store.data().host_calls
    }

    /// The size of the module's linear memory, in bytes: what the VM has grown to, which it
    /// never gives back (Wasm memory only grows), once per VM in Envoy.
    pub fn memory_bytes(&self) -> usize {
        self.guest.memory.map_or(0, |memory| memory.data_size(&self.store))
    }

    /// Fuel the module burned since it was instantiated, `_initialize` included.
    pub fn fuel_consumed_total(&self) -> u64 {
        INITIAL_FUEL.saturating_sub(self.store.get_fuel().unwrap_or(INITIAL_FUEL))
    }

    /// Runs `proxy_on_http_call_response` for an outstanding callout; `None` reports a failure.
    fn deliver_http_call(&mut self, token: u32, response: Option<CalloutResponse>) -> Result<()> {
        let callouts = &mut self.store.data_mut().callouts;
        if !callouts.finish(token) {
            return Err(anyhow!("no outstanding HTTP call with token {token}"));
        }
        let (headers, body) = response.as_ref().map_or((0, 0), |response| {
            let count = u32::try_from(response.headers.entries().len()).unwrap_or(u32::MAX);
            (count, buffer_len(&response.body))
        });
        callouts.response = response;
        let on_response = self.guest.on_http_call_response.clone();
        let result = self.call(
            ROOT_CONTEXT_ID,
            "proxy_on_http_call_response",
            on_response,
            (ROOT_CONTEXT_ID, token, headers, body, 0),
        );
        // Envoy drops the response once the callback returns, or traps.
        self.store.data_mut().callouts.response = None;
        result?;
        Ok(())
    }

    /// Initializes the instance and the root context, and configures the plugin.
    fn boot(&mut self, options: &PluginOptions) -> Result<()> {
        let (initialize, start) = (self.guest.initialize.clone(), self.guest.start.clone());
        self.call(0, "_initialize", initialize, ())?;
        self.call(0, "_start", start, ())?;
        let create = self.guest.on_context_create.clone();
        self.call(ROOT_CONTEXT_ID, "proxy_on_context_create", create, (ROOT_CONTEXT_ID, 0))?;
        // Envoy shows the plugin configuration only while the root context starts and configures.
        self.store.data_mut().plugin_config_visible = true;
        let configured = self.configure(options);
        self.store.data_mut().plugin_config_visible = false;
        self.configured = configured?;
        Ok(())
    }

    /// Runs `proxy_on_vm_start`, then (if it succeeded) `proxy_on_configure`.
    fn configure(&mut self, options: &PluginOptions) -> Result<bool> {
        let on_vm_start = self.guest.on_vm_start.clone();
        let size = buffer_len(&options.vm_config);
        let started = self.call(ROOT_CONTEXT_ID, "proxy_on_vm_start", on_vm_start, (ROOT_CONTEXT_ID, size))?;
        if started == Some(0) {
            return Ok(false);
        }
        let on_configure = self.guest.on_configure.clone();
        let size = buffer_len(&options.plugin_config);
        let configured = self.call(ROOT_CONTEXT_ID, "proxy_on_configure", on_configure, (ROOT_CONTEXT_ID, size))?;
        Ok(configured != Some(0))
    }

    /// Runs one guest callback on `context`: makes it the effective context, meters fuel, and
    /// turns a trap into a crashed VM. `Ok(None)` if the module does not export the callback.
    fn call<P, R>(
        &mut self,
        context: u32,
        name: &str,
        function: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>>
    where
        P: WasmParams,
        R: WasmResults,
    {
        if let Some(reason) = &self.crashed {
            return Err(anyhow!("vm crashed: {reason}"));
        }
        let Some(function) = function else {
            return Ok(None);
        };
        let state = self.store.data_mut();
        state.effective_context = context;
        let logs_before = state.logs.len();
        let fuel_before = self.store.get_fuel().unwrap_or(0);
        let result = function.call(&mut self.store, params);
        let consumed = fuel_before.saturating_sub(self.store.get_fuel().unwrap_or(0));
        let state = self.store.data_mut();
        state.flush_stdio();
        state.effective_context = 0;
        if let Some(stream) = state.streams.get_mut(&context) {
            stream.fuel_consumed_last = consumed;
        }
        match result {
            Ok(value) => Ok(Some(value)),
            Err(error) => {
                let error = wasm_error(error);
                // A module's panic hook (the Rust SDK's, or svidgate's own) logs the message at Critical before the trap.
                let logged = state.logs.get(logs_before..).unwrap_or_default();
                let last_words = logged.iter().rev().find(|entry| entry.level >= LogLevel::Error);
                let summary = match last_words {
                    Some(entry) => format!("{name}({context}) trapped after logging {:?}", entry.message),
                    None => format!("{name}({context}) trapped"),
                };
                self.crashed = Some(format!("{summary}: {}", error.root_cause()));
                Err(error.context(summary))
            }
        }
    }

    /// Like [`Plugin::call`] for a stream callback: a failure fails the stream closed, as Envoy does.
    fn stream_call<P, R>(
        &mut self,
        id: u32,
        name: &str,
        function: Option<TypedFunc<P, R>>,
        params: P,
    ) -> Result<Option<R>>
    where
        P: WasmParams,
        R: WasmResults,
    {
        let result = self.call(id, name, function, params);
        if result.is_err()
            && let Some(stream) = self.store.data_mut().streams.get_mut(&id)
        {
            stream.local_reply.get_or_insert_with(fail_stream_reply);
        }
        result
    }

    /// Creates the stream's context in the module if that has not happened yet.
    fn ensure_created(&mut self, id: u32) -> Result<()> {
        let stream = self.stream_state_mut(id)?;
        if stream.created {
            return Ok(());
        }
        stream.created = true;
        let create = self.guest.on_context_create.clone();
        self.stream_call(id, "proxy_on_context_create", create, (id, ROOT_CONTEXT_ID))?;
        Ok(())
    }

    /// Delivers request or response headers to a stream.
    fn on_headers(
        &mut self,
        id: u32,
        direction: Direction,
        headers: &[(&str, &str)],
        end_of_stream: bool,
    ) -> Result<Action> {
        let stream = self.stream_state_mut(id)?;
        let phase = match direction {
            Direction::Request => &mut stream.request,
            Direction::Response => &mut stream.response,
        };
        phase.receive(headers);
        let count = u32::try_from(phase.headers.entries().len()).unwrap_or(u32::MAX);
        if direction == Direction::Request {
            stream.request_ended = end_of_stream;
        }
        // Envoy only calls into the VM for a response if the request created the context (and,
        // for a crashed VM, the request already failed the stream).
        if direction == Direction::Response && !stream.created {
            return Ok(Action::Continue);
        }
        self.ensure_created(id)?;
        let (name, function) = match direction {
            Direction::Request => ("proxy_on_request_headers", self.guest.on_request_headers.clone()),
            Direction::Response => ("proxy_on_response_headers", self.guest.on_response_headers.clone()),
        };
        let raw = self.stream_call(id, name, function, (id, count, u32::from(end_of_stream)))?;
        let action = Action::from_raw(raw);
        if action == Action::Continue {
            let stream = self.stream_state_mut(id)?;
            match direction {
                Direction::Request => {
                    stream.request.available = false;
                    stream.forward_request();
                }
                Direction::Response => stream.response.available = false,
            }
        }
        Ok(action)
    }

    /// Delivers a request data frame: the chunk joins what Envoy holds for the filter, and
    /// `proxy_on_request_body` gets the length of all of it.
    fn on_request_body(&mut self, id: u32, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        let stream = self.request_side(id, "body")?;
        stream.request_ended = end_of_stream;
        // Envoy drops request data once the stream is answered (`local_complete_`): no callback.
        if stream.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        // Envoy's decoding buffer holds the chunks whose callbacks paused; after a callback that
        // continued it is empty (everything went on), and the buffer is the new chunk alone.
        stream.request_body.extend_from_slice(chunk);
        let size = buffer_len(&stream.request_body);
        let on_body = self.guest.on_request_body.clone();
        let raw = self.stream_call(id, "proxy_on_request_body", on_body, (id, size, u32::from(end_of_stream)))?;
        let action = Action::from_raw(raw);
        if action == Action::Continue {
            self.stream_state_mut(id)?.forward_request();
        }
        Ok(action)
    }

    /// Delivers request trailers, which end the request.
    fn on_request_trailers(&mut self, id: u32, trailers: &[(&str, &str)]) -> Result<Action> {
        let stream = self.request_side(id, "trailers")?;
        stream.request_ended = true;
        if stream.local_reply.is_some() {
            return Ok(Action::Pause);
        }
        stream.request_trailers.receive(trailers);
        let count = u32::try_from(stream.request_trailers.headers.entries().len()).unwrap_or(u32::MAX);
        let on_trailers = self.guest.on_request_trailers.clone();
        let raw = self.stream_call(id, "proxy_on_request_trailers", on_trailers, (id, count))?;
        let action = Action::from_raw(raw);
        if action == Action::Continue {
            let stream = self.stream_state_mut(id)?;
            stream.request_trailers.available = false;
            stream.forward_request();
        }
        Ok(action)
    }

    /// The stream, for more of its request: refused before the request headers and after the
    /// end of the request, which no downstream can send.
    fn request_side(&mut self, id: u32, what: &str) -> Result<&mut StreamState> {
        let stream = self.stream_state_mut(id)?;
        if !stream.request.received {
            return Err(anyhow!("request {what} on stream {id} before its request headers"));
        }
        if stream.request_ended {
            return Err(anyhow!("request {what} on stream {id} after the end of the request"));
        }
        Ok(stream)
    }

    /// Ends a stream the way Envoy does: access log, then filter destruction.
    fn finish_stream(&mut self, id: u32) -> Result<()> {
        self.ensure_created(id)?;
        self.stream_state_mut(id)?.log_phase = true;
        let on_log = self.guest.on_log.clone();
        let logged = self.stream_call(id, "proxy_on_log", on_log, id);
        self.stream_state_mut(id)?.log_phase = false;
        logged?;
        let on_done = self.guest.on_done.clone();
        self.stream_call(id, "proxy_on_done", on_done, id)?;
        let on_delete = self.guest.on_delete.clone();
        self.stream_call(id, "proxy_on_delete", on_delete, id)?;
        self.store.data_mut().streams.remove(&id);
        Ok(())
    }

    fn stream_state(&self, id: u32) -> Option<&StreamState> {
        self.store.data().streams.get(&id)
    }

    fn stream_state_mut(&mut self, id: u32) -> Result<&mut StreamState> {
        self.store.data_mut().streams.get_mut(&id).ok_or_else(|| anyhow!("no stream with context id {id}"))
    }
}

/// One HTTP stream of a plugin: an HTTP context in the module.
pub struct Stream<'p> {
    plugin: &'p mut Plugin,
    id: u32,
}

impl Stream<'_> {
    /// The stream's context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sets the request header map (Envoy semantics: names lower-cased, order kept, repeats kept) and calls proxy_on_request_headers(id, n, end_of_stream).
    pub fn request_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action> {
        self.plugin.on_headers(self.id, Direction::Request, headers, end_of_stream)
    }

    /// Sends a request data frame: appends `chunk` to the body Envoy holds for the filter and calls
    /// proxy_on_request_body(id, length of that body, end_of_stream).
    ///
    /// As in Envoy, the held body is every chunk since the last body callback that returned
    /// Continue: after a Pause (StopIterationAndBuffer) the earlier chunks are still buffered and
    /// the new one is appended; after a Continue (or before any body callback) the earlier data
    /// went on, and the chunk is alone. Data frames reach the filter even while its headers callback
    /// has paused the request. Continue passes on the request headers (if they were held) and the
    /// held body, see [`Stream::forwarded_request_body`].
    ///
    /// Once the stream has a local reply Envoy drops request data: the module is not called, and
    /// this returns Pause (nothing goes on). Err before the request headers, after the end of the
    /// request, or if the module traps (the stream then fails closed).
    pub fn request_body(&mut self, chunk: &[u8], end_of_stream: bool) -> Result<Action> {
        self.plugin.on_request_body(self.id, chunk, end_of_stream)
    }

    /// Sends request trailers, which end the request: sets the request trailer map (readable and
    /// writable during the callback, and after it if it paused) and calls
    /// proxy_on_request_trailers(id, n). The body the filter buffered stays readable. Continue
    /// passes on what the filter held and the trailers. Like [`Stream::request_body`] after a
    /// local reply: not delivered, Pause.
    pub fn request_trailers(&mut self, trailers: &[(&str, &str)]) -> Result<Action> {
        self.plugin.on_request_trailers(self.id, trailers)
    }

    /// Sets the response header map and calls proxy_on_response_headers(id, n, end_of_stream).
    pub fn response_headers(&mut self, headers: &[(&str, &str)], end_of_stream: bool) -> Result<Action> {
        self.plugin.on_headers(self.id, Direction::Response, headers, end_of_stream)
    }

    /// The request headers as modified by the module. What the upstream received is
    /// [`Stream::forwarded_request_headers`]: the two differ only by edits made after the headers
    /// went on (possible when the headers callback paused and a body callback continued).
    pub fn request_header_map(&self) -> &[(String, String)] {
        self.state().map(|stream| stream.request.headers.entries()).unwrap_or_default()
    }

    /// Whether the request headers went past this filter: when the headers callback returned
    /// Continue, or later, after it paused, when a body or trailers callback returned Continue or the
    /// module called `proxy_continue_stream`. Never once the stream has a local reply.
    pub fn request_headers_forwarded(&self) -> bool {
        self.state().is_some_and(|stream| stream.upstream.headers.is_some())
    }

    /// The request headers as they went past this filter (the map when the filter let them go on),
    /// if they did.
    pub fn forwarded_request_headers(&self) -> Option<&[(String, String)]> {
        self.state()?.upstream.headers.as_deref()
    }

    /// The request body that went past this filter so far: a chunk goes on when its body callback
    /// returns Continue, together with the chunks buffered before it. Nothing more goes on once
    /// the stream has a local reply.
    pub fn forwarded_request_body(&self) -> &[u8] {
        self.state().map(|stream| stream.upstream.body.as_slice()).unwrap_or_default()
    }

    /// The request trailers as they went past this filter, if they did.
    pub fn forwarded_request_trailers(&self) -> Option<&[(String, String)]> {
        self.state()?.upstream.trailers.as_deref()
    }

    /// The request body Envoy holds for the filter now (buffered after body callbacks that
    /// paused, not passed on): what `proxy_get_buffer_bytes(HttpRequestBody)` reads.
    pub fn buffered_request_body(&self) -> &[u8] {
        self.state().map(|stream| stream.request_body.as_slice()).unwrap_or_default()
    }

    /// The request trailers as modified by the module.
    pub fn request_trailer_map(&self) -> &[(String, String)] {
        self.state().map(|stream| stream.request_trailers.headers.entries()).unwrap_or_default()
    }

    /// Every request header value for `name` (case-insensitive), in order.
    pub fn request_header_values(&self, name: &str) -> Vec<&str> {
        self.state().map(|stream| stream.request.headers.values(name).collect()).unwrap_or_default()
    }

    /// The response headers as modified by the module: what the downstream would receive.
    pub fn response_header_map(&self) -> &[(String, String)] {
        self.state().map(|stream| stream.response.headers.entries()).unwrap_or_default()
    }

    /// The local reply the module sent on this stream, if any (the first one: Envoy sends only it).
    pub fn local_reply(&self) -> Option<&LocalReply> {
        self.state()?.local_reply.as_ref()
    }

    /// A value the module set with `proxy_set_property(name)`: Envoy's filter state
    /// `wasm.<name>`, which access logs read as `%FILTER_STATE(wasm.<name>:PLAIN)%`.
    pub fn filter_state(&self, name: &str) -> Option<&[u8]> {
        self.state()?.filter_state.get(name.as_bytes()).map(Vec::as_slice)
    }

    /// Fuel burned by the last callback on this stream.
    pub fn fuel_consumed_last(&self) -> u64 {
        self.state().map_or(0, |stream| stream.fuel_consumed_last)
    }

    /// Ends the stream: proxy_on_log, proxy_on_done, proxy_on_delete (Envoy's order).
    pub fn finish(self) -> Result<()> {
        self.plugin.finish_stream(self.id)
    }

    fn state(&self) -> Option<&StreamState> {
        self.plugin.stream_state(self.id)
    }
}

/// What a stream callback told the host to do with the stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Continue to the next filter.
    Continue,
    /// Stop iteration until the module resumes the stream (Envoy's StopIteration; for a body
    /// callback, StopIterationAndBuffer: Envoy keeps the data for the filter).
    Pause,
}

impl Action {
    /// The action a callback returned: 0 is Continue, anything else stops iteration (the SDK only
    /// returns 1, Pause); a callback the module does not export continues, as in Envoy.
    fn from_raw(raw: Option<u32>) -> Self {
        if raw.unwrap_or(0) == 0 { Self::Continue } else { Self::Pause }
    }
}

/// An HTTP callout the module dispatched with `proxy_http_call`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpCall {
    /// The token `proxy_http_call` returned, which the response callback carries.
    pub token: u32,
    /// The upstream cluster the call is for.
    pub cluster: String,
    /// The request headers as the module sent them, pseudo-headers included (Envoy lower-cases
    /// the names and adds `content-length` for a body; neither happens here).
    pub headers: Vec<(String, String)>,
    /// The request body.
    pub body: Vec<u8>,
    /// The request timeout; zero means none (Envoy then applies no timeout).
    pub timeout: Duration,
}

/// A local reply sent with `proxy_send_local_response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// The HTTP status code.
    pub status: u32,
    /// The response code details (whitespace replaced by `_`, as Envoy does).
    pub details: String,
    /// The response body.
    pub body: Vec<u8>,
    /// The additional response headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The gRPC status; -1 for a plain HTTP reply.
    pub grpc_status: i32,
}

/// One log line of the module.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEntry {
    /// The log level.
    pub level: LogLevel,
    /// The message.
    pub message: String,
}

/// Envoy's log levels, as proxy-wasm numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Trace (0).
    Trace,
    /// Debug (1).
    Debug,
    /// Info (2).
    Info,
    /// Warn (3).
    Warn,
    /// Error (4).
    Error,
    /// Critical (5).
    Critical,
}

impl LogLevel {
    /// The level for a proxy-wasm log level number, if valid.
    fn from_raw(raw: u32) -> Option<Self> {
        [Self::Trace, Self::Debug, Self::Info, Self::Warn, Self::Error, Self::Critical]
            .into_iter()
            .find(|level| *level as u32 == raw)
    }
}

/// The export by which a module declares proxy-wasm ABI 0.2.1.
const ABI_VERSION_EXPORT: &str = "proxy_abi_version_0_2_1";

/// Fuel given to each plugin: enough never to run out, leaving room to measure consumption.
const INITIAL_FUEL: u64 = u64::MAX / 2;

/// Which side of the stream a headers callback is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Direction {
    Request,
    Response,
}

/// `proxy_on_http_call_response(root context, token, headers, body size, trailers)`.
type OnHttpCallResponse = TypedFunc<(u32, u32, u32, u32, u32), ()>;

/// The module's exported callbacks; each is optional, and a missing one is skipped (as in Envoy).
struct Guest {
    initialize: Option<TypedFunc<(), ()>>,
    start: Option<TypedFunc<(), ()>>,
    on_context_create: Option<TypedFunc<(u32, u32), ()>>,
    on_vm_start: Option<TypedFunc<(u32, u32), u32>>,
    on_configure: Option<TypedFunc<(u32, u32), u32>>,
    on_tick: Option<TypedFunc<u32, ()>>,
    on_http_call_response: Option<OnHttpCallResponse>,
    on_request_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_body: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_request_trailers: Option<TypedFunc<(u32, u32), u32>>,
    on_response_headers: Option<TypedFunc<(u32, u32, u32), u32>>,
    on_log: Option<TypedFunc<u32, ()>>,
    on_done: Option<TypedFunc<u32, u32>>,
    on_delete: Option<TypedFunc<u32, ()>>,
    memory: Option<wasmtime::Memory>,
}

impl Guest {
    fn resolve(store: &mut Store<HostState>, instance: &Instance) -> Result<Self> {
        Ok(Self {
            initialize: export(store, instance, "_initialize")?,
            start: export(store, instance, "_start")?,
            on_context_create: export(store, instance, "proxy_on_context_create")?,
            on_vm_start: export(store, instance, "proxy_on_vm_start")?,
            on_configure: export(store, instance, "proxy_on_configure")?,
            on_tick: export(store, instance, "proxy_on_tick")?,
            on_http_call_response: export(store, instance, "proxy_on_http_call_response")?,
            on_request_headers: export(store, instance, "proxy_on_request_headers")?,
            on_request_body: export(store, instance, "proxy_on_request_body")?,
            on_request_trailers: export(store, instance, "proxy_on_request_trailers")?,
            on_response_headers: export(store, instance, "proxy_on_response_headers")?,
            on_log: export(store, instance, "proxy_on_log")?,
            on_done: export(store, instance, "proxy_on_done")?,
            on_delete: export(store, instance, "proxy_on_delete")?,
            memory: instance.get_memory(&mut *store, "memory"),
        })
    }
}

/// The exported function `name` with the signature the ABI gives it, if exported.
fn export<P, R>(store: &mut Store<HostState>, instance: &Instance, name: &str) -> Result<Option<TypedFunc<P, R>>>
where
    P: WasmParams,
    R: WasmResults,
{
    let Some(function) = instance.get_func(&mut *store, name) else {
        return Ok(None);
    };
    let typed = function
        .typed::<P, R>(&*store)
        .map_err(wasm_error)
        .with_context(|| format!("export `{name}` does not have the proxy-wasm ABI 0.2.1 signature"))?;
    Ok(Some(typed))
}

/// The local reply Envoy sends when the VM fails during a stream (fail closed).
fn fail_stream_reply() -> LocalReply {
    LocalReply {
        status: 503,
        details: "wasm_fail_stream".to_string(),
        body: Vec::new(),
        headers: Vec::new(),
        grpc_status: abi::GRPC_UNAVAILABLE,
    }
}

/// The key of a property: its path segments joined by NUL, as the ABI serializes paths.
fn property_key(path: &[&str]) -> Vec<u8> {
    path.join("\0").into_bytes()
}

/// A buffer's size as the `u32` the ABI passes.
fn buffer_len(buffer: &[u8]) -> u32 {
    u32::try_from(buffer.len()).unwrap_or(u32::MAX)
}

/// Converts a wasmtime error (its own type since wasmtime 42) into an `anyhow::Error`, keeping
/// its chain of causes.
pub(crate) fn wasm_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(error.into())
}
