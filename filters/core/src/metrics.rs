//! The counters both modules keep, named once here so filters, tests and dashboards agree.

use crate::decision::{Decision, DenyReason};
use crate::identity::IdentityOutcome;

/// A counter a filter increments. Names follow Envoy's dotted stat convention.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Counter {
    /// Requests the policy allowed.
    AuthzAllowed,
    /// Requests denied by a verdict (policy deny, undefined, no peer identity).
    AuthzDenied,
    /// Requests denied because something failed (evaluation error, limit, malformed result).
    AuthzErrors,
    /// Dry-run: requests the policy would have denied, let through.
    AuthzDryRunDenied,
    /// Evaluations stopped by their time or instruction budget (also counted in errors).
    AuthzEvaluationLimit,
    /// Requests the identity step denied (`require_peer`, invalid forwarded identity).
    IdentityDenied,
    /// Requests forwarded with an injected identity header.
    IdentityInjected,
    /// Identity headers that arrived from a peer that may not set them.
    IdentitySpoofAttempts,
}

/// The histogram of decision latency, in microseconds (authz module).
pub const DECISION_LATENCY_US: &str = "svidgate.authz.decision_latency_us";

impl Counter {
    /// Counters of the identity module.
    pub const IDENTITY: [Self; 3] = [Self::IdentitySpoofAttempts, Self::IdentityInjected, Self::IdentityDenied];
    /// Counters of the authz module.
    pub const AUTHZ: [Self; 8] = [
        Self::IdentitySpoofAttempts,
        Self::IdentityInjected,
        Self::IdentityDenied,
        Self::AuthzAllowed,
        Self::AuthzDenied,
        Self::AuthzErrors,
        Self::AuthzEvaluationLimit,
        Self::AuthzDryRunDenied,
    ];

    /// The stat name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthzAllowed => "svidgate.authz.allowed",
            Self::AuthzDenied => "svidgate.authz.denied",
            Self::AuthzErrors => "svidgate.authz.errors",
            Self::AuthzDryRunDenied => "svidgate.authz.dry_run_denied",
            Self::AuthzEvaluationLimit => "svidgate.authz.evaluation_limit",
            Self::IdentityDenied => "svidgate.identity.denied",
            Self::IdentityInjected => "svidgate.identity.injected",
            Self::IdentitySpoofAttempts => "svidgate.identity.spoof_attempts",
        }
    }

    /// The identity counters one request moves.
    pub fn identity_events(identity: &IdentityOutcome, decision: &Decision) -> Vec<Self> {
        let mut events = Vec::new();
        if identity.spoof_attempt {
            events.push(Self::IdentitySpoofAttempts);
        }
        if identity.deny.is_some() {
            events.push(Self::IdentityDenied);
        }
        if decision.is_allow() && identity.upstream_identity.is_some() {
            events.push(Self::IdentityInjected);
        }
        events
    }

    /// The identity and authz counters one request moves.
    pub fn authz_events(identity: &IdentityOutcome, decision: &Decision) -> Vec<Self> {
        let mut events = Self::identity_events(identity, decision);
        match decision {
            Decision::Allow { .. } => events.push(Self::AuthzAllowed),
            Decision::Deny { reason, .. } if reason.is_error() => {
                events.push(Self::AuthzErrors);
                if matches!(reason, DenyReason::EvaluationLimit(_)) {
                    events.push(Self::AuthzEvaluationLimit);
                }
            }
            Decision::Deny { .. } => events.push(Self::AuthzDenied),
        }
        events
    }
}
