# OPA's io.jwt.* builtins over the tokens and keys of cases.yaml (minted by mint.py). Public
# OPA-Envoy policies call them on the bearer token of the authorization header: the primer's
# io.jwt.decode_verify with a secret or a PEM certificate, Istio's and the JWKS tutorials'
# verify_rs256 against a key set.
package probes.jwt

import rego.v1

decoded := io.jwt.decode(input.token)

verified := io.jwt.decode_verify(input.token, input.constraints)

rs256 := io.jwt.verify_rs256(input.token, input.key)

rs384 := io.jwt.verify_rs384(input.token, input.key)

rs512 := io.jwt.verify_rs512(input.token, input.key)

ps256 := io.jwt.verify_ps256(input.token, input.key)

ps384 := io.jwt.verify_ps384(input.token, input.key)

ps512 := io.jwt.verify_ps512(input.token, input.key)

es256 := io.jwt.verify_es256(input.token, input.key)

es384 := io.jwt.verify_es384(input.token, input.key)

es512 := io.jwt.verify_es512(input.token, input.key)

hs256 := io.jwt.verify_hs256(input.token, input.key)

hs384 := io.jwt.verify_hs384(input.token, input.key)

hs512 := io.jwt.verify_hs512(input.token, input.key)
