//! A small HTTP client: HTTP/1.1 or HTTP/2 over TLS (with or without a client SVID) with rustls
//! and its `ring` provider, and plain HTTP/1.1 for sidecar outbound listeners and Envoy's admin API.
//!
//! One connection per request, so each request shows the handshake outcome on its own; the
//! benchmark's load keeps connections alive ([`KeptAlive`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request as HttpRequest;
use hyper::header::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::pki::{CertFiles, SERVER_NAME};

/// How long one request may take, handshake included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(20);

/// Which HTTP version to speak (negotiated with ALPN on TLS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Http {
    /// HTTP/1.1; header names go out Title-Cased.
    H1,
    /// HTTP/2.
    H2,
}

/// A request to send.
#[derive(Clone, Debug)]
pub struct Request {
    /// Method, e.g. `POST`.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Extra headers, in order; a name may repeat. Values are bytes: HTTP allows values that
    /// are not UTF-8 (obs-text).
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (empty for none).
    pub body: Vec<u8>,
}

/// A response as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, lower-case names, in order.
    pub headers: Vec<(String, String)>,
    /// The body, as text.
    pub body: String,
}

/// A TLS client for one trust bundle and, optionally, one client certificate.
#[derive(Clone)]
pub struct TlsClient {
    h1: TlsConnector,
    h2: TlsConnector,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: &str, path: &str) -> Self {
        Self { method: method.to_owned(), path: path.to_owned(), headers: Vec::new(), body: Vec::new() }
    }

    /// Adds a header (after any of the same name).
    pub fn header(self, name: &str, value: &str) -> Self {
        self.header_bytes(name, value.as_bytes())
    }

    /// Adds a header whose value is any bytes HTTP allows, UTF-8 or not.
    pub fn header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers.push((name.to_owned(), value.to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

impl Response {
    /// Every value of a header, by lower-case name.
    pub fn header_values(&self, name: &str) -> Vec<&str> {
        self.headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    /// The body as JSON.
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_str(&self.body).with_context(|| format!("response body is not json: {:?}", self.body))
    }
}

impl TlsClient {
    /// Trusts `bundle` and presents `identity` (if any) as the client certificate.
    pub fn new(bundle: &Path, identity: Option<&CertFiles>) -> Result<Self> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(bundle).with_context(|| format!("reading {}", bundle.display()))? {
            roots.add(cert?)?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let connector = |alpn: &[u8]| -> Result<TlsConnector> {
            let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots.clone());
            let mut config = match identity {
                Some(files) => {
                    let chain = CertificateDer::pem_file_iter(&files.cert)?.collect::<Result<Vec<_>, _>>()?;
                    let key = PrivateKeyDer::from_pem_file(&files.key)?;
                    builder.with_client_auth_cert(chain, key)?
                }
                None => builder.with_no_client_auth(),
            };
            config.alpn_protocols = vec![alpn.to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        };
        Ok(Self { h1: connector(b"http/1.1")?, h2: connector(b"h2")? })
    }

    /// Sends one request to `127.0.0.1:port` on a new connection.
    pub async fn send(&self, port: u16, http: Http, request: &Request) -> Result<Response> {
        tokio::time::timeout(REQUEST_TIMEOUT, self.send_inner(port, http, request))
            .await
            .with_context(|| format!("{} {} timed out", request.method, request.path))?
    }

    /// Completes a TLS handshake (ALPN h2) and waits for the server's first bytes: an HTTP/2
    /// server speaks first (SETTINGS), so `Ok` means the server accepted this client. With TLS 1.3
    /// a server rejects a client certificate after the client's side of the handshake is done,
    /// so the alert only shows on this first read; `Err` carries it.
    pub async fn handshake(&self, port: u16) -> Result<()> {
        tokio::time::timeout(REQUEST_TIMEOUT, async {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let mut tls = self.h2.connect(ServerName::try_from(SERVER_NAME)?, tcp).await.context("tls handshake")?;
            let mut first = [0u8; 1];
            let read = tls.read(&mut first).await.context("first read after the handshake")?;
            ensure!(read == 1, "the server closed the connection without a tls alert");
            Ok(())
        })
        .await
        .context("handshake timed out")?
    }

    async fn send_inner(&self, port: u16, http: Http, request: &Request) -> Result<Response> {
        let body = Full::new(Bytes::from(request.body.clone()));
        self.exchange(port, http, request, body).await
    }

    /// Starts a request whose body goes out chunk by chunk ([`Streaming::send`]), without a
    /// `content-length` (chunked over HTTP/1.1); its headers go out at once.
    pub async fn stream(&self, port: u16, http: Http, request: &Request) -> Result<Streaming> {
        let (chunks, receiver) = tokio::sync::mpsc::channel(8);
        let client = self.clone();
        let request = request.clone();
        let response = tokio::spawn(async move {
            tokio::time::timeout(REQUEST_TIMEOUT, client.exchange(port, http, &request, ChunkBody(receiver)))
                .await
                .context("streamed request timed out")?
        });
        Ok(Streaming { chunks, response })
    }

    async fn exchange<B>(&self, port: u16, http: Http, request: &Request, body: B) -> Result<Response>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("connecting to port {port}"))?;
        let connector = match http {
            Http::H1 => &self.h1,
            Http::H2 => &self.h2,
        };
        let name = ServerName::try_from(SERVER_NAME)?;
        let tls = connector.connect(name, tcp).await.context("tls handshake")?;
        let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
        let io = TokioIo::new(tls);
        match http {
            Http::H1 => {
                ensure!(alpn.as_deref() == Some(b"http/1.1".as_slice()), "server did not agree to http/1.1 ({alpn:?})");
                let (mut sender, connection) =
                    hyper::client::conn::http1::Builder::new().title_case_headers(true).handshake(io).await?;
                let connection = tokio::spawn(connection);
                let response = sender.send_request(build(request, &format!("localhost:{port}"), None, body)?).await;
                collect(with_connection_error(response, connection, "http/1.1").await?).await
            }
            Http::H2 => {
                ensure!(alpn.as_deref() == Some(b"h2".as_slice()), "server did not agree to h2 ({alpn:?})");
                let (mut sender, connection) =
                    hyper::client::conn::http2::Builder::new(TokioExecutor::new()).handshake(io).await?;
                let connection = tokio::spawn(connection);
                let uri = format!("https://localhost:{port}");
                let response =
                    sender.send_request(build(request, &format!("localhost:{port}"), Some(&uri), body)?).await;
                collect(with_connection_error(response, connection, "http/2").await?).await
            }
        }
    }
}

/// A kept-alive HTTP/1.1 connection over TLS, for load: one request after another.
pub struct KeptAlive {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    authority: String,
}

impl TlsClient {
    /// Opens a kept-alive HTTP/1.1 connection to `127.0.0.1:port`.
    pub async fn keep_alive(&self, port: u16) -> Result<KeptAlive> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("connecting to port {port}"))?;
        tcp.set_nodelay(true)?;
        let tls = self.h1.connect(ServerName::try_from(SERVER_NAME)?, tcp).await.context("tls handshake")?;
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        tokio::spawn(connection);
        Ok(KeptAlive { sender, authority: format!("localhost:{port}") })
    }
}

impl KeptAlive {
    /// Sends `request` with `body` and reads the whole response; returns its status.
    pub async fn send(&mut self, request: &Request, body: Bytes) -> Result<u16> {
        self.sender.ready().await.context("connection closed")?;
        let response = self.sender.send_request(build(request, &self.authority, None, Full::new(body))?).await?;
        let status = response.status().as_u16();
        response.into_body().collect().await?;
        Ok(status)
    }
}

/// A request whose body is still being sent.
pub struct Streaming {
    chunks: tokio::sync::mpsc::Sender<Bytes>,
    response: tokio::task::JoinHandle<Result<Response>>,
}

impl Streaming {
    /// Sends the next chunk of the body.
    pub async fn send(&self, chunk: &[u8]) -> Result<()> {
        self.chunks.send(Bytes::copy_from_slice(chunk)).await.context("the request ended before its body")
    }

    /// Ends the body and waits for the response.
    pub async fn finish(self) -> Result<Response> {
        drop(self.chunks);
        self.response.await.context("the request task failed")?
    }
}

/// A request body fed from a channel: each message one DATA frame (or chunk), the end of the
/// body when the sender is dropped.
struct ChunkBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChunkBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.0.poll_recv(cx).map(|chunk| chunk.map(|chunk| Ok(hyper::body::Frame::data(chunk))))
    }
}

/// Sends one plain HTTP/1.1 request to `127.0.0.1:port` (a sidecar's outbound listener, an app,
/// or Envoy's admin API).
pub async fn plain(port: u16, request: &Request) -> Result<Response> {
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        let tcp =
            TcpStream::connect(("127.0.0.1", port)).await.with_context(|| format!("connecting to port {port}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(connection);
        let body = Full::new(Bytes::from(request.body.clone()));
        let response = sender.send_request(build(request, &format!("127.0.0.1:{port}"), None, body)?).await?;
        collect(response).await
    })
    .await
    .with_context(|| format!("{} {} timed out", request.method, request.path))?
}

/// A failed exchange says little ("connection closed"); the connection task holds the cause,
/// such as the TLS alert a server sends after a TLS 1.3 handshake when it rejects the client
/// certificate.
async fn with_connection_error<T>(
    result: hyper::Result<T>,
    connection: tokio::task::JoinHandle<hyper::Result<()>>,
    version: &str,
) -> Result<T> {
    match result {
        Ok(value) => Ok(value),
        Err(error) => {
            let error = anyhow::Error::from(error).context(format!("{version} exchange"));
            match tokio::time::timeout(Duration::from_secs(2), connection).await {
                Ok(Ok(Err(cause))) => Err(error.context(format!("connection failed: {:#}", anyhow::Error::from(cause)))),
                _ => Err(error),
            }
        }
    }
}

fn build<B>(request: &Request, authority: &str, absolute: Option<&str>, body: B) -> Result<HttpRequest<B>> {
    let uri = match absolute {
        Some(base) => format!("{base}{}", request.path),
        None => request.path.clone(),
    };
    let mut builder = HttpRequest::builder().method(request.method.as_str()).uri(uri);
    if absolute.is_none() {
        builder = builder.header("host", authority);
    }
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), HeaderValue::from_bytes(value)?);
    }
    Ok(builder.body(body)?)
}

async fn collect(response: hyper::Response<hyper::body::Incoming>) -> Result<Response> {
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let body = response.into_body().collect().await.context("reading the response body")?.to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned());
    Ok(Response { status, headers, body })
}
