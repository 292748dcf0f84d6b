//! The JWT bundles of `jwt_svid.bundle_endpoints`, polled on the root context's timer in both
//! modules. Fail-static, as policy bundles: a bundle that does not read, or a failed poll, leaves
//! the bundle in force (the inline one until the first answer); a new one replaces it whole.

use std::collections::HashMap;
use std::time::SystemTime;

use log::Level;

use super::{Filter, call_response, dispatch, log};
use crate::host::Host;
use crate::jwt_svid::{BundleEndpoint, JwtBundle, JwtSvidConfig};
use crate::metrics::Counter;
use crate::service::{DocumentPoller, HttpResponse, Polled};

/// One poller per bundle endpoint, and the calls in flight.
#[derive(Debug, Default)]
pub(super) struct JwtBundlePollers {
    pollers: Vec<(BundleEndpoint, DocumentPoller)>,
    /// Calls in flight: token to poller index.
    calls: HashMap<u32, usize>,
}

impl JwtBundlePollers {
    /// Pollers for the configured endpoints, the first polls due at once.
    pub(super) fn new(config: Option<&JwtSvidConfig>, now: SystemTime) -> Self {
        let endpoints = config.map(|config| config.bundle_endpoints.as_slice()).unwrap_or_default();
        let pollers = endpoints.iter().map(|endpoint| (endpoint.clone(), DocumentPoller::new(endpoint.service.clone(), now))).collect();
        Self { pollers, calls: HashMap::new() }
    }

    /// Whether there is anything to poll (the root context then needs its timer).
    pub(super) fn any(&self) -> bool {
        !self.pollers.is_empty()
    }

    /// Dispatches the polls that are due.
    pub(super) fn on_tick(&mut self, host: &impl Host, filter: &Filter) {
        let now = host.now();
        for index in 0..self.pollers.len() {
            let Some(call) = self.pollers.get_mut(index).and_then(|(_, poller)| poller.poll(now)) else { continue };
            match dispatch(host, &call) {
                Some(token) => {
                    self.calls.insert(token, index);
                }
                None => self.on_response(host, filter, index, now, HttpResponse { status: None, etag: None, body: &[] }),
            }
        }
    }

    /// The answer to call `token`, if it is one of these pollers' (else false: not ours).
    pub(super) fn on_http_call_response(&mut self, host: &impl Host, filter: &Filter, token: u32, body_size: usize) -> bool {
        let Some(index) = self.calls.remove(&token) else { return false };
        let (status, etag, body) = call_response(host, body_size, true);
        self.on_response(host, filter, index, host.now(), HttpResponse { status, etag: etag.as_deref(), body: &body });
        true
    }

    fn on_response(&mut self, host: &impl Host, filter: &Filter, index: usize, now: SystemTime, response: HttpResponse<'_>) {
        let (Some((endpoint, poller)), Some(verifier)) = (self.pollers.get_mut(index), filter.jwt_verifier()) else { return };
        let td = &endpoint.trust_domain;
        let source = format!("jwt bundle of {td} from cluster {}", endpoint.service.cluster);
        let read = match poller.on_response(now, response) {
            Polled::NotModified => return,
            Polled::Failed(why) => {
                filter.metrics.count(host, [Counter::JwtBundleFetchFailed]);
                log(host, Level::Warn, format_args!("svidgate: cannot fetch {source}, keeping the bundle in force: {why}"));
                return;
            }
            Polled::Changed(body) if body.len() > endpoint.max_bytes => Err(format!("{} bytes, above max_bytes {}", body.len(), endpoint.max_bytes)),
            Polled::Changed(body) => JwtBundle::parse(body).map_err(|e| e.to_string()),
        };
        match read {
            Ok(bundle) => {
                let kids = bundle.key_ids().collect::<Vec<_>>().join(", ");
                log(host, Level::Info, format_args!("svidgate: {source} in force, sequence {:?}, keys [{kids}]", bundle.sequence));
                verifier.set_bundle(td, bundle);
                poller.activated();
                filter.metrics.count(host, [Counter::JwtBundleUpdated]);
            }
            Err(why) => {
                filter.metrics.count(host, [Counter::JwtBundleRejected]);
                log(host, Level::Error, format_args!("svidgate: rejected {source}, keeping the bundle in force: {why}"));
            }
        }
    }
}
