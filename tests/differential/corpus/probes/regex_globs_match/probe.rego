package probes.regex_globs_match

import rego.v1

globs_overlap := regex.globs_match("a.a.[0-9]+z", ".b.b2359825792*594823z")

globs_disjoint := regex.globs_match("[a-c]+", "[x-z]+")
