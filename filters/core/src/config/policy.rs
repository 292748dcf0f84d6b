//! The authz module's `policy` block as written, and its checks (feature `rego`: the identity
//! module refuses any `policy` without reading it).

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    BUNDLE_DELAYS, BundleConfig, ConfigError, DEFAULT_ENTRYPOINT, DEFAULT_EVAL_TIMEOUT, DEFAULT_LOG_BUFFER_BYTES,
    DEFAULT_LOG_UPLOAD_BYTES, DEFAULT_MASK, DEFAULT_DECISION_CACHE_ENTRIES, DEFAULT_MAX_BUNDLE_BYTES, DEFAULT_MAX_INSTRUCTIONS, DecisionLogConfig,
    LOG_DELAYS, LogServiceConfig, MAX_DECISION_CACHE_ENTRIES, MAX_REQUEST_BYTES_LIMIT, PolicyConfig, RequestBodyConfig, RouteKey, RoutesConfig, RawService, duration, error_status, header_name, invalid,
    normalize_entrypoint,
};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPolicy {
    rego: Option<RawRego>,
    data: Option<Box<serde_json::value::RawValue>>,
    entrypoint: Option<String>,
    routes: Option<RawRoutes>,
    error_status: Option<u16>,
    eval_timeout: Option<String>,
    max_instructions: Option<usize>,
    decision_cache_entries: Option<usize>,
    #[serde(default)]
    dry_run: bool,
    decision_logs: Option<RawDecisionLogs>,
    bundle: Option<RawService>,
    max_policy_age: Option<String>,
    #[serde(default)]
    metadata_context_namespaces: Vec<String>,
    with_request_body: Option<RawRequestBody>,
}

/// `policy.routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoutes {
    #[serde(default)]
    by: RawRouteKey,
    entrypoints: BTreeMap<String, String>,
    #[serde(default)]
    unlisted: RawUnlisted,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RawRouteKey {
    #[default]
    RouteName,
    Metadata,
}

#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
enum RawUnlisted {
    /// `policy.entrypoint` decides them.
    #[default]
    Default,
    Deny,
}

/// ext_authz's `with_request_body`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequestBody {
    max_request_bytes: usize,
    #[serde(default)]
    allow_partial_message: bool,
}

/// One module as a string, or several as a map from file name to source.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawRego {
    One(String),
    Many(BTreeMap<String, String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDecisionLogs {
    #[serde(default)]
    console: bool,
    mask: Option<Vec<String>>,
    sample_allowed: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    service: Option<RawService>,
    decision_id_header: Option<String>,
}

impl RawPolicy {
    pub(super) fn typed(self) -> Result<PolicyConfig, ConfigError> {
        let modules = match self.rego {
            None if self.bundle.is_none() => return Err(ConfigError::MissingPolicy),
            None => Vec::new(),
            Some(RawRego::One(source)) => vec![("policy.rego".to_owned(), source)],
            Some(RawRego::Many(map)) => map.into_iter().collect(),
        };
        let data_text = self.data.as_deref().map(serde_json::value::RawValue::get);
        let data = match data_text {
            None => serde_json::Value::Object(serde_json::Map::new()),
            Some(text) => serde_json::from_str(text).map_err(|e| invalid("policy.data", e.to_string()))?,
        };
        if !data.is_object() {
            return Err(invalid("policy.data", "must be a json object".into()));
        }
        crate::authz::numbers::check(&modules, data_text.map(|text| ("policy.data", text))).map_err(|e| invalid("policy", e))?;
        let max_policy_age = match self.max_policy_age.as_deref() {
            None => None,
            Some(_) if self.bundle.is_none() => {
                return Err(invalid("policy.max_policy_age", "needs policy.bundle: an inline policy never ages".into()));
            }
            Some(v) => Some(duration("policy.max_policy_age", v, true)?),
        };
        let namespaces = self.metadata_context_namespaces;
        if let Some((_, bad)) =
            namespaces.iter().enumerate().find(|(i, ns)| ns.is_empty() || namespaces.iter().take(*i).any(|n| n == *ns))
        {
            return Err(invalid("policy.metadata_context_namespaces", format!("{bad:?} is empty or listed twice")));
        }
        let routes = self.routes.map(|routes| routes.typed(self.entrypoint.is_some())).transpose()?;
        Ok(PolicyConfig {
            modules,
            data,
            entrypoint: normalize_entrypoint(self.entrypoint.as_deref().unwrap_or(DEFAULT_ENTRYPOINT)),
            routes,
            error_status: error_status("policy.error_status", self.error_status)?,
            eval_timeout: match self.eval_timeout.as_deref() {
                None => DEFAULT_EVAL_TIMEOUT,
                Some(v) => duration("policy.eval_timeout", v, true)?,
            },
            max_instructions: self.max_instructions.unwrap_or(DEFAULT_MAX_INSTRUCTIONS),
            decision_cache_entries: match self.decision_cache_entries {
                None => DEFAULT_DECISION_CACHE_ENTRIES,
                Some(n) if n <= MAX_DECISION_CACHE_ENTRIES => n,
                Some(n) => {
                    return Err(invalid(
                        "policy.decision_cache_entries",
                        format!("{n} is more than {MAX_DECISION_CACHE_ENTRIES}"),
                    ));
                }
            },
            dry_run: self.dry_run,
            decision_logs: self.decision_logs.map(RawDecisionLogs::typed).transpose()?,
            bundle: self.bundle.as_ref().map(RawService::bundle).transpose()?,
            max_policy_age,
            metadata_context_namespaces: namespaces,
            with_request_body: match self.with_request_body {
                None => RequestBodyConfig::default(),
                Some(RawRequestBody { max_request_bytes, allow_partial_message }) => {
                    if !(1..=MAX_REQUEST_BYTES_LIMIT).contains(&max_request_bytes) {
                        return Err(invalid(
                            "policy.with_request_body.max_request_bytes",
                            format!("{max_request_bytes} is not between 1 and {MAX_REQUEST_BYTES_LIMIT}"),
                        ));
                    }
                    RequestBodyConfig { max_request_bytes, allow_partial_message }
                }
            },
        })
    }
}

impl RawRoutes {
    fn typed(self, entrypoint_set: bool) -> Result<RoutesConfig, ConfigError> {
        if self.entrypoints.is_empty() {
            return Err(invalid("policy.routes.entrypoints", "must list at least one route".into()));
        }
        if let Some((route, _)) = self.entrypoints.iter().find(|(route, entrypoint)| route.is_empty() || entrypoint.trim_matches(['/', '.']).is_empty()) {
            return Err(invalid("policy.routes.entrypoints", format!("route {route:?} needs a name and an entrypoint")));
        }
        let deny_unlisted = self.unlisted == RawUnlisted::Deny;
        if deny_unlisted && entrypoint_set {
            return Err(invalid("policy.entrypoint", "decides nothing with policy.routes.unlisted: deny; remove one".into()));
        }
        Ok(RoutesConfig {
            key: match self.by {
                RawRouteKey::RouteName => RouteKey::RouteName,
                RawRouteKey::Metadata => RouteKey::Metadata,
            },
            entrypoints: self.entrypoints.into_iter().map(|(route, entrypoint)| {
                let entrypoint = normalize_entrypoint(&entrypoint);
                (route, entrypoint)
            }).collect(),
            deny_unlisted,
        })
    }
}

impl RawDecisionLogs {
    fn typed(self) -> Result<DecisionLogConfig, ConfigError> {
        let key = |field: &str| format!("policy.decision_logs.{field}");
        let mask = self.mask.unwrap_or_else(|| DEFAULT_MASK.iter().map(|p| (*p).to_owned()).collect());
        if let Some(bad) = mask.iter().find(|p| !p.starts_with("/input/") && !p.starts_with("/result/")) {
            return Err(invalid(&key("mask"), format!("{bad:?} must start with /input/ or /result/")));
        }
        let sample_allowed = self.sample_allowed.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_allowed) {
            return Err(invalid(&key("sample_allowed"), format!("{sample_allowed} is not between 0 and 1")));
        }
        let decision_id_header = match self.decision_id_header {
            Some(name) => Some(
                header_name(&name)
                    .ok_or_else(|| invalid(&key("decision_id_header"), format!("{name:?} is not a header name")))?,
            ),
            None => None,
        };
        let service = self.service.as_ref().map(RawService::logs).transpose()?;
        if !self.console && service.is_none() && decision_id_header.is_none() {
            return Err(invalid("policy.decision_logs", "enable console, service or decision_id_header".into()));
        }
        Ok(DecisionLogConfig { console: self.console, mask, sample_allowed, labels: self.labels, service, decision_id_header })
    }
}

impl RawService {
    fn bundle(&self) -> Result<BundleConfig, ConfigError> {
        const BLOCK: &str = "policy.bundle";
        if self.upload_bytes.is_some() {
            return Err(invalid("policy.bundle.upload_bytes", "is a decision_logs.service option".into()));
        }
        Ok(BundleConfig {
            service: self.service(BLOCK, "/bundles/bundle.tar.gz", BUNDLE_DELAYS)?,
            name: self.name.clone().unwrap_or_else(|| "svidgate".to_owned()),
            max_bytes: self.max_bytes.unwrap_or(DEFAULT_MAX_BUNDLE_BYTES),
        })
    }

    fn logs(&self) -> Result<LogServiceConfig, ConfigError> {
        const BLOCK: &str = "policy.decision_logs.service";
        if self.name.is_some() {
            return Err(invalid("policy.decision_logs.service.name", "is a policy.bundle option".into()));
        }
        let config = LogServiceConfig {
            service: self.service(BLOCK, "/logs", LOG_DELAYS)?,
            buffer_bytes: self.max_bytes.unwrap_or(DEFAULT_LOG_BUFFER_BYTES),
            upload_bytes: self.upload_bytes.unwrap_or(DEFAULT_LOG_UPLOAD_BYTES),
        };
        if config.upload_bytes == 0 || config.upload_bytes > config.buffer_bytes {
            return Err(invalid(
                "policy.decision_logs.service.upload_bytes",
                format!("{} must be between 1 and max_bytes ({})", config.upload_bytes, config.buffer_bytes),
            ));
        }
        Ok(config)
    }
}
