//! Runs the `*_test.rego` files under policies/ on the engine the authz module ships (regorus's
//! VM with the same builtin families), so a policy the module cannot run fails here.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed set-up fails the test")]

use std::path::{Path, PathBuf};

use svidgate_core::authz::testing::{PolicyDir, TestOutcome};

fn policies_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

#[test]
fn every_policy_directory_passes_its_rego_tests() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(policies_root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty());
    let mut failures = Vec::new();
    for dir in dirs {
        let outcomes = PolicyDir::load(&dir).unwrap().run_tests();
        assert!(!outcomes.is_empty(), "{} has no test_* rules", dir.display());
        for outcome in outcomes {
            println!("{} {}", if outcome.failure.is_none() { "PASS" } else { "FAIL" }, outcome.rule);
            if let Some(failure) = outcome.failure {
                failures.push(format!("{}: {}: {failure}", dir.display(), outcome.rule));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A scratch policy directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str, files: &[(&str, &str)]) -> std::io::Result<Self> {
        let dir = std::env::temp_dir().join(format!("svidgate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (file, contents) in files {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap_or(&dir))?;
            std::fs::write(path, contents)?;
        }
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn reports_failing_test_and_test_using_a_builtin_the_module_lacks() {
    let scratch = Scratch::new("failing", &[(
        "p_test.rego",
        "package p_test\nimport rego.v1\n\
         test_passes if 1 == 1\n\
         test_fails if 1 == 2\n\
         test_uses_missing_builtin if io.jwt.decode(\"x\")\n",
    )]).unwrap();
    let outcomes = PolicyDir::load(&scratch.0).unwrap().run_tests();
    let rules: Vec<(&str, bool)> = outcomes.iter().map(|o| (o.rule.as_str(), o.failure.is_none())).collect();
    assert_eq!(
        rules,
        vec![
            ("data.p_test.test_passes", true),
            ("data.p_test.test_fails", false),
            ("data.p_test.test_uses_missing_builtin", false),
        ]
    );
    assert!(outcomes[2].failure.as_deref().unwrap().contains("io.jwt.decode"));
}

#[test]
fn reports_policy_rule_the_module_cannot_compile() {
    let scratch = Scratch::new("uncompilable", &[
        ("p.rego", "package p\nimport rego.v1\ndefault allow := false\nallow if io.jwt.decode(input.token)\n"),
        ("p_test.rego", "package p_test\nimport rego.v1\ntest_default_denies if not data.p.allow\n"),
    ]).unwrap();
    let dir = PolicyDir::load(&scratch.0).unwrap();
    assert_eq!(dir.policy_rules(), vec!["data.p.allow"]);
    let outcomes = dir.run_tests();
    assert_eq!(outcomes[0].rule, "data.p.allow (compiles for the module)");
    assert!(outcomes[0].failure.as_deref().unwrap().contains("io.jwt.decode"), "{outcomes:?}");
}

#[test]
fn loads_data_json_at_the_path_of_its_directory() {
    let scratch = Scratch::new("data", &[
        ("data.json", r#"{"root": 1}"#),
        ("allowed_callers/data.json", r#"{"generate": ["a"]}"#),
        ("p_test.rego", "package p_test\nimport rego.v1\ntest_data if { data.root == 1; data.allowed_callers.generate == [\"a\"] }\n"),
    ]).unwrap();
    let dir = PolicyDir::load(&scratch.0).unwrap();
    assert_eq!(dir.data, serde_json::json!({"root": 1, "allowed_callers": {"generate": ["a"]}}));
    assert_eq!(dir.run_tests()[0].failure, None);
}

/// The outcome of every test rule of a scratch policy directory.
fn run_tests(name: &str, files: &[(&str, &str)]) -> Vec<TestOutcome> {
    let scratch = Scratch::new(name, files).unwrap();
    PolicyDir::load(&scratch.0).unwrap().run_tests()
}

/// (rule, passed, why it ran on the interpreter only) for every test rule of a scratch directory.
fn outcomes(name: &str, files: &[(&str, &str)]) -> Vec<(String, bool, Option<String>)> {
    run_tests(name, files).into_iter().map(|o| (o.rule, o.failure.is_none(), o.interpreter_only)).collect()
}

#[test]
fn runs_test_rules_on_the_modules_vm_with_their_with_clauses_hoisted() {
    let got = outcomes("vm", &[
        ("p.rego", "package p\nimport rego.v1\ndefault allow := false\nallow if input.user in data.users\nnamed if input == \"alice\"\n"),
        ("data.json", r#"{"users": ["alice"]}"#),
        ("p_test.rego", "package p_test\nimport rego.v1\n\
            test_without_with if data.users == [\"alice\"]\n\
            test_input if data.p.allow with input as {\"user\": \"alice\"}\n\
            test_input_built_first if { user := \"alice\"; data.p.allow with input as {\"user\": user} }\n\
            test_result_read_after if { r := data.p.allow with input as {\"user\": \"eve\"}; r == false }\n\
            test_base_data if { data.p.allow with input as {\"user\": \"bob\"} with data.users as [\"bob\"] }\n\
            test_string_input if { data.p.named with input as \"alice\"; true }\n"),
    ]);
    let on_both = |rule: &str| (format!("data.p_test.{rule}"), true, None);
    assert_eq!(got, vec![
        on_both("test_without_with"),
        on_both("test_input"),
        on_both("test_input_built_first"),
        on_both("test_result_read_after"),
        on_both("test_base_data"),
        on_both("test_string_input"),
    ]);
}

#[test]
fn says_why_a_test_rule_runs_on_the_interpreter_only() {
    let got = outcomes("interpreter-only", &[
        ("p.rego", "package p\nimport rego.v1\ndefault allow := false\nallow if input.user == \"alice\"\n"),
        ("p_test.rego", "package p_test\nimport rego.v1\n\
            test_rule_mocked if { not data.p.allow with data.p.allow as false }\n\
            test_two_inputs if { data.p.allow with input as {\"user\": \"alice\"}; not data.p.allow with input as {\"user\": \"eve\"} }\n\
            test_reads_input_without_with if { data.p.allow with input as {\"user\": \"alice\"}; not data.p.allow }\n"),
    ]);
    let only = |rule: &str, why: &str| (format!("data.p_test.{rule}"), true, Some(why.to_owned()));
    assert_eq!(got, vec![
        only("test_rule_mocked", "`with data.p.allow` replaces a rule"),
        only("test_two_inputs", "`with input` takes several values in one rule"),
        only("test_reads_input_without_with", "without its `with` clauses the rule gives another result"),
    ]);
}

#[test]
fn fails_a_test_where_the_modules_vm_and_the_interpreter_disagree() {
    // The module's VM has an instruction budget per decision; the interpreter has none. A rule
    // that passes on the interpreter but runs out of budget on the VM would deny in the module.
    let got = run_tests("disagree", &[
        ("p.rego", "package p\nimport rego.v1\nbig := count([1 | some x in numbers.range(1, 600); some y in numbers.range(1, 600)])\n"),
        ("p_test.rego", "package p_test\nimport rego.v1\ntest_big if { data.p.big == 360000 }\n"),
    ]);
    let [outcome] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((outcome.rule.as_str(), outcome.interpreter_only.as_deref()), ("data.p_test.test_big", None));
    let failure = outcome.failure.as_deref().unwrap_or_default();
    assert!(failure.starts_with("the engines disagree: the module's VM fails with"), "{failure}");
}

#[test]
fn runs_a_default_function_value_on_the_interpreter_as_opa_does() {
    // regorus's VM never applies `default f(_) := v`; the vendored compiler refuses such a
    // policy, so the module runs it on the interpreter, which (like OPA) applies the default.
    let got = run_tests("default-function", &[
        ("p.rego", "package p\nimport rego.v1\ndefault f(_) := \"fallback\"\nf(x) := \"pos\" if x > 0\n"),
        ("p_test.rego", "package p_test\nimport rego.v1\ntest_default if { data.p.f(-5) == \"fallback\" }\n"),
    ]);
    let [outcome] = got.as_slice() else { panic!("{got:?}") };
    assert_eq!((outcome.rule.as_str(), outcome.failure.as_deref()), ("data.p_test.test_default", None));
}
