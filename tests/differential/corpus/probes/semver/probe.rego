package probes.semver

import rego.v1

compare_prerelease := semver.compare("1.0.0-alpha", "1.0.0")

compare_prerelease_numeric := semver.compare("1.0.0-alpha.10", "1.0.0-alpha.9")

compare_build_metadata := semver.compare("1.0.0+build.1", "1.0.0+build.2")

is_valid_v_prefix := semver.is_valid("v1.0.0")

is_valid_leading_zero := semver.is_valid("01.0.0")

compare_invalid := semver.compare("1.0", "1.0.0")
