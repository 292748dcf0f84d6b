//! The harness's own test fixtures: small Rust crates under `tests/fixtures`, built for
//! wasm32-wasip1 when a test first needs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};

/// Builds `tests/fixtures/<name>` for wasm32-wasip1 (release) into `target_dir` and returns the
/// path of `<name>.wasm`. The target directory must be the fixture's own: sharing the
/// workspace's would deadlock on cargo's build lock while the tests run.
pub fn build_wasm(name: &str, target_dir: &Path) -> Result<PathBuf> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name).join("Cargo.toml");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--quiet", "--target", "wasm32-wasip1", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Flags meant for the host build (coverage, sanitizers) must not leak into the wasm build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET")
        .status()
        .context("running cargo")?;
    ensure!(status.success(), "cargo build of {} failed: {status}", manifest.display());
    Ok(target_dir.join("wasm32-wasip1/release").join(format!("{name}.wasm")))
}
