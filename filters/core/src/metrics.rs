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
    /// Errors by kind (each also counted in `AuthzErrors`): evaluation failed.
    AuthzErrorEvaluation,
    /// Evaluations stopped by their time or instruction budget.
    AuthzErrorEvaluationLimit,
    /// The proxy failed the filter (headers, properties).
    AuthzErrorHostFailure,
    /// The policy result has the wrong shape.
    AuthzErrorInvalidResult,
    /// The policy tried to edit an identity header.
    AuthzErrorPolicyEditsIdentity,
    /// No policy active yet (bundle-only configuration).
    AuthzErrorPolicyNotReady,
    /// The policy is older than `max_policy_age`.
    AuthzErrorPolicyStale,
    /// A new bundle was compiled and activated.
    BundleActivated,
    /// The bundle service answered 304: the active bundle is current.
    BundleNotModified,
    /// A fetched bundle was refused (corrupt, compile error, roots); the last good policy stays.
    BundleRejected,
    /// A bundle poll failed (connection, timeout, error status).
    BundleFetchFailed,
    /// Decision-log records the receiver accepted.
    DecisionLogsUploaded,
    /// Decision-log uploads that failed (their records are retried).
    DecisionLogsUploadFailed,
    /// Decision-log records dropped because the buffer was full.
    DecisionLogsDropped,
    /// Requests the identity step denied (`require_peer`, invalid forwarded identity).
    IdentityDenied,
    /// Requests forwarded with an injected identity header.
    IdentityInjected,
    /// Identity headers that arrived from a peer that may not set them.
    IdentitySpoofAttempts,
}

/// The histogram of decision latency, in microseconds (authz module).
pub const DECISION_LATENCY_US: &str = "svidgate.authz.decision_latency_us";
/// Gauge: seconds since the bundle service last confirmed the active policy (authz module, with a bundle).
pub const POLICY_AGE_SECONDS: &str = "svidgate.authz.policy_age_seconds";
/// Gauge prefix of the active bundle revision: `<prefix>.<revision>` is 1 while active, 0 after.
pub const BUNDLE_REVISION_PREFIX: &str = "svidgate.authz.bundle.revision";

impl Counter {
    /// Counters of the identity module.
    pub const IDENTITY: [Self; 3] = [Self::IdentitySpoofAttempts, Self::IdentityInjected, Self::IdentityDenied];
    /// Counters of the authz module.
    pub const AUTHZ: [Self; 21] = [
        Self::IdentitySpoofAttempts,
        Self::IdentityInjected,
        Self::IdentityDenied,
        Self::AuthzAllowed,
        Self::AuthzDenied,
        Self::AuthzErrors,
        Self::AuthzErrorEvaluation,
        Self::AuthzErrorEvaluationLimit,
        Self::AuthzErrorHostFailure,
        Self::AuthzErrorInvalidResult,
        Self::AuthzErrorPolicyEditsIdentity,
        Self::AuthzErrorPolicyNotReady,
        Self::AuthzErrorPolicyStale,
        Self::AuthzDryRunDenied,
        Self::BundleActivated,
        Self::BundleNotModified,
        Self::BundleRejected,
        Self::BundleFetchFailed,
        Self::DecisionLogsUploaded,
        Self::DecisionLogsUploadFailed,
        Self::DecisionLogsDropped,
    ];

    /// The stat name.
    pub fn name(self) -> &'static str {
        match self {
            Self::AuthzAllowed => "svidgate.authz.allowed",
            Self::AuthzDenied => "svidgate.authz.denied",
            Self::AuthzErrors => "svidgate.authz.errors",
            Self::AuthzDryRunDenied => "svidgate.authz.dry_run_denied",
            Self::AuthzErrorEvaluation => "svidgate.authz.error.evaluation_error",
            Self::AuthzErrorEvaluationLimit => "svidgate.authz.error.evaluation_limit",
            Self::AuthzErrorHostFailure => "svidgate.authz.error.host_failure",
            Self::AuthzErrorInvalidResult => "svidgate.authz.error.invalid_result",
            Self::AuthzErrorPolicyEditsIdentity => "svidgate.authz.error.policy_edits_identity_header",
            Self::AuthzErrorPolicyNotReady => "svidgate.authz.error.policy_not_ready",
            Self::AuthzErrorPolicyStale => "svidgate.authz.error.policy_stale",
            Self::BundleActivated => "svidgate.authz.bundle.activated",
            Self::BundleNotModified => "svidgate.authz.bundle.not_modified",
            Self::BundleRejected => "svidgate.authz.bundle.rejected",
            Self::BundleFetchFailed => "svidgate.authz.bundle.fetch_failed",
            Self::DecisionLogsUploaded => "svidgate.authz.decision_logs.uploaded",
            Self::DecisionLogsUploadFailed => "svidgate.authz.decision_logs.upload_failed",
            Self::DecisionLogsDropped => "svidgate.authz.decision_logs.dropped",
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

    /// The counter of an error's kind.
    fn error_kind(reason: &DenyReason) -> Option<Self> {
        Some(match reason {
            DenyReason::EvaluationError(_) => Self::AuthzErrorEvaluation,
            DenyReason::EvaluationLimit(_) => Self::AuthzErrorEvaluationLimit,
            DenyReason::HostFailure(_) => Self::AuthzErrorHostFailure,
            DenyReason::InvalidResult(_) => Self::AuthzErrorInvalidResult,
            DenyReason::PolicyEditsIdentityHeader(_) => Self::AuthzErrorPolicyEditsIdentity,
            DenyReason::PolicyNotReady => Self::AuthzErrorPolicyNotReady,
            DenyReason::PolicyStale(_) => Self::AuthzErrorPolicyStale,
            _ => return None,
        })
    }

    /// The identity and authz counters one request moves.
    pub fn authz_events(identity: &IdentityOutcome, decision: &Decision) -> Vec<Self> {
        let mut events = Self::identity_events(identity, decision);
        match decision {
            Decision::Allow { .. } => events.push(Self::AuthzAllowed),
            Decision::Deny { reason, .. } if reason.is_error() => {
                events.push(Self::AuthzErrors);
                events.extend(Self::error_kind(reason));
            }
            Decision::Deny { .. } => events.push(Self::AuthzDenied),
        }
        events
    }
}
