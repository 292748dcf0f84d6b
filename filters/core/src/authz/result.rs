//! The OPA Envoy plugin's result, read exactly as the plugin reads it.
//!
//! A boolean allows or denies. An object must hold a boolean `allowed`; `headers` go to the
//! upstream on allow and to the client on deny; `response_headers_to_add` and
//! `request_headers_to_remove` apply only on allow; `body` and `http_status` only on deny.
//! Undefined means deny. Anything else is an error, and errors deny.

use regorus::Value;

use crate::config::{IdentityConfig, header_name};
use crate::decision::{Decision, DenyReason, HeaderEdit};
use crate::identity::IdentityOutcome;

/// Turns the policy's value into a decision; the identity header is set last, after the
/// policy's own edits, which may not touch it.
pub(crate) fn interpret(
    result: &Value,
    config: &IdentityConfig,
    identity: &IdentityOutcome,
    error_status: u16,
) -> Decision {
    match read(result, config) {
        Ok(Verdict::Allow { mut request_edits, response_headers }) => {
            request_edits.extend(identity.identity_edit(config));
            Decision::Allow { request_edits, response_headers }
        }
        Ok(Verdict::Deny { status, headers, body }) => Decision::Deny {
            status: status.unwrap_or(config.deny_status),
            reason: DenyReason::PolicyDenied,
            headers,
            body,
        },
        Ok(Verdict::Undefined) => Decision::deny(config.deny_status, DenyReason::PolicyUndefined),
        Err(reason) => Decision::deny(error_status, reason),
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
    let field = |name: &str| object.get(&Value::from(name));
    let allowed = match field("allowed") {
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(invalid(format!("'allowed' must be a boolean, got {}", type_name(other)))),
        None => return Err(invalid("the result object has no 'allowed'".to_owned())),
    };
    let headers = field("headers").map(|v| header_list("headers", v)).transpose()?.unwrap_or_default();
    if !allowed {
        let status = match field("http_status") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok()
                    .and_then(|n| u16::try_from(n).ok())
                    .filter(|n| (200..=599).contains(n))
                    .ok_or_else(|| invalid(format!("'http_status' must be a status code, got {v}")))?,
            ),
        };
        let body = match field("body") {
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
    if let Some(list) = field("request_headers_to_remove") {
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
    let response_headers = field("response_headers_to_add")
        .map(|v| header_list("response_headers_to_add", v))
        .transpose()?
        .unwrap_or_default();
    Ok(Verdict::Allow { request_edits, response_headers })
}

/// `{"name": "value"}` or `{"name": ["v1", "v2"]}` into (name, value) pairs, validated.
fn header_list(field: &str, value: &Value) -> Result<Vec<(String, String)>, DenyReason> {
    let object = value.as_object().map_err(|_| invalid(format!("'{field}' must be an object")))?;
    let mut out = Vec::new();
    for (name, values) in object.iter() {
        let name = name
            .as_string()
            .ok()
            .and_then(|n| header_name(n))
            .ok_or_else(|| invalid(format!("'{field}' has {name} as a header name")))?;
        let values: Vec<&Value> = match values {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        for v in values {
            let text = v
                .as_string()
                .ok()
                .filter(|s| !s.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0))
                .ok_or_else(|| invalid(format!("'{field}.{name}' must be a header-safe string, got {v}")))?;
            out.push((name.clone(), text.to_string()));
        }
    }
    Ok(out)
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
