//! Decision logs in OPA's schema: one JSON record per decision, with masked input paths and
//! sampling of allowed decisions, for the same SIEM pipelines that read OPA's decision logs.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value as Json, json};

use crate::config::DecisionLogConfig;

/// What one decision record is made of.
#[derive(Debug)]
pub struct DecisionRecord<'a> {
    /// The decision's own id (a random UUID).
    pub decision_id: &'a str,
    /// The request's `x-request-id`, recorded as OPA records request headers:
    /// `request_context.http.headers["x-request-id"]`.
    pub request_id: Option<&'a str>,
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
    /// Whether an allowed decision with this id is in the sample. The id is svidgate's random
    /// one, so a client cannot pick requests that fall out of the audit sample.
    pub fn samples(&self, decision_id: &str) -> bool {
        if self.sample_allowed >= 1.0 {
            return true;
        }
        // FNV-1a of the id: an even spread over the sample.
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
            if let Some(request_id) = record.request_id {
                object.insert("request_context".into(), json!({"http": {"headers": {"x-request-id": [request_id]}}}));
            }
        }
        let mut erased: Vec<&str> = self.mask.iter().filter(|p| erase(&mut entry, p)).map(String::as_str).collect();
        // The body's text holds whatever a mask erased from `parsed_body`: it goes too.
        if erased.iter().any(|p| *p == "/input/parsed_body" || p.starts_with("/input/parsed_body/"))
            && erase(&mut entry, RAW_BODY)
        {
            erased.push(RAW_BODY);
        }
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

/// The request body's text in the input.
const RAW_BODY: &str = "/input/attributes/request/http/body";

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

    fn config(json: &str) -> DecisionLogConfig {
        let json = format!(r#"{{"trust_domains": ["ai.internal"], "policy": {{"rego": "package x", "decision_logs": {json}}}}}"#);
        let config = crate::config::Config::parse(crate::config::ModuleKind::Authz, json.as_bytes()).unwrap();
        config.policy.unwrap().decision_logs.unwrap()
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
        let cfg = config(r#"{"console": true, "labels": {"cluster": "eu-1"}}"#);
        let input = regorus::Value::from_json_str(
            r#"{"attributes": {"request": {"http": {"headers": {"authorization": "Bearer secret", "x-tenant": "a"}}}}}"#,
        )
        .unwrap();
        let result = regorus::Value::from_json_str(r#"{"allowed": true}"#).unwrap();
        let line = cfg.record(&DecisionRecord {
            decision_id: "9b2f0c1e-5a43-4d7e-8a1b-2c3d4e5f6a7b",
            request_id: Some("req-1"),
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
        assert_eq!(record["decision_id"], "9b2f0c1e-5a43-4d7e-8a1b-2c3d4e5f6a7b");
        assert_eq!(record["request_context"], json!({"http": {"headers": {"x-request-id": ["req-1"]}}}));
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
    fn masking_a_parsed_body_field_erases_the_body_text_too() {
        let cfg = config(r#"{"console": true, "mask": ["/input/parsed_body/params/arguments"]}"#);
        let body = r#"{"method": "tools/call", "params": {"name": "read_file", "arguments": {"path": "/srv/secret.md"}}}"#;
        let input = json!({"attributes": {"request": {"http": {"body": body}}}, "parsed_body": serde_json::from_str::<Json>(body).unwrap()});
        let input = regorus::Value::from_json_str(&input.to_string()).unwrap();
        let result = regorus::Value::from(true);
        let line = cfg.record(&DecisionRecord {
            decision_id: "d",
            request_id: None,
            path: "envoy/authz/allow",
            input: &input,
            result: &result,
            timestamp: UNIX_EPOCH,
            eval_ns: 1,
            bundle: None,
            outcome: json!({"decision": "allow"}),
        });
        assert!(!line.contains("secret.md"), "{line}");
        let record: Json = serde_json::from_str(&line).unwrap();
        assert_eq!(record["input"]["parsed_body"], json!({"method": "tools/call", "params": {"name": "read_file"}}));
        assert_eq!(record["erased"], json!(["/input/parsed_body/params/arguments", "/input/attributes/request/http/body"]));
    }

    #[test]
    fn samples_allowed_decisions_deterministically() {
        let cfg = config(r#"{"console": true, "sample_allowed": 0.25}"#);
        let kept = (0..4000).filter(|i| cfg.samples(&format!("req-{i}"))).count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert_eq!(cfg.samples("req-7"), cfg.samples("req-7"));
        assert!(config(r#"{"console": true}"#).samples("any"));
    }
}
