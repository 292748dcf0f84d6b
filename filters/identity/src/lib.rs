//! `svidgate_identity.wasm`: strips forged identity headers and injects the validated peer's
//! SPIFFE ID. No Rego: a small module for perimeters and for sidecars that need no policy.

use std::cell::RefCell;
use std::rc::Rc;

use log::{error, info};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use svidgate_core::config::IdentityConfig;
use svidgate_core::decision::{Decision, DenyReason};
use svidgate_core::metrics::Counter;
use svidgate_core::peer::PeerCache;
use svidgate_proxy::{GIT_SHA, Metrics, PEER_CACHE_CAPACITY};

/// The module's entry point, called by the proxy when the VM starts.
mod entry {
    #![allow(missing_docs)]
    use super::*;

    proxy_wasm::main! {{
        proxy_wasm::set_log_level(LogLevel::Trace);
        proxy_wasm::set_root_context(|_| Box::new(IdentityRoot::default()));
    }}
}

/// What every request of a configured plugin shares.
struct Plugin {
    config: IdentityConfig,
    cache: RefCell<PeerCache>,
    metrics: Metrics,
}

#[derive(Default)]
struct IdentityRoot {
    plugin: Option<Rc<Plugin>>,
}

struct IdentityStream {
    context_id: u32,
    plugin: Option<Rc<Plugin>>,
}

impl Context for IdentityRoot {}

impl RootContext for IdentityRoot {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        info!("svidgate_identity {} ({GIT_SHA}) starting", svidgate_core::VERSION);
        true
    }

    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = self.get_plugin_configuration().unwrap_or_default();
        match IdentityConfig::parse(&bytes) {
            Ok(config) => {
                info!("svidgate_identity configured: {:?} mode, headers {:?}", config.mode, config.headers);
                self.plugin = Some(Rc::new(Plugin {
                    config,
                    cache: RefCell::new(PeerCache::new(PEER_CACHE_CAPACITY)),
                    metrics: Metrics::define(&Counter::IDENTITY, None),
                }));
                true
            }
            Err(e) => {
                error!("svidgate_identity: configuration refused: {e}");
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(IdentityStream { context_id, plugin: self.plugin.clone() }))
    }
}

impl Context for IdentityStream {}

impl HttpContext for IdentityStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let id = self.context_id;
        let Some(plugin) = &self.plugin else {
            // Envoy does not start streams for a refused configuration; if one comes, it is denied.
            error!("#{id} no configuration: denying");
            return svidgate_proxy::apply(id, &Decision::deny(503, DenyReason::HostFailure("no configuration".into())));
        };
        let config = &plugin.config;
        let stripped = match svidgate_proxy::strip_request_headers(config) {
            Ok(stripped) => stripped,
            Err(reason) => return svidgate_proxy::apply(id, &Decision::deny(config.deny_status, reason)),
        };
        let peer = svidgate_proxy::peer_identity(&config.svid, &plugin.cache);
        let outcome = config.resolve(peer.as_ref(), &stripped);
        let decision = outcome.decision(config);
        plugin.metrics.count(&Counter::identity_events(&outcome, &decision));
        svidgate_proxy::log_decision(id, &decision, outcome.upstream_identity.as_deref());
        svidgate_proxy::apply(id, &decision)
    }
}
