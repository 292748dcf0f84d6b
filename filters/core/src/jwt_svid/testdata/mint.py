#!/usr/bin/env python3
"""Mints the JWT bundles and JWT-SVIDs of jwt_svid/tests.rs with Python's `cryptography`, an
implementation independent of the one under test. Run it again only to change the cases:
`/usr/bin/python3 filters/core/src/jwt_svid/testdata/mint.py > filters/core/src/jwt_svid/testdata/cases.json`
(Debian's python3-cryptography). Times are fixed around NOW, the clock the tests pass in."""

import base64, hashlib, hmac, json

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

NOW = 1_800_000_000
AUD = "spiffe://ai.internal/ns/inference/sa/model-server"
CALLER = "spiffe://ai.internal/ns/agents/sa/orchestrator"

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def uint(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")

def ec_jwk(key, kid, crv, size, use="jwt-svid"):
    numbers = key.public_key().public_numbers()
    return {"use": use, "kty": "EC", "kid": kid, "crv": crv, "x": b64(uint(numbers.x, size)), "y": b64(uint(numbers.y, size))}

def rsa_jwk(key, kid, use="jwt-svid"):
    numbers = key.public_key().public_numbers()
    return {"use": use, "kty": "RSA", "kid": kid, "n": b64(uint(numbers.n, (numbers.n.bit_length() + 7) // 8)), "e": b64(uint(numbers.e, 3))}

p256 = ec.generate_private_key(ec.SECP256R1())
p256_other = ec.generate_private_key(ec.SECP256R1())
p384 = ec.generate_private_key(ec.SECP384R1())
rsa2048 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa1024 = rsa.generate_private_key(public_exponent=65537, key_size=1024)

HASH = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}

def sign(alg, key, data: bytes) -> bytes:
    bits = alg[2:]
    if alg.startswith("ES"):
        size = {"256": 32, "384": 48, "512": 66}[bits]
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(HASH[bits])))
        return uint(r, size) + uint(s, size)
    if alg.startswith("RS"):
        return key.sign(data, padding.PKCS1v15(), HASH[bits])
    if alg.startswith("PS"):
        return key.sign(data, padding.PSS(mgf=padding.MGF1(HASH[bits]), salt_length=HASH[bits].digest_size), HASH[bits])
    if alg.startswith("HS"):
        return hmac.new(key, data, {"256": hashlib.sha256}[bits]).digest()
    return b""

def token(alg="ES256", key=p256, kid="p256", claims=None, header=None, drop=(), signer=None):
    h = {"alg": alg, "kid": kid, "typ": "JWT"}
    h.update(header or {})
    c = {"sub": CALLER, "aud": [AUD], "exp": NOW + 300, "iat": NOW - 10}
    c.update(claims or {})
    for k in drop:
        h.pop(k, None)
        c.pop(k, None)
    signing = b64(json.dumps(h).encode()) + "." + b64(json.dumps(c).encode())
    return signing + "." + b64((signer or sign)(alg, key, signing.encode()))

valid = token()
header, payload, signature = valid.split(".")
tampered_claims = dict(sub="spiffe://ai.internal/ns/admin/sa/root", aud=[AUD], exp=NOW + 300, iat=NOW - 10)
tampered = header + "." + b64(json.dumps(tampered_claims).encode()) + "." + signature

cases = [
    # name, token, expected: "ok", "ok_full" (the lean modules verify ES256 and RS256 only: forged) or an error kind
    ("es256", valid, "ok"),
    ("rs256", token("RS256", rsa2048, "rsa"), "ok"),
    ("rs512", token("RS512", rsa2048, "rsa"), "ok_full"),
    ("ps256", token("PS256", rsa2048, "rsa"), "ok_full"),
    ("ps384", token("PS384", rsa2048, "rsa"), "ok_full"),
    ("es384", token("ES384", p384, "p384"), "ok_full"),
    ("aud as a string", token(claims={"aud": AUD}), "ok"),
    ("aud holds ours among others", token(claims={"aud": ["spiffe://ai.internal/other", AUD]}), "ok"),
    ("typ JOSE", token(header={"typ": "JOSE"}), "ok"),
    ("no typ", token(drop=["typ"]), "ok"),
    ("exp within the clock skew", token(claims={"exp": NOW - 20}), "ok"),
    ("exp as a fraction", token(claims={"exp": NOW + 300.5}), "ok"),
    ("no iat", token(drop=["iat"]), "ok"),
    ("wrong audience", token(claims={"aud": ["spiffe://ai.internal/ns/other/sa/vector-store"]}), "wrong_audience"),
    ("empty audience list", token(claims={"aud": []}), "malformed"),
    ("expired", token(claims={"exp": NOW - 100}), "expired"),
    ("nbf ahead", token(claims={"nbf": NOW + 100}), "expired"),
    ("nbf within the clock skew", token(claims={"nbf": NOW + 20}), "ok"),
    ("no exp", token(drop=["exp"]), "malformed"),
    ("exp as a string", token(claims={"exp": str(NOW + 300)}), "malformed"),
    ("foreign trust domain", token(claims={"sub": "spiffe://evil.example/ns/agents/sa/orchestrator"}), "foreign_trust_domain"),
    ("allowed trust domain without a bundle", token(claims={"sub": "spiffe://partner.example/agent"}), "no_bundle"),
    ("sub names a trust domain", token(claims={"sub": "spiffe://ai.internal"}), "malformed"),
    ("sub not a spiffe id", token(claims={"sub": "https://ai.internal/orchestrator"}), "malformed"),
    ("sub with an upper-case trust domain", token(claims={"sub": "spiffe://AI.internal/orchestrator"}), "malformed"),
    ("no sub", token(drop=["sub"]), "malformed"),
    ("unknown kid", token(kid="rotated-away"), "forged"),
    ("no kid", token(drop=["kid"]), "malformed"),
    ("signed by another key under our kid", token(key=p256_other), "forged"),
    ("tampered claims", tampered, "forged"),
    ("alg none", token("none", None, signer=lambda *_: b""), "forged"),
    ("HS256 keyed with the public key", token("HS256", b64(json.dumps(ec_jwk(p256, "p256", "P-256", 32)).encode()).encode()), "forged"),
    ("RS256 header over the EC key's kid", token("RS256", rsa2048, "p256"), "forged"),
    ("ES256 signature in DER", token(signer=lambda alg, key, data: key.sign(data, ec.ECDSA(hashes.SHA256()))), "forged"),
    ("typ at+jwt", token(header={"typ": "at+jwt"}), "malformed"),
    ("crit header", token(header={"crit": ["exp"]}), "malformed"),
    ("jwe (five parts)", valid + ".e30.e30", "malformed"),
    ("base64 padding", header + "=." + payload + "." + signature, "malformed"),
    ("payload not json", header + "." + b64(b"nope") + "." + signature, "malformed"),
]

bundle = {
    "keys": [
        ec_jwk(p256, "x509-root", "P-256", 32, use="x509-svid"),
        ec_jwk(p256, "p256", "P-256", 32),
        rsa_jwk(rsa2048, "rsa"),
        ec_jwk(p384, "p384", "P-384", 48),
        dict(ec_jwk(p256_other, "future-use", "P-256", 32), use="wit-svid"),
    ],
    "spiffe_sequence": 7,
    "spiffe_refresh_hint": 300,
}
bad_bundles = [
    ("x509 roots only", {"keys": [ec_jwk(p256, "root", "P-256", 32, use="x509-svid")]}),
    ("no keys member", {"spiffe_sequence": 1}),
    ("a jwt-svid key without kid", {"keys": [dict(ec_jwk(p256, "", "P-256", 32))]}),
    ("a kid twice", {"keys": [ec_jwk(p256, "k", "P-256", 32), rsa_jwk(rsa2048, "k")]}),
    ("rsa 1024", {"keys": [rsa_jwk(rsa1024, "small")]}),
    ("ec x short", {"keys": [dict(ec_jwk(p256, "k", "P-256", 32), x=b64(b"\x01" * 31))]}),
    ("ec point not on the curve", {"keys": [dict(ec_jwk(p256, "k", "P-256", 32), y=b64(b"\x01" * 32))]}),
    ("oct key", {"keys": [{"use": "jwt-svid", "kty": "oct", "kid": "k", "k": b64(b"secret")}]}),
    ("unknown curve", {"keys": [dict(ec_jwk(p256, "k", "P-256", 32), crv="secp256k1")]}),
]

print(json.dumps({"now": NOW, "audience": AUD, "caller": CALLER, "bundle": bundle,
                  "cases": [{"name": n, "token": t, "expect": e} for n, t, e in cases],
                  "bad_bundles": [{"name": n, "bundle": b} for n, b in bad_bundles]}, indent=1))
