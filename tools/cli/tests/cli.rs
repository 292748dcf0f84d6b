//! The `svidgate` binary as a user runs it.

#![allow(clippy::unwrap_used, reason = "test helpers: a failed set-up fails the test")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const ORCHESTRATOR: &str = "spiffe://ai.internal/ns/agents/sa/orchestrator";
const ROGUE: &str = "spiffe://ai.internal/ns/sandbox/sa/rogue-agent";

fn svidgate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_svidgate")).args(args).output().unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn seed() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/seed").to_string_lossy().into_owned()
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("svidgate-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn file(&self, name: &str, contents: &str) -> String {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, contents).unwrap();
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn generate(principal: &str) -> String {
    serde_json::json!({"attributes": {
        "source": {"principal": principal},
        "request": {"http": {"method": "POST", "path": "/v1/generate"}},
    }})
    .to_string()
}

#[test]
fn test_passes_seed_policy_with_coverage() {
    let out = svidgate(&["test", &seed(), "--coverage"]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("PASS data.envoy.authz_test.test_allows_orchestrator_to_generate"), "{text}");
    assert!(text.contains("coverage authz.rego: 100.0%") && text.contains("coverage chat.rego: 100.0%"), "{text}");
    assert!(text.ends_with("11 passed, 0 failed\n"), "{text}");
}

#[test]
fn test_with_opa_fails_a_policy_go_opa_refuses_that_regorus_runs() {
    let lib = svidgate_opa::library_path();
    let lib = lib.to_string_lossy();
    let out = svidgate(&["test", &seed(), "--opa", &lib]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.starts_with("PASS go opa compiles the policy\n") && text.ends_with("12 passed, 0 failed\n"), "{text}");
    // A type error OPA's compiler finds and regorus leaves to evaluation, in a rule no test runs.
    let scratch = Scratch::new("opa-refuses");
    scratch.file("p.rego", "package p\nimport rego.v1\nshout := upper(42)\nallow := true\n");
    scratch.file("p_test.rego", "package p_test\nimport rego.v1\ntest_allow if data.p.allow\n");
    let dir = scratch.0.to_string_lossy();
    assert!(svidgate(&["test", &dir]).status.success());
    let out = svidgate(&["test", &dir, "--opa", &lib]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL go opa compiles the policy: ") && text.contains("rego_type_error"), "{text}");
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
    // A library that is not there is a usage error, not a failed test.
    assert_eq!(svidgate(&["test", &dir, "--opa", "/nonexistent/libopabridge.so"]).status.code(), Some(2));
}

/// The lean CLI refuses what the lean module refuses; built with `--features full` (as `cargo
/// xtask test` runs this test again), it runs what the full module runs.
#[test]
fn the_cli_has_the_builtins_of_its_module_flavor() {
    let scratch = Scratch::new("flavor");
    scratch.file("p.rego", "package p\nimport rego.v1\nstatic if glob.match(\"/static/**.css\", [\"/\"], input.path)\n");
    scratch.file("p_test.rego", "package p_test\nimport rego.v1\ntest_css if data.p.static with input as {\"path\": \"/static/a/b.css\"}\n");
    let out = svidgate(&["test", &scratch.0.to_string_lossy()]);
    let text = stdout(&out);
    if cfg!(feature = "full") {
        assert_eq!(text, "PASS data.p_test.test_css\n1 passed, 0 failed\n");
    } else {
        assert_eq!(out.status.code(), Some(1), "{text}");
        assert!(text.contains("FAIL data.p.static") && text.contains("glob.match"), "{text}");
    }
}

#[test]
fn test_fails_on_a_failing_rule() {
    let scratch = Scratch::new("failing");
    scratch.file("p_test.rego", "package p_test\nimport rego.v1\ntest_ok if true\ntest_broken if 1 == 2\n");
    let out = svidgate(&["test", &scratch.0.to_string_lossy()]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("FAIL data.p_test.test_broken"), "{text}");
    assert!(text.ends_with("1 passed, 1 failed\n"), "{text}");
}

#[test]
fn eval_prints_result_and_the_module_decision() {
    let scratch = Scratch::new("eval");
    let allowed = scratch.file("orchestrator.json", &generate(ORCHESTRATOR));
    let denied = scratch.file("rogue.json", &generate(ROGUE));
    let out = svidgate(&["eval", "--policy", &seed(), "--input", &allowed]);
    assert!(out.status.success());
    assert!(stdout(&out).contains("\"allowed\": true") && stdout(&out).ends_with("decision: allow\n"), "{}", stdout(&out));
    let out = svidgate(&["eval", "--policy", &seed(), "--input", &denied]);
    assert!(stdout(&out).ends_with("decision: deny 403 (svidgate_policy_denied)\n"), "{}", stdout(&out));
}

#[test]
fn eval_reads_a_body_as_the_module_does() {
    let scratch = Scratch::new("eval-body");
    let tools = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/tool-runtime").to_string_lossy().into_owned();
    let input = scratch.file(
        "mcp.json",
        &serde_json::json!({
            "attributes": {"source": {"principal": ORCHESTRATOR},
                           "request": {"http": {"method": "POST", "path": "/mcp", "headers": {"content-type": "application/json"}}}},
            "parsed_path": ["mcp"],
        })
        .to_string(),
    );
    let call = |tool: &str| format!(r#"{{"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {{"name": "{tool}"}}}}"#);
    let allowed = scratch.file("search.json", &call("search"));
    let out = svidgate(&["eval", "--policy", &tools, "--input", &input, "--body", &allowed]);
    assert!(stdout(&out).ends_with("decision: allow\n"), "{}", stdout(&out));
    let denied = scratch.file("shell.json", &call("shell"));
    let out = svidgate(&["eval", "--policy", &tools, "--input", &input, "--body", &denied]);
    assert!(stdout(&out).contains("may not call tool shell") && stdout(&out).ends_with("(svidgate_policy_denied)\n"), "{}", stdout(&out));
    // The content type decides the parse: as text/plain the body is not parsed, and the policy denies.
    let out = svidgate(&["eval", "--policy", &tools, "--input", &input, "--body", &allowed, "--content-type", "text/plain"]);
    assert!(stdout(&out).ends_with("(svidgate_policy_denied)\n"), "{}", stdout(&out));
    let broken = scratch.file("broken.json", r#"{"jsonrpc": "2.0","#);
    let out = svidgate(&["eval", "--policy", &tools, "--input", &input, "--body", &broken]);
    assert!(stdout(&out).starts_with("input error: invalid JSON") && stdout(&out).ends_with("deny 400 (svidgate_input_error)\n"), "{}", stdout(&out));
}

#[test]
fn eval_refuses_a_policy_the_module_cannot_run() {
    let scratch = Scratch::new("eval-bad");
    let policy = scratch.file("p.rego", "package envoy.authz\nimport rego.v1\nallow if io.jwt.decode(input.token)\n");
    let input = scratch.file("in.json", "{}");
    let out = svidgate(&["eval", "--policy", &policy, "--input", &input]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("io.jwt.decode"));
}

#[test]
fn bundle_build_is_reproducible_and_leaves_tests_out() {
    let scratch = Scratch::new("bundle");
    let first = scratch.0.join("a.tar.gz").to_string_lossy().into_owned();
    let second = scratch.0.join("b.tar.gz").to_string_lossy().into_owned();
    for out in [&first, &second] {
        let result = svidgate(&["bundle", "build", &seed(), "-o", out, "--revision", "r7", "--root", "envoy/authz"]);
        assert!(result.status.success(), "{}", stdout(&result));
    }
    assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap());
    let listing = Command::new("tar").args(["tzf", &first]).output().unwrap();
    assert_eq!(stdout(&listing), ".manifest\nauthz.rego\nchat.rego\ndata.json\n");
    let manifest = Command::new("tar").args(["xzOf", &first, ".manifest"]).output().unwrap();
    assert_eq!(stdout(&manifest), r#"{"revision":"r7","roots":["envoy/authz"]}"#);
}

#[test]
fn replay_reports_decisions_a_new_policy_changes() {
    let scratch = Scratch::new("replay");
    let record = |id: &str, principal: &str, allowed: bool| {
        let input: serde_json::Value = serde_json::from_str(&generate(principal)).unwrap();
        serde_json::json!({"decision_id": id, "path": "envoy/authz/allow", "input": input, "result": {"allowed": allowed}})
            .to_string()
    };
    let log = scratch.file("decisions.jsonl", &format!("{}\n{}\n", record("d-1", ORCHESTRATOR, true), record("d-2", ROGUE, false)));
    // The new policy: the rogue agent is now an allowed caller.
    scratch.file("policy/authz.rego", &std::fs::read_to_string(Path::new(&seed()).join("authz.rego")).unwrap());
    scratch.file("policy/data.json", &serde_json::json!({"allowed_callers": {"generate": [ORCHESTRATOR, ROGUE]}}).to_string());
    let policy = scratch.0.join("policy").to_string_lossy().into_owned();

    let out = svidgate(&["replay", &log, "--policy", &policy]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("CHANGED d-2 (line 2): deny 403 (svidgate_policy_denied) -> allow"), "{text}");
    assert!(!text.contains("d-1"), "{text}");
    assert!(text.ends_with("2 decisions replayed, 1 would change\n"), "{text}");

    let unchanged = svidgate(&["replay", &log, "--policy", &seed(), "--fail-on-change"]);
    assert!(unchanged.status.success(), "{}", stdout(&unchanged));
    let gated = svidgate(&["replay", &log, "--policy", &policy, "--fail-on-change"]);
    assert_eq!(gated.status.code(), Some(1));
}

#[test]
fn eval_reads_its_input_from_stdin() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_svidgate"))
        .args(["eval", "-p", &seed(), "-i", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(generate(ORCHESTRATOR).as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).ends_with("decision: allow\n"), "{}", stdout(&out));
}

#[test]
fn refuses_unknown_flags() {
    let scratch = Scratch::new("typo");
    let bundle = scratch.0.join("b.tar.gz").to_string_lossy().into_owned();
    let out = svidgate(&["bundle", "build", &seed(), "-o", &bundle, "--revison", "r1"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unexpected argument '--revison'"), "{stderr}");
    assert!(stderr.contains("a similar argument exists: '--revision'"), "{stderr}");
    assert!(!Path::new(&bundle).exists(), "a bundle was written without its revision");

    for args in [&["test", &seed(), "--coverag"][..], &["frobnicate"], &["bundle", "publish", &seed()]] {
        let out = svidgate(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}: {}", stdout(&out));
    }
}

#[test]
fn refuses_a_missing_value() {
    let scratch = Scratch::new("missing");
    let input = scratch.file("in.json", &generate(ORCHESTRATOR));
    let out = svidgate(&["eval", "--input", &input, "--policy"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("a value is required for '--policy <DIR>'"), "{stderr}");

    let out = svidgate(&["bundle", "build", &seed()]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("the following required arguments were not provided:\n  --output <BUNDLE.tar.gz>"), "{stderr}");
}

#[test]
fn keeps_the_last_value_of_an_option_given_twice() {
    let scratch = Scratch::new("twice");
    let input = scratch.file("in.json", &generate(ORCHESTRATOR));
    let out = svidgate(&["eval", "-p", "no/such/policy", "-i", &input, "-p", &seed()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout(&out).ends_with("decision: allow\n"), "{}", stdout(&out));
}

#[test]
fn prints_its_version() {
    let out = svidgate(&["--version"]);
    assert!(out.status.success());
    assert_eq!(stdout(&out), format!("svidgate {}\n", env!("CARGO_PKG_VERSION")));
}

#[test]
fn each_command_has_help() {
    let listing = stdout(&svidgate(&["--help"]));
    let commands: [(&[&str], &str, &[&str]); 4] = [
        (
            &["test"],
            "run every test_* rule under DIR on the interpreter and on the module's VM, and compile every policy rule for the VM",
            &["<DIR>", "--coverage"],
        ),
        (
            &["eval"],
            "evaluate the entrypoint for one input; print the result and the decision the module would take",
            &["-p, --policy <DIR>", "-d, --data <FILE>", "-i, --input <FILE|->", "-e, --entrypoint <PATH>"],
        ),
        (
            &["bundle", "build"],
            "write an OPA bundle: .manifest, policy modules (tests left out) and data.json files",
            &["<DIR>", "-o, --output <BUNDLE.tar.gz>", "--revision <REV>", "--root <ROOT>"],
        ),
        (
            &["replay"],
            "re-evaluate recorded OPA decision logs against DIR and print every decision that would change",
            &["<LOG.jsonl>", "-p, --policy <DIR>", "--fail-on-change"],
        ),
    ];
    for (command, about, options) in commands {
        let out = svidgate(&[command, &["--help"]].concat());
        assert!(out.status.success(), "{command:?}");
        let help = stdout(&out);
        assert!(help.starts_with(&format!("{about}\n\nUsage: svidgate {} ", command.join(" "))), "{help}");
        // Every option on its own line, with a description after it.
        for option in options {
            let line = help.lines().find(|l| l.trim_start().starts_with(option));
            let described = line.and_then(|l| l.split_once(option)).is_some_and(|(_, rest)| rest.trim().len() > 10);
            assert!(described, "{command:?}: {option} is not described:\n{help}");
        }
    }
    // The top-level listing: one line per command.
    for name in ["test", "eval", "replay"] {
        let (_, about, _) = commands.iter().find(|(c, _, _)| c == &[name]).unwrap();
        assert!(listing.contains(&format!("  {name:<8}{about}\n")), "{name}:\n{listing}");
    }
    assert!(listing.contains("  bundle  OPA bundles: bundle build\n"), "{listing}");
    assert!(stdout(&svidgate(&["eval", "--help"])).contains("[default: envoy/authz/allow]"));
}
