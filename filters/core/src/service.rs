//! Polling an HTTP service through an Envoy cluster, host-free: when the next call is due, the
//! call itself, and what an answer means for a document fetched with `If-None-Match`. The OPA
//! bundle poller and the decision-log uploader (authz module) and the JWT bundle poller (both
//! modules) are built on it; the proxy glue only dispatches calls and feeds answers back.

use std::time::SystemTime;

use crate::config::ServiceConfig;
use crate::host::HttpCall;

/// What came back from a call; `None` status when the call failed (reset, timeout, no upstream).
#[derive(Clone, Copy, Debug)]
pub struct HttpResponse<'a> {
    /// `:status`.
    pub status: Option<u16>,
    /// `etag`, if any.
    pub etag: Option<&'a str>,
    /// The body.
    pub body: &'a [u8],
}

/// When the next call is due: a delay drawn between the service's bounds after each call.
#[derive(Debug)]
pub struct Schedule {
    next: Option<SystemTime>,
    seed: u64,
}

impl Schedule {
    /// A schedule whose first call is due at once.
    pub fn new(now: SystemTime) -> Self {
        let nanos = now.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos();
        Self { next: None, seed: (nanos as u64) | 1 }
    }

    /// Whether a call is due at `now`.
    pub fn due(&self, now: SystemTime) -> bool {
        self.next.is_none_or(|next| now >= next)
    }

    /// A call was made (or answered) at `now`: the next one is due after a delay between the
    /// service's `min_delay` and `max_delay`.
    pub fn after(&mut self, now: SystemTime, service: &ServiceConfig) {
        // xorshift64: spreads the proxies' calls, nothing secret depends on it.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let spread = service.max_delay.saturating_sub(service.min_delay);
        let jitter = spread.mul_f64((self.seed % 1_000) as f64 / 1_000.0);
        self.next = Some(now + service.min_delay + jitter);
    }
}

/// The call `method service.resource`, with svidgate's user agent and `extra` headers.
pub fn call(service: &ServiceConfig, method: &str, extra: Vec<(String, String)>, body: Vec<u8>) -> HttpCall {
    let mut headers = vec![
        (":method".to_owned(), method.to_owned()),
        (":path".to_owned(), service.resource.clone()),
        (":authority".to_owned(), service.authority.clone()),
        ("user-agent".to_owned(), format!("svidgate/{}", crate::VERSION)),
    ];
    headers.extend(extra);
    HttpCall { cluster: service.cluster.clone(), headers, body, timeout: service.timeout }
}

/// What one poll of a document came to, before the document is read.
#[derive(Debug)]
pub enum Polled<'a> {
    /// 304, or the bytes of the active document again: it is still current.
    NotModified,
    /// 200 with other bytes: read them, then [`DocumentPoller::activated`] if they are taken.
    Changed(&'a [u8]),
    /// The call failed or the service answered an error.
    Failed(String),
}

/// Polls one document with `If-None-Match`. Only an ETag of a document that was taken is ever
/// sent, so a 304 always confirms the active document, never one that was refused.
#[derive(Debug)]
pub struct DocumentPoller {
    service: ServiceConfig,
    schedule: Schedule,
    in_flight: bool,
    /// The ETag and a hash of the active document.
    etag: Option<String>,
    digest: Option<u64>,
    fetched: (Option<String>, Option<u64>),
}

impl DocumentPoller {
    /// A poller whose first call is due at once.
    pub fn new(service: ServiceConfig, now: SystemTime) -> Self {
        Self { service, schedule: Schedule::new(now), in_flight: false, etag: None, digest: None, fetched: (None, None) }
    }

    /// The service polled.
    pub fn service(&self) -> &ServiceConfig {
        &self.service
    }

    /// The call to make now, if one is due and none is in flight.
    pub fn poll(&mut self, now: SystemTime) -> Option<HttpCall> {
        if self.in_flight || !self.schedule.due(now) {
            return None;
        }
        self.in_flight = true;
        let conditional = self.etag.iter().map(|etag| ("if-none-match".to_owned(), etag.clone())).collect();
        Some(call(&self.service, "GET", conditional, Vec::new()))
    }

    /// Digests the answer to the call [`poll`](Self::poll) returned.
    pub fn on_response<'a>(&mut self, now: SystemTime, response: HttpResponse<'a>) -> Polled<'a> {
        self.in_flight = false;
        self.schedule.after(now, &self.service);
        match response.status {
            Some(304) if self.etag.is_some() => Polled::NotModified,
            Some(200) => {
                let digest = hash(response.body);
                // A server without ETags (or one that ignores If-None-Match) resends the same bytes;
                // a republished file brings them with a new ETag, which later polls then send.
                if self.digest == Some(digest) {
                    if let Some(etag) = response.etag {
                        self.etag = Some(etag.to_owned());
                    }
                    return Polled::NotModified;
                }
                self.fetched = (response.etag.map(str::to_owned), Some(digest));
                Polled::Changed(response.body)
            }
            Some(status) => Polled::Failed(format!("service answered {status}")),
            None => Polled::Failed("no response (connection failure, reset or timeout)".to_owned()),
        }
    }

    /// The document last fetched was taken: later polls ask whether it changed.
    pub fn activated(&mut self) {
        (self.etag, self.digest) = std::mem::take(&mut self.fetched);
    }
}

/// A hash of a document's bytes (not a security check: the bytes came over the cluster's transport).
fn hash(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}
