//! `svidgate_authz.wasm`: the identity behaviour of `svidgate_identity.wasm` plus a Rego policy
//! evaluated by an embedded regorus bytecode VM, with the OPA Envoy plugin's input and result.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use log::{error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};
use svidgate_core::authz::service::{BundlePoller, Fetched, HttpCall, HttpResponse, LogUploader, Uploaded};
use svidgate_core::authz::{Authorizer, AuthzConfig, RequestFacts};
use svidgate_core::decision::{Decision, DenyReason};
use svidgate_core::metrics::{BUNDLE_REVISION_PREFIX, Counter, DECISION_LATENCY_US, POLICY_AGE_SECONDS};
use svidgate_core::peer::PeerCache;
use svidgate_proxy::{GIT_SHA, Gauge, Metrics, PEER_CACHE_CAPACITY, property_string};

#[cfg(feature = "test-crash-trigger")]
mod crash;

/// The module's entry point, called by the proxy when the VM starts.
mod entry {
    #![allow(missing_docs)]
    use super::*;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Trace);
        proxy_wasm::set_root_context(|_| Box::new(AuthzRoot::default()));
    }}
}

/// How often the root context checks whether a bundle poll or a log upload is due.
const TICK: Duration = Duration::from_secs(1);
/// The filter-state key of the decision id: `%FILTER_STATE(wasm.svidgate_decision_id:PLAIN)%`.
const DECISION_ID_PROPERTY: &str = "svidgate_decision_id";

/// What every request of a configured plugin shares: the active policy above all.
struct Plugin {
    authorizer: Authorizer,
    cache: RefCell<PeerCache>,
    metrics: Metrics,
    /// Decision logs waiting for upload, when a log service is configured.
    uploads: Option<RefCell<LogUploader>>,
}

/// One VM's root context: owns the plugin, polls the bundle service, uploads decision logs.
#[derive(Default)]
struct AuthzRoot {
    plugin: Option<Rc<Plugin>>,
    poller: Option<BundlePoller>,
    /// HTTP calls in flight, by token.
    calls: HashMap<u32, Callout>,
    gauges: Option<Gauges>,
}

#[derive(Clone, Copy, Debug)]
enum Callout {
    Bundle,
    Logs,
}

/// The bundle gauges. A gauge is one Envoy stat for all VMs: the last write wins.
struct Gauges {
    policy_age: Gauge,
    /// The active revision's info gauge (set to 1; the previous one goes back to 0).
    revision: Option<Gauge>,
}

struct AuthzStream {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
    /// The policy's `response_headers_to_add`, applied when the response comes back.
    response_headers: Vec<(String, String)>,
}

impl Context for AuthzRoot {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        let Some(callout) = self.calls.remove(&token_id) else {
            return;
        };
        let now = svidgate_proxy::now();
        // hostcalls, not the SDK's helpers: those panic when a reset call has no response at all.
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let status = header(":status").and_then(|s| s.parse().ok());
        // Only a bundle's body is read: a log receiver's answer is its status.
        let body = match callout {
            Callout::Bundle => hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten(),
            Callout::Logs => None,
        };
        let response = HttpResponse { status, etag: header("etag"), body: body.as_deref().unwrap_or_default() };
        self.on_response(callout, now, response);
    }
}

impl AuthzRoot {
    /// Dispatches a call; one the proxy refuses (unknown cluster) counts as failed at once.
    fn dispatch(&mut self, call: HttpCall, callout: Callout, now: SystemTime) {
        let headers: Vec<(&str, &str)> = call.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
        let body = (!call.body.is_empty()).then_some(call.body.as_slice());
        match self.dispatch_http_call(&call.cluster, headers, body, Vec::new(), call.timeout) {
            Ok(token) => {
                self.calls.insert(token, callout);
            }
            Err(status) => {
                warn!("svidgate_authz: cannot call cluster {}: {status:?}", call.cluster);
                self.on_response(callout, now, HttpResponse { status: None, etag: None, body: &[] });
            }
        }
    }

    fn on_response(&mut self, callout: Callout, now: SystemTime, response: HttpResponse<'_>) {
        match callout {
            Callout::Bundle => self.on_bundle(now, response),
            Callout::Logs => self.on_upload(now, response.status),
        }
    }

    fn on_bundle(&mut self, now: SystemTime, response: HttpResponse<'_>) {
        let (Some(plugin), Some(poller)) = (&self.plugin, &mut self.poller) else {
            return;
        };
        let (authorizer, metrics) = (&plugin.authorizer, &plugin.metrics);
        let source = format!("bundle {} from cluster {}", poller.config().name, poller.config().service.cluster);
        match poller.on_response(now, response) {
            Fetched::NotModified => {
                authorizer.confirm(now);
                metrics.count(&[Counter::BundleNotModified]);
            }
            Fetched::Bundle(bundle) => match authorizer.activate(&bundle, now) {
                Ok(()) => {
                    poller.activated();
                    metrics.count(&[Counter::BundleActivated]);
                    info!("svidgate_authz: activated {source}, revision {:?}", bundle.revision);
                    if let Some(gauges) = &mut self.gauges {
                        if let Some(previous) = &gauges.revision {
                            previous.set(0);
                        }
                        let revision = Gauge::define(&revision_gauge(&bundle.revision));
                        revision.set(1);
                        gauges.revision = Some(revision);
                    }
                }
                Err(e) => {
                    metrics.count(&[Counter::BundleRejected]);
                    error!(
                        "svidgate_authz: rejected {source} revision {:?}, keeping the active policy: {e}",
                        bundle.revision
                    );
                }
            },
            Fetched::Rejected(e) => {
                metrics.count(&[Counter::BundleRejected]);
                error!("svidgate_authz: rejected {source}, keeping the active policy: {e}");
            }
            Fetched::Failed(why) => {
                metrics.count(&[Counter::BundleFetchFailed]);
                warn!("svidgate_authz: cannot fetch {source}, keeping the active policy: {why}");
            }
        }
    }

    fn on_upload(&mut self, now: SystemTime, status: Option<u16>) {
        let Some(plugin) = &self.plugin else { return };
        let Some(uploads) = &plugin.uploads else {
            return;
        };
        let Ok(uploaded) = uploads.try_borrow_mut().map(|mut uploads| uploads.on_response(now, status)) else {
            return;
        };
        match uploaded {
            Uploaded::Sent(records) => plugin.metrics.add(Counter::DecisionLogsUploaded, records as u64),
            Uploaded::Failed { dropped } => {
                plugin.metrics.count(&[Counter::DecisionLogsUploadFailed]);
                plugin.metrics.add(Counter::DecisionLogsDropped, dropped as u64);
                warn!(
                    "svidgate_authz: decision-log upload failed (status {status:?}); retrying, {dropped} records dropped"
                );
            }
        }
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

impl RootContext for AuthzRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!("svidgate_authz {} ({GIT_SHA}) starting", svidgate_core::VERSION);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        let authorizer = match AuthzConfig::parse(&bytes).and_then(Authorizer::new) {
            Ok(authorizer) => authorizer,
            Err(e) => {
                error!("svidgate_authz: configuration refused: {e}");
                return false;
            }
        };
        info!(
            "svidgate_authz configured: {:?} mode, entrypoint {}, input {:?}, bundle {}",
            authorizer.identity().mode,
            authorizer.entrypoint(),
            authorizer.input_plan(),
            authorizer.bundle().map_or("none", |b| b.service.cluster.as_str()),
        );
        let now = svidgate_proxy::now();
        self.poller = authorizer.bundle().map(|config| BundlePoller::new(config.clone(), now));
        let uploads = authorizer.log_service().map(|config| RefCell::new(LogUploader::new(config.clone(), now)));
        if (self.poller.is_some() || uploads.is_some())
            && let Err(status) = hostcalls::set_tick_period(TICK)
        {
            error!("svidgate_authz: cannot start the timer for bundles and decision logs: {status:?}");
            return false;
        }
        self.gauges =
            self.poller.as_ref().map(|_| Gauges { policy_age: Gauge::define(POLICY_AGE_SECONDS), revision: None });
        self.calls.clear();
        self.plugin = Some(Rc::new(Plugin {
            authorizer,
            cache: RefCell::new(PeerCache::new(PEER_CACHE_CAPACITY)),
            metrics: Metrics::define(&Counter::AUTHZ, Some(DECISION_LATENCY_US)),
            uploads,
        }));
        true
    }

    fn on_tick(&mut self) {
        let Some(plugin) = self.plugin.clone() else {
            return;
        };
        let now = svidgate_proxy::now();
        if let Some(call) = self.poller.as_mut().and_then(|poller| poller.poll(now)) {
            self.dispatch(call, Callout::Bundle, now);
        }
        if let Some(uploads) = &plugin.uploads {
            let call = uploads.try_borrow_mut().ok().and_then(|mut uploads| uploads.poll(now));
            if let Some(call) = call {
                self.dispatch(call, Callout::Logs, now);
            }
        }
        if let Some(gauges) = &self.gauges {
            gauges.policy_age.set(plugin.authorizer.policy_age(now).as_secs());
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(AuthzStream { context_id, plugin: self.plugin.clone(), response_headers: Vec::new() }))
    }
}

impl Context for AuthzStream {}

impl HttpContext for AuthzStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        #[cfg(feature = "test-crash-trigger")]
        crash::on_request_headers();
        let id = self.context_id;
        let Some(plugin) = &self.plugin else {
            // Envoy does not start streams for a refused configuration; if one comes, it is denied.
            error!("#{id} no configuration: denying");
            return svidgate_proxy::apply(id, &Decision::deny(503, DenyReason::HostFailure("no configuration".into())));
        };
        let authorizer = &plugin.authorizer;
        let identity = authorizer.identity();
        let stripped = match svidgate_proxy::strip_request_headers(identity) {
            Ok(stripped) => stripped,
            Err(reason) => {
                plugin.metrics.count(&[Counter::AuthzErrors]);
                return svidgate_proxy::apply(id, &Decision::deny(identity.deny_status, reason));
            }
        };
        let started = Instant::now();
        let peer = svidgate_proxy::peer_identity(&identity.svid, &plugin.cache);
        let plan = authorizer.input_plan();
        let fetch = |wanted: bool, path: &[&str]| wanted.then(|| property_string(path)).flatten();
        let source_address = fetch(plan.source_address, &["source", "address"]);
        let destination_address = fetch(plan.destination_address, &["destination", "address"]);
        let destination_principal = fetch(plan.destination_principal, &["connection", "uri_san_local_certificate"]);
        let protocol = fetch(plan.protocol, &["request", "protocol"]);
        let facts = RequestFacts {
            headers: &stripped,
            peer: peer.as_ref(),
            source_address: source_address.as_deref(),
            destination_address: destination_address.as_deref(),
            destination_principal: destination_principal.as_deref(),
            protocol: protocol.as_deref(),
            now: svidgate_proxy::now(),
        };
        let verdict = authorizer.decide(&facts);
        plugin.metrics.record(u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX));
        plugin.metrics.count(&verdict.events());
        svidgate_proxy::log_decision(id, &verdict.decision, verdict.identity.upstream_identity.as_deref());
        if let Some(reason) = &verdict.would_deny {
            info!("#{id} dry run: the policy would deny ({}): {reason}", reason.code());
        }
        if let Some(decision_id) = &verdict.decision_id
            && let Err(status) = hostcalls::set_property(vec![DECISION_ID_PROPERTY], Some(decision_id.as_bytes()))
        {
            warn!("#{id} cannot set the decision id in filter state: {status:?}");
        }
        if let Some(record) = verdict.decision_log {
            if authorizer.decision_logs().is_some_and(|logs| logs.console) {
                info!("{record}");
            }
            if let Some(uploads) = &plugin.uploads
                && !uploads.try_borrow_mut().is_ok_and(|mut uploads| uploads.push(record))
            {
                plugin.metrics.count(&[Counter::DecisionLogsDropped]);
            }
        }
        if let Decision::Allow { response_headers, .. } = &verdict.decision {
            self.response_headers.clone_from(response_headers);
        }
        svidgate_proxy::apply(id, &verdict.decision)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        svidgate_proxy::add_response_headers(self.context_id, &self.response_headers);
        Action::Continue
    }
}
