package probes.uuid

import rego.v1

parse_v4 := uuid.parse("c9a8b1f2-3d4e-4f56-8a7b-9c0d1e2f3a4b")

parse_v1 := uuid.parse("6ba7b810-9dad-11d1-80b4-00c04fd430c8")

parse_invalid := uuid.parse("not-a-uuid")

rfc4122_is_string := is_string(uuid.rfc4122("seed"))
