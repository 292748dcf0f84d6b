//! The test servers themselves: nginx serves bundles with ETags and 304s, goes down and comes
//! back on the same port; the log sink takes gzip JSON uploads, fails on demand and counts
//! malformed ones. Spoken to over raw HTTP/1.1, so nothing of Envoy's or svidgate's is involved.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use flate2::Compression;
use flate2::write::GzEncoder;
use serde_json::json;
use svidgate_e2e::logsink::LogSink;
use svidgate_e2e::nginx::Nginx;
use svidgate_e2e::topology::RunDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response as read off the wire.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 request on its own connection (`connection: close`), read to the end.
async fn exchange(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Result<Reply> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.write_all(body).await?;
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw)).await??;
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").context("no end of headers")?;
    let head = String::from_utf8(raw.get(..end).unwrap_or_default().to_vec())?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').with_context(|| format!("bad header line {line:?}"))?;
            Ok((name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        })
        .collect::<Result<_>>()?;
    Ok(Reply { status, headers, body: raw.get(end + 4..).unwrap_or_default().to_vec() })
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

    let first = exchange(port, "GET", "/bundles/authz.tar.gz", &[], b"").await.unwrap();
    assert_eq!(first.status, 200);
    assert_eq!(first.body, b"first bundle");
    assert_eq!(first.header("etag"), Some(etag.as_str()));
    assert_eq!(first.header("content-type"), Some("application/gzip"));

    let unchanged = exchange(port, "GET", "/bundles/authz.tar.gz", &[("if-none-match", &etag)], b"").await.unwrap();
    assert_eq!(unchanged.status, 304);
    assert!(unchanged.body.is_empty());
    assert_eq!(unchanged.header("etag"), Some(etag.as_str()));

    // Same size, same second: publish still gives a new ETag, so the old one no longer matches.
    let next = nginx.publish("bundles/authz.tar.gz", b"other bundle").unwrap();
    assert_ne!(next, etag);
    let changed = exchange(port, "GET", "/bundles/authz.tar.gz", &[("if-none-match", &etag)], b"").await.unwrap();
    assert_eq!(changed.status, 200);
    assert_eq!(changed.body, b"other bundle");
    assert_eq!(changed.header("etag"), Some(next.as_str()));

    assert_eq!(exchange(port, "GET", "/missing.tar.gz", &[], b"").await.unwrap().status, 404);

    nginx.stop();
    assert!(!nginx.is_running());
    let refused = TcpStream::connect(("127.0.0.1", port)).await.expect_err("nginx still accepts after stop");
    assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");

    nginx.restart().unwrap();
    assert_eq!(nginx.port(), port);
    let again = exchange(port, "GET", "/bundles/authz.tar.gz", &[("if-none-match", &next)], b"").await.unwrap();
    assert_eq!(again.status, 304, "the ETag survives a restart");

    let served: Vec<(u16, String)> = nginx.served().unwrap().into_iter().map(|s| (s.status, s.if_none_match)).collect();
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
    let gzip_json = [("content-encoding", "gzip"), ("content-type", "application/json")];

    let accepted = exchange(port, "POST", "/logs", &gzip_json, &upload).await.unwrap();
    assert_eq!(accepted.status, 204);
    let events = sink.wait_for(|events| events.len() == 2, Duration::from_secs(5)).await.unwrap();
    assert_eq!(events[0]["decision_id"], "1");
    assert_eq!(events[1]["result"], false);
    assert_eq!(sink.malformed(), 0);

    // A failing collector: the upload is recorded, its events are not kept.
    sink.set_status(500);
    assert_eq!(exchange(port, "POST", "/logs", &gzip_json, &upload).await.unwrap().status, 500);
    sink.set_status(204);
    assert_eq!(sink.events().len(), 2);

    // Labelled gzip but plain JSON, then gzip of something that is not an array.
    assert_eq!(exchange(port, "POST", "/logs", &gzip_json, b"[{}]").await.unwrap().status, 400);
    assert_eq!(exchange(port, "POST", "/logs", &gzip_json, &gzip(b"{}").unwrap()).await.unwrap().status, 400);
    assert_eq!(exchange(port, "GET", "/logs", &[], b"").await.unwrap().status, 405);
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
