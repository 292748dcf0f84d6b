//! The fuzz targets' invariants (`svidgate_core::fuzzing`) on their committed seeds
//! (`fuzz/seeds/`, written by `cargo run -p svidgate-harness --example fuzz_seeds`), in the
//! ordinary test run: the seeds reach deep into each parser, and hold.

#![allow(clippy::unwrap_used, reason = "test set-up: a missing seed fails the test")]

use std::path::{Path, PathBuf};

use svidgate_core::authz::bundle::Bundle;
use svidgate_core::fuzzing;

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/seeds").join(target);
    let mut seeds: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .map(|path| (path.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read(&path).unwrap()))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds for {target}");
    seeds
}

#[test]
fn every_invariant_holds_on_its_seeds() {
    for (_, seed) in seeds("peer_certificate") {
        fuzzing::peer_certificate(&seed);
    }
    for (_, seed) in seeds("plugin_configuration") {
        fuzzing::plugin_configuration(&seed);
    }
    for (_, seed) in seeds("path") {
        fuzzing::path(&String::from_utf8_lossy(&seed));
    }
    for (_, seed) in seeds("identity_headers") {
        fuzzing::identity_headers(&seed);
    }
    for (_, seed) in seeds("header_map") {
        fuzzing::header_map(&seed);
    }
    for (_, seed) in seeds("bundle") {
        fuzzing::bundle(&seed);
    }
    for (_, seed) in seeds("policy_result") {
        fuzzing::policy_result(&seed);
    }
    for (_, seed) in seeds("request_body") {
        fuzzing::request_body(&seed);
    }
    for (_, seed) in seeds("spiffe_id") {
        svidgate_core::spiffe::check_round_trip(&String::from_utf8_lossy(&seed));
    }
}

#[test]
fn reads_gnu_long_names_and_pax_paths_in_bundles() {
    let long = format!("envoy/{}/policy.rego", "a-long-directory-name".repeat(6));
    for (name, seed) in seeds("bundle") {
        let (mode, rest) = seed.split_first().unwrap();
        let bundle = if mode % 2 == 0 { Bundle::from_tar_gz(rest, 1 << 20) } else { Bundle::from_tar(rest) }.unwrap();
        let paths: Vec<&str> = bundle.modules.iter().map(|(path, _)| path.as_str()).collect();
        match name.as_str() {
            "gnu-long-name.tar" | "gnu-long-name.tar.gz" | "pax-path.tar" => assert_eq!(paths, [long.as_str()], "{name}"),
            _ => assert_eq!(paths, ["envoy/authz/policy.rego"], "{name}"),
        }
    }
}

#[test]
fn the_certificate_seeds_reach_both_sides_of_the_svid_rules() {
    for (name, seed) in seeds("peer_certificate") {
        let accepted = fuzzing::peer_certificate(&seed);
        assert_eq!(accepted, name.starts_with("svid."), "{name}");
    }
}
