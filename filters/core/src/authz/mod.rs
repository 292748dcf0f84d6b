//! Rego authorization with regorus's bytecode VM, speaking the OPA Envoy plugin's input and result.
//!
//! [`Authorizer::new`] compiles the policy once at configuration time. Per request, the pipeline
//! (`crate::filter`) takes one snapshot of the active policy with [`Authorizer::policy_at`],
//! fetches only the input parts it reads, and [`Authorizer::evaluate`] builds the input,
//! evaluates and turns the result into a [`Decision`]. Every failure on that path is a denial.

pub mod body;
pub mod bundle;
pub mod cache;
pub mod data;
pub mod decision_log;
mod gzip;
mod input;
pub mod metadata;
pub mod numbers;
mod policy;
mod result;
pub mod service;
pub mod testing;

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use crate::config::{ConfigError, IdentityConfig, PolicyConfig};
use crate::decision::{Decision, DenyReason, Verdict};
use crate::identity::IdentityOutcome;
use bundle::{Bundle, BundleError};
use decision_log::DecisionRecord;

pub use input::{InputPlan, RequestFacts, build_input};
pub use policy::{EvalError, Policy};
pub use result::dynamic_metadata;

/// The active policy with its configuration, shared by every request of a plugin. A new bundle
/// is compiled beside it and swapped in whole; requests in flight finish on the policy they started with.
#[derive(Debug)]
pub struct Authorizer {
    /// Entrypoint, limits, dry-run, logs, bundle; the bootstrap modules and data are dropped once compiled.
    settings: PolicyConfig,
    active: RefCell<Option<Rc<ActivePolicy>>>,
    /// When the bundle service last confirmed the active policy (the bootstrap: when first asked).
    confirmed: Cell<Option<SystemTime>>,
    /// Each entrypoint as OPA's decision-log `path`, in the order of `settings.entrypoints()`.
    paths: Vec<String>,
    /// `policy.routes`: (route, entrypoint index), sorted by route.
    routes: Vec<(String, usize)>,
    /// The entrypoint of requests on routes not listed; `None` denies them.
    unlisted: Option<usize>,
    /// Numbers decisions, for the id of a decision when the system has no randomness to give.
    decisions: Cell<u64>,
}

/// A compiled policy and where it came from: what one request is decided on, start to end.
#[derive(Debug)]
pub struct ActivePolicy {
    policy: Policy,
    /// The bundle revision; `None` for the policy in the plugin configuration.
    revision: Option<String>,
}

impl ActivePolicy {
    /// Which optional parts of the input entrypoint `entry` can read; the host fetches only those.
    pub fn input_plan(&self, entry: usize) -> InputPlan {
        self.policy.input_plan(entry).copied().unwrap_or(InputPlan::ALL)
    }
}

impl Authorizer {
    /// Compiles the policy in the configuration; refuses it if it does not compile for its
    /// entrypoint. With a bundle and no inline policy, requests are denied until a bundle is active.
    pub fn new(mut settings: PolicyConfig) -> Result<Self, ConfigError> {
        let active = if settings.modules.is_empty() {
            None
        } else {
            Some(Rc::new(ActivePolicy { policy: Policy::compile(&settings)?, revision: None }))
        };
        settings.modules = Vec::new();
        settings.data = serde_json::Value::Null;
        let entrypoints = settings.entrypoints();
        let index = |entrypoint: &str| entrypoints.iter().position(|e| *e == entrypoint);
        let paths = entrypoints.iter().map(|e| e.trim_start_matches("data.").replace('.', "/")).collect();
        let (routes, unlisted) = match &settings.routes {
            None => (Vec::new(), Some(0)),
            Some(routes) => (
                routes.entrypoints.iter().filter_map(|(route, e)| Some((route.clone(), index(e)?))).collect(),
                if routes.deny_unlisted { None } else { index(&settings.entrypoint) },
            ),
        };
        Ok(Self {
            settings,
            active: RefCell::new(active),
            confirmed: Cell::new(None),
            paths,
            routes,
            unlisted,
            decisions: Cell::new(0),
        })
    }

    /// The entrypoint (its index) deciding requests on `route` (`None`: the request matched no
    /// route); `None` when such requests are denied.
    pub fn entry_for_route(&self, route: Option<&str>) -> Option<usize> {
        match route {
            Some(route) if !self.routes.is_empty() => self
                .routes
                .binary_search_by(|(name, _)| name.as_str().cmp(route))
                .ok()
                .and_then(|at| self.routes.get(at))
                .map_or(self.unlisted, |(_, entry)| Some(*entry)),
            _ => self.unlisted,
        }
    }

    /// The policy settings (the compiled modules and data are not kept here).
    pub fn settings(&self) -> &PolicyConfig {
        &self.settings
    }

    /// Which optional parts of the input each entrypoint of the active policy can read.
    pub fn input_plans(&self) -> Vec<InputPlan> {
        let active = self.current();
        (0..self.paths.len()).map(|entry| active.as_ref().map(|active| active.input_plan(entry)).unwrap_or_default()).collect()
    }

    /// Why the active policy runs on regorus's interpreter rather than its VM, if it does.
    pub fn interpreter_reason(&self) -> Option<String> {
        self.current().and_then(|active| active.policy.interpreter_reason().map(str::to_owned))
    }

    /// The revision of the active bundle (`None` for the configured policy, or before any policy).
    pub fn revision(&self) -> Option<String> {
        self.current().and_then(|active| active.revision.clone())
    }

    /// Compiles `bundle` and, if it compiles, makes it the active policy, confirmed at `now`.
    pub fn activate(&self, bundle: &Bundle, now: SystemTime) -> Result<(), BundleError> {
        let policy = Policy::compile_bundle(&self.settings, bundle)?;
        let active = Rc::new(ActivePolicy { policy, revision: Some(bundle.revision.clone()) });
        *self.active.try_borrow_mut().map_err(|_| BundleError::Compile("policy in use".into()))? = Some(active);
        self.confirmed.set(Some(now));
        Ok(())
    }

    /// The bundle service confirmed the active policy is current (`304 Not Modified`).
    pub fn confirm(&self, now: SystemTime) {
        self.confirmed.set(Some(now));
    }

    /// How long since the bundle service last confirmed the active policy.
    pub fn policy_age(&self, now: SystemTime) -> Duration {
        let confirmed = self.confirmed.get().unwrap_or_else(|| {
            self.confirmed.set(Some(now));
            now
        });
        now.duration_since(confirmed).unwrap_or_default()
    }

    fn current(&self) -> Option<Rc<ActivePolicy>> {
        self.active.try_borrow().ok().and_then(|active| active.clone())
    }

    /// The policy that decides a request arriving `now`: the one snapshot the request uses from
    /// input planning to evaluation. `Err` when no policy may decide (stale, or none yet).
    pub fn policy_at(&self, now: SystemTime) -> Result<Rc<ActivePolicy>, DenyReason> {
        if let Some(max) = self.settings.max_policy_age
            && let age = self.policy_age(now)
            && age > max
        {
            return Err(DenyReason::PolicyStale(format!(
                "{}s old, max_policy_age is {}s",
                age.as_secs(),
                max.as_secs()
            )));
        }
        self.current().ok_or(DenyReason::PolicyNotReady)
    }

    /// Evaluates entrypoint `entry` of `active` for one request whose identity step passed, and
    /// turns the result into a decision (dry run, decision id and decision log included).
    pub fn evaluate(
        &self,
        active: &ActivePolicy,
        entry: usize,
        facts: &RequestFacts<'_>,
        identity_config: &IdentityConfig,
        identity: IdentityOutcome,
    ) -> Verdict {
        let logs = self.settings.decision_logs.as_ref();
        let cache = active.policy.cache(entry);
        let key = cache.and_then(|cache| cache.key(facts));
        let hit = cache.zip(key.as_deref()).and_then(|(cache, key)| cache.get(key));
        // On a hit the input is built only for the decision log.
        let input = (hit.is_none() || logs.is_some()).then(|| build_input(&active.input_plan(entry), facts, &identity));
        // Cloning a regorus value is a reference count; only decision logs need the input after
        // evaluation, and only they read the evaluation time.
        let logged = logs.and(input.clone()).map(|input| (input, Instant::now()));
        let decision_cache = cache.map(|_| hit.is_some());
        let error_status = self.settings.error_status;
        let evaluated = match hit {
            Some(interpreted) => Ok(interpreted),
            None => {
                let evaluated = active.policy.evaluate_at(entry, input.unwrap_or(regorus::Value::Undefined));
                let interpreted = evaluated.map(|result| Rc::new(Interpreted::of(result, identity_config, error_status)));
                if let (Some(cache), Some(key), Ok(interpreted)) = (cache, key, &interpreted) {
                    cache.insert(key, interpreted);
                }
                interpreted
            }
        };
        let eval_ns = logged.as_ref().map(|(_, started)| u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let (mut decision, dynamic_metadata, result) = match evaluated {
            Ok(interpreted) => {
                let Interpreted { result, decision, dynamic_metadata } = interpreted.as_ref();
                (decision.clone(), dynamic_metadata.clone(), result.clone())
            }
            Err(error) => {
                let reason = match error {
                    EvalError::Limit(message) => DenyReason::EvaluationLimit(message),
                    EvalError::Failed(message) => DenyReason::EvaluationError(message),
                };
                (Decision::deny(error_status, reason), None, regorus::Value::Undefined)
            }
        };
        let mut would_deny = None;
        if self.settings.dry_run
            && let Decision::Deny { reason, .. } = &decision
        {
            would_deny = Some(reason.clone());
            decision = Decision::allow();
        }
        let (Some(logs), Some((input, _))) = (logs, logged) else {
            return Verdict {
                decision,
                identity,
                would_deny,
                decision_id: None,
                decision_log: None,
                dynamic_metadata,
                decision_cache,
            };
        };
        let id = self.decision_id();
        if let Some(header) = &logs.decision_id_header {
            decision.add_response_header(header, &id);
        }
        let sampled = !decision.is_allow() || would_deny.is_some() || logs.samples(&id);
        let bundle =
            self.settings.bundle.as_ref().map(|b| (b.name.as_str(), active.revision.as_deref().unwrap_or_default()));
        let decision_log = sampled.then(|| {
            logs.record(&DecisionRecord {
                decision_id: &id,
                request_id: facts.headers.get("x-request-id"),
                path: self.paths.get(entry).map_or("", String::as_str),
                input: &input,
                result: &result,
                timestamp: facts.now,
                eval_ns: eval_ns.unwrap_or_default(),
                bundle,
                outcome: outcome(&decision, would_deny.as_ref()),
            })
        });
        Verdict { decision, identity, would_deny, decision_id: Some(id), decision_log, dynamic_metadata, decision_cache }
    }

    /// A new decision id: a random UUID (version 4). Never the request's `x-request-id`, which
    /// a client can choose (to collide ids, forge correlations, or pick ids the sampling drops);
    /// that one is recorded beside it, in the record's `request_context`.
    fn decision_id(&self) -> String {
        let mut bytes = [0_u8; 16];
        if getrandom::fill(&mut bytes).is_err() {
            // No randomness (never seen on WASI or Linux): unique within this VM all the same.
            let n = self.decisions.get().wrapping_add(1);
            self.decisions.set(n);
            bytes = u128::from(n).to_be_bytes();
        }
        uuid_v4(bytes)
    }
}

/// A policy result and the decision read from it, kept together in the decision cache: the
/// decision depends on nothing but the result and the plugin's configuration, which outlives
/// the cache (a new configuration builds a new policy, and a new policy a new cache), so a
/// cached request skips reading the result too.
#[derive(Debug)]
pub(crate) struct Interpreted {
    result: regorus::Value,
    decision: Decision,
    /// `dynamic_metadata`, published whatever the decision, as opa-envoy-plugin publishes it on
    /// allow and deny; a result where it is not an object is denied as invalid.
    dynamic_metadata: Option<String>,
}

impl Interpreted {
    fn of(result: regorus::Value, identity_config: &IdentityConfig, error_status: u16) -> Self {
        let (decision, dynamic_metadata) = result::interpret(&result, identity_config, error_status);
        Self { result, decision, dynamic_metadata }
    }
}

/// `xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx` from 16 random bytes (RFC 9562 version 4, variant 10).
fn uuid_v4(mut bytes: [u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    if let Some(version) = bytes.get_mut(6) {
        *version = (*version & 0x0f) | 0x40;
    }
    if let Some(variant) = bytes.get_mut(8) {
        *variant = (*variant & 0x3f) | 0x80;
    }
    let mut id = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            id.push('-');
        }
        for nibble in [byte >> 4, byte & 0x0f] {
            id.push(char::from(HEX.get(usize::from(nibble)).copied().unwrap_or(b'0')));
        }
    }
    id
}

/// What svidgate did, for the decision log's `svidgate` field.
fn outcome(decision: &Decision, would_deny: Option<&DenyReason>) -> serde_json::Value {
    match (decision, would_deny) {
        (_, Some(reason)) => {
            serde_json::json!({"decision": "allow", "dry_run": true, "would_deny": reason.code()})
        }
        (Decision::Allow { .. }, None) => serde_json::json!({"decision": "allow"}),
        (Decision::Deny { status, reason, .. }, None) => {
            serde_json::json!({"decision": "deny", "status": status, "reason": reason.code()})
        }
    }
}

/// The decision the module takes for a policy result (the identity header, set as it is carried
/// out, aside): for tools that evaluate policies outside the proxy (`svidgate eval`, `svidgate replay`).
pub fn decision_for_result(result: &regorus::Value, identity: &IdentityConfig, error_status: u16) -> Decision {
    result::interpret(result, identity, error_status).0
}

#[cfg(test)]
mod tests;
