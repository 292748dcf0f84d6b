//! A decision-log collector: an HTTP/1.1 server on loopback that takes uploads in OPA's
//! decision-log format (a POST whose body is a JSON array of events, gzip-compressed with
//! `content-encoding: gzip`, or uncompressed without a content-encoding or with `identity`) and
//! keeps every event and every request for the test to inspect.
//!
//! It runs on its own thread with its own tokio runtime, so a test may block or await as it
//! likes. An upload is answered with the configured status (204 unless [`LogSink::set_status`]
//! says otherwise, to simulate a failing collector); events are stored only when that status is
//! a success, as an uploader retries a failed upload. A body labelled gzip that is not valid
//! gzip, any other content-encoding, or a body that is not a JSON array (or any request that is
//! not a POST) is answered 400 (405) and counted in [`LogSink::malformed`], which tests assert
//! stays zero.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use flate2::read::GzDecoder;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::wait;

/// How often [`LogSink::wait_for`] looks again.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A running collector; stops (and its thread ends) on drop.
pub struct LogSink {
    port: u16,
    state: Arc<Mutex<State>>,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

/// One request as the collector received it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The method.
    pub method: String,
    /// The path and query.
    pub path: String,
    /// The `content-encoding` header, if any.
    pub content_encoding: Option<String>,
    /// The `content-type` header, if any.
    pub content_type: Option<String>,
    /// How many events the body held (0 when it was malformed).
    pub events_count: usize,
    /// The status answered.
    pub status: u16,
    /// Why the body was refused, for a malformed request.
    pub error: Option<String>,
}

#[derive(Debug)]
struct State {
    status: u16,
    events: Vec<Value>,
    requests: Vec<Request>,
    malformed: usize,
}

impl LogSink {
    /// Starts the collector on a free loopback port.
    pub fn start() -> Result<Self> {
        let listener =
            std::net::TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).context("binding the log sink")?;
        let port = listener.local_addr()?.port();
        listener.set_nonblocking(true)?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the log sink runtime")?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let state = Arc::new(Mutex::new(State { status: 204, events: Vec::new(), requests: Vec::new(), malformed: 0 }));
        let (shutdown, stop) = oneshot::channel();
        let shared = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name(format!("logsink-{port}"))
            .spawn(move || runtime.block_on(serve(listener, shared, stop)))
            .context("starting the log sink thread")?;
        Ok(Self { port, state, shutdown: Some(shutdown), thread: Some(thread) })
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Answers later uploads with `status` (204 at start); events of a non-2xx answer are not kept.
    pub fn set_status(&self, status: u16) {
        self.lock().status = status;
    }

    /// Every event accepted so far, in arrival order.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Every request received so far, in arrival order, failed and malformed ones included.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.clone()
    }

    /// How many requests were refused as malformed (not a POST, labelled gzip but not gzip, another
    /// content-encoding, not a JSON array).
    pub fn malformed(&self) -> usize {
        self.lock().malformed
    }

    /// Waits until the accepted events satisfy `done`, and returns them; `Err` after `timeout`
    /// says what arrived instead.
    pub async fn wait_for(&self, done: impl Fn(&[Value]) -> bool, timeout: Duration) -> Result<Vec<Value>> {
        let events = wait::until(POLL_INTERVAL, timeout, async || {
            let events = self.events();
            Ok(done(&events).then_some(events))
        })
        .await?;
        events.with_context(|| {
            format!("the log sink did not get the expected events in {timeout:?}; it has:\n{}", self.summary())
        })
    }

    /// What it has received, for failure messages.
    pub fn summary(&self) -> String {
        let state = self.lock();
        let mut out = format!(
            "{} requests, {} events, {} malformed\n",
            state.requests.len(),
            state.events.len(),
            state.malformed
        );
        for request in &state.requests {
            let error = request.error.as_deref().map(|e| format!(" error: {e}")).unwrap_or_default();
            out.push_str(&format!(
                "  {} {} -> {} ({} events, content-encoding {:?}){error}\n",
                request.method, request.path, request.status, request.events_count, request.content_encoding
            ));
        }
        for event in state.events.iter().rev().take(5).rev() {
            out.push_str(&format!("  event: {event}\n"));
        }
        out
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Drop for LogSink {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            // Err: the server already stopped.
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The events of an upload body: gunzipped when `content_encoding` is gzip, then a JSON array.
pub fn decode_upload(content_encoding: Option<&str>, body: &[u8]) -> Result<Vec<Value>> {
    let json = match content_encoding.map(str::trim) {
        None | Some("" | "identity") => body.to_vec(),
        Some(gzip) if gzip.eq_ignore_ascii_case("gzip") => {
            let mut out = Vec::new();
            GzDecoder::new(body).read_to_end(&mut out).context("body is not valid gzip")?;
            out
        }
        Some(other) => bail!("unsupported content-encoding {other:?}"),
    };
    match serde_json::from_slice(&json).context("body is not JSON")? {
        Value::Array(events) => Ok(events),
        other => bail!("body is JSON but not an array: {}", kind(&other)),
    }
}

/// Accepts connections until `stop` fires (or its sender is dropped).
async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<State>>, mut stop: oneshot::Receiver<()>) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => {
                // A failed accept (e.g. the peer reset first) concerns that connection only.
                let Ok((stream, _)) = accepted else { continue };
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(request, Arc::clone(&state)));
                    // Errors are the peer's (reset, bad HTTP): nothing to record.
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
        }
    }
}

async fn handle(
    request: hyper::Request<Incoming>,
    state: Arc<Mutex<State>>,
) -> hyper::Result<hyper::Response<Full<Bytes>>> {
    let (parts, body) = request.into_parts();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body = body.collect().await?.to_bytes();
    let decoded = if parts.method == Method::POST {
        decode_upload(header("content-encoding").as_deref(), &body)
            .map_err(|e| (StatusCode::BAD_REQUEST, format!("{e:#}")))
    } else {
        Err((StatusCode::METHOD_NOT_ALLOWED, format!("method {} is not POST", parts.method)))
    };
    let mut record = Request {
        method: parts.method.to_string(),
        path: parts.uri.path_and_query().map_or_else(|| parts.uri.to_string(), ToString::to_string),
        content_encoding: header("content-encoding"),
        content_type: header("content-type"),
        events_count: 0,
        status: 0,
        error: None,
    };
    let mut state = lock(&state);
    let (status, reply) = match decoded {
        Ok(events) => {
            let status = StatusCode::from_u16(state.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            record.events_count = events.len();
            if status.is_success() {
                state.events.extend(events);
            }
            (status, String::new())
        }
        Err((status, error)) => {
            state.malformed += 1;
            record.error = Some(error.clone());
            (status, format!("{error}\n"))
        }
    };
    record.status = status.as_u16();
    state.requests.push(record);
    drop(state);
    let mut response = hyper::Response::new(Full::new(Bytes::from(reply)));
    *response.status_mut() = status;
    Ok(response)
}

/// A poisoned lock only means a test thread panicked while holding it; the data is still whole.
fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::Compression;
    use flate2::write::GzEncoder;
    use serde_json::json;

    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn decodes_a_gzip_json_array() {
        let events = decode_upload(Some("gzip"), &gzip(br#"[{"decision_id":"a"},{"decision_id":"b"}]"#)).unwrap();
        assert_eq!(events, vec![json!({"decision_id": "a"}), json!({"decision_id": "b"})]);
    }

    #[test]
    fn decodes_an_uncompressed_json_array() {
        assert_eq!(decode_upload(None, b"[1]").unwrap(), vec![json!(1)]);
    }

    #[test]
    fn refuses_a_body_labelled_gzip_that_is_not() {
        let error = decode_upload(Some("gzip"), b"[1]").unwrap_err();
        assert!(format!("{error:#}").contains("not valid gzip"), "{error:#}");
    }

    #[test]
    fn refuses_json_that_is_not_an_array() {
        let error = decode_upload(Some("gzip"), &gzip(br#"{"decision_id":"a"}"#)).unwrap_err();
        assert!(format!("{error:#}").contains("not an array"), "{error:#}");
    }

    #[test]
    fn refuses_an_unknown_content_encoding() {
        assert!(decode_upload(Some("br"), b"[1]").is_err());
    }
}
