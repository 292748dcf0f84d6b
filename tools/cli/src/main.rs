//! `svidgate`: the policy tool for svidgate users, like `opa test` / `opa eval` / `opa build`,
//! running on the same core and regorus build as `svidgate_authz.wasm`.

mod bundle;
mod replay;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use regorus::Value;
use svidgate_core::authz::testing::{PolicyDir, is_test_module};
use svidgate_core::authz::decision_for_result;
use svidgate_core::config::{DEFAULT_ENTRYPOINT, IdentityConfig, PolicyConfig, normalize_entrypoint};
use svidgate_core::decision::Decision;

const USAGE: &str = "\
svidgate: policy tool for the svidgate Proxy-Wasm modules (same engine and builtins as svidgate_authz.wasm)

Usage:
  svidgate test DIR [--coverage]
      run every test_* rule under DIR (*.rego, *_test.rego, data.json) on regorus's interpreter
      and on the module's VM (a rule fails where they disagree), and compile every policy rule
      for the module's VM; --coverage prints covered and missed lines per file
  svidgate eval --policy DIR [--data FILE] --input FILE|- [--entrypoint PATH]
      evaluate the entrypoint (default envoy/authz/allow) for one input and print the result and
      the decision the module would take
  svidgate bundle build DIR -o BUNDLE.tar.gz [--revision REV] [--root ROOT]...
      write an OPA bundle: .manifest, policy modules (tests left out) and data.json files
  svidgate replay LOG.jsonl --policy DIR [--fail-on-change]
      re-evaluate recorded OPA decision logs against DIR and print every decision that would change
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("svidgate: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &[String]) -> Result<ExitCode> {
    match args.first().map(String::as_str) {
        Some("test") => test(&Args::parse(args.get(1..).unwrap_or_default(), &["--coverage"])?),
        Some("eval") => eval(&Args::parse(args.get(1..).unwrap_or_default(), &[])?),
        Some("bundle") if args.get(1).map(String::as_str) == Some("build") => {
            bundle::build(&Args::parse(args.get(2..).unwrap_or_default(), &[])?)
        }
        Some("replay") => replay::replay(&Args::parse(args.get(1..).unwrap_or_default(), &["--fail-on-change"])?),
        Some("help" | "--help" | "-h") | None => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => bail!("unknown command {other:?}\n\n{USAGE}"),
    }
}

/// Positional arguments, `--flag value` options (repeatable) and boolean switches.
#[derive(Debug, Default)]
pub(crate) struct Args {
    positional: Vec<String>,
    options: Vec<(String, String)>,
    switches: Vec<String>,
}

impl Args {
    fn parse(args: &[String], switches: &[&str]) -> Result<Self> {
        let mut parsed = Self::default();
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            if switches.contains(&arg.as_str()) {
                parsed.switches.push(arg.clone());
            } else if arg.starts_with('-') && arg != "-" {
                let value = rest.next().with_context(|| format!("{arg} needs a value"))?;
                parsed.options.push((arg.clone(), value.clone()));
            } else {
                parsed.positional.push(arg.clone());
            }
        }
        Ok(parsed)
    }

    pub(crate) fn positional(&self, index: usize, what: &str) -> Result<&str> {
        self.positional.get(index).map(String::as_str).with_context(|| format!("missing {what}\n\n{USAGE}"))
    }

    pub(crate) fn option(&self, names: &[&str]) -> Option<&str> {
        self.options.iter().rev().find(|(n, _)| names.contains(&n.as_str())).map(|(_, v)| v.as_str())
    }

    pub(crate) fn options(&self, name: &str) -> Vec<&str> {
        self.options.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    }

    pub(crate) fn switch(&self, name: &str) -> bool {
        self.switches.iter().any(|s| s == name)
    }
}

fn test(args: &Args) -> Result<ExitCode> {
    let dir = PolicyDir::load(Path::new(args.positional(0, "DIR")?))?;
    // With coverage, the test rules run (once) on an engine that records it, after the same
    // compile check `run_tests` makes.
    let (outcomes, coverage) = if args.switch("--coverage") {
        let mut outcomes = dir.compile_outcomes();
        let mut engine = dir.engine().map_err(anyhow::Error::msg)?;
        engine.set_enable_coverage(true);
        outcomes.extend(dir.run_tests_on(&mut engine));
        (outcomes, Some(engine.get_coverage_report()?))
    } else {
        (dir.run_tests(), None)
    };
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

fn eval(args: &Args) -> Result<ExitCode> {
    let policy = args.option(&["--policy", "-p"]).context("--policy DIR is required")?;
    let mut dir = load_policies(Path::new(policy))?;
    if let Some(data) = args.option(&["--data", "-d"]) {
        dir.data = serde_json::from_str(&read(data)?).with_context(|| format!("{data} is not json"))?;
    }
    let input = args.option(&["--input", "-i"]).context("--input FILE|- is required")?;
    let input = Value::from_json_str(&read(input)?).with_context(|| format!("{input} is not json"))?;
    let entrypoint = normalize_entrypoint(args.option(&["--entrypoint", "-e"]).unwrap_or(DEFAULT_ENTRYPOINT));
    let evaluator = Evaluator::new(&dir, &entrypoint)?;
    let result = evaluator.evaluate(input)?;
    println!("{}", serde_json::to_string_pretty(&to_json(&result)?)?);
    println!("{}", describe(&evaluator.decision(&result)));
    Ok(ExitCode::SUCCESS)
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
    Ok(PolicyDir {
        modules: vec![(name, read(&path.to_string_lossy())?)],
        data: serde_json::json!({}),
        data_files: Vec::new(),
    })
}

pub(crate) fn to_json(value: &Value) -> Result<serde_json::Value> {
    if *value == Value::Undefined {
        return Ok(serde_json::Value::Null);
    }
    Ok(serde_json::to_value(value)?)
}

/// A file, or standard input for `-`.
pub(crate) fn read(path: &str) -> Result<String> {
    if path == "-" {
        return Ok(std::io::read_to_string(std::io::stdin())?);
    }
    std::fs::read_to_string(PathBuf::from(path)).with_context(|| format!("cannot read {path}"))
}
