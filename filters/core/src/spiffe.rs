//! SPIFFE IDs and trust domains, parsed exactly as the SPIFFE-ID specification says.
//!
//! Nothing below the parsing edge handles a `String` where a SPIFFE ID is meant: a [`SpiffeId`]
//! can only be obtained through [`SpiffeId::parse`], so holding one proves the syntax is valid.

use std::fmt;
use std::rc::Rc;
use std::str::FromStr;

/// The only scheme a SPIFFE ID may have, in lower case.
const SCHEME: &str = "spiffe://";
/// SPIFFE-ID §2.3: a SPIFFE ID is at most 2048 bytes long.
const MAX_ID_LEN: usize = 2048;
/// SPIFFE-ID §2.1: a trust domain name is at most 255 bytes long.
const MAX_TRUST_DOMAIN_LEN: usize = 255;

/// Why a string is not a valid SPIFFE ID or trust domain: one variant per rule of the spec.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SpiffeIdError {
    /// A path segment holds a character outside `[A-Za-z0-9._-]` (percent-encoding included).
    #[error("path segment character {0:?} is not allowed (only letters, digits, '.', '-' and '_')")]
    BadPathSegmentChar(char),
    /// The trust domain holds a character outside `[a-z0-9._-]`.
    #[error("trust domain character {0:?} is not allowed (only lower-case letters, digits, '.', '-' and '_')")]
    BadTrustDomainChar(char),
    /// A path segment is `.` or `..`.
    #[error("path segments must not be '.' or '..'")]
    DotSegment,
    /// The input is empty.
    #[error("spiffe id is empty")]
    Empty,
    /// The path holds an empty segment (`//`).
    #[error("path segments must not be empty")]
    EmptySegment,
    /// The ID carries a fragment (`#...`).
    #[error("spiffe id must not have a fragment")]
    Fragment,
    /// Nothing stands between the scheme and the path.
    #[error("trust domain is missing")]
    MissingTrustDomain,
    /// The trust domain carries a port (`:8443`).
    #[error("trust domain must not have a port")]
    Port,
    /// The ID carries a query (`?...`).
    #[error("spiffe id must not have a query")]
    Query,
    /// The ID is longer than 2048 bytes.
    #[error("spiffe id is {0} bytes long, the limit is 2048")]
    TooLong(usize),
    /// The path ends with `/`.
    #[error("path must not end with '/'")]
    TrailingSlash,
    /// The trust domain is longer than 255 bytes.
    #[error("trust domain is {0} bytes long, the limit is 255")]
    TrustDomainTooLong(usize),
    /// The authority carries userinfo (`user@`).
    #[error("trust domain must not have userinfo")]
    Userinfo,
    /// The scheme is not exactly `spiffe://` (wrong scheme, upper case, or missing).
    #[error("scheme must be 'spiffe://'")]
    WrongScheme,
}

/// A trust domain name such as `ai.internal`: the root of a SPIFFE ID's authority.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TrustDomain(String);

impl TrustDomain {
    /// Parses a trust domain given either as a bare name (`ai.internal`) or as `spiffe://ai.internal`.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        let name = match input.strip_prefix(SCHEME) {
            Some(rest) => rest,
            None if input.contains("://") => return Err(SpiffeIdError::WrongScheme),
            None => input,
        };
        if name.contains('/') {
            // A trust domain has no path; "spiffe://td/" is not a trust domain either.
            return Err(SpiffeIdError::BadTrustDomainChar('/'));
        }
        validate_trust_domain(name)?;
        Ok(Self(name.to_owned()))
    }

    /// The trust domain name, without scheme.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TrustDomain {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// A syntactically valid SPIFFE ID: `spiffe://<trust domain><path>`. Clones share the text: a
/// peer's ID is parsed once per certificate and handed to every request of its connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    id: Rc<str>,
    /// Byte offset where the path starts (the end of the trust domain).
    path_start: usize,
}

impl SpiffeId {
    /// Parses `input` following every rule of the SPIFFE-ID specification.
    pub fn parse(input: &str) -> Result<Self, SpiffeIdError> {
        if input.is_empty() {
            return Err(SpiffeIdError::Empty);
        }
        if input.len() > MAX_ID_LEN {
            return Err(SpiffeIdError::TooLong(input.len()));
        }
        let rest = input.strip_prefix(SCHEME).ok_or(SpiffeIdError::WrongScheme)?;
        // Query and fragment are reported as such rather than as a bad character.
        if rest.contains('#') {
            return Err(SpiffeIdError::Fragment);
        }
        if rest.contains('?') {
            return Err(SpiffeIdError::Query);
        }
        let (trust_domain, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        validate_trust_domain(trust_domain)?;
        validate_path(path)?;
        Ok(Self {
            id: input.into(),
            path_start: SCHEME.len() + trust_domain.len(),
        })
    }

    /// The whole ID, e.g. `spiffe://ai.internal/ns/agents/sa/orchestrator`.
    pub fn as_str(&self) -> &str {
        &self.id
    }

    /// The trust domain name, e.g. `ai.internal`.
    pub fn trust_domain(&self) -> &str {
        self.id.get(SCHEME.len()..self.path_start).unwrap_or_default()
    }

    /// The path, e.g. `/ns/agents/sa/orchestrator`; empty for the trust domain's own ID.
    pub fn path(&self) -> &str {
        self.id.get(self.path_start..).unwrap_or_default()
    }

    /// Whether this ID belongs to `trust_domain`.
    pub fn is_member_of(&self, trust_domain: &TrustDomain) -> bool {
        self.trust_domain() == trust_domain.as_str()
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The invariants the fuzz target (fuzz/fuzz_targets/spiffe_id.rs) checks on any input: a parsed
/// ID reassembles from its parts, is valid UTF-8 ASCII within the limits, and parses again to
/// itself; a rejected input never panics. Panics when an invariant breaks.
#[doc(hidden)]
#[allow(clippy::panic, reason = "a broken invariant must stop the fuzzer")]
pub fn check_round_trip(input: &str) {
    let Ok(id) = SpiffeId::parse(input) else { return };
    let rebuilt = format!("{SCHEME}{}{}", id.trust_domain(), id.path());
    if rebuilt != input || !input.is_ascii() || input.len() > MAX_ID_LEN {
        panic!("{input:?} parsed into {id:?}");
    }
    if SpiffeId::parse(id.as_str()).as_ref() != Ok(&id) || TrustDomain::parse(id.trust_domain()).is_err() {
        panic!("{input:?} does not parse back to itself");
    }
}

fn validate_trust_domain(name: &str) -> Result<(), SpiffeIdError> {
    if name.is_empty() {
        return Err(SpiffeIdError::MissingTrustDomain);
    }
    if name.contains('@') {
        return Err(SpiffeIdError::Userinfo);
    }
    if name.contains(':') {
        return Err(SpiffeIdError::Port);
    }
    if name.len() > MAX_TRUST_DOMAIN_LEN {
        return Err(SpiffeIdError::TrustDomainTooLong(name.len()));
    }
    match name.chars().find(|&c| !is_trust_domain_char(c)) {
        Some(c) => Err(SpiffeIdError::BadTrustDomainChar(c)),
        None => Ok(()),
    }
}

fn validate_path(path: &str) -> Result<(), SpiffeIdError> {
    if path.is_empty() {
        return Ok(());
    }
    if path.ends_with('/') {
        // "spiffe://td/" is a trailing slash, not an empty segment.
        return Err(SpiffeIdError::TrailingSlash);
    }
    // The path starts with '/', so the first split item is the empty string before it.
    for segment in path.split('/').skip(1) {
        match segment {
            "" => return Err(SpiffeIdError::EmptySegment),
            "." | ".." => return Err(SpiffeIdError::DotSegment),
            _ => {
                if let Some(c) = segment.chars().find(|&c| !is_path_char(c)) {
                    return Err(SpiffeIdError::BadPathSegmentChar(c));
                }
            }
        }
    }
    Ok(())
}

fn is_trust_domain_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_')
}

fn is_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_workload_id_into_trust_domain_and_path() {
        let id = SpiffeId::parse("spiffe://ai.internal/ns/agents/sa/orchestrator").unwrap();
        assert_eq!(id.trust_domain(), "ai.internal");
        assert_eq!(id.path(), "/ns/agents/sa/orchestrator");
        assert_eq!(id.to_string(), "spiffe://ai.internal/ns/agents/sa/orchestrator");
    }

    #[test]
    fn parses_trust_domain_id_without_path() {
        let id = SpiffeId::parse("spiffe://ai.internal").unwrap();
        assert_eq!(id.trust_domain(), "ai.internal");
        assert_eq!(id.path(), "");
    }

    #[test]
    fn rejects_one_error_per_spec_rule() {
        let long_path = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN));
        let long_td = format!("spiffe://{}/a", "a".repeat(256));
        let cases: &[(&str, SpiffeIdError)] = &[
            ("", SpiffeIdError::Empty),
            ("http://ai.internal/x", SpiffeIdError::WrongScheme),
            ("SPIFFE://ai.internal/x", SpiffeIdError::WrongScheme),
            ("spiffe:/ai.internal/x", SpiffeIdError::WrongScheme),
            ("spiffe://", SpiffeIdError::MissingTrustDomain),
            ("spiffe:///x", SpiffeIdError::MissingTrustDomain),
            ("spiffe://AI.internal/x", SpiffeIdError::BadTrustDomainChar('A')),
            ("spiffe://ai!internal/x", SpiffeIdError::BadTrustDomainChar('!')),
            ("spiffe://ai.internal:8443/x", SpiffeIdError::Port),
            ("spiffe://user@ai.internal/x", SpiffeIdError::Userinfo),
            ("spiffe://ai.internal/x?y=1", SpiffeIdError::Query),
            ("spiffe://ai.internal/x#frag", SpiffeIdError::Fragment),
            ("spiffe://ai.internal/", SpiffeIdError::TrailingSlash),
            ("spiffe://ai.internal/x/", SpiffeIdError::TrailingSlash),
            ("spiffe://ai.internal//x", SpiffeIdError::EmptySegment),
            ("spiffe://ai.internal/./x", SpiffeIdError::DotSegment),
            ("spiffe://ai.internal/x/..", SpiffeIdError::DotSegment),
            ("spiffe://ai.internal/x%20y", SpiffeIdError::BadPathSegmentChar('%')),
            ("spiffe://ai.internal/ü", SpiffeIdError::BadPathSegmentChar('ü')),
            (long_path.as_str(), SpiffeIdError::TooLong(long_path.len())),
            (long_td.as_str(), SpiffeIdError::TrustDomainTooLong(256)),
        ];
        for (input, expected) in cases {
            assert_eq!(SpiffeId::parse(input).as_ref(), Err(expected), "{input:?}");
        }
    }

    /// A deterministic slice of what the fuzz target explores: every string of up to three
    /// characters from an alphabet of separators and edge characters, after several prefixes.
    #[test]
    fn round_trip_invariants_hold_on_small_inputs() {
        let alphabet = ['a', 'Z', '0', '.', '-', '_', '/', ':', '@', '?', '#', '%', ' ', 'é'];
        let mut suffixes = vec![String::new()];
        for _ in 0..3 {
            let longer: Vec<String> =
                suffixes.iter().flat_map(|s| alphabet.iter().map(move |c| format!("{s}{c}"))).collect();
            suffixes.extend(longer);
        }
        let mut accepted = 0;
        for prefix in ["", "spiffe://", "spiffe://td", "spiffe://td/", "spiffe://td/a/"] {
            for suffix in &suffixes {
                let input = format!("{prefix}{suffix}");
                check_round_trip(&input);
                accepted += usize::from(SpiffeId::parse(&input).is_ok());
            }
        }
        assert!(accepted > 100, "only {accepted} inputs parsed");
    }

    #[test]
    fn accepts_every_allowed_character() {
        let id = "spiffe://a-b_c.0/A-Z_a.z-09";
        assert_eq!(SpiffeId::parse(id).unwrap().as_str(), id);
    }

    #[test]
    fn accepts_id_of_exactly_max_length() {
        let id = format!("spiffe://td/{}", "a".repeat(MAX_ID_LEN - "spiffe://td/".len()));
        assert!(SpiffeId::parse(&id).is_ok());
    }

    #[test]
    fn parses_trust_domain_with_or_without_scheme() {
        assert_eq!(TrustDomain::parse("ai.internal").unwrap().as_str(), "ai.internal");
        assert_eq!(TrustDomain::parse("spiffe://ai.internal").unwrap().as_str(), "ai.internal");
        assert_eq!(TrustDomain::parse("Ai.internal"), Err(SpiffeIdError::BadTrustDomainChar('A')));
        assert_eq!(TrustDomain::parse("spiffe://ai.internal/x"), Err(SpiffeIdError::BadTrustDomainChar('/')));
        assert_eq!(TrustDomain::parse("https://ai.internal"), Err(SpiffeIdError::WrongScheme));
        assert_eq!(TrustDomain::parse(""), Err(SpiffeIdError::MissingTrustDomain));
    }

    #[test]
    fn membership_compares_whole_trust_domain() {
        let id = SpiffeId::parse("spiffe://ai.internal.evil/x").unwrap();
        assert!(!id.is_member_of(&TrustDomain::parse("ai.internal").unwrap()));
        assert!(id.is_member_of(&TrustDomain::parse("ai.internal.evil").unwrap()));
    }
}
