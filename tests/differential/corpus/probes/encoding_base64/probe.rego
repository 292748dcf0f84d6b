package probes.encoding_base64

import rego.v1

encode_unicode := base64.encode("ß😀")

decode_unpadded := base64.decode("YWxpY2U6cHc")

decode_url_alphabet := base64.decode("-_-_")

decode_whitespace := base64.decode("YWJj\nZGVm")

decode_invalid_utf8 := base64.decode("/w==")

url_decode_unpadded := base64url.decode("eyJhIjoxfQ")

url_decode_std_alphabet := base64url.decode("Pz8+Pg==")

is_valid_unpadded := base64.is_valid("YWI")
