//! `svidgate-oci`: package the built modules as OCI artifacts, push them, pin their digests.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use clap::{CommandFactory, Parser, Subcommand};
use svidgate_oci::artifact::KINDS;
use svidgate_oci::registry::{Credentials, Options, Registry};
use svidgate_oci::render::{Pin, Pins};
use svidgate_oci::{Artifact, Kind, Module, Provenance, gate, layout, render};
use time::OffsetDateTime;

/// The modules `cargo xtask build` ships (the authz module in both flavors).
const MODULE_FILES: [&str; 3] = ["svidgate_identity.wasm", "svidgate_authz.wasm", "svidgate_authz_full.wasm"];

fn main() -> Result<()> {
    // Usage errors (unknown flags or commands, missing or repeated options) exit 2 with clap's
    // message; failures of a command exit 1.
    match Cli::parse().command {
        Some(OciCommand::Package(args)) => package(args),
        Some(OciCommand::Push(args)) => push(args),
        Some(OciCommand::Render(args)) => render_manifests(args),
        None => Ok(Cli::command().print_help()?),
    }
}

/// package the built svidgate modules as OCI artifacts, push them, pin their digests
#[derive(Debug, Parser)]
#[command(name = "svidgate-oci", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<OciCommand>,
}

#[derive(Debug, Subcommand)]
enum OciCommand {
    Package(PackageArgs),
    Push(PushArgs),
    Render(RenderArgs),
}

/// package each module as OCI image layouts, check them, write pins.json, print the digests to pin
#[derive(Debug, clap::Args)]
#[command(after_help = "\
For each module: the Istio/Solo compat image (one tar+gzip layer holding plugin.wasm) and the
CNCF wasm artifact (one application/wasm layer), as OCI image layouts checked against Istio's
fetcher and the CNCF spec.

The revision defaults to $SVIDGATE_GIT_SHA, else `git rev-parse --short=12 HEAD`.
Timestamps are $SOURCE_DATE_EPOCH, else the revision's commit time: the same module and
revision give the same digests.")]
struct PackageArgs {
    /// built modules (default: $SVIDGATE_WASM_DIR, else target/modules)
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// where the layouts go (default: target/oci)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// org.opencontainers.image.version (default: the workspace version)
    #[arg(long = "version", value_name = "V")]
    image_version: Option<String>,
    /// org.opencontainers.image.revision, which each module must embed (default: below)
    #[arg(long, value_name = "R")]
    revision: Option<String>,
    /// org.opencontainers.image.source (default: the workspace repository)
    #[arg(long, value_name = "URL")]
    source: Option<String>,
}

/// push every layout under --out to a registry and check the digest it stores
#[derive(Debug, clap::Args)]
#[command(after_help = "\
Credentials come from the environment, never the command line: SVIDGATE_OCI_USERNAME and
SVIDGATE_OCI_PASSWORD (basic, or exchanged for a token when the registry asks), or
SVIDGATE_OCI_TOKEN (a bearer token).")]
struct PushArgs {
    /// where to push: images go to <registry>/<module>:<tag>
    #[arg(long, value_name = "HOST[:PORT][/NAMESPACE]")]
    registry: String,
    /// the layouts (default: target/oci)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// plain HTTP (loopback registries only)
    #[arg(long)]
    plain_http: bool,
    /// an extra CA to trust (a private registry)
    #[arg(long, value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// fill the digest placeholders of the deployment manifests from pins.json
#[derive(Debug, clap::Args)]
struct RenderArgs {
    /// where the images are pulled from
    #[arg(long, value_name = "HOST[:PORT]/NAMESPACE")]
    registry: String,
    /// the pins (default: target/oci/pins.json)
    #[arg(long, value_name = "FILE")]
    pins: Option<PathBuf>,
    /// the templates: every *.yaml below it (default: envoy/k8s)
    #[arg(long = "in", value_name = "DIR")]
    templates: Option<PathBuf>,
    /// where the filled manifests go (default: target/k8s)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Builds, gates and writes every artifact, then prints the pins.
fn package(args: PackageArgs) -> Result<()> {
    let modules_dir = args.modules.unwrap_or_else(default_modules_dir);
    let out = args.out.unwrap_or_else(|| workspace_root().join("target/oci"));
    let revision = match args.revision {
        Some(revision) => revision,
        None => default_revision()?,
    };
    let provenance = Provenance {
        version: args.image_version.unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_owned()),
        source: args.source.unwrap_or_else(|| env!("CARGO_PKG_REPOSITORY").to_owned()),
        created: created(&revision)?,
        revision,
    };
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
fn push(args: PushArgs) -> Result<()> {
    let PushArgs { registry: target, out, plain_http, ca_file } = args;
    let out = out.unwrap_or_else(|| workspace_root().join("target/oci"));
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
fn render_manifests(args: RenderArgs) -> Result<()> {
    let registry = args.registry;
    let pins_path = args.pins.unwrap_or_else(|| workspace_root().join("target/oci/pins.json"));
    let input = args.templates.unwrap_or_else(|| workspace_root().join("envoy/k8s"));
    let out = args.out.unwrap_or_else(|| workspace_root().join("target/k8s"));
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

#[cfg(test)]
mod tests {
    use super::*;

    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("svidgate-oci").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn reads_options_and_switches() {
        let Some(OciCommand::Push(push)) = parse(&["push", "--registry", "127.0.0.1:5000/svidgate", "--plain-http"])
            .unwrap()
            .command
        else {
            panic!("not a push")
        };
        assert_eq!(push.registry, "127.0.0.1:5000/svidgate");
        assert!(push.plain_http);
        assert_eq!((push.out, push.ca_file), (None, None));
    }

    #[test]
    fn package_takes_an_image_version_beside_its_own_version_flag() {
        let Some(OciCommand::Package(package)) = parse(&["package", "--version", "1.2.3"]).unwrap().command else {
            panic!("not a package")
        };
        assert_eq!(package.image_version.as_deref(), Some("1.2.3"));
        assert_eq!(parse(&["--version"]).unwrap_err().kind(), ErrorKind::DisplayVersion);
    }

    #[test]
    fn refuses_unknown_repeated_and_valueless_options() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["push", "--registry"]), ErrorKind::InvalidValue);
        assert_eq!(kind(&["push", "--registry", "r", "--out", "a", "--out", "b"]), ErrorKind::ArgumentConflict);
        assert_eq!(kind(&["push", "--registry", "r", "positional"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["push", "--registry", "r", "--colour", "always"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["push"]), ErrorKind::MissingRequiredArgument);
        assert_eq!(kind(&["render", "--registry", "r", "--plain-http"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["pull"]), ErrorKind::InvalidSubcommand);
    }

    #[test]
    fn finds_a_revision_in_module_bytes() {
        assert!(contains(b"..svidgate_authz 0.1.0 (c996fabad776) starting..", b"c996fabad776"));
        assert!(!contains(b"..c996fabad77..", b"c996fabad776"));
        assert!(!contains(b"anything", b""));
    }
}
