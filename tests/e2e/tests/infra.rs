//! The test servers themselves: nginx serves bundles with ETags and 304s, goes down and comes
//! back on the same port; the log sink takes gzip JSON uploads, fails on demand and counts
//! malformed ones. Spoken to with the suite's plain HTTP/1.1 client, so nothing of Envoy's or
//! svidgate's is involved.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use svidgate_e2e::client::{self, Request, Response};
use svidgate_e2e::logsink::LogSink;
use svidgate_e2e::nginx::{Nginx, Served};
use svidgate_e2e::topology::RunDir;
use svidgate_e2e::wait;
use tokio::net::TcpStream;

/// One plain HTTP/1.1 request, answered within 10 s.
async fn send(port: u16, request: &Request) -> Result<Response> {
    tokio::time::timeout(Duration::from_secs(10), client::plain(port, request)).await.context("no answer in 10 s")?
}

/// nginx's access log once it has `lines` lines. nginx writes a request's line after sending the
/// response, so a client that has read the response may be ahead of the log.
async fn access_log(nginx: &Nginx, lines: usize) -> Result<Vec<Served>> {
    let timeout = Duration::from_secs(5);
    let served = wait::until(Duration::from_millis(20), timeout, async || {
        let served = nginx.served()?;
        Ok((served.len() >= lines).then_some(served))
    })
    .await?;
    served.with_context(|| format!("nginx's access log has fewer than {lines} lines after {timeout:?}"))
}

fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

#[tokio::test]
async fn nginx_serves_with_etag_answers_304_and_survives_stop_and_restart() {
    let run = RunDir::new("infra-nginx").unwrap();
    let root = run.path().join("www");
    std::fs::create_dir_all(&root).unwrap();
    let mut nginx = Nginx::start(&root, run.path()).unwrap();
    let port = nginx.port();
    let etag = nginx.publish("bundles/authz.tar.gz", b"first bundle").unwrap();

    let bundle = Request::new("GET", "/bundles/authz.tar.gz");
    let first = send(port, &bundle).await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, "first bundle");
    assert_eq!(first.header_values("etag"), [etag.as_str()]);
    assert_eq!(first.header_values("content-type"), ["application/gzip"]);

    let unchanged = send(port, &bundle.clone().header("if-none-match", &etag)).await.unwrap();
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());
    assert_eq!(unchanged.header_values("etag"), [etag.as_str()]);

    // Same size, same second: publish still gives a new ETag, so the old one no longer matches.
    let next = nginx.publish("bundles/authz.tar.gz", b"other bundle").unwrap();
    assert_ne!(next, etag);
    let changed = send(port, &bundle.clone().header("if-none-match", &etag)).await.unwrap();
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, "other bundle");
    assert_eq!(changed.header_values("etag"), [next.as_str()]);

    assert_eq!(send(port, &Request::new("GET", "/missing.tar.gz")).await.unwrap().status, 404);

    // Killed at once, nginx would lose the 404's line were it not written yet.
    access_log(&nginx, 4).await.unwrap();
    nginx.stop();
    assert!(!nginx.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port)).await.expect_err("nginx still accepts after stop");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");

    nginx.restart().unwrap();
    assert_eq!(nginx.port(), port);
    let again = send(port, &bundle.header("if-none-match", &next)).await.unwrap();
    assert_eq!(again.status, 304, "the ETag survives a restart");

    let served: Vec<(u16, String)> =
        access_log(&nginx, 5).await.unwrap().into_iter().map(|s| (s.status, s.if_none_match)).collect();
    assert_eq!(
        served,
        vec![(200, String::new()), (304, etag.clone()), (200, etag), (404, String::new()), (304, next)],
        "the access log records every request across the restart"
    );
}

#[tokio::test]
async fn log_sink_takes_gzip_json_uploads_and_counts_malformed_ones() {
    let sink = LogSink::start().unwrap();
    let port = sink.port();
    let upload = gzip(
        json!([{"decision_id": "1", "result": true}, {"decision_id": "2", "result": false}]).to_string().as_bytes(),
    )
    .unwrap();
    let gzip_json =
        Request::new("POST", "/logs").header("content-encoding", "gzip").header("content-type", "application/json");

    let accepted = send(port, &gzip_json.clone().body(upload.clone())).await.unwrap();
    assert_eq!(accepted.status, 204);
    let events = sink.wait_for(|events| events.len() == 2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(events[0]["decision_id"], "1");
    assert_eq!(events[1]["result"], false);
    assert_eq!(sink.malformed(), 0);

    // A failing collector: the upload is recorded, its events are not kept.
    sink.set_status(500);
    assert_eq!(send(port, &gzip_json.clone().body(upload)).await.unwrap().status, 500);
    sink.set_status(204);
    assert_eq!(sink.events().len(), 2);

    // Labelled gzip but plain JSON, then gzip of something that is not an array.
    assert_eq!(send(port, &gzip_json.clone().body(b"[{}]")).await.unwrap().status, 400);
    assert_eq!(send(port, &gzip_json.body(gzip(b"{}").unwrap())).await.unwrap().status, 400);
    assert_eq!(send(port, &Request::new("GET", "/logs")).await.unwrap().status, 405);
    assert_eq!(sink.malformed(), 3);
    assert_eq!(sink.events().len(), 2);

    let requests = sink.requests();
    let seen: Vec<(&str, u16, usize)> =
        requests.iter().map(|r| (r.method.as_str(), r.status, r.events_count)).collect();
    assert_eq!(seen, vec![("POST", 204, 2), ("POST", 500, 2), ("POST", 400, 0), ("POST", 400, 0), ("GET", 405, 0)]);
    assert_eq!(requests[0].path, "/logs");
    assert_eq!(requests[0].content_encoding.as_deref(), Some("gzip"));
    assert_eq!(requests[0].content_type.as_deref(), Some("application/json"));
    assert!(requests[2].error.as_deref().unwrap().contains("gzip"));

    let timed_out = sink.wait_for(|events| events.len() > 2, Duration::from_millis(100)).await.unwrap_err();
    assert!(format!("{timed_out:#}").contains("3 malformed"), "{timed_out:#}");
}
