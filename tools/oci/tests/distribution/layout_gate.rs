//! The layout gate on the real modules: what `svidgate-oci package` writes is what Istio fetches.

use std::path::Path;

use anyhow::{Context, Result, ensure};
use svidgate_harness::cases::ModuleKind;
use svidgate_oci::artifact::annotations;
use svidgate_oci::gate::{self, IstioVariant};
use svidgate_oci::layout;
use svidgate_oci::render::Pins;

use crate::support::{Scratch, cli, logged_revision, module_bytes, run, wasm_dir};

/// Every module and kind `package` writes: (repository, module file, kind).
pub const ARTIFACTS: [(&str, &str, &str); 6] = [
    ("svidgate-identity", "svidgate_identity.wasm", "compat"),
    ("svidgate-identity", "svidgate_identity.wasm", "wasm"),
    ("svidgate-authz", "svidgate_authz.wasm", "compat"),
    ("svidgate-authz", "svidgate_authz.wasm", "wasm"),
    ("svidgate-authz-full", "svidgate_authz_full.wasm", "compat"),
    ("svidgate-authz-full", "svidgate_authz_full.wasm", "wasm"),
];

/// Runs `svidgate-oci package` on the built modules into `out`, annotated with the revision the
/// modules log; returns that revision and the pins it wrote.
pub fn package(out: &Path) -> Result<(String, Pins)> {
    let revision = logged_revision(ModuleKind::Identity)?;
    ensure!(revision == logged_revision(ModuleKind::Authz)?, "the two modules were built from different revisions");
    run(cli().arg("package").arg("--modules").arg(wasm_dir()).arg("--out").arg(out).args(["--revision", &revision]))?;
    let pins = std::fs::read(out.join("pins.json")).context("package wrote no pins.json")?;
    Ok((revision, serde_json::from_slice(&pins)?))
}

#[test]
fn istio_fetches_exactly_the_module_from_every_compat_image() -> Result<()> {
    let scratch = Scratch::new("gate-compat")?;
    package(scratch.path())?;
    for (name, file, kind) in ARTIFACTS.iter().filter(|a| a.2 == "compat") {
        let read = layout::read(&scratch.join(&format!("{name}/{kind}")))?;
        let found = gate::istio_module(&read.manifest, |d| read.blob(d))?;
        assert_eq!(found.variant, IstioVariant::Compat, "{name}");
        assert!(found.wasm == module_bytes(file)?, "{name}: Istio would load other bytes than {file}");
    }
    Ok(())
}

#[test]
fn every_cncf_artifact_follows_its_spec_and_istio_refuses_it() -> Result<()> {
    let scratch = Scratch::new("gate-cncf")?;
    package(scratch.path())?;
    for (name, file, kind) in ARTIFACTS.iter().filter(|a| a.2 == "wasm") {
        let read = layout::read(&scratch.join(&format!("{name}/{kind}")))?;
        assert!(gate::cncf_module(&read.manifest, |d| read.blob(d))? == module_bytes(file)?, "{name}");
        // Pointing Istio at the -wasm tag must fail loudly, not load something else.
        assert!(
            gate::istio_module(&read.manifest, |d| read.blob(d)).is_err(),
            "{name}: Istio accepted the CNCF artifact"
        );
    }
    Ok(())
}

#[test]
fn annotations_name_the_revision_the_module_logs_at_vm_start() -> Result<()> {
    let scratch = Scratch::new("gate-annotations")?;
    let (revision, pins) = package(scratch.path())?;
    assert_eq!(pins.artifacts.len(), ARTIFACTS.len());
    for (name, _, kind) in ARTIFACTS {
        let read = layout::read(&scratch.join(&format!("{name}/{kind}")))?;
        let annotated = gate::provenance(&read.manifest)?;
        assert_eq!(annotated.revision, revision, "{name} {kind}");
        assert_eq!(annotated.version, env!("CARGO_PKG_VERSION"), "{name} {kind}");
        assert_eq!(annotated.source, env!("CARGO_PKG_REPOSITORY"), "{name} {kind}");
        let manifest: serde_json::Value = serde_json::from_slice(&read.manifest)?;
        assert!(manifest["annotations"][annotations::CREATED].is_string(), "{name} {kind}");
    }
    Ok(())
}

#[test]
fn packaging_twice_gives_the_same_digests() -> Result<()> {
    let (first, second) = (Scratch::new("gate-repro-a")?, Scratch::new("gate-repro-b")?);
    let (_, a) = package(first.path())?;
    let (_, b) = package(second.path())?;
    assert_eq!(a, b);
    for (name, _, kind) in ARTIFACTS {
        let (x, y) = (
            layout::read(&first.join(&format!("{name}/{kind}")))?,
            layout::read(&second.join(&format!("{name}/{kind}")))?,
        );
        assert_eq!(x.blobs, y.blobs, "{name} {kind}");
    }
    Ok(())
}

#[test]
fn pins_name_the_digests_of_the_layouts() -> Result<()> {
    let scratch = Scratch::new("gate-pins")?;
    let (_, pins) = package(scratch.path())?;
    for pin in &pins.artifacts {
        let read = layout::read(&scratch.join(&format!("{}/{}", pin.name, pin.kind.as_str())))?;
        assert_eq!(pin.manifest_digest, read.manifest_digest, "{} {}", pin.name, pin.kind.as_str());
        let module = module_bytes(&format!("{}.wasm", pin.name.replace('-', "_")))?;
        assert_eq!(pin.wasm_sha256, svidgate_oci::Digest::of(&module).hex(), "{}", pin.name);
    }
    Ok(())
}

#[test]
fn refuses_to_package_a_module_built_from_another_revision() -> Result<()> {
    let scratch = Scratch::new("gate-revision")?;
    // Another commit's revision: the logged one reversed (all-zero or 0123... strings occur in
    // any binary's data by chance; a real SHA does not).
    let other: String = logged_revision(ModuleKind::Identity)?.chars().rev().collect();
    let out = cli()
        .arg("package")
        .arg("--modules")
        .arg(wasm_dir())
        .arg("--out")
        .arg(scratch.path())
        .args(["--revision", &other])
        .output()?;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not embed revision"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!scratch.join("pins.json").exists());
    Ok(())
}

#[test]
fn the_checksum_file_beside_the_modules_names_the_pinned_sha256() -> Result<()> {
    let scratch = Scratch::new("gate-sums")?;
    let (_, pins) = package(scratch.path())?;
    let sums_path = wasm_dir().join("SHA256SUMS");
    let sums = std::fs::read_to_string(&sums_path)
        .with_context(|| format!("{} is missing: `cargo xtask build` writes it", sums_path.display()))?;
    for pin in &pins.artifacts {
        let file = format!("{}.wasm", pin.name.replace('-', "_"));
        let line = format!("{}  {file}", pin.wasm_sha256);
        assert!(sums.lines().any(|l| l == line), "SHA256SUMS has no {line:?}:\n{sums}");
    }
    Ok(())
}
