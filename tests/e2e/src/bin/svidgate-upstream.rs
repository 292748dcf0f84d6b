//! `svidgate-upstream --name NAME`: the small app behind a demo sidecar.
//!
//! It listens on a free loopback port (printed first: `listening 127.0.0.1:PORT`) and answers
//! every request with JSON naming the service, the method, the path, the request target as
//! received (path and query, undecoded), every header name as received (in order, repeats kept),
//! every `x-forwarded-spiffe-id` value and the body (as text); it prints the same JSON as one
//! line on stdout, so tests can check what reached it (and what did not). A request carrying
//! `x-request-marker` is also announced as soon as its headers arrive, before its body is read
//! (`{"arrived": MARKER}`), so tests can tell whether a proxy held the request for its body.

use std::convert::Infallible;
use std::io::Write;
use std::sync::Arc;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The identity header the app reports.
const IDENTITY_HEADER: &str = "x-forwarded-spiffe-id";
/// A header tests set to find their requests in the log.
const MARKER_HEADER: &str = "x-request-marker";

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let name = match (args.next().as_deref(), args.next()) {
        (Some("--name"), Some(name)) => name,
        _ => anyhow::bail!("usage: svidgate-upstream --name NAME"),
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.context("binding a loopback port")?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let name: Arc<str> = name.into();
    loop {
        let (stream, _) = listener.accept().await?;
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let service = service_fn(move |request| answer(Arc::clone(&name), request));
            // A client that goes away mid-request is not the app's problem.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn answer(name: Arc<str>, request: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if let Some(marker) = request.headers().get(MARKER_HEADER) {
        println!("{}", serde_json::json!({"arrived": String::from_utf8_lossy(marker.as_bytes())}));
        let _ = std::io::stdout().flush();
    }
    let (parts, body) = request.into_parts();
    // A body that fails midway (the client went away) is reported as far as it came.
    let body = body.collect().await.map(|body| body.to_bytes()).unwrap_or_default();
    let values = |header: &str| -> Vec<String> {
        parts
            .headers
            .get_all(header)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    };
    let report = serde_json::json!({
        "service": &*name,
        "method": parts.method.as_str(),
        "path": parts.uri.path(),
        "target": parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or_default(),
        "header_names": parts.headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>(),
        IDENTITY_HEADER: values(IDENTITY_HEADER),
        "marker": values(MARKER_HEADER).first(),
        "body": String::from_utf8_lossy(&body),
    });
    let line = report.to_string();
    println!("{line}");
    let _ = std::io::stdout().flush();
    let response = Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(line + "\n")))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())));
    Ok(response)
}
