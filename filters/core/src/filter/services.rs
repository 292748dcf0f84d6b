//! The authz module's policy step and its services: the bundle poller and the decision-log
//! uploader run on the root context's timer and HTTP calls; every request reads the active policy.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::SystemTime;

use log::Level;

use super::{Filter, Request, TICK, call_response, dispatch, log};
use crate::authz::service::{BundlePoller, Fetched, HttpResponse, LogUploader, Uploaded};
use crate::authz::body::{self, RequestBody};
use crate::authz::{Authorizer, RequestFacts};
use crate::config::{ConfigError, IdentityConfig, PolicyConfig, RequestBodyConfig, RouteKey};
use crate::decision::{BAD_REQUEST, Decision, DenyReason, Verdict};
use crate::host::{Host, HttpCall, property};
use crate::identity::IdentityOutcome;
use crate::path::InputError;
use crate::metrics::{BUNDLE_REVISION_PREFIX, Counter, Gauge, Metrics, POLICY_AGE_SECONDS, POLICY_ON_INTERPRETER};

/// The policy side of a configured authz plugin, shared by its requests.
#[derive(Debug)]
pub(super) struct Authz {
    authorizer: Authorizer,
    /// Decision logs waiting for upload, when a log service is configured.
    uploads: Option<RefCell<LogUploader>>,
}

/// The root context's side: the bundle poller, HTTP calls in flight and the bundle gauges.
#[derive(Debug, Default)]
pub(super) struct Services {
    poller: Option<BundlePoller>,
    /// HTTP calls in flight, by token.
    calls: HashMap<u32, Callout>,
    gauges: Option<Gauges>,
    /// 1 while the active policy runs on the interpreter.
    interpreter: Option<Gauge>,
}

#[derive(Clone, Copy, Debug)]
enum Callout {
    Bundle,
    Logs,
}

/// The bundle gauges. A gauge is one Envoy stat for all VMs: the last write wins.
#[derive(Debug)]
struct Gauges {
    policy_age: Gauge,
    /// The active revision's info gauge (set to 1; the previous one goes back to 0).
    revision: Option<Gauge>,
}

impl Authz {
    /// The policy step of a request whose identity step passed: one snapshot of the active
    /// policy, the attributes its input plan reads, the evaluation.
    pub(super) fn decide(
        &self,
        host: &impl Host,
        identity_config: &IdentityConfig,
        request: &Request,
        identity: IdentityOutcome,
    ) -> Verdict {
        let authorizer = &self.authorizer;
        let Some(entry) = request.entry else {
            let reason = DenyReason::RouteNotListed(request.route.clone().unwrap_or_default());
            return Verdict::without_policy(Decision::deny(identity_config.deny_status, reason), identity);
        };
        // What OPA's Envoy plugin refuses before it evaluates anything, whatever the policy reads.
        if let Err(error) = crate::path::check_input(request.path()) {
            return Verdict::without_policy(Decision::deny(BAD_REQUEST, DenyReason::InputError(error)), identity);
        }
        let active = match authorizer.policy_at(request.now) {
            Ok(active) => active,
            Err(reason) => {
                return Verdict::without_policy(Decision::deny(authorizer.settings().error_status, reason), identity);
            }
        };
        let plan = active.input_plan(entry);
        let fetch = |wanted: bool, path: &[&str]| {
            wanted.then(|| host.property(path)).flatten().and_then(|bytes| String::from_utf8(bytes).ok())
        };
        let source_address = fetch(plan.source_address, property::SOURCE_ADDRESS);
        let destination_address = fetch(plan.destination_address, property::DESTINATION_ADDRESS);
        let destination_principal = fetch(plan.destination_principal, property::LOCAL_URI_SAN);
        let protocol = fetch(plan.protocol, property::PROTOCOL);
        let tls_sni = fetch(plan.tls_session, property::TLS_SNI);
        let peer_certificate = fetch(plan.source_certificate && request.peer.is_ok(), property::PEER_CERTIFICATE);
        let namespaces = &authorizer.settings().metadata_context_namespaces;
        let wanted = plan.metadata_context && !namespaces.is_empty();
        let metadata_context = match wanted.then(|| host.property(property::DYNAMIC_METADATA)).flatten() {
            None => Vec::new(),
            Some(bytes) => match crate::authz::metadata::filter_metadata(&bytes, namespaces) {
                Ok(found) => found,
                Err(error) => {
                    let reason = DenyReason::EvaluationError(error.to_string());
                    return Verdict::without_policy(Decision::deny(authorizer.settings().error_status, reason), identity);
                }
            },
        };
        let body = match plan.body.then(|| body::read(&request.headers, request.body.as_ref().unwrap_or(&RequestBody::default()))) {
            None => None,
            Some(Ok(body)) => Some(body),
            Some(Err(error)) => {
                let reason = DenyReason::InputError(InputError::Body(error.to_string()));
                return Verdict::without_policy(Decision::deny(BAD_REQUEST, reason), identity);
            }
        };
        let facts = RequestFacts {
            headers: &request.headers,
            peer: request.peer.as_ref(),
            jwt_svid: request.jwt_svid.as_ref().and_then(|token| token.as_deref().ok()),
            source_address: source_address.as_deref(),
            destination_address: destination_address.as_deref(),
            destination_principal: destination_principal.as_deref(),
            protocol: protocol.as_deref(),
            tls_sni: tls_sni.as_deref(),
            peer_certificate: peer_certificate.as_deref(),
            metadata_context: &metadata_context,
            body: body.as_ref(),
            now: request.now,
        };
        authorizer.evaluate(&active, entry, &facts, identity_config, identity)
    }

    /// The request's route as `policy.routes` names it, and the entrypoint (its index) deciding
    /// it (`None`: not listed, and such routes are denied). One property read per request, only
    /// with `policy.routes`.
    pub(super) fn route(&self, host: &impl Host) -> (Option<String>, Option<usize>) {
        let route = self.authorizer.settings().routes.as_ref().and_then(|routes| {
            let path = match routes.key {
                RouteKey::RouteName => property::ROUTE_NAME,
                RouteKey::Metadata => property::ROUTE_POLICY,
            };
            host.property(path).map(lossy_utf8)
        });
        let entry = self.authorizer.entry_for_route(route.as_deref());
        (route, entry)
    }

    /// Whether entrypoint `entry` of the policy that decides a request arriving `now` reads the
    /// request body.
    pub(super) fn reads_body(&self, now: SystemTime, entry: usize) -> bool {
        self.authorizer.policy_at(now).is_ok_and(|active| active.input_plan(entry).body)
    }

    /// How much of a body the policy gets (`with_request_body`).
    pub(super) fn body_limits(&self) -> RequestBodyConfig {
        self.authorizer.settings().with_request_body
    }

    /// A decision-log record: to Envoy's log and/or the upload buffer.
    pub(super) fn log_decision(&self, host: &impl Host, metrics: &Metrics, record: &str) {
        if self.authorizer.settings().decision_logs.as_ref().is_some_and(|logs| logs.console) {
            host.log(Level::Info, format_args!("{record}"));
        }
        if let Some(uploads) = &self.uploads
            && !uploads.try_borrow_mut().is_ok_and(|mut uploads| uploads.push(record.to_owned()))
        {
            metrics.count(host, [Counter::DecisionLogsDropped]);
        }
    }
}

impl Services {
    /// Compiles the policy and sets up the bundle poller and the log uploader it configures.
    pub(super) fn configure(
        &mut self,
        host: &impl Host,
        identity: &IdentityConfig,
        policy: PolicyConfig,
    ) -> Result<Authz, ConfigError> {
        let authorizer = Authorizer::new(policy)?;
        let settings = authorizer.settings();
        log(
            host,
            Level::Info,
            format_args!(
                "svidgate_authz configured: {:?} mode, entrypoints {:?}, input {:?}, bundle {}",
                identity.mode,
                settings.entrypoints(),
                authorizer.input_plans(),
                settings.bundle.as_ref().map_or("none", |b| b.service.cluster.as_str()),
            ),
        );
        let now = host.now();
        self.poller = settings.bundle.as_ref().map(|config| BundlePoller::new(config.clone(), now));
        let log_service = settings.decision_logs.as_ref().and_then(|logs| logs.service.as_ref());
        let uploads = log_service.map(|config| RefCell::new(LogUploader::new(config.clone(), now)));
        if self.poller.is_some() || uploads.is_some() {
            host.set_tick_period(TICK);
        }
        self.gauges = self
            .poller
            .as_ref()
            .map(|_| Gauges { policy_age: Gauge::define(host, POLICY_AGE_SECONDS), revision: None });
        self.calls.clear();
        let interpreter = Gauge::define(host, POLICY_ON_INTERPRETER);
        self.interpreter = Some(interpreter);
        engine_in_use(host, interpreter, &authorizer, "the configured policy");
        Ok(Authz { authorizer, uploads })
    }

    /// Starts a bundle poll or a log upload when one is due, and writes the policy-age gauge.
    pub(super) fn on_tick(&mut self, host: &impl Host, filter: &Filter) {
        let Some(authz) = &filter.authz else { return };
        let now = host.now();
        if let Some(call) = self.poller.as_mut().and_then(|poller| poller.poll(now)) {
            self.dispatch(host, filter, call, Callout::Bundle, now);
        }
        if let Some(uploads) = &authz.uploads {
            let call = uploads.try_borrow_mut().ok().and_then(|mut uploads| uploads.poll(now));
            if let Some(call) = call {
                self.dispatch(host, filter, call, Callout::Logs, now);
            }
        }
        if let Some(gauges) = &self.gauges {
            gauges.policy_age.set(host, authz.authorizer.policy_age(now).as_secs());
        }
    }

    /// Routes the answer to an HTTP call to the bundle poller or the log uploader.
    pub(super) fn on_http_call_response(&mut self, host: &impl Host, filter: &Filter, token: u32, body_size: usize) {
        let Some(callout) = self.calls.remove(&token) else {
            return;
        };
        // Only a bundle's body is read: a log receiver's answer is its status.
        let (status, etag, body) = call_response(host, body_size, matches!(callout, Callout::Bundle));
        let response = HttpResponse { status, etag: etag.as_deref(), body: &body };
        self.on_response(host, filter, callout, host.now(), response);
    }

    /// Dispatches a call; one the proxy refuses (unknown cluster) counts as failed at once.
    fn dispatch(&mut self, host: &impl Host, filter: &Filter, call: HttpCall, callout: Callout, now: SystemTime) {
        match dispatch(host, &call) {
            Some(token) => {
                self.calls.insert(token, callout);
            }
            None => self.on_response(host, filter, callout, now, HttpResponse { status: None, etag: None, body: &[] }),
        }
    }

    fn on_response(
        &mut self,
        host: &impl Host,
        filter: &Filter,
        callout: Callout,
        now: SystemTime,
        response: HttpResponse<'_>,
    ) {
        match callout {
            Callout::Bundle => self.on_bundle(host, filter, now, response),
            Callout::Logs => on_upload(host, filter, now, response.status),
        }
    }

    fn on_bundle(&mut self, host: &impl Host, filter: &Filter, now: SystemTime, response: HttpResponse<'_>) {
        let (Some(authz), Some(poller)) = (&filter.authz, &mut self.poller) else {
            return;
        };
        let (authorizer, metrics) = (&authz.authorizer, &filter.metrics);
        let source = format!("bundle {} from cluster {}", poller.config().name, poller.config().service.cluster);
        match poller.on_response(now, response) {
            Fetched::NotModified => {
                authorizer.confirm(now);
                metrics.count(host, [Counter::BundleNotModified]);
            }
            Fetched::Bundle(bundle) => match authorizer.activate(&bundle, now) {
                Ok(()) => {
                    poller.activated();
                    metrics.count(host, [Counter::BundleActivated]);
                    log(host, Level::Info, format_args!("svidgate_authz: activated {source}, revision {:?}", bundle.revision));
                    if let Some(interpreter) = self.interpreter {
                        engine_in_use(host, interpreter, authorizer, &source);
                    }
                    if let Some(gauges) = &mut self.gauges {
                        if let Some(previous) = gauges.revision {
                            previous.set(host, 0);
                        }
                        let revision = Gauge::define(host, &revision_gauge(&bundle.revision));
                        revision.set(host, 1);
                        gauges.revision = Some(revision);
                    }
                }
                Err(e) => {
                    metrics.count(host, [Counter::BundleRejected]);
                    log(
                        host,
                        Level::Error,
                        format_args!(
                            "svidgate_authz: rejected {source} revision {:?}, keeping the active policy: {e}",
                            bundle.revision
                        ),
                    );
                }
            },
            Fetched::Rejected(e) => {
                metrics.count(host, [Counter::BundleRejected]);
                log(host, Level::Error, format_args!("svidgate_authz: rejected {source}, keeping the active policy: {e}"));
            }
            Fetched::Failed(why) => {
                metrics.count(host, [Counter::BundleFetchFailed]);
                log(host, Level::Warn, format_args!("svidgate_authz: cannot fetch {source}, keeping the active policy: {why}"));
            }
        }
    }
}

fn on_upload(host: &impl Host, filter: &Filter, now: SystemTime, status: Option<u16>) {
    let Some(uploads) = filter.authz.as_ref().and_then(|authz| authz.uploads.as_ref()) else {
        return;
    };
    let Ok(uploaded) = uploads.try_borrow_mut().map(|mut uploads| uploads.on_response(now, status)) else {
        return;
    };
    let metrics = &filter.metrics;
    match uploaded {
        Uploaded::Sent(records) => metrics.add(host, Counter::DecisionLogsUploaded, records as u64),
        Uploaded::Failed { dropped } => {
            metrics.count(host, [Counter::DecisionLogsUploadFailed]);
            metrics.add(host, Counter::DecisionLogsDropped, dropped as u64);
            log(
                host,
                Level::Warn,
                format_args!("svidgate_authz: decision-log upload failed (status {status:?}); retrying, {dropped} records dropped"),
            );
        }
    }
}

/// Says once per policy, in the log and in a gauge, when it runs on regorus's interpreter.
fn engine_in_use(host: &impl Host, gauge: Gauge, authorizer: &Authorizer, source: &str) {
    let reason = authorizer.interpreter_reason();
    gauge.set(host, u64::from(reason.is_some()));
    if let Some(reason) = reason {
        log(
            host,
            Level::Warn,
            format_args!(
                "svidgate_authz: {source} runs on regorus's interpreter, several times slower per request than its VM, which refuses it: {reason}"
            ),
        );
    }
}

/// `svidgate.authz.bundle.revision.<revision>`, with characters outside `[A-Za-z0-9_-]` as `_`.
fn revision_gauge(revision: &str) -> String {
    let clean: String = revision
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .collect();
    format!("{BUNDLE_REVISION_PREFIX}.{}", if clean.is_empty() { "none" } else { &clean })
}

/// Bytes from the proxy as text, invalid sequences replaced; valid text keeps its buffer (no copy).
fn lossy_utf8(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|invalid| String::from_utf8_lossy(invalid.as_bytes()).into_owned())
}
