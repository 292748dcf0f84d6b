#!/usr/bin/env python3
"""Mints the keys and tokens of probes/jwt (cases.yaml) with Python's `cryptography`, an
implementation independent of both engines under test. Run it again only to change the corpus:
`python3 tests/differential/corpus/probes/jwt/mint.py > tests/differential/corpus/probes/jwt/cases.yaml`.
Expiry times are fixed (2001 and 2100) so that the cases decide the same whenever they run."""

import base64, hashlib, hmac, json, sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils
from cryptography import x509
from cryptography.x509.oid import NameOID
import datetime

def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

def uint(n: int, size: int) -> bytes:
    return n.to_bytes(size, "big")

HASHES = {"256": hashes.SHA256(), "384": hashes.SHA384(), "512": hashes.SHA512()}
HMACS = {"256": hashlib.sha256, "384": hashlib.sha384, "512": hashlib.sha512}
CURVES = {"ES256": (ec.SECP256R1(), 32), "ES384": (ec.SECP384R1(), 48), "ES512": (ec.SECP521R1(), 66)}

rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa_other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec_keys = {alg: ec.generate_private_key(curve) for alg, (curve, _) in CURVES.items()}
SECRET = "s3cret-shared-by-issuer"

def pem_public(key) -> str:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()

def pem_cert(key) -> str:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.ai.internal")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(7).not_valid_before(datetime.datetime(2020, 1, 1)).not_valid_after(datetime.datetime(2100, 1, 1))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.PEM).decode()

def jwk(key, kid=None, alg=None) -> dict:
    pub = key.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        n = pub.public_numbers()
        out = {"kty": "RSA", "n": b64(uint(n.n, 256)), "e": b64(uint(n.e, 3))}
    else:
        n = pub.public_numbers()
        crv, size = {"secp256r1": ("P-256", 32), "secp384r1": ("P-384", 48), "secp521r1": ("P-521", 66)}[pub.curve.name]
        out = {"kty": "EC", "crv": crv, "x": b64(uint(n.x, size)), "y": b64(uint(n.y, size))}
    if kid: out["kid"] = kid
    if alg: out["alg"] = alg
    return out

def sign(alg: str, signing_input: bytes, key=None, secret=SECRET) -> bytes:
    bits = alg[2:]
    if alg.startswith("HS"):
        return hmac.new(secret.encode(), signing_input, HMACS[bits]).digest()
    if alg.startswith("RS"):
        return (key or rsa_key).sign(signing_input, padding.PKCS1v15(), HASHES[bits])
    if alg.startswith("PS"):
        salt = padding.PSS.MAX_LENGTH if bits == "384" else padding.PSS.DIGEST_LENGTH
        return (key or rsa_key).sign(signing_input, padding.PSS(mgf=padding.MGF1(HASHES[bits]), salt_length=salt), HASHES[bits])
    if alg.startswith("ES"):
        der = (key or ec_keys[alg]).sign(signing_input, ec.ECDSA(HASHES[bits]))
        r, s = utils.decode_dss_signature(der)
        size = CURVES[alg][1]
        return uint(r, size) + uint(s, size)
    return b""

def token(alg: str, claims: dict, header: dict = None, key=None, secret=SECRET, tamper=False) -> str:
    head = {"alg": alg, "typ": "JWT", **(header or {})}
    signing_input = (b64(json.dumps(head, separators=(",", ":")).encode()) + "." + b64(json.dumps(claims, separators=(",", ":")).encode())).encode()
    signature = sign(alg, signing_input, key, secret)
    if tamper:
        body = dict(claims, sub="spiffe://ai.internal/ns/agents/sa/admin")
        signing_input = signing_input.split(b".")[0] + b"." + b64(json.dumps(body, separators=(",", ":")).encode()).encode()
    return signing_input.decode() + "." + b64(signature)

VALID = {"iss": "https://issuer.ai.internal", "sub": "spiffe://ai.internal/ns/agents/sa/orchestrator", "aud": "model-server", "exp": 4102444800, "nbf": 1577836800}
EXPIRED = dict(VALID, exp=978307200)
NOT_YET = dict(VALID, nbf=4102444000)
JWKS = json.dumps({"keys": [jwk(rsa_other, kid="old", alg="RS256"), jwk(rsa_key, kid="current", alg="RS256"), jwk(ec_keys["ES256"], kid="ec", alg="ES256"), jwk(ec_keys["ES384"]), jwk(ec_keys["ES512"], kid="ec521")]})
PEM_RSA, CERT_RSA = pem_public(rsa_key), pem_cert(rsa_key)
NOW = 1767225600000000000  # 2026-01-01, in ns

cases = []
def case(name, tok, key=None, constraints=None):
    cases.append({"name": name, "input": {"token": tok, "key": key if key is not None else "", "constraints": constraints if constraints is not None else {}}})

for alg in ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512"]:
    case(f"{alg.lower()}_pem_key", token(alg, VALID), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
    case(f"{alg.lower()}_cert", token(alg, VALID), CERT_RSA, {"cert": CERT_RSA, "aud": "model-server", "alg": alg})
    case(f"{alg.lower()}_wrong_key", token(alg, VALID, key=rsa_other), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
    case(f"{alg.lower()}_tampered", token(alg, VALID, tamper=True), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
for alg in ["ES256", "ES384", "ES512"]:
    pem = pem_public(ec_keys[alg])
    case(f"{alg.lower()}_pem_key", token(alg, VALID), pem, {"cert": pem, "aud": "model-server"})
    case(f"{alg.lower()}_jwks", token(alg, VALID), JWKS, {"cert": JWKS, "aud": "model-server"})
    case(f"{alg.lower()}_tampered", token(alg, VALID, tamper=True), pem, {"cert": pem, "aud": "model-server"})
    case(f"{alg.lower()}_other_curve_key", token(alg, VALID), pem_public(ec_keys["ES256" if alg != "ES256" else "ES384"]), {"cert": pem, "aud": "model-server", "alg": "ES256"})
for alg in ["HS256", "HS384", "HS512"]:
    case(f"{alg.lower()}_secret", token(alg, VALID), SECRET, {"secret": SECRET, "aud": "model-server"})
    case(f"{alg.lower()}_wrong_secret", token(alg, VALID, secret="guess"), SECRET, {"secret": SECRET, "aud": "model-server"})
rs = token("RS256", VALID, {"kid": "current"})
case("jwks_kid_current", rs, JWKS, {"cert": JWKS, "aud": "model-server"})
case("jwks_kid_old_signed_by_current", token("RS256", VALID, {"kid": "old"}), JWKS, {"cert": JWKS, "aud": "model-server"})
case("jwks_kid_unknown", token("RS256", VALID, {"kid": "nobody"}), JWKS, {"cert": JWKS, "aud": "model-server"})
case("jwks_no_kid", token("RS256", VALID), JWKS, {"cert": JWKS, "aud": "model-server"})
case("jwks_single_key", rs, json.dumps(jwk(rsa_key)), {"cert": json.dumps(jwk(rsa_key)), "aud": "model-server"})
case("expired", token("RS256", EXPIRED), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("expired_at_time", token("RS256", VALID), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server", "time": 4102444800000000000})
case("valid_at_time", token("RS256", VALID), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server", "time": NOW})
case("not_yet_valid", token("RS256", NOT_YET), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("wrong_audience", rs, PEM_RSA, {"cert": PEM_RSA, "aud": "vector-store"})
case("audience_missing_from_constraints", rs, PEM_RSA, {"cert": PEM_RSA})
case("audience_list", token("RS256", dict(VALID, aud=["vector-store", "model-server"])), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("no_audience_claim_but_constraint", token("RS256", {k: v for k, v in VALID.items() if k != "aud"}), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("issuer_matches", rs, PEM_RSA, {"cert": PEM_RSA, "aud": "model-server", "iss": "https://issuer.ai.internal"})
case("issuer_differs", rs, PEM_RSA, {"cert": PEM_RSA, "aud": "model-server", "iss": "https://evil.example"})
case("alg_constraint_differs", rs, PEM_RSA, {"cert": PEM_RSA, "aud": "model-server", "alg": "RS512"})
case("alg_none", b64(b'{"alg":"none","typ":"JWT"}') + "." + b64(json.dumps(VALID).encode()) + ".", PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("hs256_with_public_key_as_secret", token("HS256", VALID, secret=PEM_RSA), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("secret_and_cert", rs, PEM_RSA, {"cert": PEM_RSA, "secret": SECRET})
case("no_key_constraint", rs, PEM_RSA, {"aud": "model-server"})
case("unknown_constraint", rs, PEM_RSA, {"cert": PEM_RSA, "leeway": 60})
case("negative_time", rs, PEM_RSA, {"cert": PEM_RSA, "time": -1})
case("exp_not_a_number", token("RS256", dict(VALID, exp="tomorrow")), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("crit_unknown_header", token("RS256", VALID, {"crit": ["x-bound"], "x-bound": True}), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("jwe_header", token("RS256", VALID, {"enc": "A256GCM"}), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
# Nested signing (cty JWT): the payload is the encoded inner token, not JSON.
nested_input = b64(json.dumps({"alg": "RS256", "cty": "JWT"}).encode()) + "." + b64(token("RS256", VALID).encode())
case("nested_cty_jwt", nested_input + "." + b64(sign("RS256", nested_input.encode())), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("two_parts", "abc.def", PEM_RSA, {"cert": PEM_RSA})
case("no_periods", "not-a-token", PEM_RSA, {"cert": PEM_RSA})
case("bad_base64_header", "!!!." + rs.split(".", 1)[1], PEM_RSA, {"cert": PEM_RSA})
case("padded_parts", ".".join(p + "=" * (-len(p) % 4) for p in rs.split(".")), PEM_RSA, {"cert": PEM_RSA, "aud": "model-server"})
case("header_not_object", b64(b'["RS256"]') + "." + rs.split(".", 1)[1], PEM_RSA, {"cert": PEM_RSA})
case("payload_not_json", rs.split(".")[0] + "." + b64(b"hello") + "." + rs.split(".")[2], PEM_RSA, {"cert": PEM_RSA})
case("key_garbage", rs, "not a key", {"cert": "not a key"})
case("key_pem_trailing_data", rs, PEM_RSA + "junk", {"cert": PEM_RSA + "junk"})
case("es256_signature_wrong_length", token("ES256", VALID)[:-4], pem_public(ec_keys["ES256"]), {"cert": pem_public(ec_keys["ES256"]), "aud": "model-server"})

yaml_out = ["source: 'io.jwt.* over tokens minted by mint.py (Python cryptography): every algorithm with PEM keys, certificates, JWKs and secrets; wrong keys, tampered payloads, expiry, audience, issuer, kid selection, alg none, critical headers, JWE, nesting, malformed tokens and keys'",
            "package: probes/jwt", "rules:"]
for rule in ["decoded", "verified", "rs256", "rs384", "rs512", "ps256", "ps384", "ps512", "es256", "es384", "es512", "hs256", "hs384", "hs512"]:
    yaml_out.append(f"- {rule}")
yaml_out.append("inputs:")
for c in cases:
    yaml_out.append(f"- name: {c['name']}")
    yaml_out.append("  input: " + json.dumps(c["input"]))
print("\n".join(yaml_out))
