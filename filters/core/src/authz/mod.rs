//! Rego authorization with regorus's bytecode VM, speaking the OPA Envoy plugin's input and result.
//!
//! [`Authorizer::new`] compiles the policy once at configuration time; [`Authorizer::decide`]
//! runs the identity step, builds only the input the policy reads, evaluates, and turns the
//! result into a [`Decision`]. Every failure on that path is a denial.

pub mod decision_log;
mod input;
mod policy;
mod result;
pub mod testing;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::config::{ConfigError, IdentityConfig, RawConfig, error_status, invalid_duration, parse_duration};
use crate::decision::{Decision, DenyReason};
use crate::identity::IdentityOutcome;
use crate::metrics::Counter;
use decision_log::{DecisionLogConfig, DecisionRecord, RawDecisionLogs};

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
    /// Rego modules as (file name, source).
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
    /// The decision-log record (one JSON line), when decision logs are on and this decision is sampled.
    pub decision_log: Option<String>,
}

/// A compiled policy with its configuration, shared by every request of a plugin.
#[derive(Debug)]
pub struct Authorizer {
    identity: IdentityConfig,
    policy: Policy,
    error_status: u16,
    dry_run: bool,
    decision_logs: Option<DecisionLogConfig>,
    /// The entrypoint as OPA's decision-log `path`.
    path: String,
    /// Numbers decisions of requests without an `x-request-id`.
    decisions: Cell<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    rego: RawRego,
    data: Option<serde_json::Value>,
    entrypoint: Option<String>,
    error_status: Option<u16>,
    eval_timeout: Option<String>,
    max_instructions: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    decision_logs: Option<RawDecisionLogs>,
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

impl TryFrom<RawPolicy> for PolicyConfig {
    type Error = ConfigError;

    fn try_from(raw: RawPolicy) -> Result<Self, ConfigError> {
        let modules = match raw.rego {
            RawRego::One(source) => vec![("policy.rego".to_owned(), source)],
            RawRego::Many(map) => map.into_iter().collect(),
        };
        let data = raw.data.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
        if !data.is_object() {
            return Err(ConfigError::InvalidPolicyData);
        }
        let eval_timeout = match raw.eval_timeout.as_deref() {
            None => DEFAULT_EVAL_TIMEOUT,
            Some(v) => parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| invalid_duration("policy.eval_timeout", v))?,
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
        })
    }
}

impl Authorizer {
    /// Compiles the policy; refuses it if it does not compile for its entrypoint.
    pub fn new(config: AuthzConfig) -> Result<Self, ConfigError> {
        let policy = Policy::compile(&config.policy)?;
        let path = config.policy.entrypoint.trim_start_matches("data.").replace('.', "/");
        Ok(Self {
            identity: config.identity,
            policy,
            error_status: config.policy.error_status,
            dry_run: config.policy.dry_run,
            decision_logs: config.policy.decision_logs,
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
        self.policy.entrypoint()
    }

    /// Which optional parts of the input the policy can read; the host fetches only those.
    pub fn input_plan(&self) -> &InputPlan {
        self.policy.input_plan()
    }

    /// Decides one request.
    pub fn decide(&self, facts: &RequestFacts<'_>) -> Verdict {
        let identity = self.identity.resolve(facts.peer, facts.headers);
        if let Some(reason) = &identity.deny {
            let decision = Decision::deny(self.identity.deny_status, reason.clone());
            return Verdict { decision, identity, evaluated: false, would_deny: None, decision_log: None };
        }
        let input = build_input(self.input_plan(), facts, &identity);
        // Cloning a regorus value is a reference count; only decision logs need the input after evaluation.
        let logged_input = self.decision_logs.as_ref().map(|_| input.clone());
        let started = Instant::now();
        let evaluated = self.policy.evaluate(input);
        let eval_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let (mut decision, result) = match evaluated {
            Ok(value) => (result::interpret(&value, &self.identity, &identity, self.error_status), value),
            Err(error) => {
                let reason = match error {
                    EvalError::Limit(message) => DenyReason::EvaluationLimit(message),
                    EvalError::Failed(message) => DenyReason::EvaluationError(message),
                };
                (Decision::deny(self.error_status, reason), regorus::Value::Undefined)
            }
        };
        let mut would_deny = None;
        if self.dry_run
            && let Decision::Deny { reason, .. } = &decision
        {
            would_deny = Some(reason.clone());
            let request_edits = identity.identity_edit(&self.identity).into_iter().collect();
            decision = Decision::Allow { request_edits, response_headers: Vec::new() };
        }
        let decision_log = match (&self.decision_logs, logged_input) {
            (Some(logs), Some(input)) => {
                let id = self.decision_id(facts);
                let sampled = !decision.is_allow() || would_deny.is_some() || logs.samples(&id);
                sampled.then(|| {
                    logs.record(&DecisionRecord {
                        decision_id: &id,
                        path: &self.path,
                        input: &input,
                        result: &result,
                        timestamp: facts.now,
                        eval_ns,
                        outcome: outcome(&decision, would_deny.as_ref()),
                    })
                })
            }
            _ => None,
        };
        Verdict { decision, identity, evaluated: true, would_deny, decision_log }
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
        (_, Some(reason)) => serde_json::json!({"decision": "allow", "dry_run": true, "would_deny": reason.code()}),
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
    if dotted == "data" || dotted.starts_with("data.") {
        dotted
    } else {
        format!("data.{dotted}")
    }
}

#[cfg(test)]
mod tests;
