//! `svidgate bundle build`: an OPA bundle (`.tar.gz` with `.manifest`, modules and data files),
//! byte-for-byte reproducible: sorted entries, zero timestamps and owners.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use svidgate_cli::write_bundle;
use svidgate_core::authz::testing::PolicyDir;

/// write an OPA bundle: .manifest, policy modules (tests left out) and data.json files
#[derive(Debug, clap::Args)]
pub(crate) struct BuildArgs {
    /// the policy directory
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// where the bundle (.tar.gz) is written
    #[arg(short, long, value_name = "BUNDLE.tar.gz")]
    output: PathBuf,
    /// the revision written to .manifest
    #[arg(long, value_name = "REV")]
    revision: Option<String>,
    /// a root the bundle owns, written to .manifest (repeatable)
    #[arg(long = "root", value_name = "ROOT")]
    roots: Vec<String>,
}

pub(crate) fn build(args: &BuildArgs) -> Result<ExitCode> {
    let root = &args.dir;
    let output = &args.output;
    // Load first: a directory that does not load (bad data.json) makes no bundle.
    let dir = PolicyDir::load(root)?;
    let mut manifest = serde_json::Map::new();
    if let Some(revision) = &args.revision {
        manifest.insert("revision".into(), revision.as_str().into());
    }
    if !args.roots.is_empty() {
        manifest.insert("roots".into(), args.roots.clone().into());
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
    std::fs::write(output, &gzip).with_context(|| format!("cannot write {}", output.display()))?;
    println!("wrote {}: {} files, {} bytes", output.display(), entries.len(), gzip.len());
    Ok(ExitCode::SUCCESS)
}

/// Paths inside the bundle use `/` whatever the platform.
fn bundle_path(relative: &str) -> String {
    format!("/{}", relative.replace('\\', "/"))
}
