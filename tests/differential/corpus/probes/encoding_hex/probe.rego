package probes.encoding_hex

import rego.v1

encode_unicode := hex.encode("ß")

decode_uppercase := hex.decode("4A4B")

decode_odd_length := hex.decode("abc")
