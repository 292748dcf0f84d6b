//! The metrics both modules keep, named once here so filters, tests and dashboards agree, and
//! defined once per plugin through the host.

use crate::decision::{Decision, DenyReason, Verdict};
use crate::host::{Host, MetricKind};
use crate::jwt_svid::JwtSvidError;

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
    /// Requests refused because their `:path` is not in normal form (the path guard).
    PathGuardRefused,
    /// Requests decided on their body (the policy reads it).
    AuthzBodyRequests,
    /// Body bytes read for the policy: at most `max_request_bytes` per request, held in the VM
    /// only while its one evaluation runs.
    AuthzBodyBytes,
    /// Requests decided on the first `max_request_bytes` of a longer body (`allow_partial_message`).
    AuthzBodyTruncated,
    /// Requests answered 413: the body is longer than `max_request_bytes`.
    AuthzBodyTooLarge,
    /// Requests denied because the body does not parse as its `content-type`, or is not UTF-8.
    AuthzBodyInvalid,
    /// Decisions the decision cache answered.
    AuthzDecisionCacheHits,
    /// Requests whose JWT-SVID was valid (the connection had no client certificate).
    JwtSvidAccepted,
    /// JWT-SVIDs denied (each also counted in `IdentityDenied`): not a JWT-SVID's shape.
    JwtSvidMalformed,
    /// JWT-SVIDs denied: bad signature, unknown key, algorithm not allowed.
    JwtSvidForged,
    /// JWT-SVIDs denied: `exp` past or `nbf` ahead.
    JwtSvidExpired,
    /// JWT-SVIDs denied: `aud` holds none of the configured audiences.
    JwtSvidWrongAudience,
    /// JWT-SVIDs denied: `sub` in a trust domain that is not allowed.
    JwtSvidForeignTrustDomain,
    /// JWT-SVIDs denied: no JWT bundle for the trust domain yet.
    JwtSvidNoBundle,
    /// A JWT bundle fetched from a bundle endpoint was put in force.
    JwtBundleUpdated,
    /// A fetched JWT bundle was refused (JSON, keys, size); the bundle in force stays.
    JwtBundleRejected,
    /// A JWT bundle poll failed (connection, timeout, error status).
    JwtBundleFetchFailed,
    /// Decisions of a cached entrypoint that were evaluated: facts not seen yet (then remembered),
    /// or a request with a body.
    AuthzDecisionCacheMisses,
}

/// The histogram of decision latency, in microseconds (authz module).
pub const DECISION_LATENCY_US: &str = "svidgate.authz.decision_latency_us";
/// Gauge: seconds since the bundle service last confirmed the active policy (authz module, with a bundle).
pub const POLICY_AGE_SECONDS: &str = "svidgate.authz.policy_age_seconds";
/// Gauge: 1 while the active policy runs on regorus's interpreter (what the VM compiler refuses),
/// 0 on the VM.
pub const POLICY_ON_INTERPRETER: &str = "svidgate.authz.policy_on_interpreter";
/// Gauge prefix of the active bundle revision: `<prefix>.<revision>` is 1 while active, 0 after.
pub const BUNDLE_REVISION_PREFIX: &str = "svidgate.authz.bundle.revision";

impl Counter {
    /// Counters of the identity module.
    pub const IDENTITY: [Self; 4] =
        [Self::IdentitySpoofAttempts, Self::IdentityInjected, Self::IdentityDenied, Self::PathGuardRefused];
    /// Counters of either module with `jwt_svid` configured.
    pub const JWT_SVID: [Self; 10] = [
        Self::JwtSvidAccepted,
        Self::JwtSvidMalformed,
        Self::JwtSvidForged,
        Self::JwtSvidExpired,
        Self::JwtSvidWrongAudience,
        Self::JwtSvidForeignTrustDomain,
        Self::JwtSvidNoBundle,
        Self::JwtBundleUpdated,
        Self::JwtBundleRejected,
        Self::JwtBundleFetchFailed,
    ];
    /// Counters of the authz module.
    pub const AUTHZ: [Self; 28] = [
        Self::IdentitySpoofAttempts,
        Self::IdentityInjected,
        Self::IdentityDenied,
        Self::PathGuardRefused,
        Self::AuthzAllowed,
        Self::AuthzDenied,
        Self::AuthzErrors,
        Self::AuthzErrorEvaluation,
        Self::AuthzErrorEvaluationLimit,
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
        Self::AuthzBodyRequests,
        Self::AuthzBodyBytes,
        Self::AuthzBodyTruncated,
        Self::AuthzBodyTooLarge,
        Self::AuthzBodyInvalid,
        Self::AuthzDecisionCacheHits,
        Self::AuthzDecisionCacheMisses,
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
            Self::PathGuardRefused => "svidgate.path_guard.refused",
            Self::JwtSvidAccepted => "svidgate.identity.jwt_svid.accepted",
            Self::JwtSvidMalformed => "svidgate.identity.jwt_svid.denied.malformed",
            Self::JwtSvidForged => "svidgate.identity.jwt_svid.denied.forged",
            Self::JwtSvidExpired => "svidgate.identity.jwt_svid.denied.expired",
            Self::JwtSvidWrongAudience => "svidgate.identity.jwt_svid.denied.wrong_audience",
            Self::JwtSvidForeignTrustDomain => "svidgate.identity.jwt_svid.denied.foreign_trust_domain",
            Self::JwtSvidNoBundle => "svidgate.identity.jwt_svid.denied.no_bundle",
            Self::JwtBundleUpdated => "svidgate.identity.jwt_bundle.updated",
            Self::JwtBundleRejected => "svidgate.identity.jwt_bundle.rejected",
            Self::JwtBundleFetchFailed => "svidgate.identity.jwt_bundle.fetch_failed",
            Self::AuthzBodyRequests => "svidgate.authz.body.requests",
            Self::AuthzBodyBytes => "svidgate.authz.body.bytes",
            Self::AuthzBodyTruncated => "svidgate.authz.body.truncated",
            Self::AuthzBodyTooLarge => "svidgate.authz.body.too_large",
            Self::AuthzBodyInvalid => "svidgate.authz.body.invalid",
            Self::AuthzDecisionCacheHits => "svidgate.authz.decision_cache.hits",
            Self::AuthzDecisionCacheMisses => "svidgate.authz.decision_cache.misses",
        }
    }

    /// The counters one request moves: the identity ones, and in the authz module the decision's
    /// outcome (allowed, denied, errors by kind, dry-run denials). No allocation: a request
    /// moves at most ten.
    pub fn request_events(verdict: &Verdict, authz: bool) -> impl Iterator<Item = Self> {
        let (identity, decision) = (&verdict.identity, &verdict.decision);
        let spoof = identity.spoof_attempt.then_some(Self::IdentitySpoofAttempts);
        let denied = matches!(
            decision,
            Decision::Deny {
                reason: DenyReason::NoPeerIdentity(_) | DenyReason::ForwardedIdentityInvalid(_) | DenyReason::JwtSvidInvalid(_),
                ..
            }
        )
        .then_some(Self::IdentityDenied);
        let jwt_svid = match decision {
            Decision::Deny { reason: DenyReason::JwtSvidInvalid(error), .. } => Some(Self::jwt_svid_denied(error)),
            _ => identity.jwt_svid.as_ref().map(|_| Self::JwtSvidAccepted),
        };
        let injected = (decision.is_allow() && identity.upstream_identity.is_some()).then_some(Self::IdentityInjected);
        let path_refused =
            matches!(decision, Decision::Deny { reason: DenyReason::PathNotNormalized(_), .. }).then_some(Self::PathGuardRefused);
        let (outcome, kind) = match decision {
            _ if !authz => (None, None),
            Decision::Allow { .. } => (Some(Self::AuthzAllowed), None),
            Decision::Deny { reason, .. } if reason.is_error() => (Some(Self::AuthzErrors), Self::error_kind(reason)),
            Decision::Deny { .. } => (Some(Self::AuthzDenied), None),
        };
        let dry_run = (authz && verdict.would_deny.is_some()).then_some(Self::AuthzDryRunDenied);
        let body = match decision {
            Decision::Deny { reason: DenyReason::BodyTooLarge(_), .. } => Some(Self::AuthzBodyTooLarge),
            Decision::Deny { reason: DenyReason::InputError(crate::path::InputError::Body(_)), .. } => {
                Some(Self::AuthzBodyInvalid)
            }
            _ => None,
        };
        let cache = verdict.decision_cache.map(|hit| if hit { Self::AuthzDecisionCacheHits } else { Self::AuthzDecisionCacheMisses });
        [spoof, denied, jwt_svid, injected, path_refused, outcome, kind, dry_run, body, cache].into_iter().flatten()
    }

    /// The counter of a JWT-SVID denial's kind.
    fn jwt_svid_denied(error: &JwtSvidError) -> Self {
        match error {
            JwtSvidError::Forged(_) => Self::JwtSvidForged,
            JwtSvidError::Expired(_) => Self::JwtSvidExpired,
            JwtSvidError::WrongAudience(_) => Self::JwtSvidWrongAudience,
            JwtSvidError::ForeignTrustDomain(_) => Self::JwtSvidForeignTrustDomain,
            JwtSvidError::NoBundle(_) => Self::JwtSvidNoBundle,
            _ => Self::JwtSvidMalformed,
        }
    }

    /// The counter of an error's kind.
    fn error_kind(reason: &DenyReason) -> Option<Self> {
        Some(match reason {
            DenyReason::EvaluationError(_) => Self::AuthzErrorEvaluation,
            DenyReason::EvaluationLimit(_) => Self::AuthzErrorEvaluationLimit,
            DenyReason::InvalidResult(_) => Self::AuthzErrorInvalidResult,
            DenyReason::PolicyEditsIdentityHeader(_) => Self::AuthzErrorPolicyEditsIdentity,
            DenyReason::PolicyNotReady => Self::AuthzErrorPolicyNotReady,
            DenyReason::PolicyStale(_) => Self::AuthzErrorPolicyStale,
            _ => return None,
        })
    }
}

/// The counters and histogram of one plugin, defined once at configuration.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Each counter's id, at `Counter as usize`; `None` for one the plugin does not keep. A
    /// request moves up to ten counters: each is one index, not a search.
    counters: Vec<Option<u32>>,
    histogram: Option<u32>,
}

impl Metrics {
    /// Defines `counters` and, if given, the decision-latency histogram.
    pub fn define(host: &impl Host, counters: &[Counter], histogram: Option<&str>) -> Self {
        let mut ids = Vec::new();
        for &counter in counters {
            let at = counter as usize;
            ids.resize(ids.len().max(at + 1), None);
            if let Some(id) = ids.get_mut(at) {
                *id = Some(host.define_metric(MetricKind::Counter, counter.name()));
            }
        }
        Self { counters: ids, histogram: histogram.map(|name| host.define_metric(MetricKind::Histogram, name)) }
    }

    /// Whether the plugin keeps a latency histogram (only then is the request timed).
    pub fn timed(&self) -> bool {
        self.histogram.is_some()
    }

    /// Increments each counter in `events` by one.
    pub fn count(&self, host: &impl Host, events: impl IntoIterator<Item = Counter>) {
        for event in events {
            self.add(host, event, 1);
        }
    }

    /// Increments one counter by `n`.
    pub fn add(&self, host: &impl Host, counter: Counter, n: u64) {
        if let Some(&Some(id)) = self.counters.get(counter as usize) {
            host.increment_metric(id, n);
        }
    }

    /// Records one value in the histogram.
    pub fn record(&self, host: &impl Host, value: u64) {
        if let Some(id) = self.histogram {
            host.record_metric(id, value);
        }
    }
}

/// A gauge, defined once.
#[derive(Clone, Copy, Debug)]
pub struct Gauge(u32);

impl Gauge {
    /// Defines the gauge `name`.
    pub fn define(host: &impl Host, name: &str) -> Self {
        Self(host.define_metric(MetricKind::Gauge, name))
    }

    /// Sets its value.
    pub fn set(self, host: &impl Host, value: u64) {
        host.record_metric(self.0, value);
    }
}
