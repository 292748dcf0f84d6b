//! Rego authorization with regorus's bytecode VM, speaking the OPA Envoy plugin's input and result.
//!
//! [`Authorizer::new`] compiles the policy once at configuration time; [`Authorizer::decide`]
//! runs the identity step, builds only the input the policy reads, evaluates, and turns the
//! result into a [`Decision`]. Every failure on that path is a denial.

mod input;
mod policy;
mod result;
pub mod testing;

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, IdentityConfig, RawConfig, error_status, invalid_duration, parse_duration};
use crate::decision::{Decision, DenyReason};
use crate::identity::IdentityOutcome;

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
}

/// A compiled policy with its configuration, shared by every request of a plugin.
#[derive(Debug)]
pub struct Authorizer {
    identity: IdentityConfig,
    policy: Policy,
    error_status: u16,
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
        })
    }
}

impl Authorizer {
    /// Compiles the policy; refuses it if it does not compile for its entrypoint.
    pub fn new(config: AuthzConfig) -> Result<Self, ConfigError> {
        let policy = Policy::compile(&config.policy)?;
        Ok(Self { identity: config.identity, policy, error_status: config.policy.error_status })
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
            return Verdict { decision, identity, evaluated: false };
        }
        let input = build_input(self.input_plan(), facts, &identity);
        let decision = match self.policy.evaluate(input) {
            Ok(value) => result::interpret(&value, &self.identity, &identity, self.error_status),
            Err(error) => {
                let reason = match error {
                    EvalError::Limit(message) => DenyReason::EvaluationLimit(message),
                    EvalError::Failed(message) => DenyReason::EvaluationError(message),
                };
                Decision::deny(self.error_status, reason)
            }
        };
        Verdict { decision, identity, evaluated: true }
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
