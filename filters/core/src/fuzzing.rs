//! Invariants the fuzz targets (`fuzz/`, `cargo xtask fuzz`) check on arbitrary input, one
//! function per parser that reads bytes from the network or the control plane. Each returns
//! quietly for any input it refuses, and panics only when an invariant breaks; the unit tests
//! run them on the committed seeds (`fuzz/seeds/`) too. Built with `rego` only: the targets cover
//! both modules, and nothing in a module calls them.

#![doc(hidden)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, reason = "a broken invariant must stop the fuzzer")]

use std::time::{Duration, SystemTime};

use crate::config::{Config, ModuleKind, same_header_key};
use crate::filter::Root;
use crate::host::memory::MemoryHost;
use crate::path::{PathGuard, check_input, parsed_path, parsed_query};
use crate::peer::SvidRules;
use crate::spiffe::TrustDomain;

/// The peer certificate, as PEM (first byte even) or as DER wrapped into PEM (first byte odd):
/// accepted only as an SVID of the allowed trust domain with a workload path, never a panic.
/// Returns whether it was accepted.
pub fn peer_certificate(data: &[u8]) -> bool {
    let Some((mode, rest)) = data.split_first() else { return false };
    let pem = if mode % 2 == 0 { rest.to_vec() } else { pem_of_der(rest) };
    let domain = TrustDomain::parse("ai.internal").unwrap();
    let rules = SvidRules { trust_domains: vec![domain.clone()], max_svid_ttl: Some(Duration::from_secs(3600)) };
    let Ok(svid) = rules.inspect(&pem, None) else { return false };
    let id = svid.spiffe_id();
    assert!(id.is_member_of(&domain) && !id.path().is_empty(), "accepted {id}");
    let _ = svid.check_time(SystemTime::UNIX_EPOCH);
    true
}

/// The plugin configuration JSON, for both modules: a configuration either refused or typed
/// with at least one identity header, all valid lower-case names, and trust domains in sidecar mode.
pub fn plugin_configuration(data: &[u8]) {
    for kind in [ModuleKind::Identity, ModuleKind::Authz] {
        let Ok(config) = Config::parse(kind, data) else { continue };
        let identity = &config.identity;
        assert!(!identity.headers.is_empty());
        assert!(identity.headers.iter().all(|h| crate::config::header_name(h).as_deref() == Some(h.as_str())));
        assert!(identity.mode == crate::config::Mode::Perimeter || !identity.svid.trust_domains.is_empty());
        assert_eq!(config.policy.is_some(), kind == ModuleKind::Authz);
    }
}

/// A request path: one the guard lets through decodes as OPA's Envoy plugin decodes it, into
/// segments that are neither dot segments nor empty before the last; nothing panics.
pub fn path(path: &str) {
    let guard = PathGuard::default();
    let _ = parsed_query(path.split_once('?').map_or("", |(_, q)| q));
    let checked = check_input(path);
    if guard.check(path).is_ok() {
        let segments = parsed_path(path).expect("a path the guard lets through decodes");
        let last = segments.len().saturating_sub(1);
        for (i, segment) in segments.iter().enumerate() {
            assert!(segment != "." && segment != "..", "{path:?}: dot segment {segment:?}");
            assert!(i == last || !segment.is_empty(), "{path:?}: empty segment");
        }
        assert!(checked.is_ok() || path.contains('?'), "{path:?}: guarded path refused as input");
    }
}

/// Header stripping, through the pipeline: `data` is `name:value` lines. After the request
/// headers phase the proxy's map holds no variant of an identity header, and every other header.
pub fn identity_headers(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let headers: Vec<(&str, &str)> = text.lines().filter_map(|line| line.split_once(':')).collect();
    let identity = ["x-forwarded-spiffe-id", "x-peer-identity"];
    let config = r#"{"mode": "perimeter", "identity_headers": ["x-forwarded-spiffe-id", "x-peer-identity"], "path_guard": false}"#;
    let host = MemoryHost::new(config);
    let mut root = Root::new(ModuleKind::Identity, "fuzz");
    assert!(root.on_configure(&host));
    host.begin_request(headers.iter().copied());
    let before = host.state().request_headers.entries().to_vec();
    root.stream(2).on_request_headers(&host, true);
    let after = host.state().request_headers.entries().to_vec();
    let is_identity = |name: &str| identity.iter().any(|h| same_header_key(h, name));
    assert!(!after.iter().any(|(name, _)| is_identity(name)), "a variant survived: {after:?}");
    let kept: Vec<&(String, String)> = before.iter().filter(|(name, _)| !is_identity(name)).collect();
    assert_eq!(kept, after.iter().collect::<Vec<_>>(), "another header was lost");
}

/// The request header map as Envoy serializes it (`proxy_get_header_map_pairs`, read in place by
/// [`HeaderList::from_proxy_wasm`](crate::headers::HeaderList::from_proxy_wasm)): refused, or
/// read as exactly the pairs its length words frame, each name and value the bytes between
/// (lossily where they are not UTF-8), and found by name as listed; nothing panics.
pub fn header_map(data: &[u8]) {
    let Some(list) = crate::headers::HeaderList::from_proxy_wasm(data.to_vec()) else { return };
    // The framing read again, plainly: what the list holds must be what it frames.
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap()) as usize;
    let count = word(0);
    assert_eq!(list.len(), count);
    let mut at = 4 + 8 * count;
    let mut text = |len: usize| {
        let part = String::from_utf8_lossy(&data[at..at + len]);
        assert_eq!(data[at + len], 0, "a name or value not ended by NUL");
        at += len + 1;
        part
    };
    for (i, (name, value)) in list.iter().enumerate() {
        let (expected_name, expected_value) = (text(word(4 + 8 * i)), text(word(8 + 8 * i)));
        assert_eq!((name, value), (&*expected_name, &*expected_value), "pair {i}");
        assert_eq!(list.get(name), list.iter().find(|(n, _)| *n == name).map(|(_, v)| v));
    }
    assert_eq!(at, data.len(), "bytes after the last pair");
}

/// An OPA bundle, gzipped (first byte even) or as a bare tar stream (first byte odd): refused,
/// or read into modules whose paths stay inside the bundle and data that is an object.
pub fn bundle(data: &[u8]) {
    use crate::authz::bundle::Bundle;
    let Some((mode, rest)) = data.split_first() else { return };
    let read = if mode % 2 == 0 { Bundle::from_tar_gz(rest, 1 << 20) } else { Bundle::from_tar(rest) };
    if let Ok(bundle) = read {
        assert!(!bundle.modules.is_empty() && bundle.data.is_object());
        for (path, _) in &bundle.modules {
            assert!(!path.split('/').any(|part| part == ".." || part.is_empty()) && !path.starts_with('/'), "{path:?}");
        }
    }
}

/// A policy result (JSON): the decision the module takes never sets or removes an identity
/// header, never carries a header value that could split the request, and denies with a status.
pub fn policy_result(data: &[u8]) {
    use crate::decision::{Decision, HeaderEdit};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(result) = regorus::Value::from_json_str(text) else { return };
    let identity = crate::config::IdentityConfig::parse(br#"{"mode": "perimeter"}"#).unwrap();
    let safe = |value: &str| !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0);
    match crate::authz::decision_for_result(&result, &identity, 403) {
        Decision::Allow { request_edits, response_headers } => {
            for edit in &request_edits {
                let (HeaderEdit::Append(name, value) | HeaderEdit::Set(name, value)) = edit else { continue };
                assert!(!identity.is_identity_header(name) && safe(value), "{edit:?}");
            }
            for edit in &request_edits {
                if let HeaderEdit::Remove(name) = edit {
                    assert!(!identity.is_identity_header(name), "{edit:?}");
                }
            }
            assert!(response_headers.iter().all(|(_, value)| safe(value)));
        }
        Decision::Deny { status, headers, .. } => {
            assert!((100..=599).contains(&status), "{status}");
            assert!(headers.iter().all(|(_, value)| safe(value)));
        }
    }
}

/// The content types a request body is fuzzed under, picked by the first byte.
pub const BODY_TYPES: [&str; 6] = [
    "application/json",
    "application/vnd.api+json",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=b",
    "multipart/form-data; boundary=\"a b\"",
    "text/plain",
];

/// A request body, under the content type the first byte picks (and cut short when its high bit
/// is set): refused as an input error, or read into what OPA's Envoy plugin gives: nothing
/// parsed from a truncated body, a form or multipart body as an object of non-empty lists, `null`
/// for a type that is not parsed; nothing panics.
pub fn request_body(data: &[u8]) {
    use crate::authz::body::{RequestBody, read};
    let Some((kind, bytes)) = data.split_first() else { return };
    let content_type = BODY_TYPES.get(usize::from(*kind) % BODY_TYPES.len()).copied().unwrap_or_default();
    let identity = crate::config::IdentityConfig::parse(br#"{"mode": "perimeter"}"#).unwrap();
    let headers = crate::identity::StrippedHeaders::strip(crate::headers::HeaderList::from_pairs([("content-type", content_type)]), &identity);
    let truncated = kind & 0x80 != 0;
    let body = RequestBody { bytes: bytes.to_vec(), received: bytes.len() + usize::from(truncated), truncated };
    let Ok(input) = read(&headers, &body) else { return };
    assert_eq!(input.size, body.received as u64);
    assert!(input.truncated == truncated && (!truncated || input.parsed == regorus::Value::Null));
    if content_type.starts_with("multipart/") || content_type.contains("form-urlencoded") {
        if let Ok(fields) = input.parsed.as_object() {
            assert!(fields.values().all(|v| v.as_array().is_ok_and(|values| !values.is_empty())), "{content_type}");
        } else {
            assert!(input.parsed == regorus::Value::Null || truncated, "{content_type}: {:?}", input.parsed);
        }
    }
    if content_type == "text/plain" {
        assert_eq!(input.parsed, regorus::Value::Null);
    }
}

/// `-----BEGIN CERTIFICATE-----`, the base64 of `der`, `-----END CERTIFICATE-----`.
fn pem_of_der(der: &[u8]) -> Vec<u8> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
    for chunk in der.chunks(3) {
        let n = chunk.iter().enumerate().fold(0_u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            let sextet = (n >> (18 - 6 * i)) & 63;
            let digit = ALPHABET.get(sextet as usize).copied().unwrap_or(b'A');
            pem.push(if i <= chunk.len() { digit } else { b'=' });
        }
    }
    pem.extend_from_slice(b"\n-----END CERTIFICATE-----\n");
    pem
}
