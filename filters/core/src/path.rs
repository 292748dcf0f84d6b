//! The request path: the guard that refuses a `:path` not in normal form, and the percent-decoding
//! OPA's Envoy plugin applies to build `parsed_path` and `parsed_query`.
//!
//! A policy that allows `/v1/agent/*` must not let `/v1/agent/../admin` through to an app that
//! normalizes it into `/v1/admin`. Envoy can normalize paths itself (`normalize_path`,
//! `merge_slashes`, `path_with_escaped_slashes_action`, which every configuration under `envoy/`
//! sets), but a filter cannot tell whether it did; so svidgate refuses, by default, every path an
//! app could read as another one. Then the policy sees the path the upstream gets.

use std::borrow::Cow;

/// Which request-target forms the guard lets through besides a normalized origin-form path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PathGuard {
    /// Refuse paths that are not in normal form (the default).
    pub enabled: bool,
    /// Let `*` through (`OPTIONS *`).
    pub asterisk_form: bool,
    /// Let an authority (`host:port`, `CONNECT`) or no path at all through.
    pub authority_form: bool,
}

impl Default for PathGuard {
    fn default() -> Self {
        Self { enabled: true, asterisk_form: false, authority_form: false }
    }
}

/// Why a path is not in normal form.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PathError {
    /// An escaped `/`, an escaped or raw `\`, or an escaped or raw NUL.
    #[error("path has an escaped slash, a backslash or a nul")]
    AmbiguousSeparator,
    /// `.` or `..`, also percent-encoded.
    #[error("path has a dot segment")]
    DotSegment,
    /// `//`: an empty segment before the last.
    #[error("path has an empty segment (//)")]
    EmptySegment,
    /// `%` not followed by two hex digits.
    #[error("path has an invalid percent escape")]
    InvalidEscape,
    /// Not origin-form (`/...`), and not a form the guard was told to let through.
    #[error("path is not an absolute path starting with /")]
    NotOriginForm,
}

/// Why the input cannot be built from the request, as OPA's Envoy plugin refuses it (400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    /// The path has an invalid percent escape (Go's `url.PathUnescape` fails).
    #[error("invalid URL escape in the path")]
    PathEscape,
    /// The query has an invalid percent escape (Go's `url.ParseQuery` fails).
    #[error("invalid URL escape in the query")]
    QueryEscape,
    /// The query has a `;` (Go's `url.ParseQuery` refuses it since Go 1.17).
    #[error("invalid semicolon separator in the query")]
    QuerySemicolon,
    /// The request body does not parse as its `content-type` says, or is not UTF-8
    /// (`crate::authz::body`).
    #[error("invalid request body: {0}")]
    Body(String),
}

impl PathGuard {
    /// Checks a request's `:path` (with its query, which is not checked here).
    pub fn check(&self, path: &str) -> Result<(), PathError> {
        if !self.enabled {
            return Ok(());
        }
        let path = path.split_once('?').map_or(path, |(path, _)| path);
        match path {
            "*" if self.asterisk_form => return Ok(()),
            _ if self.authority_form && !path.contains('/') && path != "*" => return Ok(()),
            _ => {}
        }
        let Some(rest) = path.strip_prefix('/') else { return Err(PathError::NotOriginForm) };
        // One pass over the bytes, one segment at a time, decoding escapes as it goes: every
        // request pays for this, so no segment is split off or decoded into a buffer. A
        // segment's faults are reported in the order the checks are listed in `PathError`'s use
        // here: empty, then an invalid escape, then a separator, then a dot segment.
        let bytes = rest.as_bytes();
        let mut at = 0;
        loop {
            let (start, mut invalid, mut separator, mut decoded_len, mut dots) = (at, false, false, 0usize, 0usize);
            while let Some(&byte) = bytes.get(at) {
                if byte == b'/' {
                    break;
                }
                let mut decoded = byte;
                if byte == b'%' {
                    match (bytes.get(at + 1).and_then(hex_digit), bytes.get(at + 2).and_then(hex_digit)) {
                        (Some(high), Some(low)) => {
                            decoded = high << 4 | low;
                            at += 2;
                        }
                        _ => invalid = true,
                    }
                }
                separator |= matches!(decoded, b'/' | b'\\' | 0);
                dots += usize::from(decoded == b'.');
                decoded_len += 1;
                at += 1;
            }
            let last = at >= bytes.len();
            if at == start && !last {
                return Err(PathError::EmptySegment);
            }
            if invalid {
                return Err(PathError::InvalidEscape);
            }
            if separator {
                return Err(PathError::AmbiguousSeparator);
            }
            if (decoded_len == 1 || decoded_len == 2) && dots == decoded_len {
                return Err(PathError::DotSegment);
            }
            if last {
                return Ok(());
            }
            // Past the `/`.
            at += 1;
        }
    }
}

/// The value of an ASCII hex digit.
fn hex_digit(digit: &u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// `parsed_path` as OPA's Envoy plugin builds it: the path before `?` percent-decoded as a whole
/// (Go's `url.PathUnescape`), leading `/`s trimmed, split on `/`.
pub fn parsed_path(path: &str) -> Result<Vec<String>, InputError> {
    let path = path.split_once('?').map_or(path, |(path, _)| path);
    let decoded = percent_decode(path, false).map_err(|_| InputError::PathEscape)?;
    let decoded = String::from_utf8_lossy(&decoded);
    Ok(decoded.trim_start_matches('/').split('/').map(str::to_owned).collect())
}

/// `parsed_query` as Go's `url.ParseQuery` reads it: `&`-separated pairs, keys and values
/// query-unescaped (`+` is a space), every value of a key in order. A `;` or an invalid escape
/// is an error, as in the plugin.
pub fn parsed_query(query: &str) -> Result<Vec<(String, String)>, InputError> {
    let mut pairs = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        if pair.contains(';') {
            return Err(InputError::QuerySemicolon);
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let unescape = |s: &str| {
            percent_decode(s, true)
                .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
                .map_err(|_| InputError::QueryEscape)
        };
        pairs.push((unescape(key)?, unescape(value)?));
    }
    Ok(pairs)
}

/// Checks what OPA's Envoy plugin checks of every request before it builds the input, whether
/// or not the policy reads `parsed_path` or `parsed_query`.
pub fn check_input(path: &str) -> Result<(), InputError> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    percent_decode(path, false).map_err(|_| InputError::PathEscape)?;
    parsed_query(query).map(|_| ())
}

/// An invalid percent escape.
#[derive(Debug)]
struct InvalidEscape;

/// Decodes `%XX` escapes (and `+` as a space in a query); `%` without two hex digits is an error.
fn percent_decode(s: &str, plus_is_space: bool) -> Result<Cow<'_, [u8]>, InvalidEscape> {
    if !(s.contains('%') || plus_is_space && s.contains('+')) {
        return Ok(Cow::Borrowed(s.as_bytes()));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|d| char::from(*d).to_digit(16));
                let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else { return Err(InvalidEscape) };
                out.push(u8::try_from(high * 16 + low).map_err(|_| InvalidEscape)?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests;
