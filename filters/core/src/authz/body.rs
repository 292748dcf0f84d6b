//! The request body as a policy reads it: `parsed_body`, `truncated_body`,
//! `attributes.request.http.body` and `size`, as OPA's Envoy plugin builds them from what Envoy's
//! ext_authz sends with `with_request_body` (opa-envoy-plugin `envoyauth/request.go`,
//! `getParsedBody`).
//!
//! - The body is text: ext_authz puts it in a protobuf `string`, which the plugin cannot decode
//!   unless it is UTF-8, so a body that is not is an input error.
//! - A body cut at `max_request_bytes` (`allow_partial_message`) is `truncated_body: true` and is
//!   not parsed (`parsed_body: null`); so is one shorter than its `content-length`.
//! - `parsed_body` by `content-type` (a substring match, as the plugin's): `application/json`
//!   (and, beyond the plugin, any `+json` type, which the upstream will read as JSON), a JSON
//!   value; `application/x-www-form-urlencoded`, every key to the list of its values (Go's
//!   `url.ParseQuery`); `multipart/form-data`, every form field to the list of its values, a part
//!   whose own type is `application/json` parsed, any other part as text (Go's `mime/multipart`).
//!   Anything else, or no body, is `null`. A body that does not parse as its type is an input
//!   error: the plugin fails the check, and the request is denied.

use std::collections::BTreeMap;

use regorus::Value;

use crate::identity::StrippedHeaders;

/// The body bytes the filter read for the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestBody {
    /// The first `max_request_bytes` bytes at most.
    pub bytes: Vec<u8>,
    /// The bytes of body received before the decision (ext_authz's `size`).
    pub received: usize,
    /// Only the first bytes are given (`allow_partial_message` and a longer body).
    pub truncated: bool,
}

/// The body's parts of the input.
#[derive(Clone, Debug)]
pub struct BodyInput {
    /// `attributes.request.http.body`; `None` when empty (the plugin leaves out an empty field).
    pub text: Option<Value>,
    /// `attributes.request.http.size` (left out when zero).
    pub size: u64,
    /// `truncated_body`.
    pub truncated: bool,
    /// `parsed_body`.
    pub parsed: Value,
    /// Whether the proxy buffered a body (ext_authz then sends `x-envoy-auth-partial-body`).
    pub buffered: bool,
}

impl BodyInput {
    /// The input of a request without a body, or of a policy that does not read it.
    pub fn none() -> Self {
        Self { text: None, size: 0, truncated: false, parsed: Value::Null, buffered: false }
    }

    /// Whether this is the input of a request without a body ([`Self::none`]).
    pub fn is_none(&self) -> bool {
        self.text.is_none() && self.size == 0 && !self.truncated && self.parsed == Value::Null && !self.buffered
    }
}

/// Why a body cannot be the policy's input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    /// ext_authz sends the body as a protobuf string, which must be UTF-8.
    #[error("the body is not UTF-8")]
    NotUtf8,
    /// `content-length` is not a number.
    #[error("invalid content-length")]
    ContentLength,
    /// A JSON body (or multipart JSON part) that does not parse.
    #[error("invalid JSON: {0}")]
    Json(String),
    /// A form body with an invalid escape or a `;`.
    #[error("invalid form: {0}")]
    Form(crate::path::InputError),
    /// A multipart body (or its `content-type`) that does not parse.
    #[error("invalid multipart: {0}")]
    Multipart(&'static str),
}

/// The body's parts of the input, from the request headers and the body read.
pub fn read(headers: &StrippedHeaders, body: &RequestBody) -> Result<BodyInput, BodyError> {
    let buffered = body.received > 0;
    let size = u64::try_from(body.received).unwrap_or(u64::MAX);
    let text = std::str::from_utf8(&body.bytes).map_err(|_| BodyError::NotUtf8)?;
    let content_type = joined(headers, "content-type");
    let parsed = match content_type.as_deref() {
        _ if body.truncated => None,
        None => Some(Value::Null),
        Some(content_type) => parse(content_type, joined(headers, "content-length").as_deref(), text)?,
    };
    let (parsed, truncated) = match parsed {
        Some(parsed) => (parsed, body.truncated),
        None => (Value::Null, true),
    };
    let text = (!text.is_empty()).then(|| Value::from(text));
    Ok(BodyInput { text, size, truncated, parsed, buffered })
}

/// `parsed_body` for a complete body, or `None` when `content-length` says it is not.
fn parse(content_type: &str, content_length: Option<&str>, text: &str) -> Result<Option<Value>, BodyError> {
    let kind = if content_type.contains("application/json") || is_json_suffix(content_type) {
        Kind::Json
    } else if content_type.contains("application/x-www-form-urlencoded") {
        Kind::Form
    } else if content_type.contains("multipart/form-data") {
        Kind::Multipart
    } else {
        return Ok(Some(Value::Null));
    };
    if text.is_empty() {
        return Ok(Some(Value::Null));
    }
    if let Some(length) = content_length {
        let length: i64 = length.parse().map_err(|_| BodyError::ContentLength)?;
        if length != -1 && length > i64::try_from(text.len()).unwrap_or(i64::MAX) {
            return Ok(None);
        }
    }
    match kind {
        Kind::Json => json(text).map(Some),
        Kind::Form => Ok(Some(form(text)?)),
        Kind::Multipart => multipart(content_type, text).map(Some),
    }
}

enum Kind {
    Json,
    Form,
    Multipart,
}

/// A structured-syntax `+json` media type (RFC 6839), such as `application/problem+json`.
fn is_json_suffix(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    essence.len() > 5 && essence.get(essence.len() - 5..).is_some_and(|suffix| suffix.eq_ignore_ascii_case("+json"))
}

fn json(text: &str) -> Result<Value, BodyError> {
    Value::from_json_str(text).map_err(|e| BodyError::Json(e.root_cause().to_string()))
}

/// Go's `url.ParseQuery` as a map from key to the list of its values.
fn form(text: &str) -> Result<Value, BodyError> {
    let pairs = crate::path::parsed_query(text).map_err(BodyError::Form)?;
    Ok(lists(pairs.into_iter().map(|(key, value)| (key, Value::from(value))).collect()))
}

/// Every key to the list of its values, in order: Go's `url.Values` and multipart forms, as
/// the plugin gives them (`parsed_query`, `parsed_body`).
pub(super) fn lists(pairs: Vec<(String, Value)>) -> Value {
    let mut map: BTreeMap<Value, Value> = BTreeMap::new();
    for (key, value) in pairs {
        if let Ok(values) = map.entry(Value::from(key)).or_insert_with(Value::new_array).as_array_mut() {
            values.push(value);
        }
    }
    Value::from(map)
}

/// A header's values as ext_authz's header map has them: repeats joined with `,`.
fn joined(headers: &StrippedHeaders, name: &str) -> Option<String> {
    let mut values = headers.values(name);
    let first = values.next()?;
    Some(values.fold(first.to_owned(), |joined, v| joined + "," + v))
}

/// Go's `mime/multipart` reading a `multipart/form-data` body as the plugin does: the form
/// fields in order, a part without a form name skipped, a JSON part parsed.
fn multipart(content_type: &str, text: &str) -> Result<Value, BodyError> {
    let (_, params) = media_type(content_type).ok_or(BodyError::Multipart("invalid content-type parameters"))?;
    let Some((_, boundary)) = params.iter().find(|(name, _)| name == "boundary") else { return Ok(Value::Null) };
    let dash_boundary = format!("--{boundary}");
    let mut fields = Vec::new();
    // The preamble: lines up to the first delimiter line, whose ending sets the line ending.
    let mut rest = text;
    let newline = loop {
        let Some((line, after)) = rest.split_once('\n') else {
            return Err(BodyError::Multipart("no boundary"));
        };
        rest = after;
        match delimiter_line(line, &dash_boundary) {
            Some(Delimiter::Final) => return Ok(lists(fields)),
            Some(Delimiter::Next) => break if line.ends_with('\r') { "\r\n" } else { "\n" },
            None => {}
        }
    };
    let separator = format!("{newline}{dash_boundary}");
    loop {
        let (headers, body_start) = part_headers(rest)?;
        let (content, after, last) = part_body(body_start, &separator)?;
        rest = after;
        if headers.iter().any(|(n, v)| n == "content-transfer-encoding" && v.eq_ignore_ascii_case("quoted-printable")) {
            return Err(BodyError::Multipart("quoted-printable parts are not read"));
        }
        let header = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str());
        let name = header("content-disposition")
            .and_then(media_type)
            .filter(|(disposition, _)| disposition == "form-data")
            .and_then(|(_, params)| params.into_iter().find(|(name, _)| name == "name"))
            .map(|(_, name)| name)
            .filter(|name| !name.is_empty());
        if let Some(name) = name {
            let value = if header("content-type").is_some_and(|t| t.contains("application/json")) {
                json(content)?
            } else {
                Value::from(content)
            };
            fields.push((name, value));
        }
        if last {
            return Ok(lists(fields));
        }
    }
}

enum Delimiter {
    Next,
    Final,
}

/// `--boundary` (then `--` for the last) with only spaces and tabs after it.
fn delimiter_line(line: &str, dash_boundary: &str) -> Option<Delimiter> {
    let rest = line.strip_suffix('\r').unwrap_or(line).strip_prefix(dash_boundary)?;
    let (kind, rest) = match rest.strip_prefix("--") {
        Some(rest) => (Delimiter::Final, rest),
        None => (Delimiter::Next, rest),
    };
    rest.trim_matches([' ', '\t']).is_empty().then_some(kind)
}

/// A part's MIME headers as (lower-case name, value).
type PartHeaders = Vec<(String, String)>;

/// A part's MIME headers (folded lines joined) and what follows them.
fn part_headers(text: &str) -> Result<(PartHeaders, &str), BodyError> {
    let mut headers = PartHeaders::new();
    let mut rest = text;
    loop {
        let (line, after) = rest.split_once('\n').ok_or(BodyError::Multipart("part headers not ended"))?;
        rest = after;
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.is_empty() {
            return Ok((headers, rest));
        }
        if line.starts_with([' ', '\t']) {
            let (_, value) = headers.last_mut().ok_or(BodyError::Multipart("invalid part header"))?;
            value.push(' ');
            value.push_str(line.trim());
            continue;
        }
        let (name, value) = line.split_once(':').ok_or(BodyError::Multipart("invalid part header"))?;
        if name.is_empty() || name.contains([' ', '\t']) {
            return Err(BodyError::Multipart("invalid part header"));
        }
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
}

/// A part's content up to the next delimiter, what follows the delimiter line, and whether it
/// was the last one.
fn part_body<'a>(text: &'a str, separator: &str) -> Result<(&'a str, &'a str, bool), BodyError> {
    let mut from = 0;
    loop {
        let at = text.get(from..).and_then(|t| t.find(separator)).ok_or(BodyError::Multipart("unexpected end"))? + from;
        let content = text.get(..at).unwrap_or_default();
        let after = text.get(at + separator.len()..).unwrap_or_default();
        // The last delimiter: what follows it (the epilogue) is ignored.
        if after.starts_with("--") {
            return Ok((content, "", true));
        }
        let blank = after.trim_start_matches([' ', '\t']);
        if let Some(next) = blank.strip_prefix("\r\n").or_else(|| blank.strip_prefix('\n')) {
            return Ok((content, next, false));
        }
        // The separator's text inside the content, not a delimiter.
        from = at + 1;
    }
}

/// Go's `mime.ParseMediaType`: the type lower-cased and its parameters (names lower-cased), or
/// `None` for anything Go refuses (a bad token, a bad or repeated parameter).
fn media_type(value: &str) -> Option<(String, Vec<(String, String)>)> {
    let (essence, mut rest) = value.split_once(';').map_or((value, ""), |(e, r)| (e, r));
    let essence = essence.trim().to_ascii_lowercase();
    let (major, minor) = essence.split_once('/').map_or((essence.as_str(), None), |(a, b)| (a, Some(b)));
    if !is_token(major) || minor.is_some_and(|minor| !is_token(minor)) {
        return None;
    }
    let mut params: Vec<(String, String)> = Vec::new();
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            return Some((essence, params));
        }
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().to_ascii_lowercase();
        if !is_token(&key) {
            return None;
        }
        let after = after.trim_start();
        let (param, after) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let end = loop {
                match chars.next()? {
                    (i, '"') => break i + 1,
                    (_, '\\') => value.push(chars.next()?.1),
                    (_, c) => value.push(c),
                }
            };
            (value, quoted.get(end..)?)
        } else {
            let end = after.find(|c: char| !is_token_char(c)).unwrap_or(after.len());
            let token = after.get(..end)?;
            if token.is_empty() {
                return None;
            }
            (token.to_owned(), after.get(end..)?)
        };
        if params.iter().any(|(name, _)| *name == key) {
            return None;
        }
        params.push((key, param));
        let after = after.trim_start();
        rest = match after.strip_prefix(';') {
            Some(next) => next,
            None if after.is_empty() => after,
            None => return None,
        };
    }
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_token_char)
}

fn is_token_char(c: char) -> bool {
    c.is_ascii() && c > ' ' && c != '\u{7f}' && !"()<>@,;:\\\"/[]?=".contains(c)
}

#[cfg(test)]
mod tests;
