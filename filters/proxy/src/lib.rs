//! The Proxy-Wasm glue both svidgate modules share.
//!
//! This crate reads what the proxy knows (headers, connection properties, the clock), hands it
//! to `svidgate-core`, and applies the decision that comes back. It decides nothing itself.

use std::cell::RefCell;
use std::time::SystemTime;

use log::{debug, error, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{Action, MapType, MetricType};
use svidgate_core::config::IdentityConfig;
use svidgate_core::decision::{Decision, DenyReason, HeaderEdit};
use svidgate_core::identity::StrippedHeaders;
use svidgate_core::metrics::Counter;
use svidgate_core::peer::{PeerCache, PeerCertificate, PeerError, PeerIdentity, SvidRules};

/// The git revision the module was built from.
pub const GIT_SHA: &str = env!("SVIDGATE_GIT_SHA");
/// How many peer certificates a plugin keeps parsed.
pub const PEER_CACHE_CAPACITY: usize = 1024;

/// Takes every identity header out of the request, in the proxy's map and in the snapshot the
/// core will read. This runs first on every request; if the proxy cannot list the headers, the
/// identity headers are removed blindly and the request is denied.
pub fn strip_request_headers(config: &IdentityConfig) -> Result<StrippedHeaders, DenyReason> {
    let headers = match hostcalls::get_map_bytes(MapType::HttpRequestHeaders) {
        Ok(headers) => headers,
        Err(status) => {
            for name in &config.headers {
                // Best effort: the request is denied whatever happens here.
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, name);
            }
            return Err(DenyReason::HostFailure(format!("cannot read request headers: {status:?}")));
        }
    };
    // Non-UTF-8 header values are legal on the wire; the core sees them lossily, the upstream unchanged.
    let headers =
        headers.into_iter().map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned())).collect();
    let stripped = StrippedHeaders::strip(headers, config);
    for name in stripped.removed_names() {
        hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
            .map_err(|status| DenyReason::HostFailure(format!("cannot remove {name}: {status:?}")))?;
    }
    Ok(stripped)
}

/// The proxy's clock.
pub fn now() -> SystemTime {
    hostcalls::get_current_time().unwrap_or_else(|_| SystemTime::now())
}

/// The validated peer of this request's connection, parsed once per certificate.
pub fn peer_identity(rules: &SvidRules, cache: &RefCell<PeerCache>) -> Result<PeerIdentity, PeerError> {
    let now = now();
    let digest = property_string(&["connection", "sha256_peer_certificate_digest"]);
    let certificate = || PeerCertificate {
        pem: property(&["connection", "peer_certificate"]),
        uri_san: property_string(&["connection", "uri_san_peer_certificate"]),
    };
    match cache.try_borrow_mut() {
        Ok(mut cache) => rules.resolve(&mut cache, digest.as_deref(), certificate, now),
        Err(_) => rules.resolve(&mut PeerCache::new(0), None, certificate, now),
    }
}

/// A property as raw bytes; absent or unreadable is `None`.
pub fn property(path: &[&str]) -> Option<Vec<u8>> {
    hostcalls::get_property(path.to_vec()).ok().flatten()
}

/// A property as UTF-8 text.
pub fn property_string(path: &[&str]) -> Option<String> {
    property(path).and_then(|bytes| String::from_utf8(bytes).ok())
}

/// Carries out a decision: edits the request and lets it continue, or answers locally and stops it.
pub fn apply(context_id: u32, decision: &Decision) -> Action {
    match decision {
        Decision::Allow { request_edits, .. } => {
            for edit in request_edits {
                if let Err(status) = apply_edit(edit) {
                    error!("#{context_id} cannot edit request headers ({status:?}): denying");
                    return deny(context_id, 500, &[], svidgate_core::decision::DENIED_BODY);
                }
            }
            Action::Continue
        }
        Decision::Deny { status, headers, body, .. } => deny(context_id, *status, headers, body),
    }
}

/// Adds headers to the response (the policy's `response_headers_to_add`).
pub fn add_response_headers(context_id: u32, headers: &[(String, String)]) {
    for (name, value) in headers {
        if let Err(status) = hostcalls::add_map_value(MapType::HttpResponseHeaders, name, value) {
            warn!("#{context_id} cannot add response header {name}: {status:?}");
        }
    }
}

/// Logs a decision at debug level: the reason, never the header map.
pub fn log_decision(context_id: u32, decision: &Decision, upstream_identity: Option<&str>) {
    match decision {
        Decision::Allow { .. } => {
            debug!("#{context_id} allow: upstream identity {}", upstream_identity.unwrap_or("none"))
        }
        Decision::Deny { status, reason, .. } if reason.is_error() => {
            warn!("#{context_id} deny {status} ({}): {reason}", reason.code());
        }
        Decision::Deny { status, reason, .. } => {
            debug!("#{context_id} deny {status} ({}): {reason}", reason.code())
        }
    }
}

/// The counters and histogram a module keeps, defined once at configuration.
#[derive(Debug, Default)]
pub struct Metrics {
    counters: Vec<(Counter, u32)>,
    histogram: Option<u32>,
}

impl Metrics {
    /// Defines `counters` and, if given, a histogram; a metric the host refuses is logged and skipped.
    pub fn define(counters: &[Counter], histogram: Option<&str>) -> Self {
        let define = |kind, name: &str| match hostcalls::define_metric(kind, name) {
            Ok(id) => Some(id),
            Err(status) => {
                warn!("cannot define metric {name}: {status:?}");
                None
            }
        };
        Self {
            counters: counters
                .iter()
                .filter_map(|&c| define(MetricType::Counter, c.name()).map(|id| (c, id)))
                .collect(),
            histogram: histogram.and_then(|name| define(MetricType::Histogram, name)),
        }
    }

    /// Increments each counter in `events` by one.
    pub fn count(&self, events: &[Counter]) {
        for event in events {
            self.add(*event, 1);
        }
    }

    /// Increments one counter by `n`.
    pub fn add(&self, counter: Counter, n: u64) {
        if let Some((_, id)) = self.counters.iter().find(|(c, _)| *c == counter) {
            let _ = hostcalls::increment_metric(*id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Records one value in the histogram.
    pub fn record(&self, value: u64) {
        if let Some(id) = self.histogram {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

/// A gauge, defined once; a gauge the host refuses is logged and does nothing.
#[derive(Debug)]
pub struct Gauge(Option<u32>);

impl Gauge {
    /// Defines the gauge `name`.
    pub fn define(name: &str) -> Self {
        Self(
            hostcalls::define_metric(MetricType::Gauge, name)
                .map_err(|status| warn!("cannot define gauge {name}: {status:?}"))
                .ok(),
        )
    }

    /// Sets its value.
    pub fn set(&self, value: u64) {
        if let Some(id) = self.0 {
            let _ = hostcalls::record_metric(id, value);
        }
    }
}

fn apply_edit(edit: &HeaderEdit) -> Result<(), proxy_wasm::types::Status> {
    match edit {
        HeaderEdit::Append(name, value) => hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value),
        HeaderEdit::Remove(name) => hostcalls::remove_map_value(MapType::HttpRequestHeaders, name),
        HeaderEdit::Set(name, value) => hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)),
    }
}

fn deny(context_id: u32, status: u16, headers: &[(String, String)], body: &str) -> Action {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    if let Err(status) = hostcalls::send_http_response(u32::from(status), headers, Some(body.as_bytes())) {
        error!("#{context_id} cannot send the local reply: {status:?}");
    }
    Action::Pause
}
