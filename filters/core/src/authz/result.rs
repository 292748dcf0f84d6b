//! The OPA Envoy plugin's result, read exactly as the plugin reads it.
//!
//! A boolean allows or denies. An object must hold a boolean `allowed`; `headers` (an object of
//! strings or string lists, or a list of such objects) go to the upstream on allow and to the
//! client on deny; `dynamic_metadata` (an object) is published on both; `response_headers_to_add`,
//! `request_headers_to_remove`, `query_parameters_to_set` and `query_parameters_to_remove` apply
//! only on allow; `body` and `http_status` (a status Envoy's `StatusCode` and Go both know) only
//! on deny. Undefined means deny. Anything else is an error, and errors deny.

use std::sync::LazyLock;

use regorus::Value;

use crate::config::{IdentityConfig, header_name};
use crate::decision::{Decision, DenyReason, HeaderEdit, QueryEdit};

/// The result's keys as ready-made regorus strings: a lookup allocates nothing.
struct Keys {
    allowed: Value,
    body: Value,
    dynamic_metadata: Value,
    headers: Value,
    http_status: Value,
    query_parameters_to_remove: Value,
    query_parameters_to_set: Value,
    request_headers_to_remove: Value,
    response_headers_to_add: Value,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| Keys {
    allowed: "allowed".into(),
    body: "body".into(),
    dynamic_metadata: "dynamic_metadata".into(),
    headers: "headers".into(),
    http_status: "http_status".into(),
    query_parameters_to_remove: "query_parameters_to_remove".into(),
    query_parameters_to_set: "query_parameters_to_set".into(),
    request_headers_to_remove: "request_headers_to_remove".into(),
    response_headers_to_add: "response_headers_to_add".into(),
});

/// Turns the policy's value into a decision, and its `dynamic_metadata` (JSON) when the result
/// is valid. The policy's edits may not touch the identity header, which is set after them
/// ([`Decision`]).
pub(crate) fn interpret(result: &Value, config: &IdentityConfig, error_status: u16) -> (Decision, Option<String>) {
    match dynamic_metadata(result).and_then(|metadata| Ok((read(result, config)?, metadata))) {
        Ok((verdict, metadata)) => (decide(verdict, config), metadata),
        Err(reason) => (Decision::deny(error_status, reason), None),
    }
}

fn decide(verdict: Verdict, config: &IdentityConfig) -> Decision {
    match verdict {
        Verdict::Allow { request_edits, response_headers } => Decision::Allow { request_edits, response_headers },
        Verdict::Deny { status, headers, body } => Decision::Deny {
            status: status.unwrap_or(config.deny_status),
            reason: DenyReason::PolicyDenied,
            headers,
            body,
        },
        Verdict::Undefined => Decision::deny(config.deny_status, DenyReason::PolicyUndefined),
    }
}

/// The result's `dynamic_metadata` as JSON, for filter state; opa-envoy-plugin requires an
/// object, on allow and on deny alike.
pub fn dynamic_metadata(result: &Value) -> Result<Option<String>, DenyReason> {
    let Value::Object(object) = result else { return Ok(None) };
    match object.get(&KEYS.dynamic_metadata) {
        None => Ok(None),
        Some(metadata @ Value::Object(_)) => serde_json::to_string(metadata)
            .map(Some)
            .map_err(|e| invalid(format!("'dynamic_metadata' is not JSON: {e}"))),
        Some(other) => Err(invalid(format!("'dynamic_metadata' must be an object, got {}", type_name(other)))),
    }
}

enum Verdict {
    Allow { request_edits: Vec<HeaderEdit>, response_headers: Vec<(String, String)> },
    Deny { status: Option<u16>, headers: Vec<(String, String)>, body: String },
    Undefined,
}

fn read(result: &Value, config: &IdentityConfig) -> Result<Verdict, DenyReason> {
    let object = match result {
        Value::Undefined => return Ok(Verdict::Undefined),
        Value::Bool(true) => {
            return Ok(Verdict::Allow { request_edits: Vec::new(), response_headers: Vec::new() });
        }
        Value::Bool(false) => return Ok(Verdict::Deny { status: None, headers: Vec::new(), body: String::new() }),
        Value::Object(object) => object,
        other => return Err(invalid(format!("expected a boolean or an object, got {}", type_name(other)))),
    };
    let field = |key: &Value| object.get(key);
    let allowed = match field(&KEYS.allowed) {
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(invalid(format!("'allowed' must be a boolean, got {}", type_name(other)))),
        None => return Err(invalid("the result object has no 'allowed'".to_owned())),
    };
    let headers = field(&KEYS.headers).map(|v| header_list("headers", v)).transpose()?.unwrap_or_default();
    if !allowed {
        let status = match field(&KEYS.http_status) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| ENVOY_STATUS_CODES.contains(n))
                    .ok_or_else(|| invalid(format!("'http_status' must be a status code Envoy knows, got {v}")))?,
            ),
        };
        let body = match field(&KEYS.body) {
            None => String::new(),
            Some(Value::String(s)) => s.to_string(),
            Some(other) => return Err(invalid(format!("'body' must be a string, got {}", type_name(other)))),
        };
        return Ok(Verdict::Deny { status, headers, body });
    }
    let mut request_edits = Vec::new();
    for (name, value) in headers {
        guard_identity(config, &name)?;
        // As the plugin: the first value of a header replaces the request's, further ones are added.
        let edit = if request_edits.iter().any(|e| matches!(e, HeaderEdit::Set(n, _) if *n == name)) {
            HeaderEdit::Append(name, value)
        } else {
            HeaderEdit::Set(name, value)
        };
        request_edits.push(edit);
    }
    if let Some(list) = field(&KEYS.request_headers_to_remove) {
        let names = list
            .as_array()
            .map_err(|_| invalid("'request_headers_to_remove' must be an array of strings".to_owned()))?;
        for name in names.iter() {
            let name = name
                .as_string()
                .ok()
                .and_then(|n| header_name(n))
                .ok_or_else(|| invalid(format!("'request_headers_to_remove' holds {name}, not a header name")))?;
            guard_identity(config, &name)?;
            request_edits.push(HeaderEdit::Remove(name));
        }
    }
    let response_headers = field(&KEYS.response_headers_to_add)
        .map(|v| header_list("response_headers_to_add", v))
        .transpose()?
        .unwrap_or_default();
    let query = query_edit(field(&KEYS.query_parameters_to_set), field(&KEYS.query_parameters_to_remove))?;
    if !query.set.is_empty() || !query.remove.is_empty() {
        request_edits.push(HeaderEdit::Query(query));
    }
    Ok(Verdict::Allow { request_edits, response_headers })
}

/// The codes of Envoy's `type.v3.StatusCode` enum that Go's `http.StatusText` also knows: the
/// `http_status` values opa-envoy-plugin accepts.
const ENVOY_STATUS_CODES: &[u16] = &[
    100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403,
    404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500,
    501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// `query_parameters_to_set` (an object of strings or string lists) and
/// `query_parameters_to_remove` (a list of strings). Keys and values go into the query as they
/// are, as Envoy writes them: one that would change the query's structure (`&`, `#`, a control
/// character; `=` in a key) is refused rather than written.
fn query_edit(set: Option<&Value>, remove: Option<&Value>) -> Result<QueryEdit, DenyReason> {
    let safe = |text: &str, key: bool| !text.bytes().any(|b| b == b'&' || b == b'#' || b < 0x20 || b == 0x7f || key && b == b'=');
    let mut edit = QueryEdit::default();
    if let Some(set) = set {
        let object = set.as_object().map_err(|_| invalid("'query_parameters_to_set' must be an object".to_owned()))?;
        for (key, values) in object.iter() {
            let key = key
                .as_string()
                .ok()
                .filter(|k| !k.is_empty() && safe(k, true))
                .ok_or_else(|| invalid(format!("'query_parameters_to_set' has {key} as a key")))?;
            for value in one_or_many(values) {
                let value = value
                    .as_string()
                    .ok()
                    .filter(|v| safe(v, false))
                    .ok_or_else(|| invalid(format!("'query_parameters_to_set.{key}' must be a query-safe string, got {value}")))?;
                edit.set.push((key.to_string(), value.to_string()));
            }
        }
    }
    if let Some(remove) = remove {
        let keys = remove
            .as_array()
            .map_err(|_| invalid("'query_parameters_to_remove' must be an array of strings".to_owned()))?;
        for key in keys.iter() {
            let key = key
                .as_string()
                .ok()
                .ok_or_else(|| invalid(format!("'query_parameters_to_remove' holds {key}, not a string")))?;
            edit.remove.push(key.to_string());
        }
    }
    Ok(edit)
}

/// `{"name": "value"}`, `{"name": ["v1", "v2"]}` or a list of such objects into (name, value)
/// pairs, validated.
fn header_list(field: &str, value: &Value) -> Result<Vec<(String, String)>, DenyReason> {
    let mut out = Vec::new();
    for object in one_or_many(value) {
        let object = object.as_object().map_err(|_| invalid(format!("'{field}' must be an object or a list of objects")))?;
        for (name, values) in object.iter() {
            let name = name
                .as_string()
                .ok()
                .and_then(|n| header_name(n))
                .ok_or_else(|| invalid(format!("'{field}' has {name} as a header name")))?;
            for v in one_or_many(values) {
                let text = v
                    .as_string()
                    .ok()
                    .filter(|s| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
                    .ok_or_else(|| invalid(format!("'{field}.{name}' must be a header-safe string, got {v}")))?;
                out.push((name.clone(), text.to_string()));
            }
        }
    }
    Ok(out)
}

/// The items of a list, or the one value that is not a list (the plugin takes either).
fn one_or_many(value: &Value) -> Vec<&Value> {
    match value {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    }
}

fn guard_identity(config: &IdentityConfig, name: &str) -> Result<(), DenyReason> {
    if config.is_identity_header(name) {
        return Err(DenyReason::PolicyEditsIdentityHeader(name.to_owned()));
    }
    Ok(())
}

fn invalid(message: String) -> DenyReason {
    DenyReason::InvalidResult(message)
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Set(_) => "a set",
        Value::Object(_) => "an object",
        Value::Undefined => "undefined",
        #[allow(unreachable_patterns)]
        _ => "an unknown value",
    }
}
