//! Talking to OPA-style services through an Envoy cluster, host-free: the bundle poller and the
//! decision-log uploader are state machines that say which HTTP call to make and digest the
//! answer. The proxy glue only dispatches the calls and feeds responses back.

use std::collections::VecDeque;
use std::time::SystemTime;

use super::bundle::{Bundle, BundleError};
use super::gzip;
use crate::config::{BundleConfig, LogServiceConfig};
use crate::host::HttpCall;
pub use crate::service::HttpResponse;
use crate::service::{DocumentPoller, Polled, Schedule, call};

/// What one bundle poll came to.
#[derive(Debug)]
pub enum Fetched {
    /// 304: the active bundle is still current.
    NotModified,
    /// 200 with a bundle that reads; compile it, then [`BundlePoller::activated`] if it compiles.
    Bundle(Bundle),
    /// The call failed or the service answered an error.
    Failed(String),
    /// The bundle does not read.
    Rejected(BundleError),
}

/// Polls the bundle service with `If-None-Match`.
#[derive(Debug)]
pub struct BundlePoller {
    config: BundleConfig,
    document: DocumentPoller,
}

impl BundlePoller {
    /// A poller whose first call is due at once.
    pub fn new(config: BundleConfig, now: SystemTime) -> Self {
        Self { document: DocumentPoller::new(config.service.clone(), now), config }
    }

    /// The configuration.
    pub fn config(&self) -> &BundleConfig {
        &self.config
    }

    /// The call to make now, if one is due and none is in flight.
    pub fn poll(&mut self, now: SystemTime) -> Option<HttpCall> {
        self.document.poll(now)
    }

    /// Digests the answer to the call [`poll`](Self::poll) returned.
    pub fn on_response(&mut self, now: SystemTime, response: HttpResponse<'_>) -> Fetched {
        match self.document.on_response(now, response) {
            Polled::NotModified => Fetched::NotModified,
            Polled::Changed(body) => match Bundle::from_tar_gz(body, self.config.max_bytes) {
                Ok(bundle) => Fetched::Bundle(bundle),
                Err(error) => Fetched::Rejected(error),
            },
            Polled::Failed(why) => Fetched::Failed(why),
        }
    }

    /// The bundle last fetched compiled and is active: later polls ask whether it changed.
    pub fn activated(&mut self) {
        self.document.activated();
    }
}

/// What one decision-log upload came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uploaded {
    /// The receiver took this many records.
    Sent(usize),
    /// The upload failed; its records went back to the buffer, less this many dropped.
    Failed {
        /// Records that no longer fit and were dropped.
        dropped: usize,
    },
}

/// A bounded buffer of decision-log records, uploaded in gzip-compressed JSON arrays (OPA's format).
#[derive(Debug)]
pub struct LogUploader {
    config: LogServiceConfig,
    schedule: Schedule,
    buffer: VecDeque<String>,
    buffered_bytes: usize,
    in_flight: Vec<String>,
}

impl LogUploader {
    /// An empty uploader; the first batch goes out after `min_delay`.
    pub fn new(config: LogServiceConfig, now: SystemTime) -> Self {
        let mut schedule = Schedule::new(now);
        schedule.after(now, &config.service);
        Self { config, schedule, buffer: VecDeque::new(), buffered_bytes: 0, in_flight: Vec::new() }
    }

    /// Buffers one record; false (dropped) when the buffer is full.
    pub fn push(&mut self, record: String) -> bool {
        if self.buffered_bytes + record.len() > self.config.buffer_bytes {
            return false;
        }
        self.buffered_bytes += record.len();
        self.buffer.push_back(record);
        true
    }

    /// Records waiting, not counting an upload in flight.
    pub fn buffered(&self) -> usize {
        self.buffer.len()
    }

    /// The upload to make now: when the delay is over, or a full batch is waiting.
    pub fn poll(&mut self, now: SystemTime) -> Option<HttpCall> {
        let full = self.buffered_bytes >= self.config.upload_bytes;
        if !self.in_flight.is_empty() || self.buffer.is_empty() || !(full || self.schedule.due(now)) {
            return None;
        }
        let mut size = 0;
        while let Some(record) = self.buffer.front() {
            if !self.in_flight.is_empty() && size + record.len() > self.config.upload_bytes {
                break;
            }
            size += record.len();
            self.in_flight.extend(self.buffer.pop_front());
        }
        self.buffered_bytes -= size;
        let body = format!("[{}]", self.in_flight.join(","));
        let headers = vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("content-encoding".to_owned(), "gzip".to_owned()),
        ];
        Some(call(&self.config.service, "POST", headers, gzip::encode(body.as_bytes())))
    }

    /// Digests the answer to the upload [`poll`](Self::poll) returned.
    pub fn on_response(&mut self, now: SystemTime, status: Option<u16>) -> Uploaded {
        self.schedule.after(now, &self.config.service);
        let batch = std::mem::take(&mut self.in_flight);
        if status.is_some_and(|s| (200..300).contains(&s)) {
            return Uploaded::Sent(batch.len());
        }
        // Back to the front, oldest first; what no longer fits is dropped (newest of the batch first).
        let mut dropped = 0;
        for record in batch.into_iter().rev() {
            if self.buffered_bytes + record.len() > self.config.buffer_bytes {
                dropped += 1;
            } else {
                self.buffered_bytes += record.len();
                self.buffer.push_front(record);
            }
        }
        Uploaded::Failed { dropped }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::bundle::tests::tar_gz;
    use super::*;

    fn policy(block: &str) -> crate::config::PolicyConfig {
        let json = format!(r#"{{"trust_domains": ["ai.internal"], "policy": {block}}}"#);
        crate::config::Config::parse(crate::config::ModuleKind::Authz, json.as_bytes()).unwrap().policy.unwrap()
    }

    fn header<'a>(call: &'a HttpCall, name: &str) -> Option<&'a str> {
        call.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    const T0: SystemTime = SystemTime::UNIX_EPOCH;

    #[test]
    fn polls_with_etag_once_a_bundle_is_active_and_waits_between_polls() {
        let config =
            policy(r#"{"bundle": {"cluster": "b", "resource": "/b.tar.gz", "min_delay": "10s", "max_delay": "20s"}}"#)
                .bundle
                .unwrap();
        let mut poller = BundlePoller::new(config, T0);
        let first = poller.poll(T0).unwrap();
        assert_eq!(header(&first, ":path"), Some("/b.tar.gz"));
        assert_eq!(header(&first, "if-none-match"), None);
        assert!(poller.poll(T0).is_none(), "one call in flight at a time");
        let body = tar_gz(&[("p.rego", "package envoy.authz\ndefault allow := false\n")]);
        let fetched = poller.on_response(T0, HttpResponse { status: Some(200), etag: Some("\"v1\""), body: &body });
        assert!(matches!(fetched, Fetched::Bundle(_)));
        poller.activated();
        assert!(poller.poll(T0 + Duration::from_secs(9)).is_none());
        let second = poller.poll(T0 + Duration::from_secs(21)).unwrap();
        assert_eq!(header(&second, "if-none-match"), Some("\"v1\""));
        let at = T0 + Duration::from_secs(21);
        assert!(matches!(
            poller.on_response(at, HttpResponse { status: Some(304), etag: None, body: &[] }),
            Fetched::NotModified
        ));
        let third = poller.poll(at + Duration::from_secs(21)).unwrap();
        assert_eq!(header(&third, "if-none-match"), Some("\"v1\""));
        let failed = poller.on_response(at, HttpResponse { status: None, etag: None, body: &[] });
        assert!(matches!(failed, Fetched::Failed(_)));
        let garbage = poller.on_response(at, HttpResponse { status: Some(200), etag: Some("\"v2\""), body: b"nope" });
        assert!(matches!(garbage, Fetched::Rejected(BundleError::Gzip(_))));
        // A rejected bundle's ETag is never sent: 304 must only ever confirm the active bundle.
        let next = poller.poll(at + Duration::from_secs(21)).unwrap();
        assert_eq!(header(&next, "if-none-match"), Some("\"v1\""));
        // The same bytes again, without an ETag: nothing to compile.
        let same = poller.on_response(at, HttpResponse { status: Some(200), etag: None, body: &body });
        assert!(matches!(same, Fetched::NotModified), "{same:?}");
        // The same bytes republished under a new ETag: that ETag is asked about from now on.
        let next = poller.poll(at + Duration::from_secs(21)).unwrap();
        assert_eq!(header(&next, "if-none-match"), Some("\"v1\""));
        let republished = poller.on_response(at, HttpResponse { status: Some(200), etag: Some("\"v3\""), body: &body });
        assert!(matches!(republished, Fetched::NotModified), "{republished:?}");
        let next = poller.poll(at + Duration::from_secs(21)).unwrap();
        assert_eq!(header(&next, "if-none-match"), Some("\"v3\""));
    }

    #[test]
    fn uploads_gzip_json_batches_and_keeps_failed_ones_within_the_bound() {
        let service = r#"{"cluster": "siem", "min_delay": "5s", "max_delay": "5s", "upload_bytes": 20, "max_bytes": 40}"#;
        let config = policy(&format!(r#"{{"rego": "package x", "decision_logs": {{"service": {service}}}}}"#))
            .decision_logs
            .and_then(|logs| logs.service)
            .unwrap();
        let mut uploader = LogUploader::new(config, T0);
        assert!(uploader.push(r#"{"n":1}"#.into()));
        assert!(uploader.poll(T0).is_none(), "not due, batch not full");
        assert!(uploader.push(r#"{"n":2}"#.into()));
        assert!(uploader.push(r#"{"n":3}"#.into()));
        let call = uploader.poll(T0).unwrap();
        assert_eq!(header(&call, ":method"), Some("POST"));
        assert_eq!(header(&call, "content-encoding"), Some("gzip"));
        let body = gzip::decode(&call.body, 1 << 20).unwrap();
        assert_eq!(String::from_utf8(body).unwrap(), r#"[{"n":1},{"n":2}]"#);
        assert_eq!(uploader.buffered(), 1);
        for n in 4..=7 {
            uploader.push(format!(r#"{{"n":{n}}}"#));
        }
        assert_eq!(uploader.buffered(), 5, "40 bytes hold five records");
        assert!(!uploader.push(r#"{"n":8}"#.into()), "full: dropped");
        assert_eq!(uploader.on_response(T0, Some(503)), Uploaded::Failed { dropped: 2 });
        assert_eq!(uploader.buffered(), 5);
        let retry = uploader.poll(T0 + Duration::from_secs(5)).unwrap();
        let body = String::from_utf8(gzip::decode(&retry.body, 1 << 20).unwrap()).unwrap();
        assert_eq!(body, r#"[{"n":3},{"n":4}]"#);
        assert_eq!(uploader.on_response(T0, Some(204)), Uploaded::Sent(2));
    }
}
