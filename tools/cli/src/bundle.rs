//! `svidgate bundle build`: an OPA bundle (`.tar.gz` with `.manifest`, modules and data files),
//! byte-for-byte reproducible: sorted entries, zero timestamps and owners.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use svidgate_cli::write_bundle;
use svidgate_core::authz::testing::PolicyDir;

use crate::Args;

pub(crate) fn build(args: &Args) -> Result<ExitCode> {
    let root = PathBuf::from(args.positional(0, "DIR")?);
    let output = args.option(&["-o", "--output"]).context("-o BUNDLE.tar.gz is required")?;
    // Load first: a directory that does not load (bad data.json) makes no bundle.
    let dir = PolicyDir::load(&root)?;
    let mut manifest = serde_json::Map::new();
    if let Some(revision) = args.option(&["--revision"]) {
        manifest.insert("revision".into(), revision.into());
    }
    let roots = args.options("--root");
    if !roots.is_empty() {
        manifest.insert("roots".into(), roots.into());
    }
    let mut entries: Vec<(String, Vec<u8>)> = vec![(".manifest".into(), serde_json::to_vec(&manifest)?)];
    for (name, source) in dir.policy_modules() {
        entries.push((bundle_path(name), source.clone().into_bytes()));
    }
    for (relative, text) in &dir.data_files {
        entries.push((bundle_path(relative), text.clone().into_bytes()));
    }
    if entries.len() == 1 {
        bail!("{} holds no policy module or data file", root.display());
    }
    let gzip = write_bundle(&entries)?;
    std::fs::write(output, &gzip).with_context(|| format!("cannot write {output}"))?;
    println!("wrote {output}: {} files, {} bytes", entries.len(), gzip.len());
    Ok(ExitCode::SUCCESS)
}

/// Paths inside the bundle use `/` whatever the platform.
fn bundle_path(relative: &str) -> String {
    format!("/{}", relative.replace('\\', "/"))
}
