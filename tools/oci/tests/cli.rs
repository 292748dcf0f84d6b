//! The `svidgate-oci` command line as a user runs it: what it refuses before doing anything.
//! Needs neither the built modules nor a registry.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed set-up fails the test")]

use std::process::{Command, Output};

fn svidgate_oci(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svidgate-oci")).args(args).output().unwrap()
}

#[test]
fn refuses_unknown_flags() {
    let out = svidgate_oci(&["push", "--registry", "127.0.0.1:5000/svidgate", "--plain-htp"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected argument '--plain-htp'"), "{stderr}");
    assert!(stderr.contains("a similar argument exists: '--plain-http'"), "{stderr}");
    assert!(out.stdout.is_empty(), "it went on: {}", String::from_utf8_lossy(&out.stdout));
}

#[test]
fn refuses_unknown_commands_and_missing_values() {
    for args in [&["pull"][..], &["push"], &["push", "--registry"], &["render", "--registry", "r", "--out"]] {
        let out = svidgate_oci(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn prints_its_version() {
    let out = svidgate_oci(&["--version"]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("svidgate-oci {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn each_command_has_help() {
    for (command, options) in [
        ("package", &["--modules <DIR>", "--out <DIR>", "--version <V>", "--revision <R>", "--source <URL>"][..]),
        ("push", &["--registry <HOST[:PORT][/NAMESPACE]>", "--out <DIR>", "--plain-http", "--ca-file <PEM>"]),
        ("render", &["--registry <HOST[:PORT]/NAMESPACE>", "--pins <FILE>", "--in <DIR>", "--out <DIR>"]),
    ] {
        let out = svidgate_oci(&[command, "--help"]);
        assert!(out.status.success(), "{command}");
        let help = String::from_utf8_lossy(&out.stdout);
        for option in options {
            assert!(help.lines().any(|l| l.trim_start().starts_with(option)), "{command} lacks {option}:\n{help}");
        }
    }
}
