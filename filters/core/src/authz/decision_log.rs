//! Decision logs in OPA's schema: one JSON record per decision, with masked input paths and
//! sampling of allowed decisions, for the same SIEM pipelines that read OPA's decision logs.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::service::{LogServiceConfig, RawService};
use crate::config::{ConfigError, header_name};

/// Input paths masked unless configured otherwise: credentials must not reach the SIEM.
pub const DEFAULT_MASK: [&str; 2] =
    ["/input/attributes/request/http/headers/authorization", "/input/attributes/request/http/headers/cookie"];

/// The `policy.decision_logs` block.
#[derive(Clone, Debug, PartialEq)]
pub struct DecisionLogConfig {
    /// Write each record to Envoy's log (info level), as OPA's `decision_logs.console`.
    pub console: bool,
    /// JSON pointers erased from each record (`/input/...`), as OPA's mask policy `erased`.
    pub mask: Vec<String>,
    /// Fraction of allowed decisions logged (denials are always logged).
    pub sample_allowed: f64,
    /// Labels added to every record, beside `type` and `version`.
    pub labels: BTreeMap<String, String>,
    /// Upload records to an OPA-compatible decision-log receiver, as OPA's `decision_logs.service`.
    pub service: Option<LogServiceConfig>,
    /// Send the decision id to the client in this response header.
    pub decision_id_header: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDecisionLogs {
    #[serde(default)]
    console: bool,
    mask: Option<Vec<String>>,
    sample_allowed: Option<f64>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    service: Option<RawService>,
    decision_id_header: Option<String>,
}

impl TryFrom<RawDecisionLogs> for DecisionLogConfig {
    type Error = ConfigError;

    fn try_from(raw: RawDecisionLogs) -> Result<Self, ConfigError> {
        let mask = raw.mask.unwrap_or_else(|| DEFAULT_MASK.iter().map(|p| (*p).to_owned()).collect());
        if let Some(bad) = mask.iter().find(|p| !p.starts_with("/input/") && !p.starts_with("/result/")) {
            return Err(ConfigError::InvalidDecisionLogs(format!("mask {bad:?} must start with /input/ or /result/")));
        }
        let sample_allowed = raw.sample_allowed.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sample_allowed) {
            return Err(ConfigError::InvalidDecisionLogs(format!("sample_allowed {sample_allowed} is not in 0..1")));
        }
        let decision_id_header = match raw.decision_id_header {
            Some(name) => Some(header_name(&name).ok_or_else(|| {
                ConfigError::InvalidDecisionLogs(format!("decision_id_header {name:?} is not a header name"))
            })?),
            None => None,
        };
        let service = raw.service.as_ref().map(RawService::logs).transpose()?;
        if !raw.console && service.is_none() && decision_id_header.is_none() {
            return Err(ConfigError::InvalidDecisionLogs("enable console, service or decision_id_header".into()));
        }
        Ok(Self { console: raw.console, mask, sample_allowed, labels: raw.labels, service, decision_id_header })
    }
}

/// What one decision record is made of.
#[derive(Debug)]
pub struct DecisionRecord<'a> {
    /// The request's `x-request-id`, or a generated id.
    pub decision_id: &'a str,
    /// The entrypoint, as OPA's `path` (`envoy/authz/allow`).
    pub path: &'a str,
    /// The input the policy saw.
    pub input: &'a regorus::Value,
    /// The policy's result (undefined is left out, as OPA does).
    pub result: &'a regorus::Value,
    /// When the decision was taken (the proxy clock).
    pub timestamp: SystemTime,
    /// Evaluation time.
    pub eval_ns: u64,
    /// The bundle (name, revision) the policy came from, if bundles are configured.
    pub bundle: Option<(&'a str, &'a str)>,
    /// What svidgate did: `allow` or `deny`, the status, the reason code, and dry-run.
    pub outcome: Json,
}

impl DecisionLogConfig {
    /// Whether an allowed decision with this id is in the sample (deterministic per id).
    pub fn samples(&self, decision_id: &str) -> bool {
        if self.sample_allowed >= 1.0 {
            return true;
        }
        // FNV-1a: the same request id is in or out of the sample on every proxy.
        let hash = decision_id
            .bytes()
            .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        (hash % 10_000) as f64 / 10_000.0 < self.sample_allowed
    }

    /// The OPA decision-log record as one JSON line, masked.
    pub fn record(&self, record: &DecisionRecord<'_>) -> String {
        let mut labels: serde_json::Map<String, Json> =
            self.labels.iter().map(|(k, v)| (k.clone(), Json::String(v.clone()))).collect();
        labels.insert("type".into(), "svidgate".into());
        labels.insert("version".into(), crate::VERSION.into());
        let mut entry = json!({
            "decision_id": record.decision_id,
            "labels": labels,
            "path": record.path,
            "input": to_json(record.input),
            "timestamp": rfc3339(record.timestamp),
            "metrics": {"timer_rego_query_eval_ns": record.eval_ns},
            "svidgate": record.outcome,
        });
        if let Some(object) = entry.as_object_mut() {
            if *record.result != regorus::Value::Undefined {
                object.insert("result".into(), to_json(record.result));
            }
            if let Some((name, revision)) = record.bundle {
                object.insert("bundles".into(), json!({ name: {"revision": revision} }));
            }
        }
        let erased: Vec<&str> = self.mask.iter().filter(|p| erase(&mut entry, p)).map(String::as_str).collect();
        if !erased.is_empty()
            && let Some(object) = entry.as_object_mut()
        {
            object.insert("erased".into(), erased.into());
        }
        entry.to_string()
    }
}

/// Converts through regorus's `Serialize`, without printing and parsing a JSON string.
fn to_json(value: &regorus::Value) -> Json {
    serde_json::to_value(value).unwrap_or(Json::Null)
}

/// Removes the value at a JSON pointer; true if there was one.
fn erase(entry: &mut Json, pointer: &str) -> bool {
    let Some((parent, key)) = pointer.rsplit_once('/') else {
        return false;
    };
    let key = key.replace("~1", "/").replace("~0", "~");
    entry.pointer_mut(parent).and_then(Json::as_object_mut).is_some_and(|o| o.remove(&key).is_some())
}

/// `2026-11-22T07:55:29.123456789Z`, as OPA writes timestamps.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_nanos()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config(json: &str) -> Result<DecisionLogConfig, ConfigError> {
        DecisionLogConfig::try_from(serde_json::from_str::<RawDecisionLogs>(json).unwrap())
    }

    #[test]
    fn formats_timestamps_like_opa() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_795_333_529, 123_456_789);
        assert_eq!(rfc3339(t), "2026-11-22T07:45:29.123456789Z");
        assert_eq!(rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)), "2000-02-29T00:00:00.000000000Z");
    }

    #[test]
    fn writes_opa_schema_and_masks_credentials() {
        let cfg = config(r#"{"console": true, "labels": {"cluster": "eu-1"}}"#).unwrap();
        let input = regorus::Value::from_json_str(
            r#"{"attributes": {"request": {"http": {"headers": {"authorization": "Bearer secret", "x-tenant": "a"}}}}}"#,
        )
        .unwrap();
        let result = regorus::Value::from_json_str(r#"{"allowed": true}"#).unwrap();
        let line = cfg.record(&DecisionRecord {
            decision_id: "req-1",
            path: "envoy/authz/allow",
            input: &input,
            result: &result,
            timestamp: UNIX_EPOCH,
            eval_ns: 4200,
            bundle: Some(("svidgate", "r7")),
            outcome: json!({"decision": "allow"}),
        });
        assert!(!line.contains('\n') && !line.contains("secret"), "{line}");
        let record: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(record["decision_id"], "req-1");
        assert_eq!(record["path"], "envoy/authz/allow");
        assert_eq!(record["labels"]["cluster"], "eu-1");
        assert_eq!(record["labels"]["type"], "svidgate");
        assert_eq!(record["result"], json!({"allowed": true}));
        assert_eq!(record["metrics"]["timer_rego_query_eval_ns"], 4200);
        assert_eq!(record["input"]["attributes"]["request"]["http"]["headers"], json!({"x-tenant": "a"}));
        assert_eq!(record["erased"], json!(["/input/attributes/request/http/headers/authorization"]));
        assert_eq!(record["timestamp"], "1970-01-01T00:00:00.000000000Z");
        assert_eq!(record["bundles"], json!({"svidgate": {"revision": "r7"}}));
    }

    #[test]
    fn samples_allowed_decisions_deterministically() {
        let cfg = config(r#"{"console": true, "sample_allowed": 0.25}"#).unwrap();
        let kept = (0..4000).filter(|i| cfg.samples(&format!("req-{i}"))).count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert_eq!(cfg.samples("req-7"), cfg.samples("req-7"));
        assert!(config(r#"{"console": true}"#).unwrap().samples("any"));
    }

    #[test]
    fn refuses_bad_masks_and_rates() {
        assert!(config(r#"{"console": true, "mask": ["input/x"]}"#).is_err());
        assert!(config(r#"{"console": true, "sample_allowed": 1.5}"#).is_err());
        assert!(config(r#"{"console": true, "decision_id_header": "bad header"}"#).is_err());
        assert!(config(r#"{"mask": []}"#).is_err(), "logs that go nowhere");
        let shipped = config(r#"{"service": {"cluster": "siem"}, "decision_id_header": "X-Decision-Id"}"#).unwrap();
        assert_eq!(shipped.decision_id_header.as_deref(), Some("x-decision-id"));
        assert_eq!(shipped.service.unwrap().service.resource, "/logs");
    }
}
