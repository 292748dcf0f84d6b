//! JWT-SVID validation against tokens and bundles minted by Python's `cryptography`
//! (testdata/mint.py), an implementation independent of this one.

use std::time::Duration;

use serde_json::{Value, json};

use super::testdata::{bearer, block, cases, now};
use super::*;
use crate::config::{Config, ConfigError, ModuleKind};

/// The identity config of a sidecar taking JWT-SVIDs for the minted audience, with `jwt_svid`
/// merged over the minted bundle inline.
fn config(jwt_svid: Value) -> Result<crate::config::IdentityConfig, ConfigError> {
    let json = json!({"trust_domains": ["ai.internal", "partner.example"], "jwt_svid": block(jwt_svid)});
    Config::parse(ModuleKind::Identity, json.to_string().as_bytes()).map(|config| config.identity)
}

fn kind(result: &Result<Rc<JwtSvid>, JwtSvidError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => e.code().trim_start_matches("svidgate_jwt_svid_"),
    }
}

#[test]
fn every_minted_token_is_decided_as_the_spec_says() {
    let cases = cases();
    let identity = config(json!({})).unwrap();
    let jwt = identity.jwt_svid.as_ref().unwrap();
    let verifier = Verifier::new(jwt);
    let now = now();
    let mut checked = 0;
    for case in cases["cases"].as_array().unwrap() {
        let (name, token) = (case["name"].as_str().unwrap(), case["token"].as_str().unwrap());
        let expected = match case["expect"].as_str().unwrap() {
            "ok_full" if cfg!(feature = "jwt-svid-full") => "ok",
            "ok_full" => "forged",
            other => other,
        };
        let header = format!("Bearer {token}");
        let result = verifier.validate(jwt, &identity.svid.trust_domains, &[&header], now);
        assert_eq!(kind(&result), expected, "{name}: {result:?}");
        if let Ok(svid) = &result {
            assert_eq!(svid.spiffe_id.as_str(), cases["caller"].as_str().unwrap(), "{name}");
        }
        // Decided again from the kept verdict, the same way.
        let again = verifier.validate(jwt, &identity.svid.trust_domains, &[&header], now);
        assert_eq!(kind(&again), expected, "{name}, twice");
        checked += 1;
    }
    assert!(checked >= 39, "{checked} cases");
}

#[test]
fn a_kept_token_is_checked_against_the_clock_on_every_request() {
    let identity = config(json!({})).unwrap();
    let jwt = identity.jwt_svid.as_ref().unwrap();
    let verifier = Verifier::new(jwt);
    let header = bearer("es256");
    let now = now();
    let tds = &identity.svid.trust_domains;
    let svid = verifier.validate(jwt, tds, &[&header], now).unwrap();
    assert_eq!(svid.expires_at, 1_800_000_300);
    assert!(verifier.validate(jwt, tds, &[&header], now + Duration::from_secs(300 + 30)).is_ok(), "within the skew");
    let late = verifier.validate(jwt, tds, &[&header], now + Duration::from_secs(300 + 31));
    assert!(matches!(late, Err(JwtSvidError::Expired(_))), "{late:?}");
    let strict = config(json!({"clock_skew": "0s"})).unwrap();
    let strict_jwt = strict.jwt_svid.as_ref().unwrap();
    let late = Verifier::new(strict_jwt).validate(strict_jwt, tds, &[&header], now + Duration::from_secs(301));
    assert!(matches!(late, Err(JwtSvidError::Expired(_))), "{late:?}");
}

#[test]
fn a_new_bundle_drops_the_kept_verdicts() {
    let cases = cases();
    let identity = config(json!({})).unwrap();
    let jwt = identity.jwt_svid.as_ref().unwrap();
    let verifier = Verifier::new(jwt);
    let header = bearer("es256");
    let (now, tds) = (now(), &identity.svid.trust_domains);
    assert!(verifier.validate(jwt, tds, &[&header], now).is_ok());
    // The signing key rotated out: the bundle now holds only the RSA authority.
    let mut rotated = cases["bundle"].clone();
    rotated["keys"].as_array_mut().unwrap().retain(|key| key["kid"] == "rsa");
    let td = TrustDomain::parse("ai.internal").unwrap();
    verifier.set_bundle(&td, JwtBundle::parse(rotated.to_string().as_bytes()).unwrap());
    let after = verifier.validate(jwt, tds, &[&header], now);
    assert!(matches!(&after, Err(JwtSvidError::Forged(why)) if why.contains("rotated") || why.contains("p256")), "{after:?}");
    assert_eq!(verifier.bundle(&td).unwrap().key_ids().collect::<Vec<_>>(), ["rsa"]);
}

#[test]
fn the_token_is_the_one_header_value_after_its_prefix() {
    let identity = config(json!({})).unwrap();
    let jwt = identity.jwt_svid.as_ref().unwrap();
    assert_eq!(token(jwt, &["Bearer a.b.c"]), Ok("a.b.c"));
    assert_eq!(token(jwt, &["bearer  a.b.c "]), Ok("a.b.c"), "the scheme ignores case (RFC 7235)");
    for values in [&["Basic dXNlcjpwYXNz"][..], &["a.b.c"], &["Bearer a.b.c", "Bearer a.b.c"], &[]] {
        assert!(matches!(token(jwt, values), Err(JwtSvidError::Malformed(_))), "{values:?}");
    }
    let custom = config(json!({"header": {"name": "X-JWT-SVID"}})).unwrap();
    let custom = custom.jwt_svid.unwrap();
    assert_eq!((custom.header.as_str(), custom.value_prefix.as_str()), ("x-jwt-svid", ""));
    assert_eq!(token(&custom, &["a.b.c"]), Ok("a.b.c"));
    assert!(custom.is_token_header("x_jwt_svid") && custom.is_token_header("X-Jwt-Svid"));
}

#[test]
fn a_bundle_with_an_unusable_jwt_authority_is_refused_whole() {
    let cases = cases();
    let bundle = JwtBundle::parse(cases["bundle"].to_string().as_bytes()).unwrap();
    assert_eq!(bundle.key_ids().collect::<Vec<_>>(), ["p256", "rsa", "p384"], "x509-svid and unknown uses skipped");
    assert_eq!(bundle.sequence, Some(7));
    // The lean modules keep a P-384 authority in force but verify nothing with it, and say so.
    let identity = config(json!({"algorithms": ["ES256", "ES384"]}));
    if cfg!(feature = "jwt-svid-full") {
        let identity = identity.unwrap();
        let jwt = identity.jwt_svid.as_ref().unwrap();
        let header = bearer("es384");
        let result = Verifier::new(jwt).validate(jwt, &identity.svid.trust_domains, &[&header], now());
        assert!(result.is_ok(), "{result:?}");
    } else {
        assert_eq!(identity.unwrap_err().to_string(), "jwt_svid.algorithms: ES384 is verified by svidgate_authz_full.wasm only");
        let p384 = bundle.key("p384").unwrap();
        assert_eq!(p384.unverifiable().unwrap(), "kid \"p384\" is a P-384 key, which svidgate_authz_full.wasm verifies");
    }
    for case in cases["bad_bundles"].as_array().unwrap() {
        let result = JwtBundle::parse(case["bundle"].to_string().as_bytes());
        assert!(result.is_err(), "{}: {result:?}", case["name"]);
    }
    assert_eq!(JwtBundle::parse(b"[]").unwrap_err().to_string().split(':').next(), Some("not a spiffe bundle (a jwks json object)"));
}

#[test]
fn a_bad_jwt_svid_block_is_refused_at_load_naming_the_key() {
    let refused = |block: Value| config(block).unwrap_err().to_string();
    assert!(refused(json!({"audiences": []})).starts_with("jwt_svid.audiences: "));
    assert!(refused(json!({"algorithms": ["HS256"]})).starts_with("jwt_svid.algorithms: \"HS256\" is not a jwt-svid algorithm"));
    assert!(refused(json!({"algorithms": ["ES512"]})).contains("P-521"));
    assert!(refused(json!({"clock_skew": "soon"})).starts_with("jwt_svid.clock_skew: "));
    assert!(refused(json!({"header": {"name": "x-forwarded-spiffe-id"}})).contains("is an identity header"));
    assert!(refused(json!({"bundles": {"evil.example": {"keys": []}}})).starts_with("jwt_svid.bundles.evil.example: \"evil.example\" is not in trust_domains"));
    assert!(refused(json!({"bundles": {"ai.internal": {"keys": []}}})).starts_with("jwt_svid.bundles.ai.internal: no jwt-svid key"));
    assert!(refused(json!({"bundles": {}})).starts_with("jwt_svid: needs the jwt bundles"));
    assert!(refused(json!({"bundle_endpoints": {"ai.internal": {"cluster": ""}}})).starts_with("jwt_svid.bundle_endpoints.ai.internal.cluster: "));
    assert!(refused(json!({"max_age": "1m"})).contains("unknown field `max_age`"));
    let perimeter = json!({"mode": "perimeter", "jwt_svid": {"audiences": ["a"]}});
    let error = Config::parse(ModuleKind::Identity, perimeter.to_string().as_bytes()).unwrap_err();
    assert_eq!(error.to_string(), "jwt_svid is a sidecar option; perimeter mode never injects an identity");
    let endpoints = config(json!({"bundles": {}, "bundle_endpoints": {"ai.internal": {"cluster": "spire_bundle"}}})).unwrap();
    let endpoint = &endpoints.jwt_svid.unwrap().bundle_endpoints[0];
    assert_eq!((endpoint.service.resource.as_str(), endpoint.max_bytes), ("/", DEFAULT_MAX_BUNDLE_BYTES));
}
