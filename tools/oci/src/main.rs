//! `svidgate-oci`: package the built modules as OCI artifacts, push them, pin their digests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use svidgate_oci::artifact::KINDS;
use svidgate_oci::registry::{Credentials, Options, Registry};
use svidgate_oci::render::{Pin, Pins};
use svidgate_oci::{Artifact, Kind, Module, Provenance, gate, layout, render};
use time::OffsetDateTime;

/// The modules `cargo xtask build` ships.
const MODULE_FILES: [&str; 2] = ["svidgate_identity.wasm", "svidgate_authz.wasm"];

const HELP: &str = "\
svidgate-oci <command> [options]

Commands:
  package  build, for each module, the Istio/Solo compat image (one tar+gzip layer holding
           plugin.wasm) and the CNCF wasm artifact (one application/wasm layer) as OCI image
           layouts, check them against Istio's fetcher and the CNCF spec, write pins.json and
           print the digests to pin
             --modules DIR   built modules (default: $SVIDGATE_WASM_DIR, else target/modules)
             --out DIR       where the layouts go (default: target/oci)
             --version V     org.opencontainers.image.version (default: the workspace version)
             --revision R    org.opencontainers.image.revision (default: $SVIDGATE_GIT_SHA, else
                             `git rev-parse --short=12 HEAD`); each module must embed it
             --source URL    org.opencontainers.image.source (default: the workspace repository)
           Timestamps are $SOURCE_DATE_EPOCH, else the revision's commit time: the same module
           and revision give the same digests.
  push     push every layout under --out to a registry and check the digest it stores
             --registry HOST[:PORT][/NAMESPACE]   required; images go to <registry>/<module>:<tag>
             --out DIR       the layouts (default: target/oci)
             --plain-http    plain HTTP (loopback registries only)
             --ca-file PEM   an extra CA to trust (a private registry)
           Credentials come from the environment, never the command line:
           SVIDGATE_OCI_USERNAME and SVIDGATE_OCI_PASSWORD (basic, or exchanged for a token when
           the registry asks), or SVIDGATE_OCI_TOKEN (a bearer token).
  render   fill the digest placeholders of the deployment manifests from pins.json
             --registry HOST[:PORT]/NAMESPACE     required: where the images are pulled from
             --pins FILE     (default: target/oci/pins.json)
             --in DIR        the templates (default: envoy/k8s); every *.yaml below it
             --out DIR       where the filled manifests go (default: target/k8s)
  help     print this text
";

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_else(|| "help".to_owned());
    let flags = Flags::parse(args.collect())?;
    match command.as_str() {
        "package" => package(flags),
        "push" => push(flags),
        "render" => render_manifests(flags),
        "help" | "--help" | "-h" => {
            print!("{HELP}");
            Ok(())
        }
        other => bail!("unknown command {other:?}\n\n{HELP}"),
    }
}

/// Builds, gates and writes every artifact, then prints the pins.
fn package(mut flags: Flags) -> Result<()> {
    let modules_dir = flags.path("--modules").unwrap_or_else(default_modules_dir);
    let out = flags.path("--out").unwrap_or_else(|| workspace_root().join("target/oci"));
    let revision = match flags.value("--revision") {
        Some(revision) => revision,
        None => default_revision()?,
    };
    let provenance = Provenance {
        version: flags.value("--version").unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        source: flags.value("--source").unwrap_or_else(|| env!("CARGO_PKG_REPOSITORY").to_owned()),
        created: created(&revision)?,
        revision,
    };
    flags.finish()?;
    let mut pins = Pins::default();
    for file in MODULE_FILES {
        let module =
            Module::read(&modules_dir.join(file)).context("run `cargo xtask build` first, or pass --modules")?;
        ensure!(
            contains(&module.bytes, provenance.revision.as_bytes()),
            "{file} does not embed revision {:?}: it was built from another commit; rebuild it (`cargo xtask build`) \
             or pass the --revision it logs at VM start",
            provenance.revision
        );
        for kind in KINDS {
            let artifact = Artifact::build(&module, kind, &provenance)?;
            let found = gated(&artifact.manifest, |d| artifact.blob(d), kind)
                .with_context(|| format!("{} {}: the layout gate refuses it", artifact.name, kind.as_str()))?;
            ensure!(found == module.bytes, "{} {}: the image holds another module", artifact.name, kind.as_str());
            let dir = out.join(&artifact.name).join(kind.as_str());
            layout::write(&dir, &artifact)?;
            print_artifact(&artifact, &dir);
            pins.artifacts.push(Pin::of(&artifact));
        }
    }
    let pins_path = out.join("pins.json");
    write_pins(&pins_path, &pins)?;
    println!("pins: {}", pins_path.display());
    Ok(())
}

/// Pushes every layout the last `package` wrote, gated again as read from disk.
fn push(mut flags: Flags) -> Result<()> {
    let target = flags.value("--registry").context("--registry HOST[:PORT][/NAMESPACE] is required")?;
    let out = flags.path("--out").unwrap_or_else(|| workspace_root().join("target/oci"));
    let plain_http = flags.switch("--plain-http");
    let ca_file = flags.path("--ca-file");
    flags.finish()?;
    let (host, namespace) = match target.trim_end_matches('/').split_once('/') {
        Some((host, namespace)) => (host.to_owned(), Some(namespace.to_owned())),
        None => (target.clone(), None),
    };
    let mut options = Options { plain_http, credentials: credentials_from_env()?, ..Options::default() };
    if let Some(ca) = ca_file {
        options.ca_certificates_pem.push(std::fs::read(&ca).with_context(|| format!("reading {}", ca.display()))?);
    }
    let registry = Registry::connect(&host, options)?;
    let pins_path = out.join("pins.json");
    let mut pins = read_pins(&pins_path)?;
    ensure!(!pins.artifacts.is_empty(), "{} lists nothing: run `svidgate-oci package` first", pins_path.display());
    for pin in &mut pins.artifacts {
        let dir = out.join(&pin.name).join(pin.kind.as_str());
        let read = layout::read(&dir)?;
        ensure!(read.manifest_digest == pin.manifest_digest, "{} changed since it was packaged", dir.display());
        gated(&read.manifest, |d| read.blob(d), pin.kind)
            .with_context(|| format!("{}: the layout gate refuses it", dir.display()))?;
        let repository = namespace.as_ref().map_or_else(|| pin.name.clone(), |ns| format!("{ns}/{}", pin.name));
        let pushed = registry.push(&repository, &read.tag, &read)?;
        println!("pushed {}@{}", pushed.reference, pushed.manifest_digest);
        pin.reference = Some(pushed.reference);
    }
    write_pins(&pins_path, &pins)?;
    println!("pins: {}", pins_path.display());
    Ok(())
}

/// Fills the deployment templates.
fn render_manifests(mut flags: Flags) -> Result<()> {
    let registry = flags.value("--registry").context("--registry HOST[:PORT]/NAMESPACE is required")?;
    let pins_path = flags.path("--pins").unwrap_or_else(|| workspace_root().join("target/oci/pins.json"));
    let input = flags.path("--in").unwrap_or_else(|| workspace_root().join("envoy/k8s"));
    let out = flags.path("--out").unwrap_or_else(|| workspace_root().join("target/k8s"));
    flags.finish()?;
    let vars = read_pins(&pins_path)?.variables(&registry)?;
    for template in svidgate_oci::render::manifest_files(&input)? {
        let relative = template.strip_prefix(&input).unwrap_or(&template);
        let text = std::fs::read_to_string(&template).with_context(|| format!("reading {}", template.display()))?;
        let filled = render::render(&text, &vars).with_context(|| format!("rendering {}", template.display()))?;
        let target = out.join(relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&target, filled).with_context(|| format!("writing {}", target.display()))?;
        println!("{}", target.display());
    }
    Ok(())
}

/// The gate every artifact passes before it is written or pushed: a compat image Istio's fetcher
/// accepts, or a CNCF artifact that follows its spec, with the provenance annotations. Returns the
/// module it holds.
fn gated<'b>(manifest: &[u8], blob: impl Fn(&svidgate_oci::Digest) -> Option<&'b [u8]>, kind: Kind) -> Result<Vec<u8>> {
    let found = match kind {
        Kind::Compat => gate::istio_module(manifest, &blob)?.wasm,
        _ => gate::cncf_module(manifest, &blob)?,
    };
    gate::provenance(manifest)?;
    Ok(found)
}

fn print_artifact(artifact: &Artifact, dir: &Path) {
    let (what, pin_as) = match artifact.kind {
        Kind::Compat => ("Istio/Solo compat image", "Istio WasmPlugin.sha256, Envoy Gateway image.sha256"),
        _ => ("CNCF wasm artifact", "oras/wasm tooling @sha256"),
    };
    println!("{}:{}  {what}  ({})", artifact.name, artifact.tag, dir.display());
    println!("  manifest     {}   <- {pin_as}", artifact.manifest_digest);
    println!("  module       {}   <- Envoy vm_config.code.remote.sha256", artifact.wasm_sha256);
}

fn write_pins(path: &Path, pins: &Pins) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    let mut json = serde_json::to_vec_pretty(pins)?;
    json.push(b'\n');
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn read_pins(path: &Path) -> Result<Pins> {
    let text = std::fs::read(path)
        .with_context(|| format!("reading {} (run `svidgate-oci package` first)", path.display()))?;
    serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))
}

fn credentials_from_env() -> Result<Credentials> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    match (var("SVIDGATE_OCI_USERNAME"), var("SVIDGATE_OCI_PASSWORD"), var("SVIDGATE_OCI_TOKEN")) {
        (Some(username), Some(password), None) => Ok(Credentials::Basic { username, password }),
        (None, None, Some(token)) => Ok(Credentials::Bearer(token)),
        (None, None, None) => Ok(Credentials::Anonymous),
        _ => bail!("set SVIDGATE_OCI_USERNAME and SVIDGATE_OCI_PASSWORD, or SVIDGATE_OCI_TOKEN, not a mix"),
    }
}

/// The revision the modules embed when built here: the same rule as `filters/proxy/build.rs`.
fn default_revision() -> Result<String> {
    if let Some(sha) = std::env::var("SVIDGATE_GIT_SHA").ok().filter(|s| !s.is_empty()) {
        return Ok(sha);
    }
    git(&["rev-parse", "--short=12", "HEAD"]).context("no git revision: pass --revision or set SVIDGATE_GIT_SHA")
}

/// `$SOURCE_DATE_EPOCH`, else the revision's commit time, else the epoch: never the clock.
fn created(revision: &str) -> Result<OffsetDateTime> {
    let seconds = match std::env::var("SOURCE_DATE_EPOCH").ok().filter(|s| !s.is_empty()) {
        Some(epoch) => epoch.trim().parse::<i64>().with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?}"))?,
        None => git(&["show", "-s", "--format=%ct", revision]).ok().and_then(|s| s.parse().ok()).unwrap_or(0),
    };
    OffsetDateTime::from_unix_timestamp(seconds).with_context(|| format!("timestamp {seconds}"))
}

fn git(args: &[&str]) -> Result<String> {
    let out = Command::new("git").args(args).current_dir(workspace_root()).output().context("running git")?;
    ensure!(out.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}


fn default_modules_dir() -> PathBuf {
    std::env::var_os("SVIDGATE_WASM_DIR").map(PathBuf::from).unwrap_or_else(|| workspace_root().join("target/modules"))
}

fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().and_then(Path::parent).unwrap_or(manifest).to_owned()
}

/// `--name value` options and `--switch` flags, each at most once.
struct Flags(BTreeMap<String, Option<String>>);

impl Flags {
    fn parse(args: Vec<String>) -> Result<Self> {
        const SWITCHES: [&str; 1] = ["--plain-http"];
        let mut flags = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(name) = args.next() {
            ensure!(name.starts_with("--"), "unexpected argument {name:?}\n\n{HELP}");
            let value = if SWITCHES.contains(&name.as_str()) {
                None
            } else {
                Some(args.next().with_context(|| format!("{name} needs a value"))?)
            };
            ensure!(flags.insert(name.clone(), value).is_none(), "{name} is given twice");
        }
        Ok(Self(flags))
    }

    fn value(&mut self, name: &str) -> Option<String> {
        self.0.remove(name).flatten()
    }

    fn path(&mut self, name: &str) -> Option<PathBuf> {
        self.value(name).map(PathBuf::from)
    }

    fn switch(&mut self, name: &str) -> bool {
        self.0.remove(name).is_some()
    }

    /// Refuses options the command did not take.
    fn finish(self) -> Result<()> {
        match self.0.keys().next() {
            Some(unknown) => bail!("unknown option {unknown:?}\n\n{HELP}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Result<Flags> {
        Flags::parse(args.iter().map(|a| (*a).to_owned()).collect())
    }

    #[test]
    fn reads_options_and_switches() {
        let mut parsed = flags(&["--registry", "127.0.0.1:5000/svidgate", "--plain-http"]).unwrap();
        assert_eq!(parsed.value("--registry").as_deref(), Some("127.0.0.1:5000/svidgate"));
        assert!(parsed.switch("--plain-http"));
        assert!(parsed.finish().is_ok());
    }

    #[test]
    fn refuses_unknown_repeated_and_valueless_options() {
        assert!(flags(&["--registry"]).is_err());
        assert!(flags(&["--out", "a", "--out", "b"]).is_err());
        assert!(flags(&["positional"]).is_err());
        assert!(flags(&["--colour", "always"]).unwrap().finish().is_err());
    }

    #[test]
    fn finds_a_revision_in_module_bytes() {
        assert!(contains(b"..svidgate_authz 0.1.0 (c996fabad776) starting..", b"c996fabad776"));
        assert!(!contains(b"..c996fabad77..", b"c996fabad776"));
        assert!(!contains(b"anything", b""));
    }
}
