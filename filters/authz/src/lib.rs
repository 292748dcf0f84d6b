//! `svidgate_authz.wasm`: the identity behaviour of `svidgate_identity.wasm` plus a Rego policy
//! evaluated by an embedded regorus bytecode VM, with the OPA Envoy plugin's input and result.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use svidgate_core::authz::{AuthzConfig, Authorizer, RequestFacts};
use svidgate_core::decision::{Decision, DenyReason};
use svidgate_core::metrics::{Counter, DECISION_LATENCY_US};
use svidgate_core::peer::PeerCache;
use svidgate_proxy::{GIT_SHA, Metrics, PEER_CACHE_CAPACITY, property_string};

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

/// What every request of a configured plugin shares: the compiled policy above all.
struct Plugin {
    authorizer: Authorizer,
    cache: RefCell<PeerCache>,
    metrics: Metrics,
}

#[derive(Default)]
struct AuthzRoot {
    plugin: Option<Rc<Plugin>>,
}

struct AuthzStream {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
    /// The policy's `response_headers_to_add`, applied when the response comes back.
    response_headers: Vec<(String, String)>,
}

impl Context for AuthzRoot {}

impl RootContext for AuthzRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!("svidgate_authz {} ({GIT_SHA}) starting", svidgate_core::VERSION);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match AuthzConfig::parse(&bytes).and_then(Authorizer::new) {
            Ok(authorizer) => {
                info!(
                    "svidgate_authz configured: {:?} mode, entrypoint {}, input {:?}",
                    authorizer.identity().mode,
                    authorizer.entrypoint(),
                    authorizer.input_plan()
                );
                self.plugin = Some(Rc::new(Plugin {
                    authorizer,
                    cache: RefCell::new(PeerCache::new(PEER_CACHE_CAPACITY)),
                    metrics: Metrics::define(&Counter::AUTHZ, Some(DECISION_LATENCY_US)),
                }));
                true
            }
            Err(e) => {
                error!("svidgate_authz: configuration refused: {e}");
                false
            }
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
        #[cfg(feature = "test-crash-trigger")] crash::on_request_headers();
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
        let destination_principal =
            fetch(plan.destination_principal, &["connection", "uri_san_local_certificate"]);
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
        if let Some(record) = &verdict.decision_log {
            info!("{record}");
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
