//! The decision each side's Envoy integration takes from a policy result, in one comparable form.
//!
//! OPA's side models opa-envoy-plugin's v3 `check` (`envoyauth/response.go`, `internal/internal.go`,
//! read at 07a1fd15): a boolean allows or denies; an object needs a boolean `allowed`; `headers`
//! (an object of strings or string arrays, or an array of such objects) and `dynamic_metadata`
//! (an object) are checked on both branches; on allow `request_headers_to_remove`,
//! `response_headers_to_add`, `query_parameters_to_remove` and `query_parameters_to_set` are read,
//! on deny `body` and `http_status` (an integer Envoy's `StatusCode` enum and Go both know). Any
//! other shape, an undefined result or an evaluation error is a gRPC error, which Envoy answers
//! with its `status_on_error` (403) and forwards nothing. Header order across keys is Go map order
//! there, so headers are compared as sorted lists. svidgate's side is the core's own reading
//! (`decision_for_result`), the one the module applies.

use serde_json::Value as Json;
use svidgate_core::authz::{decision_for_result, dynamic_metadata};
use svidgate_core::config::IdentityConfig;
use svidgate_core::decision::{Decision, DenyReason, HeaderEdit};

use crate::Outcome;

/// What reaches the upstream, or what the client gets instead.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Forwarded {
    /// Headers set on the request (name lower-cased, value), sorted.
    pub headers: Vec<(String, String)>,
    /// Request headers removed, lower-cased, sorted.
    pub removed: Vec<String>,
    /// Headers added to the response, sorted.
    pub response_headers: Vec<(String, String)>,
    /// Query parameters removed, sorted.
    pub query_removed: Vec<String>,
    /// Query parameters set, sorted.
    pub query_set: Vec<(String, String)>,
    /// `dynamic_metadata` published for other filters.
    pub dynamic_metadata: Option<Json>,
}

/// The decision, comparable across the two integrations.
#[derive(Clone, Debug, PartialEq)]
pub enum EnvoyDecision {
    /// The request goes upstream with these edits.
    Allow(Forwarded),
    /// A local reply.
    Deny {
        /// Its status.
        status: u16,
        /// Its headers, sorted.
        headers: Vec<(String, String)>,
        /// Its body.
        body: String,
        /// `dynamic_metadata` published for other filters.
        dynamic_metadata: Option<Json>,
    },
    /// The integration fails the request (OPA: a gRPC error, answered by Envoy with 403;
    /// svidgate: an error or undefined result, answered with its deny status).
    Error,
}

impl EnvoyDecision {
    /// What goes upstream, if anything.
    pub fn forwards(&self) -> Option<&Forwarded> {
        match self {
            Self::Allow(forwarded) => Some(forwarded),
            Self::Deny { .. } | Self::Error => None,
        }
    }

    /// Whether `self` lets through something `reference` does not: a request it refuses, or a
    /// header or query parameter it removes.
    pub fn more_permissive_than(&self, reference: &Self) -> bool {
        match (self.forwards(), reference.forwards()) {
            (Some(_), None) => true,
            (Some(ours), Some(theirs)) => {
                theirs.removed.iter().any(|h| !ours.removed.contains(h))
                    || theirs.query_removed.iter().any(|q| !ours.query_removed.contains(q))
            }
            _ => false,
        }
    }
}

/// The decision opa-envoy-plugin takes from OPA's outcome.
pub fn opa_decision(outcome: &Outcome) -> EnvoyDecision {
    read_opa(outcome).unwrap_or(EnvoyDecision::Error)
}

fn read_opa(outcome: &Outcome) -> Option<EnvoyDecision> {
    let object = match outcome {
        Outcome::Value(Json::Bool(true)) => return Some(EnvoyDecision::Allow(Forwarded::default())),
        Outcome::Value(Json::Bool(false)) => {
            return Some(EnvoyDecision::Deny { status: 403, headers: Vec::new(), body: String::new(), dynamic_metadata: None });
        }
        Outcome::Value(Json::Object(object)) => object,
        _ => return None,
    };
    let allowed = object.get("allowed")?.as_bool()?;
    let optional = |key: &str, read: fn(&Json) -> Option<Pairs>| match object.get(key) {
        None => Some(Vec::new()),
        Some(value) => read(value),
    };
    let headers = optional("headers", header_bag)?;
    let dynamic_metadata = match object.get("dynamic_metadata") {
        None => None,
        Some(metadata @ Json::Object(_)) => Some(metadata.clone()),
        Some(_) => return None,
    };
    if allowed {
        let strings = |key: &str| object.get(key).map_or(Some(Vec::new()), string_list);
        let mut removed = strings("request_headers_to_remove")?;
        removed.iter_mut().for_each(|h| h.make_ascii_lowercase());
        removed.sort();
        let response_headers = optional("response_headers_to_add", header_bag)?;
        let mut query_removed = strings("query_parameters_to_remove")?;
        query_removed.sort();
        let query_set = optional("query_parameters_to_set", query_parameters)?;
        return Some(EnvoyDecision::Allow(Forwarded {
            headers,
            removed,
            response_headers,
            query_removed,
            query_set,
            dynamic_metadata,
        }));
    }
    let body = match object.get("body") {
        None => String::new(),
        Some(Json::String(body)) => body.clone(),
        Some(_) => return None,
    };
    let status = match object.get("http_status") {
        None => 403,
        Some(Json::Number(n)) => u16::try_from(n.as_i64()?).ok().filter(|s| ENVOY_STATUS_CODES.contains(s))?,
        Some(_) => return None,
    };
    Some(EnvoyDecision::Deny { status, headers, body, dynamic_metadata })
}

/// (name, value) pairs, sorted.
type Pairs = Vec<(String, String)>;

/// The codes of Envoy's `type.v3.StatusCode` enum that Go's `http.StatusText` also knows: the
/// `http_status` values opa-envoy-plugin accepts.
const ENVOY_STATUS_CODES: &[u16] = &[
    100, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307, 308, 400, 401, 402, 403,
    404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 421, 422, 423, 424, 426, 428, 429, 431, 500,
    501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
];

/// `{"k": "v"}`, `{"k": ["v1", "v2"]}` or an array of such objects, as sorted pairs.
fn header_bag(value: &Json) -> Option<Pairs> {
    let objects: Vec<&Json> = match value {
        Json::Object(_) => vec![value],
        Json::Array(items) => items.iter().collect(),
        _ => return None,
    };
    let mut pairs = Vec::new();
    for object in objects {
        pairs.extend(object_pairs(object)?.into_iter().map(|(name, v)| (name.to_ascii_lowercase(), v)));
    }
    pairs.sort();
    Some(pairs)
}

fn string_list(value: &Json) -> Option<Vec<String>> {
    value.as_array()?.iter().map(|v| v.as_str().map(str::to_owned)).collect()
}

/// `query_parameters_to_set`: `{"k": "v"}` or `{"k": ["v1", "v2"]}`, as sorted pairs.
fn query_parameters(value: &Json) -> Option<Pairs> {
    let mut pairs = object_pairs(value)?;
    pairs.sort();
    Some(pairs)
}

/// An object whose values are strings or lists of strings, as (key, value) pairs.
fn object_pairs(value: &Json) -> Option<Pairs> {
    let mut pairs = Vec::new();
    for (key, value) in value.as_object()? {
        match value {
            Json::String(v) => pairs.push((key.clone(), v.clone())),
            Json::Array(values) => {
                for v in values {
                    pairs.push((key.clone(), v.as_str()?.to_owned()));
                }
            }
            _ => return None,
        }
    }
    Some(pairs)
}

/// The decision svidgate's authz module takes from its engine's outcome.
pub fn svidgate_decision(outcome: &Outcome) -> EnvoyDecision {
    let value = match outcome {
        Outcome::Value(json) => match regorus::Value::from_json_str(&json.to_string()) {
            Ok(value) => value,
            Err(_) => return EnvoyDecision::Error,
        },
        Outcome::Undefined | Outcome::Error(_) => return EnvoyDecision::Error,
    };
    let Ok(identity) = IdentityConfig::parse(br#"{"mode": "perimeter"}"#) else { return EnvoyDecision::Error };
    let metadata = dynamic_metadata(&value).ok().flatten().and_then(|json| serde_json::from_str(&json).ok());
    match decision_for_result(&value, &identity, 403) {
        Decision::Allow { request_edits, response_headers } => {
            let mut forwarded = Forwarded::default();
            for edit in request_edits {
                match edit {
                    HeaderEdit::Append(name, value) | HeaderEdit::Set(name, value) => {
                        forwarded.headers.push((name.to_ascii_lowercase(), value));
                    }
                    HeaderEdit::Remove(name) => forwarded.removed.push(name.to_ascii_lowercase()),
                    HeaderEdit::Query(query) => {
                        forwarded.query_set.extend(query.set);
                        forwarded.query_removed.extend(query.remove);
                    }
                }
            }
            forwarded.query_set.sort();
            forwarded.query_removed.sort();
            forwarded.dynamic_metadata = metadata;
            forwarded.headers.sort();
            forwarded.removed.sort();
            forwarded.response_headers = response_headers.into_iter().map(|(n, v)| (n.to_ascii_lowercase(), v)).collect();
            forwarded.response_headers.sort();
            EnvoyDecision::Allow(forwarded)
        }
        Decision::Deny { reason, .. } if reason.is_error() || reason == DenyReason::PolicyUndefined => EnvoyDecision::Error,
        Decision::Deny { status, mut headers, body, .. } => {
            headers.iter_mut().for_each(|(name, _)| name.make_ascii_lowercase());
            headers.sort();
            EnvoyDecision::Deny { status, headers, body, dynamic_metadata: metadata }
        }
    }
}
