//! JWT bundles in the SPIFFE bundle format, and JWS signature verification with their keys.
//!
//! A SPIFFE bundle is a JWKS: keys whose `use` is `jwt-svid` are the trust domain's JWT
//! authorities; `x509-svid` keys (X.509 roots, which Envoy gets over SDS) and keys of a `use` this
//! code does not know are skipped, as go-spiffe's `spiffebundle.Parse` does. A JWT authority
//! must have a `kid`, unique in the bundle, and be one of SPIRE's JWT key types: EC P-256 or
//! P-384, or RSA of at least 2048 bits. Anything else refuses the whole bundle, so that a bundle
//! is never half in force. The lean modules keep a P-384 authority without verifying with it:
//! a token it signed is refused, saying that the full authz module verifies it.

use p256::ecdsa::signature::Verifier as _;
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256};
#[cfg(feature = "jwt-svid-full")]
use sha2::{Sha384, Sha512};

use super::{Algorithm, JsonObject, text};
use crate::pem::decode_base64url;

/// The smallest RSA modulus accepted, in bits (SPIRE's `rsa-2048`; NIST's floor since 2013).
pub const MIN_RSA_BITS: usize = 2048;

/// A trust domain's JWT authorities.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct JwtBundle {
    keys: Vec<JwtKey>,
    /// `spiffe_sequence`, if the bundle has one.
    pub sequence: Option<u64>,
}

/// One JWT authority.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct JwtKey {
    id: String,
    key: PublicKey,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    #[cfg(feature = "jwt-svid-full")]
    P384(p384::ecdsa::VerifyingKey),
    /// A key of a curve only the full authz module verifies with: in force, verifying nothing.
    #[cfg(not(feature = "jwt-svid-full"))]
    FullModuleOnly(&'static str),
}

/// Why a JWT bundle is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    /// Not a JSON object with a `keys` array.
    #[error("not a spiffe bundle (a jwks json object): {0}")]
    Json(String),
    /// A `jwt-svid` key is unusable; `index` is its place in `keys`.
    #[error("keys[{index}]: {message}")]
    Key {
        /// Its index in `keys`.
        index: usize,
        /// What is wrong with it.
        message: String,
    },
    /// The bundle has no `jwt-svid` key at all.
    #[error("no jwt-svid key: the bundle authorizes no jwt-svid")]
    NoJwtAuthority,
}

impl JwtBundle {
    /// Reads a SPIFFE bundle document.
    pub fn parse(json: &[u8]) -> Result<Self, BundleError> {
        let document: serde_json::Value = serde_json::from_slice(json).map_err(|e| BundleError::Json(e.to_string()))?;
        let Some(raw_keys) = document.get("keys").and_then(serde_json::Value::as_array) else {
            return Err(BundleError::Json("no keys array".into()));
        };
        let mut keys: Vec<JwtKey> = Vec::new();
        for (index, raw) in raw_keys.iter().enumerate() {
            let error = |message: String| BundleError::Key { index, message };
            let raw = raw.as_object().ok_or_else(|| error("not a json object".into()))?;
            if text(raw, "use").map_err(error)? != Some("jwt-svid") {
                continue;
            }
            let id = text(raw, "kid").map_err(error)?.filter(|kid| !kid.is_empty()).ok_or_else(|| error("a jwt-svid key needs a kid".into()))?;
            if keys.iter().any(|key| key.id == id) {
                return Err(error(format!("kid {id:?} appears twice")));
            }
            let key = public_key(raw).map_err(error)?;
            keys.push(JwtKey { id: id.to_owned(), key });
        }
        if keys.is_empty() {
            return Err(BundleError::NoJwtAuthority);
        }
        Ok(Self { keys, sequence: document.get("spiffe_sequence").and_then(serde_json::Value::as_u64) })
    }

    /// The key IDs, in the bundle's order.
    pub fn key_ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|key| key.id.as_str())
    }

    /// The authority with key ID `kid`.
    pub(super) fn key(&self, kid: &str) -> Option<&JwtKey> {
        self.keys.iter().find(|key| key.id == kid)
    }
}

/// The public key of a JWK.
fn public_key(jwk: &JsonObject) -> Result<PublicKey, String> {
    let part = |name: &str| {
        let value = text(jwk, name)?.ok_or_else(|| format!("no {name}"))?;
        decode_base64url(value).map_err(|e| format!("{name}: {e}"))
    };
    match text(jwk, "kty")? {
        Some("RSA") => {
            let n = BigUint::from_bytes_be(&part("n")?);
            let e = BigUint::from_bytes_be(&part("e")?);
            let key = RsaPublicKey::new(n, e).map_err(|e| format!("invalid rsa key: {e}"))?;
            if key.n().bits() < MIN_RSA_BITS {
                return Err(format!("rsa key of {} bits, below {MIN_RSA_BITS}", key.n().bits()));
            }
            Ok(PublicKey::Rsa(key))
        }
        Some("EC") => {
            let crv = text(jwk, "crv")?.unwrap_or_default();
            let size = match crv {
                "P-256" => 32,
                "P-384" if cfg!(feature = "jwt-svid-full") => 48,
                #[cfg(not(feature = "jwt-svid-full"))]
                "P-384" => return Ok(PublicKey::FullModuleOnly("P-384")),
                other => return Err(format!("unsupported curve {other:?}")),
            };
            // RFC 7518 §6.2.1.2: each coordinate is the full size of the curve's field.
            let mut point = vec![0x04];
            for name in ["x", "y"] {
                let coordinate = part(name)?;
                if coordinate.len() != size {
                    return Err(format!("{name} is {} bytes, {crv} needs {size}", coordinate.len()));
                }
                point.extend_from_slice(&coordinate);
            }
            let invalid = |_| format!("not a point of {crv}");
            Ok(match size {
                #[cfg(feature = "jwt-svid-full")]
                48 => PublicKey::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?),
                _ => PublicKey::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?),
            })
        }
        other => Err(format!("key type {other:?} cannot sign a jwt-svid (EC or RSA)")),
    }
}

impl JwtKey {
    /// Whether `signature` is a JWS signature of `signed` with this key and `algorithm` (RFC 7518
    /// §3: PKCS#1 v1.5 or PSS with the salt as long as the hash; ECDSA as `r || s`, each the size
    /// of the curve's order). A key of another type than the algorithm's verifies nothing.
    pub(super) fn verifies(&self, algorithm: Algorithm, signed: &[u8], signature: &[u8]) -> bool {
        match (&self.key, algorithm) {
            (PublicKey::Rsa(key), Algorithm::Rs256) => key.verify(rsa::Pkcs1v15Sign::new::<Sha256>(), &Sha256::digest(signed), signature).is_ok(),
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::Rsa(key), Algorithm::Rs384) => key.verify(rsa::Pkcs1v15Sign::new::<Sha384>(), &Sha384::digest(signed), signature).is_ok(),
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::Rsa(key), Algorithm::Rs512) => key.verify(rsa::Pkcs1v15Sign::new::<Sha512>(), &Sha512::digest(signed), signature).is_ok(),
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::Rsa(key), Algorithm::Ps256) => key.verify(rsa::Pss::new::<Sha256>(), &Sha256::digest(signed), signature).is_ok(),
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::Rsa(key), Algorithm::Ps384) => key.verify(rsa::Pss::new::<Sha384>(), &Sha384::digest(signed), signature).is_ok(),
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::Rsa(key), Algorithm::Ps512) => key.verify(rsa::Pss::new::<Sha512>(), &Sha512::digest(signed), signature).is_ok(),
            (PublicKey::P256(key), Algorithm::Es256) => {
                p256::ecdsa::Signature::from_slice(signature).is_ok_and(|signature| key.verify(signed, &signature).is_ok())
            }
            #[cfg(feature = "jwt-svid-full")]
            (PublicKey::P384(key), Algorithm::Es384) => {
                p384::ecdsa::Signature::from_slice(signature).is_ok_and(|signature| key.verify(signed, &signature).is_ok())
            }
            _ => false,
        }
    }

    /// Why this key verifies nothing in this module, if it does not.
    pub(super) fn unverifiable(&self) -> Option<String> {
        match &self.key {
            #[cfg(not(feature = "jwt-svid-full"))]
            PublicKey::FullModuleOnly(curve) => Some(format!("kid {:?} is a {curve} key, which svidgate_authz_full.wasm verifies", self.id)),
            _ => None,
        }
    }
}
