//! JWT-SVIDs as an identity where the connection has no X509-SVID: behind an L7 load balancer,
//! a managed gateway or a queue, where mTLS ends before the workload.
//!
//! A token is validated by the SPIFFE JWT-SVID specification: a JWS in compact form whose `alg`
//! is one of the spec's asymmetric algorithms (and allowed by the configuration), whose `kid`
//! names a key of the JWT bundle of the trust domain of its `sub`, which must be a SPIFFE ID of
//! an allowed trust domain; `aud` must hold one of the configured audiences, `exp` must be
//! present and not past (with `clock_skew`), `nbf` if present not ahead. The signature is
//! verified last of the checks that do not depend on the clock, and that verdict is kept per
//! token ([`Verifier`]), so a token costs one signature verification per VM and bundle.
//!
//! JWT bundles are SPIFFE bundles (a JWKS whose `jwt-svid` keys are the JWT authorities),
//! configured inline or polled from the trust domain's bundle endpoint through an Envoy cluster.

mod keys;
#[cfg(test)]
pub(crate) mod testdata;
#[cfg(test)]
mod tests;

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use keys::{BundleError, JwtBundle};
use crate::config::ServiceConfig;
use crate::pem::decode_base64url;
use crate::spiffe::{SpiffeId, TrustDomain};

/// How far `exp` may be past and `nbf` ahead of the proxy clock unless configured otherwise.
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);
/// The header a JWT-SVID arrives in unless configured otherwise, and its value's prefix.
pub const DEFAULT_TOKEN_HEADER: (&str, &str) = ("authorization", "Bearer ");
/// Valid tokens a VM remembers (cleared when full, and when a bundle changes).
pub const VERIFIED_CAPACITY: usize = 1024;
/// The longest token read: SPIRE's are under 1 KB; anything much longer is not a JWT-SVID.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// The largest JWT bundle fetched, unless configured otherwise.
pub const DEFAULT_MAX_BUNDLE_BYTES: usize = 1 << 20;

/// The JWS algorithms of the JWT-SVID specification (§3: no `none`, no HMAC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA P-256 with SHA-256 (SPIRE's default JWT key type, `ec-p256`).
    Es256,
    /// ECDSA P-384 with SHA-384 (SPIRE's `ec-p384`).
    Es384,
    /// ECDSA P-521 with SHA-512.
    Es512,
}

impl Algorithm {
    /// Every algorithm of the specification.
    pub const ALL: [Self; 9] =
        [Self::Rs256, Self::Rs384, Self::Rs512, Self::Ps256, Self::Ps384, Self::Ps512, Self::Es256, Self::Es384, Self::Es512];

    /// The `alg` header value.
    pub fn name(self) -> &'static str {
        match self {
            Self::Rs256 => "RS256",
            Self::Rs384 => "RS384",
            Self::Rs512 => "RS512",
            Self::Ps256 => "PS256",
            Self::Ps384 => "PS384",
            Self::Ps512 => "PS512",
            Self::Es256 => "ES256",
            Self::Es384 => "ES384",
            Self::Es512 => "ES512",
        }
    }

    /// The algorithm an `alg` header names, if the specification allows it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|alg| alg.name() == name)
    }

    /// Whether this module verifies it. The lean modules verify what SPIRE signs with its
    /// default and RSA JWT keys, ES256 and RS256; the full authz module also the other RSA
    /// algorithms and ES384 (SPIRE's `ec-p384`; with SHA-384/512 and PSS, about 150 KB more
    /// code). ES512 none: no SPIFFE issuer signs with P-521.
    pub fn built(self) -> bool {
        match self {
            Self::Es256 | Self::Rs256 => true,
            Self::Es512 => false,
            _ => cfg!(feature = "jwt-svid-full"),
        }
    }
}

/// The `jwt_svid` block: where tokens arrive, what they must satisfy, and the JWT bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvidConfig {
    /// The header carrying the token (lower-case).
    pub header: String,
    /// What its value starts with before the token (compared ignoring ASCII case), e.g. `Bearer `.
    pub value_prefix: String,
    /// A token's `aud` must hold at least one of these.
    pub audiences: Vec<String>,
    /// The `alg` values accepted.
    pub algorithms: Vec<Algorithm>,
    /// How far `exp` may be past and `nbf` ahead.
    pub clock_skew: Duration,
    /// Leave the token header in the request that goes upstream (and in the policy's input).
    pub forward_token: bool,
    /// JWT bundles given inline, by trust domain: the only ones, or the ones used until the
    /// trust domain's bundle endpoint first answers.
    pub bundles: Vec<(TrustDomain, JwtBundle)>,
    /// Bundle endpoints polled through Envoy clusters, by trust domain.
    pub bundle_endpoints: Vec<BundleEndpoint>,
}

/// A trust domain's bundle endpoint (SPIFFE bundle format), polled through an Envoy cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BundleEndpoint {
    /// The trust domain whose JWT authorities it serves.
    pub trust_domain: TrustDomain,
    /// Where and how often.
    pub service: ServiceConfig,
    /// The largest bundle read.
    pub max_bytes: usize,
}

impl JwtSvidConfig {
    /// Whether `name` is the token header, or a variant a CGI-style application reads as it.
    pub fn is_token_header(&self, name: &str) -> bool {
        crate::config::same_header_key(&self.header, name)
    }
}

/// A validated JWT-SVID.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtSvid {
    /// `sub`.
    pub spiffe_id: SpiffeId,
    /// `aud`, as a list.
    pub audience: Vec<String>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `iat`, unix seconds, if present.
    pub issued_at: Option<i64>,
    /// `nbf`, unix seconds, if present.
    pub not_before: Option<i64>,
    /// `kid`: the key of the bundle that signed it.
    pub key_id: String,
    /// `alg`.
    pub algorithm: Algorithm,
}

/// Why a token is not a valid JWT-SVID. Each kind has its own reason code and counter.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtSvidError {
    /// Not a JWS of a JWT-SVID's shape: parts, base64url, JSON, claim types, several tokens.
    #[error("token is malformed: {0}")]
    Malformed(String),
    /// The signature does not verify, the `kid` is not in the bundle, or the `alg` is not allowed.
    #[error("token is forged or signed by an unknown key: {0}")]
    Forged(String),
    /// `exp` is past, or `nbf` ahead (beyond `clock_skew`).
    #[error("token is expired or not yet valid: {0}")]
    Expired(String),
    /// `aud` holds none of the configured audiences.
    #[error("token audience {0:?} holds none of the configured audiences")]
    WrongAudience(Vec<String>),
    /// `sub` belongs to a trust domain that is not allowed.
    #[error("token subject {0:?} is not in an allowed trust domain")]
    ForeignTrustDomain(String),
    /// The trust domain has no JWT bundle yet (its bundle endpoint has not answered).
    #[error("no jwt bundle for trust domain {0:?} yet")]
    NoBundle(String),
}

impl JwtSvidError {
    /// The reason code of its kind (Envoy's `%RESPONSE_CODE_DETAILS%`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed(_) => "svidgate_jwt_svid_malformed",
            Self::Forged(_) => "svidgate_jwt_svid_forged",
            Self::Expired(_) => "svidgate_jwt_svid_expired",
            Self::WrongAudience(_) => "svidgate_jwt_svid_wrong_audience",
            Self::ForeignTrustDomain(_) => "svidgate_jwt_svid_foreign_trust_domain",
            Self::NoBundle(_) => "svidgate_jwt_svid_no_bundle",
        }
    }
}

/// The token in the token header's values: exactly one value, with the prefix.
pub fn token<'a>(config: &JwtSvidConfig, values: &[&'a str]) -> Result<&'a str, JwtSvidError> {
    let value = match values {
        [value] => *value,
        _ => return Err(JwtSvidError::Malformed(format!("{} {} headers, a request carries one token", values.len(), config.header))),
    };
    let prefix = config.value_prefix.as_str();
    match value.get(..prefix.len()) {
        Some(start) if start.eq_ignore_ascii_case(prefix) => Ok(value.get(prefix.len()..).unwrap_or_default().trim()),
        _ => Err(JwtSvidError::Malformed(format!("{} value does not start with {prefix:?}", config.header))),
    }
}

/// A JSON object's member `name` as a string: `None` when absent, an error when not a string.
/// (Plain `serde_json::Value`s, not derived types: one deserializer for every JOSE document,
/// which keeps the identity module small.)
fn text<'a>(object: &'a JsonObject, name: &str) -> Result<Option<&'a str>, String> {
    match object.get(name) {
        None => Ok(None),
        Some(serde_json::Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(format!("{name} is not a string")),
    }
}

type JsonObject = serde_json::Map<String, serde_json::Value>;

/// base64url JSON text that must be an object.
fn json_object(part: &str, what: &str) -> Result<JsonObject, String> {
    let bytes = decode_base64url(part).map_err(|e| format!("{what}: {e}"))?;
    match serde_json::from_slice(&bytes) {
        Ok(serde_json::Value::Object(object)) => Ok(object),
        Ok(_) => Err(format!("{what} is not a json object")),
        Err(e) => Err(format!("{what}: {e}")),
    }
}

/// Checks everything about `token` that does not depend on the clock, with `bundles` the JWT
/// bundles in force. The signature is verified last.
pub fn verify(config: &JwtSvidConfig, trust_domains: &[TrustDomain], bundles: &Bundles, token: &str) -> Result<JwtSvid, JwtSvidError> {
    let malformed = |what: &str| JwtSvidError::Malformed(what.to_owned());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed("longer than 8 KiB"));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(malformed("not a jws in compact form (three base64url parts)"));
    };
    let header = json_object(header, "header").map_err(JwtSvidError::Malformed)?;
    let claims = json_object(payload, "claims").map_err(JwtSvidError::Malformed)?;
    let signature = decode_base64url(signature).map_err(|e| JwtSvidError::Malformed(format!("signature: {e}")))?;
    let header_text = |name: &str| text(&header, name).map_err(JwtSvidError::Malformed);
    let claim_text = |name: &str| text(&claims, name).map_err(JwtSvidError::Malformed);

    let alg = header_text("alg")?.unwrap_or_default();
    let algorithm = Algorithm::from_name(alg)
        .filter(|algorithm| config.algorithms.contains(algorithm))
        .ok_or_else(|| JwtSvidError::Forged(format!("alg {alg:?} is not allowed")))?;
    if header_text("typ")?.is_some_and(|typ| typ != "JWT" && typ != "JOSE") {
        return Err(malformed("typ is neither JWT nor JOSE"));
    }
    if header.contains_key("crit") {
        return Err(malformed("crit header: no extension is understood"));
    }
    let key_id = header_text("kid")?.filter(|kid| !kid.is_empty()).ok_or_else(|| malformed("no kid header"))?.to_owned();

    let sub = claim_text("sub")?.ok_or_else(|| malformed("no sub claim"))?;
    let spiffe_id = SpiffeId::parse(sub).map_err(|e| JwtSvidError::Malformed(format!("sub {sub:?}: {e}")))?;
    if spiffe_id.path().is_empty() {
        return Err(JwtSvidError::Malformed(format!("sub {sub:?} names a trust domain, not a workload")));
    }
    let Some(trust_domain) = trust_domains.iter().find(|td| spiffe_id.is_member_of(td)) else {
        return Err(JwtSvidError::ForeignTrustDomain(sub.to_owned()));
    };
    let audience = match claims.get("aud") {
        Some(serde_json::Value::String(aud)) => vec![aud.clone()],
        Some(serde_json::Value::Array(list)) if !list.is_empty() => list
            .iter()
            .map(|aud| aud.as_str().map(str::to_owned).ok_or_else(|| malformed("aud holds a non-string")))
            .collect::<Result<_, _>>()?,
        _ => return Err(malformed("no aud claim")),
    };
    if !audience.iter().any(|aud| config.audiences.contains(aud)) {
        return Err(JwtSvidError::WrongAudience(audience));
    }
    let seconds = |name: &str| -> Result<Option<i64>, JwtSvidError> {
        match claims.get(name) {
            None => Ok(None),
            Some(serde_json::Value::Number(n)) => {
                Ok(Some(n.as_i64().or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)).unwrap_or(i64::MAX)))
            }
            Some(_) => Err(JwtSvidError::Malformed(format!("{name} is not a number of seconds"))),
        }
    };
    let expires_at = seconds("exp")?.ok_or_else(|| malformed("no exp claim"))?;
    let (not_before, issued_at) = (seconds("nbf")?, seconds("iat")?);

    let bundle = bundles.get(trust_domain).ok_or_else(|| JwtSvidError::NoBundle(trust_domain.to_string()))?;
    let key = bundle.key(&key_id).ok_or_else(|| JwtSvidError::Forged(format!("kid {key_id:?} is not in the jwt bundle of {trust_domain}")))?;
    if let Some(why) = key.unverifiable() {
        return Err(JwtSvidError::Forged(why));
    }
    let (signed, _) = token.rsplit_once('.').unwrap_or_default();
    if !key.verifies(algorithm, signed.as_bytes(), &signature) {
        return Err(JwtSvidError::Forged(format!("signature does not verify with key {key_id:?} ({})", algorithm.name())));
    }
    Ok(JwtSvid { spiffe_id, audience, expires_at, issued_at, not_before, key_id, algorithm })
}

impl JwtSvid {
    /// The clock checks: `exp` not past and `nbf` not ahead, by more than `skew`.
    pub fn check_time(&self, now: SystemTime, skew: Duration) -> Result<(), JwtSvidError> {
        let now = unix_seconds(now);
        let skew = i64::try_from(skew.as_secs()).unwrap_or(i64::MAX);
        if now > self.expires_at.saturating_add(skew) {
            return Err(JwtSvidError::Expired(format!("exp {} is past (now {now})", self.expires_at)));
        }
        if let Some(nbf) = self.not_before.filter(|nbf| now < nbf.saturating_sub(skew)) {
            return Err(JwtSvidError::Expired(format!("nbf {nbf} is ahead (now {now})")));
        }
        Ok(())
    }
}

fn unix_seconds(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// The JWT bundles in force, by trust domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundles(Vec<(TrustDomain, Rc<JwtBundle>)>);

impl Bundles {
    /// The bundle of `trust_domain`.
    pub fn get(&self, trust_domain: &TrustDomain) -> Option<&JwtBundle> {
        self.0.iter().find(|(td, _)| td == trust_domain).map(|(_, bundle)| bundle.as_ref())
    }

    /// Puts `bundle` in force for `trust_domain`, in place of the one before.
    pub fn set(&mut self, trust_domain: &TrustDomain, bundle: JwtBundle) {
        match self.0.iter_mut().find(|(td, _)| td == trust_domain) {
            Some((_, slot)) => *slot = Rc::new(bundle),
            None => self.0.push((trust_domain.clone(), Rc::new(bundle))),
        }
    }
}

/// A plugin's JWT-SVID validation in one VM: the bundles in force and the verdicts kept.
#[derive(Debug)]
pub struct Verifier {
    bundles: RefCell<Bundles>,
    /// Tokens that passed the checks that do not depend on the clock. Only those: a client
    /// cannot flush them with tokens of its own making.
    verified: RefCell<HashMap<String, Rc<JwtSvid>>>,
}

impl Verifier {
    /// A verifier with the inline bundles in force.
    pub fn new(config: &JwtSvidConfig) -> Self {
        let mut bundles = Bundles::default();
        for (trust_domain, bundle) in &config.bundles {
            bundles.set(trust_domain, bundle.clone());
        }
        Self { bundles: RefCell::new(bundles), verified: RefCell::new(HashMap::new()) }
    }

    /// Puts a fetched bundle in force; the verdicts kept are dropped (a key may be gone).
    pub fn set_bundle(&self, trust_domain: &TrustDomain, bundle: JwtBundle) {
        if let (Ok(mut bundles), Ok(mut verified)) = (self.bundles.try_borrow_mut(), self.verified.try_borrow_mut()) {
            bundles.set(trust_domain, bundle);
            verified.clear();
        }
    }

    /// The bundle of `trust_domain` in force, if any.
    pub fn bundle(&self, trust_domain: &TrustDomain) -> Option<JwtBundle> {
        self.bundles.try_borrow().ok().and_then(|bundles| bundles.get(trust_domain).cloned())
    }

    /// Validates the token in the token header's `values` at `now`.
    pub fn validate(&self, config: &JwtSvidConfig, trust_domains: &[TrustDomain], values: &[&str], now: SystemTime) -> Result<Rc<JwtSvid>, JwtSvidError> {
        let token = token(config, values)?;
        let kept = self.verified.try_borrow().ok().and_then(|verified| verified.get(token).cloned());
        let svid = match kept {
            Some(svid) => svid,
            None => {
                let bundles = self.bundles.try_borrow().map_err(|_| JwtSvidError::NoBundle("(bundles being replaced)".to_owned()))?;
                let svid = Rc::new(verify(config, trust_domains, &bundles, token)?);
                if let Ok(mut verified) = self.verified.try_borrow_mut() {
                    if verified.len() >= VERIFIED_CAPACITY {
                        verified.clear();
                    }
                    verified.insert(token.to_owned(), Rc::clone(&svid));
                }
                svid
            }
        };
        svid.check_time(now, config.clock_skew)?;
        Ok(svid)
    }
}
