//! What the core tells a filter to do with a request: decisions are data, and they fail closed.

use crate::identity::IdentityOutcome;
use crate::jwt_svid::JwtSvidError;
use crate::path::{InputError, PathError};
use crate::peer::PeerError;

/// The outcome for one request. There is no third variant: every error is a [`Decision::Deny`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Forward the request upstream after applying `request_edits` in order and then setting
    /// the identity header to the [`Verdict`]'s upstream identity, if there is one (nothing
    /// else may touch that header); add `response_headers` to the response on its way back.
    Allow {
        /// The policy's edits to the request headers.
        request_edits: Vec<HeaderEdit>,
        /// Headers to add to the response sent to the client.
        response_headers: Vec<(String, String)>,
    },
    /// Answer locally; the request never reaches the upstream.
    Deny {
        /// HTTP status of the local reply.
        status: u16,
        /// Why, for logs and metrics; never sent to the client.
        reason: DenyReason,
        /// Headers of the local reply.
        headers: Vec<(String, String)>,
        /// Body of the local reply.
        body: String,
    },
}

/// What the pipeline concluded for one request: the decision and what led to it, for metrics and logs.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    /// What to do with the request.
    pub decision: Decision,
    /// What the identity step concluded.
    pub identity: IdentityOutcome,
    /// In dry-run mode, the denial the policy would have made.
    pub would_deny: Option<DenyReason>,
    /// The decision id, when decision logs are on and the policy was evaluated.
    pub decision_id: Option<String>,
    /// The decision-log record (one JSON line), when decision logs are on and the decision is sampled.
    pub decision_log: Option<String>,
    /// The policy result's `dynamic_metadata` (a JSON object), for filter state.
    pub dynamic_metadata: Option<String>,
    /// Whether the decision cache answered (`None`: the entrypoint's decisions are not cached).
    pub decision_cache: Option<bool>,
}

impl Verdict {
    /// A decision taken without the policy (identity module, identity denial, no policy to ask).
    pub fn without_policy(decision: Decision, identity: IdentityOutcome) -> Self {
        Self {
            decision,
            identity,
            would_deny: None,
            decision_id: None,
            decision_log: None,
            dynamic_metadata: None,
            decision_cache: None,
        }
    }
}

/// One change to the request headers. The identity header is only ever `Set`, never appended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Add a value after any existing ones.
    Append(String, String),
    /// Remove every value of the header.
    Remove(String),
    /// Replace every value of the header by this one.
    Set(String, String),
    /// Edit the query string of `:path` (the policy's `query_parameters_to_set` and
    /// `query_parameters_to_remove`), as Envoy applies an ext_authz response's.
    #[cfg(feature = "rego")]
    Query(QueryEdit),
}

/// Query parameters to set and to remove, applied to `:path` as Envoy's ext_authz filter applies
/// them: the query is read without decoding, each parameter set replaces every value of its key
/// (the last one set wins), removals come after, and the query is written back sorted by key as
/// `k=v` pairs; a query left empty is dropped with its `?`.
#[cfg(feature = "rego")]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryEdit {
    /// (key, value) to set, in order.
    pub set: Vec<(String, String)>,
    /// Keys to remove.
    pub remove: Vec<String>,
}

#[cfg(feature = "rego")]
impl QueryEdit {
    /// `path` with its query edited.
    pub fn apply(&self, path: &str) -> String {
        let (base, query) = path.split_once('?').unwrap_or((path, ""));
        let mut pairs: Vec<(&str, &str)> = query
            .split('&')
            .filter(|pair| !pair.is_empty())
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .collect();
        for (key, value) in &self.set {
            pairs.retain(|(k, _)| k != key);
            pairs.push((key, value));
        }
        pairs.retain(|(k, _)| !self.remove.iter().any(|r| r == k));
        // Stable: the values of one key keep their order.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut edited = String::with_capacity(path.len());
        edited.push_str(base);
        for (i, (key, value)) in pairs.iter().enumerate() {
            edited.push(if i == 0 { '?' } else { '&' });
            edited.push_str(key);
            edited.push('=');
            edited.push_str(value);
        }
        edited
    }
}

/// Why a request was denied. [`DenyReason::is_error`] separates policy verdicts from failures.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DenyReason {
    /// The policy evaluation failed (a builtin error, a conflict, ...).
    #[error("policy evaluation failed: {0}")]
    EvaluationError(String),
    /// The evaluation exceeded its time or instruction budget.
    #[error("policy evaluation exceeded its limit: {0}")]
    EvaluationLimit(String),
    /// A trusted forwarder sent an identity header that is not exactly one allowed SPIFFE ID.
    #[error("trusted forwarder sent an invalid identity header: {0}")]
    ForwardedIdentityInvalid(String),
    /// The connection has no client certificate and the request's JWT-SVID is not valid.
    #[error("invalid jwt-svid: {0}")]
    JwtSvidInvalid(JwtSvidError),
    /// The request cannot be turned into the policy's input, as OPA's Envoy plugin refuses it
    /// (an invalid escape in the path or query, a `;` in the query): answered 400.
    #[error("request cannot be read as policy input: {0}")]
    InputError(InputError),
    /// The policy reads the request body, which is longer than `max_request_bytes` and
    /// `allow_partial_message` is off: answered 413, as ext_authz does.
    #[error("request body longer than max_request_bytes ({0})")]
    BodyTooLarge(usize),
    /// The policy result is neither a boolean nor an object of the OPA Envoy plugin's shape.
    #[error("policy result is malformed: {0}")]
    InvalidResult(String),
    /// The `:path` is not in normal form (the path guard): answered 400.
    #[error("path refused: {0}")]
    PathNotNormalized(PathError),
    /// `require_peer` is set and the connection has no validated SPIFFE ID.
    #[error("no valid peer identity: {0}")]
    NoPeerIdentity(PeerError),
    /// The policy decided `allowed: false`.
    #[error("denied by policy")]
    PolicyDenied,
    /// The policy tried to set or remove an identity header.
    #[error("policy result edits identity header {0:?}")]
    PolicyEditsIdentityHeader(String),
    /// `policy.bundle` is configured with no bootstrap policy, and no bundle is active yet.
    #[error("no policy is active yet: waiting for the first bundle")]
    PolicyNotReady,
    /// The active policy is older than `policy.max_policy_age` (the bundle service is not reached).
    #[error("policy is stale: {0}")]
    PolicyStale(String),
    /// `policy.routes` lists no entrypoint for the request's route (named here; empty when the
    /// request matched no route, or an unnamed one) and `unlisted: deny` is set.
    #[error("route {0:?} is not listed in policy.routes")]
    RouteNotListed(String),
    /// The policy has no value for this input (undefined means deny).
    #[error("policy decision is undefined")]
    PolicyUndefined,
}

impl DenyReason {
    /// True for failures (counted as errors), false for verdicts about the request.
    pub fn is_error(&self) -> bool {
        matches!(
            self,
            Self::EvaluationError(_)
                | Self::EvaluationLimit(_)
                | Self::InvalidResult(_)
                | Self::PolicyEditsIdentityHeader(_)
                | Self::PolicyNotReady
                | Self::PolicyStale(_)
        )
    }

    /// A short code without spaces, used as Envoy's response code details (`%RESPONSE_CODE_DETAILS%`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::EvaluationError(_) => "svidgate_evaluation_error",
            Self::EvaluationLimit(_) => "svidgate_evaluation_limit",
            Self::ForwardedIdentityInvalid(_) => "svidgate_forwarded_identity_invalid",
            Self::InputError(_) => "svidgate_input_error",
            Self::JwtSvidInvalid(error) => error.code(),
            Self::BodyTooLarge(_) => "svidgate_body_too_large",
            Self::InvalidResult(_) => "svidgate_invalid_result",
            Self::NoPeerIdentity(_) => "svidgate_no_peer_identity",
            Self::PathNotNormalized(_) => "svidgate_path_not_normalized",
            Self::PolicyDenied => "svidgate_policy_denied",
            Self::PolicyEditsIdentityHeader(_) => "svidgate_policy_edits_identity_header",
            Self::PolicyNotReady => "svidgate_policy_not_ready",
            Self::PolicyStale(_) => "svidgate_policy_stale",
            Self::PolicyUndefined => "svidgate_policy_undefined",
            Self::RouteNotListed(_) => "svidgate_route_not_listed",
        }
    }
}

impl Decision {
    /// Forward the request with no edit but the identity header's.
    pub fn allow() -> Self {
        Self::Allow { request_edits: Vec::new(), response_headers: Vec::new() }
    }

    /// Whether the request goes upstream.
    pub fn is_allow(&self) -> bool {
        matches!(self, Self::Allow { .. })
    }

    /// Adds a header to what the client receives: the response of an allowed request, or the local reply.
    pub fn add_response_header(&mut self, name: &str, value: &str) {
        let header = (name.to_owned(), value.to_owned());
        match self {
            Self::Allow { response_headers, .. } => response_headers.push(header),
            Self::Deny { headers, .. } => headers.push(header),
        }
    }

    /// A denial with the generic body svidgate sends for its own (non-policy) denials.
    pub fn deny(status: u16, reason: DenyReason) -> Self {
        Self::Deny { status, reason, headers: Vec::new(), body: DENIED_BODY.to_owned() }
    }
}

/// The status of a request refused for its form (the path guard, input errors), as OPA's Envoy
/// plugin answers a request it cannot read.
pub const BAD_REQUEST: u16 = 400;

/// The status of a request whose body is longer than the policy may read, as ext_authz's.
pub const PAYLOAD_TOO_LARGE: u16 = 413;

/// The body of svidgate's own denials: deliberately says nothing about why.
pub const DENIED_BODY: &str = "svidgate: access denied\n";
