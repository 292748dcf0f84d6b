// Copyright (c) Microsoft Corporation.
// Licensed under the MIT License.

#![allow(clippy::pattern_type_mismatch)]

//! OPA's `io.jwt.*` builtins as Go OPA v1.20.2 decides them (topdown/tokens.go): `io.jwt.decode`,
//! `io.jwt.verify_{rs,ps,es,hs}{256,384,512}` and `io.jwt.decode_verify`. svidgate patch 16:
//! regorus has no JWT builtins. Signatures are checked as Go's crypto packages check them
//! (PKCS #1 v1.5; PSS with any salt length; ECDSA with `r || s` split in half and the digest
//! truncated to the curve; HMAC), keys read from a PEM certificate, a PEM public key, a JWK or a
//! JWK set. What OPA answers with an error is an error here; what it answers `false` is `false`.

use crate::ast::{Expr, Ref};
use crate::builtins;
use crate::builtins::utils::{ensure_args_count, ensure_string};
use crate::lexer::Span;
use crate::value::Value;
use crate::*;

use anyhow::{anyhow, bail, Result};
use ecdsa::signature::hazmat::PrehashVerifier;
use hmac::{Hmac, Mac};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, RsaPublicKey};
use sha2::{Digest, Sha256, Sha384, Sha512};

pub fn register(m: &mut builtins::BuiltinsMap<&'static str, builtins::BuiltinFcn>) {
    m.insert("io.jwt.decode", (decode, 1));
    m.insert("io.jwt.decode_verify", (decode_verify, 2));
    m.insert("io.jwt.verify_rs256", (verify_rs256, 2));
    m.insert("io.jwt.verify_rs384", (verify_rs384, 2));
    m.insert("io.jwt.verify_rs512", (verify_rs512, 2));
    m.insert("io.jwt.verify_ps256", (verify_ps256, 2));
    m.insert("io.jwt.verify_ps384", (verify_ps384, 2));
    m.insert("io.jwt.verify_ps512", (verify_ps512, 2));
    m.insert("io.jwt.verify_es256", (verify_es256, 2));
    m.insert("io.jwt.verify_es384", (verify_es384, 2));
    m.insert("io.jwt.verify_es512", (verify_es512, 2));
    m.insert("io.jwt.verify_hs256", (verify_hs256, 2));
    m.insert("io.jwt.verify_hs384", (verify_hs384, 2));
    m.insert("io.jwt.verify_hs512", (verify_hs512, 2));
}

/// The hash of an algorithm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

impl Hash {
    fn digest(self, message: &[u8]) -> Vec<u8> {
        match self {
            Hash::Sha256 => Sha256::digest(message).to_vec(),
            Hash::Sha384 => Sha384::digest(message).to_vec(),
            Hash::Sha512 => Sha512::digest(message).to_vec(),
        }
    }

    /// HMAC accepts a key of any length; `None` is not reached.
    fn hmac(self, secret: &[u8], message: &[u8]) -> Option<Vec<u8>> {
        fn mac<M: Mac + hmac::digest::KeyInit>(secret: &[u8], message: &[u8]) -> Option<Vec<u8>> {
            let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(secret).ok()?;
            mac.update(message);
            Some(mac.finalize().into_bytes().to_vec())
        }
        match self {
            Hash::Sha256 => mac::<Hmac<Sha256>>(secret, message),
            Hash::Sha384 => mac::<Hmac<Sha384>>(secret, message),
            Hash::Sha512 => mac::<Hmac<Sha512>>(secret, message),
        }
    }
}

/// A signature family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Pkcs1,
    Pss,
    Ecdsa,
    Hmac,
}

/// The JWS algorithms OPA knows (`tokenAlgorithms`, EdDSA aside: svidgate does not verify it).
fn algorithm(name: &str) -> Option<(Family, Hash)> {
    Some(match name {
        "RS256" => (Family::Pkcs1, Hash::Sha256),
        "RS384" => (Family::Pkcs1, Hash::Sha384),
        "RS512" => (Family::Pkcs1, Hash::Sha512),
        "PS256" => (Family::Pss, Hash::Sha256),
        "PS384" => (Family::Pss, Hash::Sha384),
        "PS512" => (Family::Pss, Hash::Sha512),
        "ES256" => (Family::Ecdsa, Hash::Sha256),
        "ES384" => (Family::Ecdsa, Hash::Sha384),
        "ES512" => (Family::Ecdsa, Hash::Sha512),
        "HS256" => (Family::Hmac, Hash::Sha256),
        "HS384" => (Family::Hmac, Hash::Sha384),
        "HS512" => (Family::Hmac, Hash::Sha512),
        _ => return None,
    })
}

/// A public key as Go's crypto holds it.
#[derive(Clone)]
enum PublicKey {
    Rsa(RsaPublicKey),
    P256(p256::ecdsa::VerifyingKey),
    P384(p384::ecdsa::VerifyingKey),
    P521(p521::ecdsa::VerifyingKey),
    /// A JWK of a type svidgate does not verify with (`oct`, `OKP`): it verifies nothing.
    Other,
}

/// A key to verify with, and the `alg` and `kid` a JWK gave it.
#[derive(Clone)]
struct Key {
    key: PublicKey,
    alg: String,
    kid: String,
}

impl PublicKey {
    /// Go's `rsa.VerifyPKCS1v15` / `rsa.VerifyPSS` (the salt `pss_salt` bytes long, any when
    /// `None`) / `ecdsa.Verify` over `digest`; any other pairing of key and family does not verify.
    fn verifies(&self, family: Family, hash: Hash, digest: &[u8], signature: &[u8], pss_salt: Option<usize>) -> bool {
        match (self, family) {
            (PublicKey::Rsa(key), Family::Pkcs1) => {
                let scheme = match hash {
                    Hash::Sha256 => rsa::Pkcs1v15Sign::new::<Sha256>(),
                    Hash::Sha384 => rsa::Pkcs1v15Sign::new::<Sha384>(),
                    Hash::Sha512 => rsa::Pkcs1v15Sign::new::<Sha512>(),
                };
                key.verify(scheme, digest, signature).is_ok()
            }
            (PublicKey::Rsa(key), Family::Pss) => pss_verifies(key, hash, digest, signature, pss_salt),
            (PublicKey::P256(key), Family::Ecdsa) => ecdsa_scalars(signature, 32)
                .and_then(|bytes| p256::ecdsa::Signature::from_slice(&bytes).ok())
                .is_some_and(|signature| key.verify_prehash(digest, &signature).is_ok()),
            (PublicKey::P384(key), Family::Ecdsa) => ecdsa_scalars(signature, 48)
                .and_then(|bytes| p384::ecdsa::Signature::from_slice(&bytes).ok())
                .is_some_and(|signature| key.verify_prehash(digest, &signature).is_ok()),
            (PublicKey::P521(key), Family::Ecdsa) => ecdsa_scalars(signature, 66)
                .and_then(|bytes| p521::ecdsa::Signature::from_slice(&bytes).ok())
                .is_some_and(|signature| key.verify_prehash(digest, &signature).is_ok()),
            _ => false,
        }
    }
}

/// The signature `r || s` as Go's `ecdsa.Verify` reads it, split in half, each half a big-endian
/// integer of any length; as the curve's fixed-size form, or `None` when a half does not fit
/// (too large for the curve: it does not verify).
fn ecdsa_scalars(signature: &[u8], size: usize) -> Option<Vec<u8>> {
    let (r, s) = signature.split_at(signature.len() / 2);
    let mut fixed = Vec::with_capacity(2 * size);
    for half in [r, s] {
        let start = half.iter().position(|b| *b != 0).unwrap_or(half.len());
        let significant = &half[start..];
        if significant.len() > size {
            return None;
        }
        fixed.extend(core::iter::repeat_n(0, size - significant.len()));
        fixed.extend_from_slice(significant);
    }
    Some(fixed)
}

/// Go's `rsa.VerifyPSS`: EMSA-PSS-VERIFY of RFC 8017 with MGF1 over the same hash, the salt
/// `salt` bytes long, or of any length when `None` (`PSSSaltLengthAuto`, what `io.jwt.verify_ps*`
/// pass; `io.jwt.decode_verify` verifies through jwx, which requires the hash's length).
fn pss_verifies(key: &RsaPublicKey, hash: Hash, digest: &[u8], signature: &[u8], salt: Option<usize>) -> bool {
    if signature.len() != key.size() {
        return false;
    }
    let s = BigUint::from_bytes_be(signature);
    if &s >= key.n() {
        return false;
    }
    let Ok(m) = rsa::hazmat::rsa_encrypt(key, &s) else { return false };
    let em_bits = key.n().bits() - 1;
    let em_len = em_bits.div_ceil(8);
    let encoded = m.to_bytes_be();
    if encoded.len() > em_len {
        return false;
    }
    let mut em = vec![0; em_len - encoded.len()];
    em.extend_from_slice(&encoded);
    let h_len = digest.len();
    if em_len < h_len + 2 || em.last() != Some(&0xbc) {
        return false;
    }
    let (masked_db, rest) = em.split_at(em_len - h_len - 1);
    let h = &rest[..h_len];
    let unused_bits = 8 * em_len - em_bits;
    if unused_bits > 0 && masked_db.first().is_some_and(|b| b >> (8 - unused_bits) != 0) {
        return false;
    }
    // DB = maskedDB xor MGF1(H).
    let mut db = masked_db.to_vec();
    let mut counter = 0u32;
    let mut at = 0;
    while at < db.len() {
        let mut block = h.to_vec();
        block.extend_from_slice(&counter.to_be_bytes());
        for (byte, mask) in db[at..].iter_mut().zip(hash.digest(&block)) {
            *byte ^= mask;
        }
        at += h_len;
        counter += 1;
    }
    if let Some(first) = db.first_mut() {
        *first &= 0xff >> unused_bits;
    }
    // Auto salt length: zeros, then 0x01, then the salt.
    let Some(one) = db.iter().position(|b| *b != 0) else { return false };
    if db[one] != 0x01 {
        return false;
    }
    let salt_bytes = &db[one + 1..];
    if salt.is_some_and(|len| len != salt_bytes.len()) {
        return false;
    }
    let salt = salt_bytes;
    let mut prime = vec![0u8; 8];
    prime.extend_from_slice(digest);
    prime.extend_from_slice(salt);
    hash.digest(&prime) == h
}

/// `base64url.decode` as OPA decodes JWT parts: padding optional (added by the length), then Go's
/// lenient decoder (line breaks skipped, unused trailing bits ignored).
fn base64url(part: &str) -> Result<Vec<u8>> {
    let mut text: Vec<u8> = part.bytes().filter(|b| *b != b'\r' && *b != b'\n').collect();
    if !text.ends_with(b"=") {
        match text.len() % 4 {
            0 => {}
            2 => text.extend_from_slice(b"=="),
            3 => text.push(b'='),
            _ => bail!("illegal base64url string: {part}"),
        }
    }
    if text.len() % 4 != 0 {
        bail!("illegal base64 data at input byte {}", text.len());
    }
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let chunks = text.len() / 4;
    for (i, chunk) in text.chunks(4).enumerate() {
        let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != chunks) {
            bail!("illegal base64 data at input byte {}", i * 4);
        }
        let mut bits = 0u32;
        for (j, c) in chunk[..4 - pad].iter().enumerate() {
            let v = value(*c).ok_or_else(|| anyhow!("illegal base64 data at input byte {}", i * 4 + j))?;
            bits |= v << (18 - 6 * j);
        }
        let bytes = bits.to_be_bytes();
        out.extend_from_slice(&bytes[1..4 - pad]);
    }
    Ok(out)
}

/// A JSON object from text, as `json.unmarshal` reads it (the last of duplicate keys wins).
fn json_object(bytes: &[u8]) -> Result<Value> {
    let text = core::str::from_utf8(bytes).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    let value = Value::from_json_str(text).map_err(|e| anyhow!("invalid JSON: {e}"))?;
    match value {
        Value::Object(_) => Ok(value),
        _ => bail!("decoded JSON type was not an Object"),
    }
}

/// A compact JWS split into its three encoded parts.
struct Token<'a> {
    /// The whole compact serialization.
    whole: &'a str,
    header: &'a str,
    payload: &'a str,
    signature: &'a str,
}

impl<'a> Token<'a> {
    fn split(jwt: &'a str) -> Result<Self> {
        if !jwt.contains('.') {
            bail!("encoded JWT had no period separators");
        }
        let parts: Vec<&str> = jwt.split('.').collect();
        match parts.as_slice() {
            [header, payload, signature] => Ok(Token { whole: jwt, header, payload, signature }),
            _ => bail!("encoded JWT must have 3 sections, found {}", parts.len()),
        }
    }

    /// The header object; a JWE (`enc`) is refused.
    fn header(&self) -> Result<Value> {
        let bytes = base64url(self.header).map_err(|e| anyhow!("JWT header had invalid encoding: {e}"))?;
        let header = json_object(&bytes).map_err(|e| anyhow!("bad JWT header: {e}"))?;
        if field(&header, "enc").is_some() {
            bail!("JWT is a JWE object, which is not supported");
        }
        Ok(header)
    }

    fn payload_bytes(&self) -> Result<Vec<u8>> {
        base64url(self.payload).map_err(|e| anyhow!("JWT payload had invalid encoding: {e}"))
    }

    fn signature(&self) -> Result<Vec<u8>> {
        base64url(self.signature)
    }

    /// `header.payload`, what the signature covers: the token up to its last period.
    fn signing_input(&self) -> &'a [u8] {
        self.whole.as_bytes().get(..self.header.len() + 1 + self.payload.len()).unwrap_or_default()
    }
}

fn field<'v>(object: &'v Value, name: &str) -> Option<&'v Value> {
    match object {
        Value::Object(fields) => fields.get(&Value::from(name)),
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

/// At most this many signature verdicts are kept per thread (one VM); all are dropped when full.
const VERDICTS_KEPT: usize = 4096;

std::thread_local! {
    static VERDICTS: core::cell::RefCell<alloc::collections::BTreeMap<[u8; 32], bool>> =
        const { core::cell::RefCell::new(alloc::collections::BTreeMap::new()) };
}

/// The signature verdict for `token` under `key` (its text: PEM, JWK set or secret) by `check`,
/// computed once: verification takes milliseconds in Wasm, and a client presents the same token
/// until it expires. As OPA's `io_jwt` inter-query cache, only the signature is kept (by a
/// SHA-256 of what it depends on); claims are checked on every call. `check` failing (a key
/// or token that does not parse) is an error every time, never kept.
fn verdict(check: &str, token: &str, key: &str, verify: impl FnOnce() -> Result<bool>) -> Result<bool> {
    let mut id = Sha256::new();
    for part in [check, token, key] {
        id.update((part.len() as u64).to_le_bytes());
        id.update(part.as_bytes());
    }
    let id: [u8; 32] = id.finalize().into();
    if let Some(verdict) = VERDICTS.with(|verdicts| verdicts.borrow().get(&id).copied()) {
        return Ok(verdict);
    }
    let verified = verify()?;
    VERDICTS.with(|verdicts| {
        let mut verdicts = verdicts.borrow_mut();
        if verdicts.len() >= VERDICTS_KEPT {
            verdicts.clear();
        }
        verdicts.insert(id, verified);
    });
    Ok(verified)
}

fn decode(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "io.jwt.decode";
    ensure_args_count(span, name, params, args, 1)?;
    let jwt = ensure_string(name, &params[0], &args[0])?;
    decode_text(&jwt, 0).map_err(|e| anyhow!(span.error(&alloc::format!("{name}: {e}"))))
}

fn decode_text(jwt: &str, depth: usize) -> Result<Value> {
    if depth > 32 {
        bail!("JWT nested too deep");
    }
    let token = Token::split(jwt)?;
    let header = token.header()?;
    let payload = token.payload_bytes()?;
    // `cty: JWT`: the payload is a token (maybe quoted); decode that instead.
    if let Some(Value::String(cty)) = field(&header, "cty") {
        if cty.as_ref() == "JWT" {
            let inner = String::from_utf8_lossy(&payload);
            return decode_text(inner.trim_matches(|c| c == '"' || c == '\''), depth + 1);
        }
    }
    let payload = json_object(&payload)?;
    let signature = token.signature().map_err(|e| anyhow!("JWT signature had invalid encoding: {e}"))?;
    Ok(Value::from(vec![header, payload, Value::from(hex(&signature))]))
}

/// The keys of a `cert` argument: a PEM certificate or public key (one block, nothing after
/// it), else a JWK or JWK set. JWKs of an algorithm OPA does not know are left out.
fn keys(certificate: &str) -> Result<Vec<Key>> {
    let trimmed = certificate.trim_start();
    if trimmed.starts_with("-----BEGIN ") {
        return pem_key(certificate).map(|key| vec![Key { key, alg: String::new(), kid: String::new() }]);
    }
    let value: serde_json::Value =
        serde_json::from_str(certificate).map_err(|e| anyhow!("failed to parse a JWK key (set): {e}"))?;
    let jwks: Vec<&serde_json::Value> = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.iter().collect(),
        Some(_) => bail!("failed to parse a JWK key (set): keys is not an array"),
        None => vec![&value],
    };
    let mut keys = Vec::with_capacity(jwks.len());
    for jwk in jwks {
        let text = |name: &str| jwk.get(name).and_then(serde_json::Value::as_str).unwrap_or_default().to_owned();
        let alg = text("alg");
        if !alg.is_empty() && algorithm(&alg).is_none() && alg != "EdDSA" {
            continue;
        }
        keys.push(Key { key: jwk_key(jwk)?, alg, kid: text("kid") });
    }
    Ok(keys)
}

fn jwk_key(jwk: &serde_json::Value) -> Result<PublicKey> {
    let part = |name: &str| -> Result<Vec<u8>> {
        let text = jwk.get(name).and_then(serde_json::Value::as_str).ok_or_else(|| anyhow!("failed to parse a JWK key (set): {name} is missing"))?;
        base64url(text).map_err(|e| anyhow!("failed to parse a JWK key (set): {name}: {e}"))
    };
    match jwk.get("kty").and_then(serde_json::Value::as_str) {
        Some("RSA") => {
            let (n, e) = (BigUint::from_bytes_be(&part("n")?), BigUint::from_bytes_be(&part("e")?));
            Ok(PublicKey::Rsa(RsaPublicKey::new_unchecked(n, e)))
        }
        Some("EC") => {
            let (x, y) = (part("x")?, part("y")?);
            let mut point = vec![0x04];
            let crv = jwk.get("crv").and_then(serde_json::Value::as_str).unwrap_or_default();
            let size = match crv {
                "P-256" => 32,
                "P-384" => 48,
                "P-521" => 66,
                other => bail!("failed to parse a JWK key (set): unsupported curve {other:?}"),
            };
            for coordinate in [&x, &y] {
                if coordinate.len() > size {
                    bail!("failed to parse a JWK key (set): invalid {crv} coordinate");
                }
                point.extend(core::iter::repeat_n(0, size - coordinate.len()));
                point.extend_from_slice(coordinate);
            }
            let invalid = |_| anyhow!("failed to parse a JWK key (set): invalid {crv} point");
            Ok(match crv {
                "P-256" => PublicKey::P256(p256::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?),
                "P-384" => PublicKey::P384(p384::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?),
                _ => PublicKey::P521(p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).map_err(invalid)?),
            })
        }
        Some("oct" | "OKP") => Ok(PublicKey::Other),
        other => bail!("failed to parse a JWK key (set): invalid key type {other:?}"),
    }
}

/// A PEM `CERTIFICATE` or `PUBLIC KEY` block, as Go's `pem.Decode` then x509 parse it.
fn pem_key(text: &str) -> Result<PublicKey> {
    let (rest, pem) = x509_parser::pem::parse_x509_pem(text.as_bytes())
        .map_err(|_| anyhow!("failed to parse a JWK key (set): invalid character '-' in numeric literal"))?;
    if !rest.iter().all(u8::is_ascii_whitespace) {
        bail!("extra data after a PEM certificate block");
    }
    let spki = match pem.label.as_str() {
        "CERTIFICATE" => {
            let certificate = pem.parse_x509().map_err(|e| anyhow!("failed to parse a PEM certificate: {e}"))?;
            certificate.tbs_certificate.subject_pki.raw.to_vec()
        }
        "PUBLIC KEY" => pem.contents.clone(),
        _ => bail!("failed to extract a Key from the PEM certificate"),
    };
    spki_key(&spki).ok_or_else(|| anyhow!("failed to parse a PEM public key"))
}

fn spki_key(der: &[u8]) -> Option<PublicKey> {
    use p256::pkcs8::DecodePublicKey;
    if let Ok(key) = RsaPublicKey::from_public_key_der(der) {
        return Some(PublicKey::Rsa(key));
    }
    if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::P256(key));
    }
    if let Ok(key) = p384::ecdsa::VerifyingKey::from_public_key_der(der) {
        return Some(PublicKey::P384(key));
    }
    let key = p521::PublicKey::from_public_key_der(der).ok()?;
    p521::ecdsa::VerifyingKey::from_affine(*key.as_affine()).ok().map(PublicKey::P521)
}

/// OPA's choice of keys: the key whose `kid` the header names, else every key whose `alg` is
/// the header's or unset, until one verifies `digest`.
fn keys_verify(keys: &[Key], header: &Header, family: Family, hash: Hash, digest: &[u8], signature: &[u8], pss_salt: Option<usize>) -> bool {
    if !header.kid.is_empty() {
        if let Some(key) = keys.iter().find(|key| key.kid == header.kid) {
            return key.key.verifies(family, hash, digest, signature, pss_salt);
        }
    }
    keys.iter()
        .filter(|key| key.alg.is_empty() || key.alg == header.alg)
        .any(|key| key.key.verifies(family, hash, digest, signature, pss_salt))
}

/// `io.jwt.verify_*` with a key: PEM, JWK or JWK set.
fn verify_with_keys(jwt: &str, certificate: &str, family: Family, hash: Hash) -> Result<bool> {
    let token = Token::split(jwt)?;
    let keys = keys(certificate)?;
    let signature = token.signature()?;
    let header = Header::parse(&token.header()?)?;
    let digest = hash.digest(token.signing_input());
    Ok(keys_verify(&keys, &header, family, hash, &digest, &signature, None))
}

fn verify_hmac(jwt: &str, secret: &str, hash: Hash) -> Result<bool> {
    let token = Token::split(jwt)?;
    let mac = hash.hmac(secret.as_bytes(), token.signing_input());
    let signature = token.signature()?;
    Ok(mac.is_some_and(|mac| mac == signature))
}

macro_rules! verify_builtins {
    ($($fn_name:ident, $name:literal, $family:expr, $hash:expr;)*) => {$(
        fn $fn_name(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
            let name = $name;
            ensure_args_count(span, name, params, args, 2)?;
            let jwt = ensure_string(name, &params[0], &args[0])?;
            let key = ensure_string(name, &params[1], &args[1])?;
            let verified = verdict(name, &jwt, &key, || match $family {
                Family::Hmac => verify_hmac(&jwt, &key, $hash),
                family => verify_with_keys(&jwt, &key, family, $hash),
            });
            verified.map(Value::Bool).map_err(|e| anyhow!(span.error(&alloc::format!("{name}: {e}"))))
        }
    )*};
}

verify_builtins! {
    verify_rs256, "io.jwt.verify_rs256", Family::Pkcs1, Hash::Sha256;
    verify_rs384, "io.jwt.verify_rs384", Family::Pkcs1, Hash::Sha384;
    verify_rs512, "io.jwt.verify_rs512", Family::Pkcs1, Hash::Sha512;
    verify_ps256, "io.jwt.verify_ps256", Family::Pss, Hash::Sha256;
    verify_ps384, "io.jwt.verify_ps384", Family::Pss, Hash::Sha384;
    verify_ps512, "io.jwt.verify_ps512", Family::Pss, Hash::Sha512;
    verify_es256, "io.jwt.verify_es256", Family::Ecdsa, Hash::Sha256;
    verify_es384, "io.jwt.verify_es384", Family::Ecdsa, Hash::Sha384;
    verify_es512, "io.jwt.verify_es512", Family::Ecdsa, Hash::Sha512;
    verify_hs256, "io.jwt.verify_hs256", Family::Hmac, Hash::Sha256;
    verify_hs384, "io.jwt.verify_hs384", Family::Hmac, Hash::Sha384;
    verify_hs512, "io.jwt.verify_hs512", Family::Hmac, Hash::Sha512;
}

/// The header fields OPA reads (`parseTokenHeader`): each must be a string (`crit` a
/// non-empty list); a header is valid with an `alg` and no unknown critical field.
#[derive(Default)]
struct Header {
    alg: String,
    kid: String,
    cty: String,
    valid: bool,
}

impl Header {
    fn parse(header: &Value) -> Result<Self> {
        let Value::Object(fields) = header else { bail!("bad JWT header") };
        let mut parsed = Header::default();
        let mut crit = Vec::new();
        let mut unknown = Vec::new();
        for (key, value) in fields.iter() {
            let Value::String(key) = key else { continue };
            let text = |what: &str| match value {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(anyhow!("{what}: must be a string")),
            };
            match key.as_ref() {
                "alg" => parsed.alg = text("alg")?,
                "kid" => parsed.kid = text("kid")?,
                "typ" => {
                    text("typ")?;
                }
                "cty" => parsed.cty = text("cty")?,
                "crit" => {
                    let Value::Array(items) = value else { bail!("crit: must be a list") };
                    crit = items.iter().filter_map(|item| item.as_string().ok().map(|s| s.to_string())).collect();
                    if crit.is_empty() {
                        bail!("crit: must be a nonempty list");
                    }
                }
                other => unknown.push(other.to_owned()),
            }
        }
        parsed.valid = !parsed.alg.is_empty() && !unknown.iter().any(|u| crit.contains(u));
        Ok(parsed)
    }
}

/// The constraints of `io.jwt.decode_verify`.
#[derive(Default)]
struct Constraints {
    /// The `cert` constraint's text, parsed when a verdict is not kept.
    cert: Option<String>,
    secret: String,
    alg: String,
    iss: String,
    aud: String,
    /// Nanoseconds since the epoch.
    time: Option<f64>,
}

impl Constraints {
    fn parse(constraints: &Value) -> Result<Self> {
        let Value::Object(fields) = constraints else { bail!("operand 2 must be object") };
        let mut parsed = Constraints::default();
        for (key, value) in fields.iter() {
            let Value::String(key) = key else { bail!("unknown token validation constraint: {key}") };
            let text = |what: &str| match value {
                Value::String(s) => Ok(s.to_string()),
                _ => Err(anyhow!("{what} constraint: must be a string")),
            };
            match key.as_ref() {
                "cert" => parsed.cert = Some(text("cert")?),
                "secret" => parsed.secret = text("secret")?,
                "alg" => parsed.alg = text("alg")?,
                "iss" => parsed.iss = text("iss")?,
                "aud" => parsed.aud = text("aud")?,
                "time" => {
                    let Value::Number(n) = value else { bail!("token time constraint: must be a number") };
                    // Go's big.Float to float64: the nearest one.
                    let time: f64 = n.format_decimal().parse().map_err(|_| anyhow!("token time constraint: unvalid float64"))?;
                    if time < 0.0 {
                        bail!("token time constraint: must not be negative");
                    }
                    parsed.time = Some(time);
                }
                other => bail!("unknown token validation constraint: {other}"),
            }
        }
        match (parsed.cert.is_some(), !parsed.secret.is_empty()) {
            (true, true) => bail!("duplicate key constraints"),
            (false, false) => bail!("no key constraint"),
            _ => Ok(parsed),
        }
    }

    /// The signature check of `decode_verify`: the header's algorithm with the constraint's
    /// keys (the `kid` one first) or secret.
    fn verifies(&self, header: &Header, token: &Token<'_>, signature: &[u8]) -> Result<bool> {
        let Some((family, hash)) = algorithm(&header.alg) else { return Ok(false) };
        let input = token.signing_input();
        let Some(cert) = &self.cert else {
            return Ok(family == Family::Hmac && hash.hmac(self.secret.as_bytes(), input).is_some_and(|mac| mac == signature));
        };
        if family == Family::Hmac {
            return Ok(false);
        }
        verdict("io.jwt.decode_verify", token.whole, cert, || {
            let digest = hash.digest(input);
            Ok(keys_verify(&keys(cert)?, header, family, hash, &digest, signature, Some(digest.len())))
        })
    }
}

fn decode_verify(span: &Span, params: &[Ref<Expr>], args: &[Value], _strict: bool) -> Result<Value> {
    let name = "io.jwt.decode_verify";
    ensure_args_count(span, name, params, args, 2)?;
    let jwt = ensure_string(name, &params[0], &args[0])?;
    decode_verify_text(&jwt, &args[1]).map_err(|e| anyhow!(span.error(&alloc::format!("{name}: {e}"))))
}

fn decode_verify_text(jwt: &str, constraints: &Value) -> Result<Value> {
    let unverified = || Value::from(vec![Value::Bool(false), Value::new_object(), Value::new_object()]);
    let constraints = Constraints::parse(constraints)?;
    let now = match constraints.time {
        Some(time) => time,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as f64)
            .unwrap_or(0.0),
    };
    let mut text = jwt.to_owned();
    let (header, payload) = loop {
        let token = Token::split(&text)?;
        let header_value = token.header()?;
        let header = Header::parse(&header_value)?;
        if !header.valid || (!constraints.alg.is_empty() && constraints.alg != header.alg) {
            // OPA parsed the `cert` constraint before it looked at the token: a bad one is an
            // error here too.
            if let Some(cert) = &constraints.cert {
                keys(cert)?;
            }
            return Ok(unverified());
        }
        let signature = token.signature()?;
        if !constraints.verifies(&header, &token, &signature)? {
            return Ok(unverified());
        }
        let payload = token.payload_bytes()?;
        if header.cty.eq_ignore_ascii_case("JWT") {
            text = String::from_utf8_lossy(&payload).into_owned();
            continue;
        }
        break (header_value, json_object(&payload)?);
    };
    if !constraints.iss.is_empty() {
        match field(&payload, "iss") {
            Some(Value::String(iss)) if iss.as_ref() == constraints.iss => {}
            Some(Value::String(_)) | None => return Ok(unverified()),
            Some(_) => bail!("iss must be a string"),
        }
    }
    let audience_ok = match field(&payload, "aud") {
        Some(Value::String(aud)) => aud.as_ref() == constraints.aud,
        Some(Value::Array(auds)) => auds.iter().any(|a| matches!(a, Value::String(s) if s.as_ref() == constraints.aud)),
        Some(_) => false,
        None => constraints.aud.is_empty(),
    };
    if !audience_ok {
        return Ok(unverified());
    }
    let seconds = Value::from(now / 1e9);
    if let Some(exp) = field(&payload, "exp") {
        if !matches!(exp, Value::Number(_)) {
            bail!("exp value must be a number");
        }
        if &seconds >= exp {
            return Ok(unverified());
        }
    }
    if let Some(nbf) = field(&payload, "nbf") {
        if !matches!(nbf, Value::Number(_)) {
            bail!("nbf value must be a number");
        }
        if &seconds < nbf {
            return Ok(unverified());
        }
    }
    Ok(Value::from(vec![Value::Bool(true), header, payload]))
}
