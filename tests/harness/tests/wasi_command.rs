//! Tests of the WASI command runner (`svidgate-wasi-run`, cargo's target runner for the core's
//! unit tests on wasm32-wasip1) against `tests/fixtures/wasicmd`, a Rust std command built for
//! wasm32-wasip1 on first use. Most run the binary, as cargo does, to see its exit status and
//! output.

use anyhow::{Context as _, Result, anyhow};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};
use svidgate_harness::wasi_command::{self, Exit};

/// The fixture command, built once for every test of this binary.
fn wasicmd() -> Result<&'static Path> {
    static WASICMD: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    WASICMD
        .get_or_init(|| build_wasicmd().map_err(|error| format!("{error:#}")))
        .as_deref()
        .map_err(|error| anyhow!("building the wasicmd fixture: {error}"))
}

fn build_wasicmd() -> Result<PathBuf> {
    svidgate_harness::fixtures::build_wasm("wasicmd", &Path::new(env!("CARGO_TARGET_TMPDIR")).join("wasicmd"))
}

/// Runs `svidgate-wasi-run wasicmd.wasm ARGS...` as cargo runs a test binary.
fn runner(args: &[&str]) -> Result<Output> {
    runner_with(args, &[])
}

fn runner_with(args: &[&str], env: &[(&str, &str)]) -> Result<Output> {
    let mut command = Command::new(env!("CARGO_BIN_EXE_svidgate-wasi-run"));
    command.arg(wasicmd()?).args(args).envs(env.iter().copied());
    command
        .output()
        .with_context(|| format!("running {command:?}"))
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn arguments_reach_the_module_and_returning_from_main_exits_0() -> Result<()> {
    let output = runner(&["echo", "a b", "--nocapture", "spiffe::tests", ""])?;
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(
        stdout(&output),
        "wasicmd.wasm\na b\n--nocapture\nspiffe::tests\n\n"
    );
    assert_eq!(stderr(&output), "to stderr\n");
    Ok(())
}

#[test]
fn proc_exit_code_is_the_exit_status() -> Result<()> {
    for code in [0, 3, 101] {
        let output = runner(&["exit", &code.to_string()])?;
        assert_eq!(output.status.code(), Some(code), "{}", stderr(&output));
    }
    Ok(())
}

#[test]
fn a_panic_exits_134_after_the_panic_message() -> Result<()> {
    let output = runner(&["panic"])?;
    assert_eq!(output.status.code(), Some(134));
    let stderr = stderr(&output);
    assert!(stderr.contains("panicked at src/main.rs"), "{stderr}");
    assert!(stderr.contains("wasicmd panic requested"), "{stderr}");
    assert!(stderr.contains("wasicmd.wasm trapped: "), "{stderr}");
    Ok(())
}

#[test]
fn an_import_the_runner_lacks_traps_naming_it() -> Result<()> {
    let output = runner(&["stdin"])?;
    assert_eq!(output.status.code(), Some(134));
    assert!(
        stderr(&output).contains("wasi_snapshot_preview1::fd_read"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn a_module_that_cannot_be_read_exits_2() -> Result<()> {
    let output = Command::new(env!("CARGO_BIN_EXE_svidgate-wasi-run"))
        .arg("/nonexistent/tests.wasm")
        .output()?;
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("reading /nonexistent/tests.wasm"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn the_module_sees_the_environment_the_clocks_and_fresh_randomness() -> Result<()> {
    let output = runner_with(&["env", "SVIDGATE_WASICMD"], &[("SVIDGATE_WASICMD", "x=1")])?;
    assert_eq!(stdout(&output), "x=1\n");

    let output = runner(&["clock"])?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let stdout = stdout(&output);
    let (seconds, monotonic) = stdout.trim_end().split_once(' ').context(stdout.clone())?;
    assert!(now.abs_diff(seconds.parse()?) < 60, "{stdout}");
    assert_eq!(monotonic, "true");

    // std keys its hasher from random_get once per run: two runs hashing alike would mean fixed bytes.
    let first = runner(&["random"])?;
    let second = runner(&["random"])?;
    assert_ne!(first.stdout, second.stdout);
    Ok(())
}

#[test]
fn run_returns_the_exit_code_or_the_trap() -> Result<()> {
    let exit = wasi_command::run(wasicmd()?, &[OsString::from("exit"), OsString::from("7")])?;
    assert!(matches!(exit, Exit::Code(7)), "{exit:?}");
    assert_eq!(exit.status(), 7);
    let exit = wasi_command::run(wasicmd()?, &[OsString::from("stdin")])?;
    let Exit::Trap(error) = &exit else {
        return Err(anyhow!("expected a trap, got {exit:?}"));
    };
    assert!(format!("{error:#}").contains("fd_read"), "{error:#}");
    assert_eq!(exit.status(), 134);
    Ok(())
}
