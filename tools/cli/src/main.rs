//! `svidgate`: the policy tool for svidgate users, like `opa test` / `opa eval` / `opa build`,
//! running on the same core and regorus build as `svidgate_authz.wasm`.

mod bundle;
mod replay;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use regorus::Value;
use svidgate_core::authz::testing::{PolicyDir, TestOutcome, is_test_module};
use svidgate_core::authz::decision_for_result;
use svidgate_core::config::{IdentityConfig, PolicyConfig, normalize_entrypoint};
use svidgate_core::decision::Decision;

const EXIT_STATUS: &str = "\
Exit status: 0 on success, 1 when a test fails (test) or a decision would change
(replay --fail-on-change), 2 on usage and runtime errors.";

fn main() -> ExitCode {
    // Usage errors (unknown flags or commands, missing values) exit 2 with clap's message.
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("svidgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// policy tool for the svidgate Proxy-Wasm modules (same engine and builtins as svidgate_authz.wasm)
#[derive(Debug, Parser)]
// An option given twice keeps its last value, as it did before clap.
#[command(name = "svidgate", version, args_override_self = true, after_help = EXIT_STATUS)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    Test(TestArgs),
    Eval(EvalArgs),
    /// OPA bundles: bundle build
    #[command(subcommand)]
    Bundle(BundleCommand),
    Replay(replay::ReplayArgs),
}

#[derive(Debug, Subcommand)]
enum BundleCommand {
    Build(bundle::BuildArgs),
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Some(Command::Test(args)) => test(&args),
        Some(Command::Eval(args)) => eval(&args),
        Some(Command::Bundle(BundleCommand::Build(args))) => bundle::build(&args),
        Some(Command::Replay(args)) => replay::replay(&args),
        None => {
            Cli::command().print_help()?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// run every test_* rule under DIR on the interpreter and on the module's VM, and compile every policy rule for the VM
#[derive(Debug, clap::Args)]
struct TestArgs {
    /// the policy directory: *.rego, *_test.rego and data.json files
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// print covered and missed lines per file
    #[arg(long)]
    coverage: bool,
    /// also compile every module and the data with real Go OPA, from its C library
    /// (`libopabridge.so` of PyPI's opa-golib-python-bindings), and fail on what OPA refuses
    #[arg(long, value_name = "LIB")]
    opa: Option<PathBuf>,
}

/// evaluate the entrypoint for one input; print the result and the decision the module would take
#[derive(Debug, clap::Args)]
struct EvalArgs {
    /// the policy: a directory (*.rego, data.json) or one .rego file
    #[arg(short, long, value_name = "DIR")]
    policy: PathBuf,
    /// data document (JSON) instead of the policy's data.json; - reads standard input
    #[arg(short, long, value_name = "FILE")]
    data: Option<PathBuf>,
    /// input document (JSON); - reads standard input
    #[arg(short, long, value_name = "FILE|-")]
    input: PathBuf,
    /// the rule to evaluate, as a path or data.a.b
    #[arg(short, long, value_name = "PATH", default_value = "envoy/authz/allow")]
    entrypoint: String,
    /// a request body, read as the module reads it into `parsed_body`, `truncated_body`,
    /// `attributes.request.http.body` and `size`
    #[arg(short, long, value_name = "FILE")]
    body: Option<PathBuf>,
    /// the body's content type [default: the input's content-type header]
    #[arg(long, value_name = "TYPE", requires = "body")]
    content_type: Option<String>,
}

fn test(args: &TestArgs) -> Result<ExitCode> {
    let dir = PolicyDir::load(&args.dir)?;
    // With coverage, the test rules run (once) on an engine that records it, after the same
    // compile check `run_tests` makes.
    let (outcomes, coverage) = if args.coverage {
        let mut outcomes = dir.compile_outcomes();
        let mut engine = dir.engine().map_err(anyhow::Error::msg)?;
        engine.set_enable_coverage(true);
        outcomes.extend(dir.run_tests_on(&mut engine));
        (outcomes, Some(engine.get_coverage_report()?))
    } else {
        (dir.run_tests(), None)
    };
    let mut outcomes = outcomes;
    if let Some(lib) = &args.opa {
        outcomes.insert(0, compiled_by_opa(&dir, lib)?);
    }
    let mut failed = 0;
    for outcome in &outcomes {
        let engines = match &outcome.interpreter_only {
            Some(why) => format!(" (interpreter only: {why})"),
            None => String::new(),
        };
        match &outcome.failure {
            None => println!("PASS {}{engines}", outcome.rule),
            Some(why) => {
                failed += 1;
                println!("FAIL {}{engines}: {why}", outcome.rule);
            }
        }
    }
    let interpreter_only = outcomes.iter().filter(|o| o.interpreter_only.is_some()).count();
    if interpreter_only > 0 {
        println!("{interpreter_only} test rules ran on the interpreter only; every other one on the module's VM too");
    }
    if let Some(report) = coverage {
        for file in report.files.iter().filter(|f| !is_test_module(&f.path)) {
            let total = file.covered.len() + file.not_covered.len();
            let percent = if total == 0 { 100.0 } else { file.covered.len() as f64 * 100.0 / total as f64 };
            let missed: Vec<String> = file.not_covered.iter().map(u32::to_string).collect();
            println!("coverage {}: {percent:.1}% of {total} lines; not covered: {}", file.path, missed.join(","));
        }
    }
    println!("{} passed, {failed} failed", outcomes.len() - failed);
    Ok(if failed == 0 && !outcomes.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// The outcome of compiling `dir` (every module, tests too, and the data) with Go OPA: OPA's
/// compile errors are a failure, the library not loading an error.
fn compiled_by_opa(dir: &PolicyDir, lib: &Path) -> Result<TestOutcome> {
    svidgate_opa::use_library(lib)?;
    let mut opa = svidgate_opa::Opa::new()?;
    let compiled = (|| {
        for (name, source) in &dir.modules {
            opa.add_policy(name, source)?;
        }
        opa.add_data(&dir.data)?;
        opa.compile()
    })();
    Ok(TestOutcome { rule: "go opa compiles the policy".to_owned(), failure: compiled.err().map(|e| format!("{e:#}")), interpreter_only: None })
}

fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let mut dir = load_policies(&args.policy)?;
    if let Some(data) = &args.data {
        let text = read(data)?;
        dir.data = serde_json::from_str(&text).with_context(|| format!("{} is not json", data.display()))?;
        svidgate_core::authz::numbers::check(dir.policy_modules(), [(data.to_string_lossy().as_ref(), text.as_str())])
            .map_err(anyhow::Error::msg)?;
    }
    let mut input = Value::from_json_str(&read(&args.input)?)
        .with_context(|| format!("{} is not json", args.input.display()))?;
    let entrypoint = normalize_entrypoint(&args.entrypoint);
    let evaluator = Evaluator::new(&dir, &entrypoint)?;
    if let Some(path) = &args.body {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        match with_body(input, bytes, args.content_type.as_deref()) {
            Ok(with) => input = with,
            Err(error) => {
                // As the module: a body that does not parse as its type is an input error.
                println!("input error: {error}");
                println!("decision: deny {} (svidgate_input_error)", svidgate_core::decision::BAD_REQUEST);
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    let result = evaluator.evaluate(input)?;
    println!("{}", serde_json::to_string_pretty(&to_json(&result)?)?);
    println!("{}", describe(&evaluator.decision(&result)));
    Ok(ExitCode::SUCCESS)
}

/// `input` with the body's keys, read by the module's own reader: `parsed_body`,
/// `truncated_body`, `attributes.request.http.body` and `size`, and ext_authz's
/// `x-envoy-auth-partial-body` in the header map when the input has one.
fn with_body(input: Value, bytes: Vec<u8>, content_type: Option<&str>) -> Result<Value> {
    use svidgate_core::authz::body::{RequestBody, read};
    let mut input = to_json(&input)?;
    let headers = input.pointer("/attributes/request/http/headers").cloned().unwrap_or_default();
    let header = |name: &str| headers.get(name).and_then(serde_json::Value::as_str).map(str::to_owned);
    let content_type = content_type.map(str::to_owned).or_else(|| header("content-type"));
    let pairs = [("content-type", content_type), ("content-length", header("content-length"))]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value?)));
    let identity = IdentityConfig::parse(br#"{"mode": "perimeter"}"#)?;
    let stripped = svidgate_core::identity::StrippedHeaders::strip(svidgate_core::headers::HeaderList::from_pairs(pairs), &identity);
    let received = bytes.len();
    let body = read(&stripped, &RequestBody { bytes, received, truncated: false })?;
    let object = input.as_object_mut().context("the input is not an object")?;
    object.insert("parsed_body".to_owned(), to_json(&body.parsed)?);
    object.insert("truncated_body".to_owned(), body.truncated.into());
    let mut http = object;
    for key in ["attributes", "request", "http"] {
        http = http
            .entry(key)
            .or_insert_with(|| serde_json::json!({}))
            .as_object_mut()
            .with_context(|| format!("the input's {key} is not an object"))?;
    }
    if let Some(text) = &body.text {
        http.insert("body".to_owned(), to_json(text)?);
    }
    if body.size > 0 {
        http.insert("size".to_owned(), body.size.into());
    }
    if let Some(headers) = http.get_mut("headers").and_then(serde_json::Value::as_object_mut)
        && body.buffered
    {
        headers.insert("x-envoy-auth-partial-body".to_owned(), "false".into());
    }
    Value::from_json_str(&input.to_string())
}

/// A compiled policy and how the module reads its results.
pub(crate) struct Evaluator {
    policy: svidgate_core::authz::Policy,
    identity: IdentityConfig,
}

impl Evaluator {
    pub(crate) fn new(dir: &PolicyDir, entrypoint: &str) -> Result<Self> {
        let modules = dir.policy_modules().cloned().collect();
        let config = PolicyConfig::inline(modules, dir.data.clone(), entrypoint);
        let policy = svidgate_core::authz::Policy::compile(&config)?;
        let identity = IdentityConfig::parse(br#"{"mode": "perimeter"}"#)?;
        Ok(Self { policy, identity })
    }

    pub(crate) fn evaluate(&self, input: Value) -> Result<Value> {
        Ok(self.policy.evaluate(input)?)
    }

    pub(crate) fn decision(&self, result: &Value) -> Decision {
        decision_for_result(result, &self.identity, 403)
    }
}

/// One line saying what the module would do.
pub(crate) fn describe(decision: &Decision) -> String {
    match decision {
        Decision::Allow { .. } => "decision: allow".to_owned(),
        Decision::Deny { status, reason, .. } => {
            format!("decision: deny {status} ({})", reason.code())
        }
    }
}

/// A policy directory, or a single .rego file.
pub(crate) fn load_policies(path: &Path) -> Result<PolicyDir> {
    if path.is_dir() {
        return Ok(PolicyDir::load(path)?);
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(PolicyDir::single(name, read(path)?)?)
}

pub(crate) fn to_json(value: &Value) -> Result<serde_json::Value> {
    if *value == Value::Undefined {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::to_value(value)?)
}

/// A file, or standard input for `-`.
pub(crate) fn read(path: &Path) -> Result<String> {
    if path == Path::new("-") {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
