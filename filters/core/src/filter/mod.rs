//! The request pipeline, written once for both modules and every runtime.
//!
//! A [`Root`] is the plugin's root context: it parses and compiles the configuration, and in the
//! authz module polls the bundle service and uploads decision logs. Each HTTP stream gets a
//! [`Stream`], whose callbacks run one phase each:
//!
//! 1. **request headers**: remove every identity header from the proxy's map (before anything
//!    reads headers), resolve the peer's SVID, refuse a path not in normal form (before anything
//!    reads the path), take the identity step, then, in the authz module,
//!    take one snapshot of the active policy, fetch only the attributes it reads, evaluate, and
//!    turn the result into a decision; count, log, and carry the decision out. A request with a
//!    body whose policy reads the body (and that nothing denies before the policy) is held
//!    instead: the proxy buffers the body;
//! 2. **request body** (held requests only): at the end of the body, or once it reaches
//!    `max_request_bytes`, read it and decide as above; a longer body is answered 413 unless
//!    `allow_partial_message`; request trailers end the body too;
//! 3. **response headers**: add the policy's `response_headers_to_add`.
//!
//! The decision is taken by [`Filter::decide`] from what the headers phase gathered, so a
//! decision at the end of the request body runs the same code once the body is read. The
//! proxy (`svidgate-proxy`) and the native runtime of the tests (`host::memory::MemoryHost`)
//! both call exactly these functions.

mod jwt_bundles;
#[cfg(feature = "rego")]
mod services;

use std::cell::RefCell;
use std::fmt;
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use log::Level;

use crate::config::{Config, ConfigError, IdentityConfig, ModuleKind};
use crate::decision::{BAD_REQUEST, DENIED_BODY, Decision, DenyReason, HeaderEdit, Verdict};
#[cfg(feature = "rego")]
use crate::authz::body::RequestBody;
use crate::host::{Action, Host, property};
use crate::identity::{IdentityOutcome, StrippedHeaders};
use crate::jwt_svid::{JwtSvid, JwtSvidError, Verifier};
use crate::metrics::{Counter, Metrics};
use crate::path::PathGuard;
use crate::peer::{PeerCache, PeerCertificate, PeerError, PeerIdentity};
use crate::spiffe::SpiffeId;

/// How often the root context checks whether a poll or a log upload is due.
pub const TICK: Duration = Duration::from_secs(1);
/// How many peer certificates a plugin keeps parsed.
pub const PEER_CACHE_CAPACITY: usize = 1024;
/// The filter-state key of the decision id: `%FILTER_STATE(wasm.svidgate_decision_id:PLAIN)%`.
pub const DECISION_ID_FILTER_STATE: &str = "svidgate_decision_id";
/// The filter-state key of the policy result's `dynamic_metadata` (JSON):
/// `%FILTER_STATE(wasm.svidgate_dynamic_metadata:PLAIN)%`. A Proxy-Wasm filter cannot write
/// Envoy's dynamic metadata, where opa-envoy-plugin's ext_authz response puts it.
pub const DYNAMIC_METADATA_FILTER_STATE: &str = "svidgate_dynamic_metadata";

/// A plugin's root context: its configuration, and the work that is not per request.
#[derive(Debug)]
pub struct Root {
    kind: ModuleKind,
    /// The git revision the module was built from, logged at VM start.
    revision: &'static str,
    filter: Option<Rc<Filter>>,
    /// JWT bundle polling (`jwt_svid.bundle_endpoints`).
    jwt_bundles: jwt_bundles::JwtBundlePollers,
    /// Bundle polling and decision-log uploads (authz module).
    #[cfg(feature = "rego")]
    services: services::Services,
}

/// What every request of a configured plugin shares: the configuration, the peer cache, the
/// metrics and, in the authz module, the active policy.
#[derive(Debug)]
pub struct Filter {
    identity: IdentityConfig,
    path_guard: PathGuard,
    cache: RefCell<PeerCache>,
    /// JWT-SVID validation, with `jwt_svid` configured.
    jwt: Option<Verifier>,
    metrics: Metrics,
    #[cfg(feature = "rego")]
    authz: Option<services::Authz>,
}

/// One HTTP stream.
#[derive(Debug)]
pub struct Stream {
    id: u32,
    filter: Option<Rc<Filter>>,
    /// The policy's `response_headers_to_add`, applied when the response comes back.
    response_headers: Vec<(String, String)>,
    /// A request held until its body is read (its policy reads the body).
    #[cfg(feature = "rego")]
    held: Option<Request>,
}

/// What the request-headers phase gathered for the decision.
#[derive(Debug)]
pub struct Request {
    /// The proxy clock, read once per request.
    pub now: SystemTime,
    /// When the request's own work started, for the latency histogram: the proxy clock read
    /// once more at the end, rather than a monotonic clock twice (each read is a host call).
    started: Option<SystemTime>,
    /// The headers without identity headers.
    pub headers: StrippedHeaders,
    /// The validated peer, or why there is none.
    pub peer: Result<PeerIdentity, PeerError>,
    /// The request's JWT-SVID, validated, when the connection has no client certificate and the
    /// request carries one.
    pub jwt_svid: Option<Result<Rc<JwtSvid>, JwtSvidError>>,
    /// The request body, read for a policy that reads it; `None` when the request had none.
    #[cfg(feature = "rego")]
    pub body: Option<RequestBody>,
    /// With `policy.routes`, the request's route as it names it (`None` without routes, or
    /// when the request matched no route).
    #[cfg(feature = "rego")]
    pub route: Option<String>,
    /// The policy entrypoint (its index) deciding the request: the first without `policy.routes`;
    /// `None` when its route is not listed and such routes are denied.
    #[cfg(feature = "rego")]
    pub entry: Option<usize>,
}

impl Root {
    /// The root context of `kind`'s module, built from git revision `revision`.
    pub fn new(kind: ModuleKind, revision: &'static str) -> Self {
        Self {
            kind,
            revision,
            filter: None,
            jwt_bundles: jwt_bundles::JwtBundlePollers::default(),
            #[cfg(feature = "rego")]
            services: services::Services::default(),
        }
    }

    /// The VM started: one info line with the version and git revision.
    pub fn on_vm_start(&mut self, host: &impl Host) -> bool {
        log(host, Level::Info, format_args!("{} {} ({}) starting", self.kind.name(), crate::VERSION, self.revision));
        true
    }

    /// Parses the plugin configuration, compiles the policy and defines the metrics; a bad
    /// configuration is refused with one error line (Envoy then rejects the filter).
    pub fn on_configure(&mut self, host: &impl Host) -> bool {
        let configured = Config::parse(self.kind, &host.plugin_configuration()).and_then(|config| self.configure(host, config));
        match configured {
            Ok(filter) => {
                self.filter = Some(Rc::new(filter));
                true
            }
            Err(e) => {
                log(host, Level::Error, format_args!("{}: configuration refused: {e}", self.kind.name()));
                false
            }
        }
    }

    fn configure(&mut self, host: &impl Host, config: Config) -> Result<Filter, ConfigError> {
        let (identity, path_guard) = (config.identity, config.path_guard);
        let cache = RefCell::new(PeerCache::new(PEER_CACHE_CAPACITY));
        let jwt = identity.jwt_svid.as_ref().map(Verifier::new);
        self.jwt_bundles = jwt_bundles::JwtBundlePollers::new(identity.jwt_svid.as_ref(), host.now());
        if self.jwt_bundles.any() {
            host.set_tick_period(TICK);
        }
        let jwt_counters = jwt.as_ref().map_or(&[][..], |_| &Counter::JWT_SVID[..]);
        let Some(policy) = config.policy else {
            log(
                host,
                Level::Info,
                format_args!(
                    "{} configured: {:?} mode, headers {:?}, jwt-svids {}",
                    self.kind.name(),
                    identity.mode,
                    identity.headers,
                    if jwt.is_some() { "accepted" } else { "not accepted" },
                ),
            );
            let metrics = Metrics::define(host, &[&Counter::IDENTITY[..], jwt_counters].concat(), None);
            #[cfg(feature = "rego")]
            return Ok(Filter { identity, path_guard, cache, jwt, metrics, authz: None });
            #[cfg(not(feature = "rego"))]
            return Ok(Filter { identity, path_guard, cache, jwt, metrics });
        };
        #[cfg(feature = "rego")]
        {
            let authz = self.services.configure(host, &identity, policy)?;
            let metrics = Metrics::define(host, &[&Counter::AUTHZ[..], jwt_counters].concat(), Some(crate::metrics::DECISION_LATENCY_US));
            Ok(Filter { identity, path_guard, cache, jwt, metrics, authz: Some(authz) })
        }
        // Without Rego there is no authz module, so no configuration carries a policy.
        #[cfg(not(feature = "rego"))]
        {
            let _ = policy;
            Err(ConfigError::PolicyNotSupported)
        }
    }

    /// The timer: polls the bundle service, uploads decision logs, writes the gauges.
    pub fn on_tick(&mut self, host: &impl Host) {
        let Some(filter) = &self.filter else { return };
        self.jwt_bundles.on_tick(host, filter);
        #[cfg(feature = "rego")]
        self.services.on_tick(host, filter);
    }

    /// The answer to an HTTP call the root context dispatched.
    pub fn on_http_call_response(&mut self, host: &impl Host, token: u32, body_size: usize) {
        let Some(filter) = &self.filter else { return };
        if !self.jwt_bundles.on_http_call_response(host, filter, token, body_size) {
            #[cfg(feature = "rego")]
            self.services.on_http_call_response(host, filter, token, body_size);
        }
    }

    /// A new HTTP stream with context id `id`.
    pub fn stream(&self, id: u32) -> Stream {
        Stream { filter: self.filter.clone(), ..Stream::unconfigured(id) }
    }

    /// The configured plugin, once `on_configure` succeeded.
    pub fn filter(&self) -> Option<&Filter> {
        self.filter.as_deref()
    }
}

impl Stream {
    /// A stream of a plugin the proxy did not create (no root context of that id): every
    /// request on it is denied.
    pub fn unconfigured(id: u32) -> Self {
        Self {
            id,
            filter: None,
            response_headers: Vec::new(),
            #[cfg(feature = "rego")]
            held: None,
        }
    }

    /// Whether a later callback of this stream has work left: a request held for its body, or
    /// response headers to add. When not, the proxy layer may drop the stream, and the
    /// callbacks that follow, finding none, let the stream continue as this one would.
    pub fn expects_more(&self) -> bool {
        #[cfg(feature = "rego")]
        if self.held.is_some() {
            return true;
        }
        !self.response_headers.is_empty()
    }

    /// The request headers arrived (`end_of_stream`: the request has no body): decide the
    /// request and carry the decision out, or hold it until its body is read.
    pub fn on_request_headers(&mut self, host: &impl Host, end_of_stream: bool) -> Action {
        let Some(filter) = self.filter.clone() else {
            // Envoy does not start streams for a refused configuration; if one comes, it is denied.
            log(host, Level::Error, format_args!("#{} no configuration: denying", self.id));
            return deny(host, 503, &[], DENIED_BODY);
        };
        let request = filter.begin(host);
        #[cfg(feature = "rego")]
        if !end_of_stream && let Some(limits) = filter.body_to_read(&request) {
            let length = request.headers.get("content-length").and_then(|length| length.parse::<usize>().ok());
            if !limits.allow_partial_message && length.is_some_and(|length| length > limits.max_request_bytes) {
                let verdict = filter.too_large(&request, limits.max_request_bytes);
                return self.conclude(host, &filter, &request, &verdict);
            }
            self.held = Some(request);
            return Action::Pause;
        }
        #[cfg(not(feature = "rego"))]
        let _ = end_of_stream;
        let verdict = filter.decide(host, &request);
        self.conclude(host, &filter, &request, &verdict)
    }

    /// Request body arrived; `buffered` is all of it the proxy holds for this filter. A held
    /// request is decided at the end of the body, or once `max_request_bytes` is reached.
    pub fn on_request_body(&mut self, host: &impl Host, buffered: usize, end_of_stream: bool) -> Action {
        #[cfg(feature = "rego")]
        if let (Some(filter), Some(request)) = (self.filter.clone(), self.held.as_ref()) {
            let limits = filter.body_limits();
            let max = limits.max_request_bytes;
            if buffered > max && !limits.allow_partial_message {
                let verdict = filter.too_large(request, max);
                let request = self.held.take();
                return request.map_or(Action::Pause, |request| self.conclude(host, &filter, &request, &verdict));
            }
            if end_of_stream || (limits.allow_partial_message && buffered >= max) {
                // Whatever the policy did not see is `truncated_body: true`, even a body of
                // exactly `max_request_bytes` that has not ended (ext_authz calls that one whole).
                return self.decide_held(host, &filter, Some(buffered), !end_of_stream || buffered > max);
            }
            return Action::Pause;
        }
        let _ = (host, buffered, end_of_stream);
        Action::Continue
    }

    /// Request trailers arrived: the body of a held request has ended.
    pub fn on_request_trailers(&mut self, host: &impl Host) -> Action {
        #[cfg(feature = "rego")]
        if let (Some(filter), Some(_)) = (self.filter.clone(), self.held.as_ref()) {
            return self.decide_held(host, &filter, None, false);
        }
        let _ = host;
        Action::Continue
    }

    /// Reads the body of the held request (the first `max_request_bytes` of `buffered`, or all
    /// the proxy holds when that is not known) and decides it.
    #[cfg(feature = "rego")]
    fn decide_held(&mut self, host: &impl Host, filter: &Filter, buffered: Option<usize>, truncated: bool) -> Action {
        let Some(mut request) = self.held.take() else { return Action::Continue };
        let max = filter.body_limits().max_request_bytes;
        let bytes = host.request_body(0, buffered.unwrap_or(max).min(max)).unwrap_or_default();
        let received = buffered.unwrap_or(bytes.len());
        let events = [Counter::AuthzBodyRequests].into_iter().chain(truncated.then_some(Counter::AuthzBodyTruncated));
        filter.metrics.count(host, events);
        filter.metrics.add(host, Counter::AuthzBodyBytes, u64::try_from(bytes.len()).unwrap_or(u64::MAX));
        request.body = Some(RequestBody { bytes, received, truncated });
        // The latency histogram counts svidgate's work, not the wait for the body.
        request.started = filter.metrics.timed().then(|| host.now());
        let verdict = filter.decide(host, &request);
        self.conclude(host, filter, &request, &verdict)
    }

    /// Counts, logs and carries out a verdict.
    fn conclude(&mut self, host: &impl Host, filter: &Filter, request: &Request, verdict: &Verdict) -> Action {
        filter.finish(host, self, request, verdict);
        if let Decision::Allow { response_headers, .. } = &verdict.decision {
            self.response_headers.clone_from(response_headers);
        }
        apply(host, request, verdict, filter.identity.injected_header())
    }

    /// The response headers arrived: add what the policy asked for.
    pub fn on_response_headers(&mut self, host: &impl Host) -> Action {
        for (name, value) in &self.response_headers {
            host.add_response_header(name, value);
        }
        Action::Continue
    }
}

impl Request {
    /// The request's `:path`, query included (empty when there is none: `CONNECT` over HTTP/2).
    pub fn path(&self) -> &str {
        self.headers.get(":path").unwrap_or_default()
    }
}

impl Filter {
    /// The identity behaviour.
    pub fn identity(&self) -> &IdentityConfig {
        &self.identity
    }

    /// JWT-SVID validation, with `jwt_svid` configured.
    pub fn jwt_verifier(&self) -> Option<&Verifier> {
        self.jwt.as_ref()
    }

    /// The identity step of `request`: which identity the upstream gets, or why it is denied.
    pub fn identify(&self, request: &Request) -> IdentityOutcome {
        self.identity.resolve(request.peer.as_ref(), request.jwt_svid.as_ref(), &request.headers)
    }

    /// The first phase of every request: removes every identity header from the proxy's map and
    /// from what the decision will read, reads the clock once and resolves the peer.
    pub fn begin(&self, host: &impl Host) -> Request {
        let headers = StrippedHeaders::strip(host.request_headers(), &self.identity);
        for name in headers.removed_names() {
            host.remove_request_header(name);
        }
        let now = host.now();
        let started = self.metrics.timed().then_some(now);
        let peer = self.peer(host, now);
        // A JWT-SVID is read only where there is no client certificate: it never overrides one.
        let jwt_svid = match (&self.identity.jwt_svid, &self.jwt, &peer) {
            (Some(config), Some(verifier), Err(PeerError::NoCertificate)) => {
                let tokens = headers.tokens();
                (!tokens.is_empty()).then(|| verifier.validate(config, &self.identity.svid.trust_domains, &tokens, now))
            }
            _ => None,
        };
        #[cfg(feature = "rego")]
        let (route, entry) = match &self.authz {
            Some(authz) => authz.route(host),
            None => (None, Some(0)),
        };
        Request {
            now,
            started,
            headers,
            peer,
            jwt_svid,
            #[cfg(feature = "rego")]
            body: None,
            #[cfg(feature = "rego")]
            route,
            #[cfg(feature = "rego")]
            entry,
        }
    }

    /// The body limits of a request to hold until its body is read: the active policy reads the
    /// body, and neither the path guard nor the identity step denies the request first.
    #[cfg(feature = "rego")]
    fn body_to_read(&self, request: &Request) -> Option<crate::config::RequestBodyConfig> {
        let authz = self.authz.as_ref()?;
        let denied_first = self.path_guard.check(request.path()).is_err()
            || self.identify(request).deny.is_some();
        let entry = request.entry?;
        (!denied_first && authz.reads_body(request.now, entry)).then(|| authz.body_limits())
    }

    /// The body limits of the policy.
    #[cfg(feature = "rego")]
    fn body_limits(&self) -> crate::config::RequestBodyConfig {
        self.authz.as_ref().map(services::Authz::body_limits).unwrap_or_default()
    }

    /// The 413 of a body longer than the policy may read.
    #[cfg(feature = "rego")]
    fn too_large(&self, request: &Request, max: usize) -> Verdict {
        let identity = self.identify(request);
        let decision = Decision::deny(crate::decision::PAYLOAD_TOO_LARGE, DenyReason::BodyTooLarge(max));
        Verdict::without_policy(decision, identity)
    }

    /// Decides a request: the path guard, the identity step, then in the authz module the policy.
    pub fn decide(&self, host: &impl Host, request: &Request) -> Verdict {
        let identity = self.identify(request);
        if let Err(error) = self.path_guard.check(request.path()) {
            return Verdict::without_policy(Decision::deny(BAD_REQUEST, DenyReason::PathNotNormalized(error)), identity);
        }
        if let Some(reason) = &identity.deny {
            return Verdict::without_policy(Decision::deny(self.identity.deny_status, reason.clone()), identity);
        }
        #[cfg(feature = "rego")]
        if let Some(authz) = &self.authz {
            return authz.decide(host, &self.identity, request, identity);
        }
        #[cfg(not(feature = "rego"))]
        let _ = host;
        let decision = identity.decision(&self.identity);
        Verdict::without_policy(decision, identity)
    }

    /// Counts the decision, logs it, and hands the decision id and record on.
    fn finish(&self, host: &impl Host, stream: &Stream, request: &Request, verdict: &Verdict) {
        if let Some(started) = request.started {
            // A clock stepped back during the request counts as no time.
            let elapsed = host.now().duration_since(started).unwrap_or_default();
            self.metrics.record(host, u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX));
        }
        #[cfg(feature = "rego")]
        let authz = self.authz.is_some();
        #[cfg(not(feature = "rego"))]
        let authz = false;
        self.metrics.count(host, Counter::request_events(verdict, authz));
        let id = stream.id;
        match &verdict.decision {
            Decision::Allow { .. } => {
                let identity = verdict.identity.upstream_identity.as_ref().map_or("none", SpiffeId::as_str);
                log(host, Level::Debug, format_args!("#{id} allow: upstream identity {identity}"));
            }
            Decision::Deny { status, reason, .. } => {
                let level = if reason.is_error() { Level::Warn } else { Level::Debug };
                log(host, level, format_args!("#{id} deny {status} ({}): {reason}", reason.code()));
            }
        }
        if let Some(reason) = &verdict.would_deny {
            log(host, Level::Info, format_args!("#{id} dry run: the policy would deny ({}): {reason}", reason.code()));
        }
        if let Some(decision_id) = &verdict.decision_id {
            host.set_filter_state(DECISION_ID_FILTER_STATE, decision_id.as_bytes());
        }
        if let Some(metadata) = &verdict.dynamic_metadata {
            host.set_filter_state(DYNAMIC_METADATA_FILTER_STATE, metadata.as_bytes());
        }
        #[cfg(feature = "rego")]
        if let (Some(authz), Some(record)) = (&self.authz, &verdict.decision_log) {
            authz.log_decision(host, &self.metrics, record);
        }
    }

    /// The validated peer of this request's connection, parsed once per certificate.
    fn peer(&self, host: &impl Host, now: SystemTime) -> Result<PeerIdentity, PeerError> {
        let text = |path: &[&str]| host.property(path).and_then(|bytes| String::from_utf8(bytes).ok());
        let digest = text(property::PEER_CERTIFICATE_DIGEST);
        let certificate =
            || PeerCertificate { pem: host.property(property::PEER_CERTIFICATE), uri_san: text(property::PEER_URI_SAN) };
        let rules = &self.identity.svid;
        match self.cache.try_borrow_mut() {
            Ok(mut cache) => rules.resolve(&mut cache, digest.as_deref(), certificate, now),
            Err(_) => rules.resolve(&mut PeerCache::new(0), None, certificate, now),
        }
    }
}

/// Dispatches an HTTP call of the root context; one the proxy refuses (an unknown cluster) is
/// logged and `None`, which the caller takes as a failed call.
fn dispatch(host: &impl Host, call: &crate::host::HttpCall) -> Option<u32> {
    host.dispatch_http_call(call)
        .inspect_err(|why| log(host, Level::Warn, format_args!("svidgate: cannot call cluster {}: {why}", call.cluster)))
        .ok()
}

/// The answer to the HTTP call being delivered: its status and ETag, and its body if `read_body`.
fn call_response(host: &impl Host, body_size: usize, read_body: bool) -> (Option<u16>, Option<String>, Vec<u8>) {
    let headers = host.http_call_response_headers();
    let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
    let body = if read_body { host.http_call_response_body(body_size).unwrap_or_default() } else { Vec::new() };
    (header(":status").and_then(|s| s.parse().ok()), header("etag"), body)
}

/// Carries a decision out: edits the request, sets the identity header (`injected_header`) last,
/// and lets the request continue; or answers locally and stops it.
#[cfg_attr(not(feature = "rego"), expect(unused_variables, reason = "only a policy's query edit reads the path"))]
fn apply(host: &impl Host, request: &Request, verdict: &Verdict, injected_header: &str) -> Action {
    match &verdict.decision {
        Decision::Allow { request_edits, .. } => {
            for edit in request_edits {
                match edit {
                    HeaderEdit::Append(name, value) => host.add_request_header(name, value),
                    HeaderEdit::Remove(name) => host.remove_request_header(name),
                    HeaderEdit::Set(name, value) => host.set_request_header(name, value),
                    #[cfg(feature = "rego")]
                    HeaderEdit::Query(query) => host.set_request_header(":path", &query.apply(request.path())),
                }
            }
            if let Some(identity) = &verdict.identity.upstream_identity {
                host.set_request_header(injected_header, identity.as_str());
            }
            Action::Continue
        }
        Decision::Deny { status, headers, body, .. } => deny(host, *status, headers, body),
    }
}

fn deny(host: &impl Host, status: u16, headers: &[(String, String)], body: &str) -> Action {
    host.send_local_reply(status, headers, body.as_bytes());
    Action::Pause
}

/// Writes one log line through the host.
fn log(host: &impl Host, level: Level, message: fmt::Arguments<'_>) {
    host.log(level, message);
}

#[cfg(test)]
mod tests;
