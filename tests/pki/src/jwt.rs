//! JWT-SVIDs minted in code: a [`JwtAuthority`] stands in for a SPIRE server's JWT signing key
//! (SPIRE's default `ec-p256`, so ES256), publishes itself in a SPIFFE bundle and signs tokens.

use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};

/// A JWT signing key of one trust domain.
pub struct JwtAuthority {
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

/// Why minting failed (ring reports no detail).
#[derive(Debug)]
pub struct MintError;

impl std::fmt::Display for MintError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ring could not generate or sign")
    }
}

impl std::error::Error for MintError {}

impl JwtAuthority {
    /// A fresh P-256 key with key ID `kid`.
    pub fn new(kid: &str) -> Result<Self, MintError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(|_| MintError)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).map_err(|_| MintError)?;
        Ok(Self { kid: kid.to_owned(), key, rng })
    }

    /// Its JWK as a SPIFFE bundle lists a JWT authority (`use: jwt-svid`), as JSON text.
    pub fn jwk(&self) -> String {
        // The uncompressed point: 0x04, x, y.
        let point = self.key.public_key().as_ref();
        let (x, y) = point.get(1..).unwrap_or_default().split_at(32.min(point.len().saturating_sub(1)));
        format!(r#"{{"use":"jwt-svid","kty":"EC","crv":"P-256","kid":"{}","x":"{}","y":"{}"}}"#, self.kid, base64url(x), base64url(y))
    }

    /// A SPIFFE bundle document holding `authorities`, with sequence `sequence`.
    pub fn bundle(authorities: &[&JwtAuthority], sequence: u64) -> String {
        let keys: Vec<String> = authorities.iter().map(|a| a.jwk()).collect();
        format!(r#"{{"keys":[{}],"spiffe_sequence":{sequence},"spiffe_refresh_hint":60}}"#, keys.join(","))
    }

    /// A JWT-SVID (ES256, this key's `kid`) with `claims`, a JSON object as text
    /// (`{"sub": ..., "aud": [...], "exp": ...}`).
    pub fn sign(&self, claims: &str) -> Result<String, MintError> {
        let header = format!(r#"{{"alg":"ES256","kid":"{}","typ":"JWT"}}"#, self.kid);
        let signing_input = format!("{}.{}", base64url(header.as_bytes()), base64url(claims.as_bytes()));
        let signature = self.key.sign(&self.rng, signing_input.as_bytes()).map_err(|_| MintError)?;
        Ok(format!("{signing_input}.{}", base64url(signature.as_ref())))
    }
}

/// base64url without padding (RFC 7515 §2).
pub fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            let sextet = (n >> (18 - 6 * i)) & 63;
            out.push(char::from(ALPHABET.get(sextet as usize).copied().unwrap_or(b'A')));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64url_matches_rfc4648_without_padding() {
        for (raw, encoded) in [("", ""), ("f", "Zg"), ("fo", "Zm8"), ("foo", "Zm9v"), ("foob", "Zm9vYg"), ("fooba", "Zm9vYmE")] {
            assert_eq!(base64url(raw.as_bytes()), encoded);
        }
        assert_eq!(base64url(&[0xff, 0xff, 0xbf]), "__-_");
    }

    #[test]
    fn a_token_has_three_parts_and_the_authority_a_full_size_point() {
        let authority = JwtAuthority::new("k1").unwrap();
        assert_eq!(authority.sign(r#"{"sub":"spiffe://ai.internal/a"}"#).unwrap().split('.').count(), 3);
        assert!(authority.jwk().contains(r#""kid":"k1""#));
        assert!(JwtAuthority::bundle(&[&authority], 3).contains(r#""spiffe_sequence":3"#));
    }
}
