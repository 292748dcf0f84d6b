//! Plugin configuration: parsed once at load into typed values, or refused with one clear error.
//!
//! Both modules read the same JSON object, so a sidecar needs one filter, not two: the identity
//! keys are shared, and `policy` is read only by the authz module. Unknown keys are refused, so a
//! typo cannot silently turn a check off.

use std::time::Duration;

use serde::Deserialize;

use crate::peer::SvidRules;
use crate::spiffe::{SpiffeId, SpiffeIdError, TrustDomain};

/// The identity header svidgate strips and injects unless configured otherwise.
pub const DEFAULT_IDENTITY_HEADER: &str = "x-forwarded-spiffe-id";
/// The status of a denial unless configured otherwise (as OPA's Envoy plugin).
pub const DEFAULT_DENY_STATUS: u16 = 403;

/// Why a configuration is refused at load.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The `policy.decision_logs` block is invalid.
    #[error("policy.decision_logs: {0}")]
    InvalidDecisionLogs(String),
    /// A duration field does not parse.
    #[error("{field}: {value:?} is not a duration (use e.g. \"500ms\", \"15m\", \"1h\")")]
    InvalidDuration {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: String,
    },
    /// A service block (`policy.bundle`, `policy.decision_logs.service`) is invalid.
    #[error("{field}: {message}")]
    InvalidService {
        /// The block.
        field: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// A trusted forwarder is not a valid SPIFFE ID.
    #[error("trusted_forwarders: {value:?} is not a spiffe id: {source}")]
    InvalidForwarder {
        /// The offending value.
        value: String,
        /// The spec rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// An identity header name is not a valid lower-case HTTP header name.
    #[error("identity_headers: {0:?} is not a valid header name")]
    InvalidHeaderName(String),
    /// The configuration is not JSON of the expected shape.
    #[error("configuration does not parse: {0}")]
    InvalidJson(#[from] serde_json::Error),
    /// The policy data is not a JSON object.
    #[error("policy.data must be a json object")]
    InvalidPolicyData,
    /// A status code is outside the range allowed for it.
    #[error("{field}: {value} is not an http error status (400-599)")]
    InvalidStatus {
        /// The field name.
        field: &'static str,
        /// The offending value.
        value: u16,
    },
    /// A trust domain does not parse.
    #[error("trust_domains: {value:?} is not a trust domain: {source}")]
    InvalidTrustDomain {
        /// The offending value.
        value: String,
        /// The spec rule it breaks.
        #[source]
        source: SpiffeIdError,
    },
    /// A trusted forwarder belongs to a trust domain that is not allowed, so it could never match.
    #[error("trusted_forwarders: {0:?} is not in any of trust_domains")]
    ForwarderOutsideTrustDomains(String),
    /// The authz module was given no policy.
    #[error("policy with rego or a bundle is required by the authz module")]
    MissingPolicy,
    /// Sidecar mode needs at least one trust domain to validate peers against.
    #[error("trust_domains must list at least one trust domain in sidecar mode")]
    MissingTrustDomains,
    /// An option that only makes sense in sidecar mode was set in perimeter mode.
    #[error("{0} is a sidecar option; perimeter mode never injects an identity")]
    NotInPerimeterMode(&'static str),
    /// The identity module was given a policy it cannot evaluate.
    #[error("policy is not supported by the identity module: load svidgate_authz.wasm to evaluate rego")]
    PolicyNotSupported,
    /// The policy does not compile (syntax, unknown builtin, conflict, missing entrypoint).
    #[error("policy does not compile for entrypoint {entrypoint:?}: {message}")]
    PolicyCompile {
        /// The entrypoint being compiled.
        entrypoint: String,
        /// regorus's message.
        message: String,
    },
}

/// Where svidgate sits, which decides whether it may inject an identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Mode {
    /// At the edge: remove identity headers, never inject one.
    Perimeter,
    /// In front of a workload: remove identity headers, then set the validated peer's ID.
    Sidecar,
}

/// The identity behaviour shared by both modules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityConfig {
    /// Perimeter or sidecar.
    pub mode: Mode,
    /// Identity headers to strip, lower-case; the first one is the one injected.
    pub headers: Vec<String>,
    /// Deny requests without a validated peer identity.
    pub require_peer: bool,
    /// Peers whose incoming identity header names the original caller and is kept.
    pub trusted_forwarders: Vec<SpiffeId>,
    /// What a peer certificate must satisfy.
    pub svid: SvidRules,
    /// Status of svidgate's denials and of policy denials that set no `http_status`.
    pub deny_status: u16,
}

/// The JSON plugin configuration as written by users, before validation.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    mode: Option<Mode>,
    identity_headers: Option<Vec<String>>,
    trust_domains: Option<Vec<String>>,
    #[serde(default)]
    trusted_forwarders: Vec<String>,
    #[serde(default)]
    require_peer: bool,
    max_svid_ttl: Option<String>,
    deny_status: Option<u16>,
    /// The authz module's `policy` block, left as JSON for it to read.
    pub policy: Option<serde_json::Value>,
}

impl RawConfig {
    /// Parses the plugin configuration bytes (an empty configuration is `{}`).
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self::default());
        }
        Ok(serde_json::from_slice(bytes)?)
    }
}

impl IdentityConfig {
    /// Parses the identity module's configuration, which must not carry a policy.
    pub fn parse(bytes: &[u8]) -> Result<Self, ConfigError> {
        let raw = RawConfig::parse(bytes)?;
        if raw.policy.is_some() {
            return Err(ConfigError::PolicyNotSupported);
        }
        Self::try_from(&raw)
    }

    /// The header the validated identity is injected into.
    pub fn injected_header(&self) -> &str {
        self.headers.first().map_or(DEFAULT_IDENTITY_HEADER, String::as_str)
    }

    /// Whether `name` (lower-case) is one of the identity headers.
    pub fn is_identity_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }
}

impl TryFrom<&RawConfig> for IdentityConfig {
    type Error = ConfigError;

    fn try_from(raw: &RawConfig) -> Result<Self, ConfigError> {
        let mode = raw.mode.unwrap_or(Mode::Sidecar);
        let headers = match &raw.identity_headers {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| header_name(n).ok_or_else(|| ConfigError::InvalidHeaderName(n.clone())))
                .collect::<Result<Vec<_>, _>>()?,
            Some(_) => return Err(ConfigError::InvalidHeaderName(String::new())),
            None => vec![DEFAULT_IDENTITY_HEADER.to_owned()],
        };
        let trust_domains = raw
            .trust_domains
            .iter()
            .flatten()
            .map(|td| {
                TrustDomain::parse(td).map_err(|source| ConfigError::InvalidTrustDomain { value: td.clone(), source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let trusted_forwarders = raw
            .trusted_forwarders
            .iter()
            .map(|id| {
                let parsed = SpiffeId::parse(id)
                    .map_err(|source| ConfigError::InvalidForwarder { value: id.clone(), source })?;
                if !trust_domains.iter().any(|td| parsed.is_member_of(td)) {
                    return Err(ConfigError::ForwarderOutsideTrustDomains(id.clone()));
                }
                Ok(parsed)
            })
            .collect::<Result<Vec<_>, _>>()?;
        match mode {
            Mode::Perimeter if raw.require_peer => {
                return Err(ConfigError::NotInPerimeterMode("require_peer"));
            }
            Mode::Perimeter if !trusted_forwarders.is_empty() => {
                return Err(ConfigError::NotInPerimeterMode("trusted_forwarders"));
            }
            Mode::Sidecar if trust_domains.is_empty() => {
                return Err(ConfigError::MissingTrustDomains);
            }
            _ => {}
        }
        let max_svid_ttl = raw
            .max_svid_ttl
            .as_deref()
            .map(|v| parse_duration(v).ok_or_else(|| invalid_duration("max_svid_ttl", v)))
            .transpose()?;
        Ok(Self {
            mode,
            headers,
            require_peer: raw.require_peer,
            trusted_forwarders,
            svid: SvidRules { trust_domains, max_svid_ttl },
            deny_status: error_status("deny_status", raw.deny_status)?,
        })
    }
}

/// Parses durations written as a number and a unit: `250ms`, `30s`, `15m`, `1h`.
pub fn parse_duration(value: &str) -> Option<Duration> {
    let split = value.find(|c: char| !c.is_ascii_digit())?;
    let (number, unit) = value.split_at(split);
    let n: u64 = number.parse().ok()?;
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => n.checked_mul(60).map(Duration::from_secs),
        "h" => n.checked_mul(3600).map(Duration::from_secs),
        _ => None,
    }
}

/// Validates an optional error status field, defaulting to 403.
pub(crate) fn error_status(field: &'static str, value: Option<u16>) -> Result<u16, ConfigError> {
    match value {
        None => Ok(DEFAULT_DENY_STATUS),
        Some(status @ 400..=599) => Ok(status),
        Some(status) => Err(ConfigError::InvalidStatus { field, value: status }),
    }
}

pub(crate) fn invalid_duration(field: &'static str, value: &str) -> ConfigError {
    ConfigError::InvalidDuration { field, value: value.to_owned() }
}

/// Parses a duration that must be above zero (timeouts, delays, ages).
pub(crate) fn positive_duration(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    parse_duration(value).filter(|d| !d.is_zero()).ok_or_else(|| invalid_duration(field, value))
}

/// Lower-cases `name` if it is a valid, non-pseudo HTTP header name (RFC 9110 token).
pub fn header_name(name: &str) -> Option<String> {
    let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    valid.then(|| name.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<IdentityConfig, ConfigError> {
        IdentityConfig::parse(json.as_bytes())
    }

    #[test]
    fn sidecar_defaults() {
        let cfg = parse(r#"{"trust_domains": ["ai.internal"]}"#).unwrap();
        assert_eq!(cfg.mode, Mode::Sidecar);
        assert_eq!(cfg.headers, vec![DEFAULT_IDENTITY_HEADER]);
        assert_eq!(cfg.deny_status, 403);
        assert!(!cfg.require_peer);
        assert_eq!(cfg.svid.max_svid_ttl, None);
    }

    #[test]
    fn perimeter_needs_no_trust_domain() {
        let cfg =
            parse(r#"{"mode": "perimeter", "identity_headers": ["X-Forwarded-SPIFFE-ID", "x-spiffe-id"]}"#).unwrap();
        assert_eq!(cfg.headers, vec!["x-forwarded-spiffe-id", "x-spiffe-id"]);
    }

    #[test]
    fn refuses_bad_configurations_with_specific_errors() {
        let cases: &[(&str, &str)] = &[
            ("{", "configuration does not parse"),
            (r#"{"trust_domain": ["ai.internal"]}"#, "unknown field `trust_domain`"),
            (r#"{"mode": "edge"}"#, "unknown variant `edge`"),
            ("{}", "trust_domains must list at least one"),
            (r#"{"trust_domains": ["AI.internal"]}"#, "\"AI.internal\" is not a trust domain"),
            (r#"{"mode": "perimeter", "require_peer": true}"#, "require_peer is a sidecar option"),
            (
                r#"{"trust_domains": ["ai.internal"], "trusted_forwarders": ["spiffe://ai.internal/x/"]}"#,
                "is not a spiffe id: path must not end with '/'",
            ),
            (
                r#"{"trust_domains": ["ai.internal"], "trusted_forwarders": ["spiffe://other/x"]}"#,
                "\"spiffe://other/x\" is not in any of trust_domains",
            ),
            (r#"{"trust_domains": ["ai.internal"], "identity_headers": ["x y"]}"#, "\"x y\" is not a valid header"),
            (r#"{"trust_domains": ["ai.internal"], "identity_headers": [":path"]}"#, "\":path\" is not a valid header"),
            (
                r#"{"trust_domains": ["ai.internal"], "max_svid_ttl": "1 hour"}"#,
                "max_svid_ttl: \"1 hour\" is not a duration",
            ),
            (
                r#"{"trust_domains": ["ai.internal"], "deny_status": 200}"#,
                "deny_status: 200 is not an http error status",
            ),
            (r#"{"trust_domains": ["ai.internal"], "policy": {}}"#, "load svidgate_authz.wasm"),
        ];
        for (json, expected) in cases {
            let err = parse(json).unwrap_err().to_string();
            assert!(err.contains(expected), "{json}: {err}");
        }
    }

    #[test]
    fn parses_durations() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("15m"), Some(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), None);
        assert_eq!(parse_duration("h"), None);
        assert_eq!(parse_duration("10"), None);
    }
}
