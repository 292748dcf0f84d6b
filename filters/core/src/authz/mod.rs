//! Rego authorization with regorus's bytecode VM, speaking the OPA Envoy plugin's input and result.
//!
//! [`Authorizer::new`] compiles the policy once at configuration time; [`Authorizer::decide`]
//! runs the identity step, builds only the input the policy reads, evaluates, and turns the
//! result into a [`Decision`]. Every failure on that path is a denial.

pub mod bundle;
pub mod decision_log;
mod gzip;
mod input;
mod policy;
mod result;
pub mod service;
pub mod testing;

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;

use crate::config::{ConfigError, IdentityConfig, RawConfig, error_status, positive_duration};
use crate::decision::{Decision, DenyReason};
use crate::identity::IdentityOutcome;
use crate::metrics::Counter;
use bundle::{Bundle, BundleError};
use decision_log::{DecisionLogConfig, DecisionRecord, RawDecisionLogs};
use service::{BundleConfig, LogServiceConfig, RawService};

pub use input::{InputPlan, RequestFacts, build_input};
pub use policy::{EvalError, Policy};

/// The OPA Envoy plugin's default decision path.
pub const DEFAULT_ENTRYPOINT: &str = "data.envoy.authz.allow";
/// Wall-clock budget of one evaluation unless configured otherwise.
pub const DEFAULT_EVAL_TIMEOUT: Duration = Duration::from_millis(10);
/// Instruction budget of one evaluation unless configured otherwise.
pub const DEFAULT_MAX_INSTRUCTIONS: usize = 1_000_000;

/// The authz module's configuration: the shared identity block plus `policy`.
#[derive(Clone, Debug)]
pub struct AuthzConfig {
    /// Identity behaviour, as in the identity module.
    pub identity: IdentityConfig,
    /// The Rego policy and how to evaluate it.
    pub policy: PolicyConfig,
}

/// The `policy` block.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// Rego modules as (file name, source); with a bundle, the bootstrap policy (may be empty).
    pub modules: Vec<(String, String)>,
    /// The base document `data` (a JSON object).
    pub data: serde_json::Value,
    /// The rule evaluated per request, as `data.pkg.rule`.
    pub entrypoint: String,
    /// Status of a denial caused by an evaluation failure.
    pub error_status: u16,
    /// Wall-clock budget of one evaluation.
    pub eval_timeout: Duration,
    /// Instruction budget of one evaluation.
    pub max_instructions: usize,
    /// Evaluate and log, but let policy denials through (for rolling out a policy).
    pub dry_run: bool,
    /// Decision logs, if enabled.
    pub decision_logs: Option<DecisionLogConfig>,
    /// An OPA bundle service polled for new policy, if configured.
    pub bundle: Option<BundleConfig>,
    /// Deny once the bundle service has not confirmed the active policy for this long.
    pub max_policy_age: Option<Duration>,
}

/// The outcome of [`Authorizer::decide`]: the decision and what led to it, for metrics and logs.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// What to do with the request.
    pub decision: Decision,
    /// What the identity step concluded.
    pub identity: IdentityOutcome,
    /// Whether the policy was evaluated (false when the identity step denied first).
    pub evaluated: bool,
    /// In dry-run mode, the denial the policy would have made.
    pub would_deny: Option<DenyReason>,
    /// The decision id, when decision logs are on and the policy was evaluated.
    pub decision_id: Option<String>,
    /// The decision-log record (one JSON line), when decision logs are on and this decision is sampled.
    pub decision_log: Option<String>,
}

/// The active policy with its configuration, shared by every request of a plugin. A new bundle
/// is compiled beside it and swapped in whole; requests in flight finish on the policy they started with.
#[derive(Debug)]
pub struct Authorizer {
    identity: IdentityConfig,
    /// Entrypoint, limits, dry-run, logs, bundle; the bootstrap modules and data are dropped once compiled.
    settings: PolicyConfig,
    active: RefCell<Option<Rc<Active>>>,
    /// When the bundle service last confirmed the active policy (the bootstrap: when first asked).
    confirmed: Cell<Option<SystemTime>>,
    /// The entrypoint as OPA's decision-log `path`.
    path: String,
    /// Numbers decisions of requests without an `x-request-id`.
    decisions: Cell<u64>,
}

/// A compiled policy and where it came from.
#[derive(Debug)]
struct Active {
    policy: Policy,
    /// The bundle revision; `None` for the policy in the plugin configuration.
    revision: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rego: Option<RawRego>,
    data: Option<serde_json::Value>,
    entrypoint: Option<String>,
    error_status: Option<u16>,
    eval_timeout: Option<String>,
    max_instructions: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    decision_logs: Option<RawDecisionLogs>,
    bundle: Option<RawService>,
    max_policy_age: Option<String>,
}

/// One module as a string, or several as a map from file name to source.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRego {
    One(String),
    Many(BTreeMap<String, String>),
}

impl AuthzConfig {
    /// Parses the authz module's configuration.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = RawConfig::parse(bytes)?;
        let identity = IdentityConfig::try_from(&raw)?;
        let policy = raw.policy.ok_or(ConfigError::MissingPolicy)?;
        let policy = PolicyConfig::try_from(serde_json::from_value::<RawPolicy>(policy)?)?;
        Ok(Self { identity, policy })
    }
}

impl PolicyConfig {
    /// An inline policy with every other setting at its default, for tools and tests.
    pub fn inline(modules: Vec<(String, String)>, data: serde_json::Value, entrypoint: &str) -> Self {
        Self {
            modules,
            data,
            entrypoint: normalize_entrypoint(entrypoint),
            error_status: crate::config::DEFAULT_DENY_STATUS,
            eval_timeout: DEFAULT_EVAL_TIMEOUT,
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
            dry_run: false,
            decision_logs: None,
            bundle: None,
            max_policy_age: None,
        }
    }
}

impl TryFrom<RawPolicy> for PolicyConfig {
    type Error = ConfigError;

    fn try_from(raw: RawPolicy) -> Result<Self, ConfigError> {
        let modules = match raw.rego {
            None if raw.bundle.is_none() => return Err(ConfigError::MissingPolicy),
            None => Vec::new(),
            Some(RawRego::One(source)) => vec![("policy.rego".to_owned(), source)],
            Some(RawRego::Many(map)) => map.into_iter().collect(),
        };
        let data = raw.data.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        if !data.is_object() {
            return Err(ConfigError::InvalidPolicyData);
        }
        let eval_timeout = match raw.eval_timeout.as_deref() {
            None => DEFAULT_EVAL_TIMEOUT,
            Some(v) => positive_duration("policy.eval_timeout", v)?,
        };
        let max_policy_age = match raw.max_policy_age.as_deref() {
            None => None,
            Some(_) if raw.bundle.is_none() => {
                return Err(ConfigError::InvalidService {
                    field: "policy.max_policy_age",
                    message: "needs policy.bundle: an inline policy never ages".into(),
                });
            }
            Some(v) => Some(positive_duration("policy.max_policy_age", v)?),
        };
        Ok(Self {
            modules,
            data,
            entrypoint: normalize_entrypoint(raw.entrypoint.as_deref().unwrap_or(DEFAULT_ENTRYPOINT)),
            error_status: error_status("policy.error_status", raw.error_status)?,
            eval_timeout,
            max_instructions: raw.max_instructions.unwrap_or(DEFAULT_MAX_INSTRUCTIONS),
            dry_run: raw.dry_run,
            decision_logs: raw.decision_logs.map(DecisionLogConfig::try_from).transpose()?,
            bundle: raw.bundle.as_ref().map(RawService::bundle).transpose()?,
            max_policy_age,
        })
    }
}

impl Authorizer {
    /// Compiles the policy in the configuration; refuses it if it does not compile for its
    /// entrypoint. With a bundle and no inline policy, requests are denied until a bundle is active.
    pub fn new(config: AuthzConfig) -> Result<Self, ConfigError> {
        let mut settings = config.policy;
        let active = if settings.modules.is_empty() {
            None
        } else {
            Some(Rc::new(Active { policy: Policy::compile(&settings)?, revision: None }))
        };
        settings.modules = Vec::new();
        settings.data = serde_json::Value::Null;
        let path = settings.entrypoint.trim_start_matches("data.").replace('.', "/");
        Ok(Self {
            identity: config.identity,
            settings,
            active: RefCell::new(active),
            confirmed: Cell::new(None),
            path,
            decisions: Cell::new(0),
        })
    }

    /// The identity behaviour.
    pub fn identity(&self) -> &IdentityConfig {
        &self.identity
    }

    /// The rule evaluated per request.
    pub fn entrypoint(&self) -> &str {
        &self.settings.entrypoint
    }

    /// Which optional parts of the input the active policy can read; the host fetches only those.
    pub fn input_plan(&self) -> InputPlan {
        self.current().map(|active| *active.policy.input_plan()).unwrap_or_default()
    }

    /// The bundle service, if configured.
    pub fn bundle(&self) -> Option<&BundleConfig> {
        self.settings.bundle.as_ref()
    }

    /// Decision-log settings, if enabled.
    pub fn decision_logs(&self) -> Option<&DecisionLogConfig> {
        self.settings.decision_logs.as_ref()
    }

    /// The decision-log receiver, if configured.
    pub fn log_service(&self) -> Option<&LogServiceConfig> {
        self.decision_logs().and_then(|logs| logs.service.as_ref())
    }

    /// The revision of the active bundle (`None` for the configured policy, or before any policy).
    pub fn revision(&self) -> Option<String> {
        self.current().and_then(|active| active.revision.clone())
    }

    /// Compiles `bundle` and, if it compiles, makes it the active policy, confirmed at `now`.
    pub fn activate(&self, bundle: &Bundle, now: SystemTime) -> Result<(), BundleError> {
        let policy = Policy::compile_bundle(&self.settings, bundle)?;
        let active = Rc::new(Active { policy, revision: Some(bundle.revision.clone()) });
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

    fn current(&self) -> Option<Rc<Active>> {
        self.active.try_borrow().ok().and_then(|active| active.clone())
    }

    /// Decides one request.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Verdict {
        let identity = self.identity.resolve(facts.peer, facts.headers);
        let refuse = |status, reason, identity| Verdict {
            decision: Decision::deny(status, reason),
            identity,
            evaluated: false,
            would_deny: None,
            decision_id: None,
            decision_log: None,
        };
        if let Some(reason) = &identity.deny {
            return refuse(self.identity.deny_status, reason.clone(), identity);
        }
        if let Some(max) = self.settings.max_policy_age
            && let age = self.policy_age(facts.now)
            && age > max
        {
            let reason =
                DenyReason::PolicyStale(format!("{}s old, max_policy_age is {}s", age.as_secs(), max.as_secs()));
            return refuse(self.settings.error_status, reason, identity);
        }
        let Some(active) = self.current() else {
            return refuse(self.settings.error_status, DenyReason::PolicyNotReady, identity);
        };
        let input = build_input(active.policy.input_plan(), facts, &identity);
        // Cloning a regorus value is a reference count; only decision logs need the input after evaluation.
        let logged_input = self.settings.decision_logs.as_ref().map(|_| input.clone());
        let started = Instant::now();
        let evaluated = active.policy.evaluate(input);
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (mut decision, result) = match evaluated {
            Ok(value) => (result::interpret(&value, &self.identity, &identity, self.settings.error_status), value),
            Err(error) => {
                let reason = match error {
                    EvalError::Limit(message) => DenyReason::EvaluationLimit(message),
                    EvalError::Failed(message) => DenyReason::EvaluationError(message),
                };
                (Decision::deny(self.settings.error_status, reason), regorus::Value::Undefined)
            }
        };
        let mut would_deny = None;
        if self.settings.dry_run
            && let Decision::Deny { reason, .. } = &decision
        {
            would_deny = Some(reason.clone());
            let request_edits = identity.identity_edit(&self.identity).into_iter().collect();
            decision = Decision::Allow { request_edits, response_headers: Vec::new() };
        }
        let Some((logs, input)) = self.settings.decision_logs.as_ref().zip(logged_input) else {
            return Verdict { decision, identity, evaluated: true, would_deny, decision_id: None, decision_log: None };
        };
        let id = self.decision_id(facts);
        if let Some(header) = &logs.decision_id_header {
            decision.add_response_header(header, &id);
        }
        let sampled = !decision.is_allow() || would_deny.is_some() || logs.samples(&id);
        let bundle =
            self.settings.bundle.as_ref().map(|b| (b.name.as_str(), active.revision.as_deref().unwrap_or_default()));
        let decision_log = sampled.then(|| {
            logs.record(&DecisionRecord {
                decision_id: &id,
                path: &self.path,
                input: &input,
                result: &result,
                timestamp: facts.now,
                eval_ns,
                bundle,
                outcome: outcome(&decision, would_deny.as_ref()),
            })
        });
        Verdict { decision, identity, evaluated: true, would_deny, decision_id: Some(id), decision_log }
    }

    /// The request's `x-request-id` (Envoy sets one on every request), else a local number.
    fn decision_id(&self, facts: &RequestFacts<'_>) -> String {
        match facts.headers.get("x-request-id").filter(|id| !id.is_empty()) {
            Some(id) => id.to_owned(),
            None => {
                let n = self.decisions.get().wrapping_add(1);
                self.decisions.set(n);
                format!("svidgate-{n}")
            }
        }
    }
}

impl Verdict {
    /// The counters this decision moves.
    pub fn events(&self) -> Vec<Counter> {
        let mut events = Counter::authz_events(&self.identity, &self.decision);
        if self.would_deny.is_some() {
            events.push(Counter::AuthzDryRunDenied);
        }
        events
    }
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

/// The decision the module takes for a policy result, before the identity header is added: for
/// tools that evaluate policies outside the proxy (`svidgate eval`, `svidgate replay`).
pub fn decision_for_result(result: &regorus::Value, identity: &IdentityConfig, error_status: u16) -> Decision {
    let no_identity = IdentityOutcome { upstream_identity: None, forwarded: false, spoof_attempt: false, deny: None };
    result::interpret(result, identity, &no_identity, error_status)
}

/// Accepts `envoy/authz/allow` (OPA Envoy plugin `path`), `envoy.authz.allow` and `data.envoy.authz.allow`.
pub fn normalize_entrypoint(entrypoint: &str) -> String {
    let dotted = entrypoint.trim_matches('/').replace('/', ".");
    if dotted == "data" || dotted.starts_with("data.") { dotted } else { format!("data.{dotted}") }
}

#[cfg(test)]
mod tests;
