//! A [`Host`] over plain maps: the proxy as native tests, the scenario corpus and benchmarks see it.
//!
//! It keeps what Envoy keeps for one stream and its plugin (header maps with Envoy's semantics,
//! properties, filter state, metrics, logs, the local reply, HTTP calls, a clock) and lets the
//! pipeline change it; tests set it up, drive the pipeline, then read the state.

use std::cell::{Ref, RefCell};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use super::{Host, HttpCall, MetricKind};
use crate::headers::HeaderList;

/// A map-backed host for one plugin, one stream at a time.
#[derive(Debug, Default)]
pub struct MemoryHost {
    state: RefCell<MemoryState>,
}

/// Everything a [`MemoryHost`] holds; tests read and change it through [`MemoryHost::state`]
/// and [`MemoryHost::with`].
#[derive(Debug, Default)]
pub struct MemoryState {
    /// The clock; `SystemTime::now()` when unset.
    pub now: Option<SystemTime>,
    /// The plugin configuration.
    pub plugin_configuration: Vec<u8>,
    /// Every log line, in order.
    pub logs: Vec<(log::Level, String)>,
    /// Envoy attributes by path.
    pub properties: BTreeMap<Vec<String>, Vec<u8>>,
    /// The request's header map.
    pub request_headers: HeaderMap,
    /// The buffered request body.
    pub request_body: Vec<u8>,
    /// Headers added to the response.
    pub response_headers: HeaderMap,
    /// Filter-state values set by the stream.
    pub filter_state: BTreeMap<String, Vec<u8>>,
    /// The local reply, once sent.
    pub local_reply: Option<LocalReply>,
    /// Metrics in definition order; the id is the index.
    pub metrics: Vec<Metric>,
    /// The tick period, once set.
    pub tick_period: Option<Duration>,
    /// HTTP calls dispatched, with their tokens.
    pub http_calls: Vec<(u32, HttpCall)>,
    /// The clusters calls may name; any non-empty name when `None`.
    pub clusters: Option<Vec<String>>,
    /// The HTTP call response being delivered; `None` for a failed call.
    pub http_call_response: Option<HttpCallResponse>,
}

/// A local reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// The response to an HTTP call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpCallResponse {
    /// Headers, `:status` included.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// One metric and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metric {
    /// Its kind.
    pub kind: MetricKind,
    /// Its name.
    pub name: String,
    /// A counter's or gauge's value; for a histogram, how many values were recorded.
    pub value: u64,
    /// Every value recorded in a histogram.
    pub samples: Vec<u64>,
}

impl MemoryHost {
    /// A host whose plugin configuration is `configuration`.
    pub fn new(configuration: impl Into<Vec<u8>>) -> Self {
        let host = Self::default();
        host.with(|s| s.plugin_configuration = configuration.into());
        host
    }

    /// Reads the state.
    pub fn state(&self) -> Ref<'_, MemoryState> {
        self.state.borrow()
    }

    /// Changes the state.
    pub fn with<T>(&self, change: impl FnOnce(&mut MemoryState) -> T) -> T {
        change(&mut self.state.borrow_mut())
    }

    /// Starts a new request: these headers, no body, no reply, no response headers, no filter state.
    pub fn begin_request<'a>(&self, headers: impl IntoIterator<Item = (&'a str, &'a str)>) {
        self.with(|s| {
            s.request_headers = HeaderMap::from_pairs(headers);
            s.request_body.clear();
            s.response_headers = HeaderMap::default();
            s.filter_state.clear();
            s.local_reply = None;
        });
    }

    /// Sets an Envoy attribute.
    pub fn set_property(&self, path: &[&str], value: impl Into<Vec<u8>>) {
        self.with(|s| s.properties.insert(key(path), value.into()));
    }

    /// A metric's value by name (counters and gauges).
    pub fn metric(&self, name: &str) -> Option<u64> {
        self.state().metrics.iter().find(|m| m.name == name).map(|m| m.value)
    }
}

impl Host for MemoryHost {
    fn now(&self) -> SystemTime {
        self.state().now.unwrap_or_else(SystemTime::now)
    }

    fn log(&self, level: log::Level, message: std::fmt::Arguments<'_>) {
        self.with(|s| s.logs.push((level, message.to_string())));
    }

    fn plugin_configuration(&self) -> Vec<u8> {
        self.state().plugin_configuration.clone()
    }

    fn request_headers(&self) -> HeaderList {
        // Serialized and parsed as the modules read Envoy's map; a map the parser refused would
        // reach the pipeline empty, and fail the tests that read it.
        HeaderList::from_proxy_wasm(crate::headers::proxy_wasm_bytes(self.state().request_headers.entries())).unwrap_or_default()
    }

    fn remove_request_header(&self, name: &str) {
        self.with(|s| s.request_headers.remove(name));
    }

    fn set_request_header(&self, name: &str, value: &str) {
        self.with(|s| s.request_headers.replace(name, value));
    }

    fn add_request_header(&self, name: &str, value: &str) {
        self.with(|s| s.request_headers.add(name, value));
    }

    fn add_response_header(&self, name: &str, value: &str) {
        self.with(|s| s.response_headers.add(name, value));
    }

    fn request_body(&self, start: usize, len: usize) -> Option<Vec<u8>> {
        let state = self.state();
        let end = start.saturating_add(len).min(state.request_body.len());
        state.request_body.get(start..end).map(<[u8]>::to_vec)
    }

    fn property(&self, path: &[&str]) -> Option<Vec<u8>> {
        self.state().properties.get(&key(path)).cloned()
    }

    fn set_filter_state(&self, key: &str, value: &[u8]) {
        self.with(|s| s.filter_state.insert(key.to_owned(), value.to_vec()));
    }

    fn send_local_reply(&self, status: u16, headers: &[(String, String)], body: &[u8]) {
        self.with(|s| s.local_reply = Some(LocalReply { status, headers: headers.to_vec(), body: body.to_vec() }));
    }

    fn define_metric(&self, kind: MetricKind, name: &str) -> u32 {
        self.with(|s| {
            let existing = s.metrics.iter().position(|m| m.kind == kind && m.name == name);
            let index = existing.unwrap_or_else(|| {
                s.metrics.push(Metric { kind, name: name.to_owned(), value: 0, samples: Vec::new() });
                s.metrics.len() - 1
            });
            u32::try_from(index).unwrap_or(u32::MAX)
        })
    }

    fn increment_metric(&self, id: u32, delta: u64) {
        self.with(|s| {
            if let Some(metric) = usize::try_from(id).ok().and_then(|i| s.metrics.get_mut(i)) {
                metric.value = metric.value.saturating_add(delta);
            }
        });
    }

    fn record_metric(&self, id: u32, value: u64) {
        self.with(|s| {
            if let Some(metric) = usize::try_from(id).ok().and_then(|i| s.metrics.get_mut(i)) {
                match metric.kind {
                    MetricKind::Histogram => {
                        metric.samples.push(value);
                        metric.value = metric.samples.len() as u64;
                    }
                    MetricKind::Counter | MetricKind::Gauge => metric.value = value,
                }
            }
        });
    }

    fn set_tick_period(&self, period: Duration) {
        self.with(|s| s.tick_period = Some(period));
    }

    fn dispatch_http_call(&self, call: &HttpCall) -> Result<u32, String> {
        self.with(|s| {
            let known = match &s.clusters {
                Some(clusters) => clusters.contains(&call.cluster),
                None => !call.cluster.is_empty(),
            };
            if !known {
                return Err(format!("unknown cluster {:?}", call.cluster));
            }
            let token = u32::try_from(s.http_calls.len()).unwrap_or(u32::MAX).saturating_add(1);
            s.http_calls.push((token, call.clone()));
            Ok(token)
        })
    }

    fn http_call_response_headers(&self) -> Vec<(String, String)> {
        self.state().http_call_response.as_ref().map(|response| response.headers.clone()).unwrap_or_default()
    }

    fn http_call_response_body(&self, len: usize) -> Option<Vec<u8>> {
        let state = self.state();
        let body = &state.http_call_response.as_ref()?.body;
        body.get(..len.min(body.len())).map(<[u8]>::to_vec)
    }
}

fn key(path: &[&str]) -> Vec<String> {
    path.iter().map(|p| (*p).to_owned()).collect()
}

/// An HTTP header map with Envoy's semantics: lower-case names, insertion order kept, repeated
/// names kept as separate entries, pseudo-headers (`:name`) always ahead of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(String, String)>,
}

impl HeaderMap {
    /// Builds a map by adding each pair in order.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut map = Self::default();
        for (name, value) in pairs {
            map.add(name, value);
        }
        map
    }

    /// Every entry, in order.
    pub fn entries(&self) -> &[(String, String)] {
        &self.entries
    }

    /// Appends an entry; a pseudo-header goes after the last pseudo-header, as in Envoy's HeaderList.
    pub fn add(&mut self, name: &str, value: &str) {
        let name = name.to_ascii_lowercase();
        let position =
            if name.starts_with(':') { self.entries.iter().position(|(key, _)| !key.starts_with(':')) } else { None };
        let entry = (name, value.to_string());
        match position {
            Some(index) => self.entries.insert(index, entry),
            None => self.entries.push(entry),
        }
    }

    /// Removes every entry named `name` (case-insensitive).
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(key, _)| !key.eq_ignore_ascii_case(name));
    }

    /// Envoy's `setCopy`: removes every entry named `name`, then adds one.
    pub fn replace(&mut self, name: &str, value: &str) {
        self.remove(name);
        self.add(name, value);
    }

    /// The first value for `name`: what Envoy's `proxy_get_header_map_value` returns, even when
    /// the header is repeated (proxy-wasm/spec#53).
    pub fn first(&self, name: &str) -> Option<&str> {
        self.values(name).next()
    }

    /// Every value for `name` (case-insensitive), in order.
    pub fn values<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s str> + use<'s> {
        // Names are stored lower-cased: compare against a lower-cased copy the iterator owns.
        let name = name.to_ascii_lowercase();
        self.entries.iter().filter(move |(key, _)| *key == name).map(|(_, value)| value.as_str())
    }

    /// Replaces the whole map, as `proxy_set_header_map_pairs` does.
    pub fn set_pairs(&mut self, pairs: &[(String, String)]) {
        *self = Self::from_pairs(pairs.iter().map(|(name, value)| (name.as_str(), value.as_str())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_map_keeps_pseudo_headers_first_and_lower_cases_names() {
        let mut map = HeaderMap::from_pairs([("Host", "a"), (":path", "/"), ("X-A", "1")]);
        map.add(":Method", "GET");
        map.add("x-a", "2");
        let names: Vec<_> = map.entries().iter().map(|(name, _)| name.as_str()).collect();
        assert_eq!(names, [":path", ":method", "host", "x-a", "x-a"]);
        assert_eq!(map.first("X-A"), Some("1"));
        map.replace("X-A", "3");
        assert_eq!(map.values("x-a").collect::<Vec<_>>(), ["3"]);
        map.remove("HOST");
        assert_eq!(map.first("host"), None);
    }
}
