//! Runs Rego unit tests (`test_*` rules, as `opa test` does) with the regorus build the module ships.
//!
//! Every policy rule is compiled for the module's bytecode VM, and every test rule runs on two
//! engines: regorus's interpreter, and the VM the module evaluates requests with. The VM's
//! compiler has no `with` keyword yet, so a test rule's `with input as X` and `with data.path as X`
//! (base documents) are hoisted: X is evaluated apart, the rule is compiled without its `with`
//! clauses and run once with that input and data. A rule whose `with` cannot be hoisted (a
//! mocked rule or function, two inputs in one rule) runs on the interpreter alone, and says so.
//! Where the engines disagree, the test fails: the module would decide otherwise than the test
//! claims. Both engines use the module's builtin families, so a policy using a builtin the
//! module lacks fails here instead of at load in Envoy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::unstable::{Lexer, Module, Parser, Rule, Source, TokenKind};
use regorus::{Engine, Value};

use super::{Policy, data};
use crate::config::PolicyConfig;

/// The outcome of one test rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// `data.<package>.<rule>`.
    pub rule: String,
    /// `None` when the rule evaluated to `true` (on both engines); otherwise what happened.
    pub failure: Option<String>,
    /// Why the rule ran on the interpreter alone; `None` when the module's VM ran it too.
    pub interpreter_only: Option<String>,
}

impl TestOutcome {
    fn failed(rule: String, failure: String) -> Self {
        Self { rule, failure: Some(failure), interpreter_only: None }
    }
}

/// A directory of policies that could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A number the policy writes into a string is one OPA writes otherwise (see `numbers`).
    #[error("{0}")]
    Numbers(String),
    /// A `data.json` file is not a JSON object.
    #[error("{path} is not a json object: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Rego modules and data loaded from a directory tree, OPA-style: every `*.rego` file, and each
/// `data.json` merged at the path of its directory (`dir/a/b/data.json` is `data.a.b`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PolicyDir {
    /// (path relative to the root, source), sorted by path.
    pub modules: Vec<(String, String)>,
    /// The merged base document.
    pub data: serde_json::Value,
    /// The `data.json` files merged into `data`, as read: (path relative to the root, text),
    /// sorted by path (what `svidgate bundle build` ships).
    pub data_files: Vec<(String, String)>,
}

impl PolicyDir {
    /// Loads `root` recursively.
    pub fn load(root: &Path) -> Result<Self, LoadError> {
        let mut dir = Self { modules: Vec::new(), data: serde_json::json!({}), data_files: Vec::new() };
        let mut files = Vec::new();
        walk(root, &mut files)?;
        files.sort();
        for path in files {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative.to_string_lossy().into_owned();
            let read =
                |p: &Path| std::fs::read_to_string(p).map_err(|source| LoadError::Io { path: p.to_owned(), source });
            if name.ends_with(".rego") {
                dir.modules.push((name, read(&path)?));
            } else if relative.file_name().is_some_and(|f| f == "data.json") {
                let text = read(&path)?;
                let value: serde_json::Value = serde_json::from_str(&text)
                    .map_err(|e| LoadError::Data { path: path.clone(), message: e.to_string() })?;
                let prefix: Vec<String> = relative
                    .parent()
                    .into_iter()
                    .flat_map(|p| p.components())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                let prefix: Vec<&str> = prefix.iter().map(String::as_str).collect();
                data::merge(&mut dir.data, &prefix, value)
                    .map_err(|conflict| LoadError::Data { path: path.clone(), message: conflict.to_string() })?;
                dir.data_files.push((name, text));
            }
        }
        dir.check_numbers()
    }

    /// One module without data (`svidgate eval -p file.rego`).
    pub fn single(name: String, source: String) -> Result<Self, LoadError> {
        Self { modules: vec![(name, source)], data: serde_json::json!({}), data_files: Vec::new() }.check_numbers()
    }

    /// Refuses numbers OPA would write otherwise (see [`super::numbers`]).
    fn check_numbers(self) -> Result<Self, LoadError> {
        let data = self.data_files.iter().map(|(name, text)| (name.as_str(), text.as_str()));
        super::numbers::check(self.policy_modules(), data).map_err(LoadError::Numbers)?;
        Ok(self)
    }

    /// The policy modules: every module but the tests (`*_test.rego`), in file order. They are what
    /// the module loads, what a bundle ships and what rules are compiled from.
    pub fn policy_modules(&self) -> impl Iterator<Item = &(String, String)> {
        self.modules.iter().filter(|(name, _)| !is_test_module(name))
    }

    /// The `test_*` rules of every module, as `data.<package>.<rule>`, in file order.
    pub fn test_rules(&self) -> Vec<String> {
        self.rules(|file, rule| is_test_module(file) || rule.starts_with("test_"))
            .into_iter()
            .filter(|r| r.rsplit('.').next().is_some_and(|name| name.starts_with("test_")))
            .collect()
    }

    /// The rules of the policy modules (not `*_test.rego`), as `data.<package>.<rule>`.
    pub fn policy_rules(&self) -> Vec<String> {
        self.rules(|file, _| !is_test_module(file))
    }

    /// Runs every test rule on the interpreter and on the module's VM, after compiling every
    /// policy rule for the VM: a rule the module could not run (an unknown builtin, an
    /// unsupported construct) is reported as a failure too.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        let mut outcomes = self.compile_outcomes();
        match self.engine() {
            Ok(mut engine) => outcomes.extend(self.run_tests_on(&mut engine)),
            Err(e) => outcomes.push(TestOutcome::failed("data (loading the policies)".to_owned(), e)),
        }
        outcomes
    }

    /// Compiles every policy rule for the module's VM, as [`Self::run_tests`] does first: one
    /// failed outcome (`data.<package>.<rule> (compiles for the module)`) per rule the module
    /// could not run; nothing when every rule compiles.
    pub fn compile_outcomes(&self) -> Vec<TestOutcome> {
        let policy_modules: Vec<(String, String)> = self.policy_modules().cloned().collect();
        self.policy_rules()
            .into_iter()
            .filter_map(|rule| {
                let failure = Policy::compile(&self.config(&policy_modules, &rule)).err()?;
                Some(TestOutcome::failed(format!("{rule} (compiles for the module)"), failure.to_string()))
            })
            .collect()
    }

    /// An interpreter loaded with every module and the data, for running rules (and, with
    /// regorus's `coverage` feature, collecting coverage across them).
    pub fn engine(&self) -> Result<Engine, String> {
        let mut engine = Engine::new();
        for (name, source) in &self.modules {
            engine.add_policy(name.clone(), source.clone()).map_err(|e| e.to_string())?;
        }
        let data = Value::from_json_str(&self.data.to_string()).map_err(|e| e.to_string())?;
        engine.add_data(data).map_err(|e| e.to_string())?;
        Ok(engine)
    }

    /// Runs every test rule on `engine` (an interpreter from [`Self::engine`]) and on the module's
    /// VM; a rule passes when it evaluates to `true` on both.
    pub fn run_tests_on(&self, engine: &mut Engine) -> Vec<TestOutcome> {
        let vm = VmSuite::prepare(self);
        self.test_rules()
            .into_iter()
            .map(|rule| {
                let interpreted = engine.eval_rule(rule.clone()).map_err(|e| format!("error: {e}"));
                let mut failure = match &interpreted {
                    Ok(Value::Bool(true)) => None,
                    Ok(Value::Undefined) => Some("undefined (a condition is false)".to_owned()),
                    Ok(other) => Some(format!("evaluated to {other}")),
                    Err(e) => Some(e.clone()),
                };
                let interpreter_only = match vm.run(&rule, &interpreted) {
                    Ok(disagreement) => {
                        failure = match (failure, disagreement) {
                            (Some(failure), Some(disagreement)) => Some(format!("{failure}; {disagreement}")),
                            (failure, disagreement) => failure.or(disagreement),
                        };
                        None
                    }
                    Err(NotOnVm(why)) => Some(why),
                };
                TestOutcome { rule, failure, interpreter_only }
            })
            .collect()
    }

    fn rules(&self, keep: impl Fn(&str, &str) -> bool) -> Vec<String> {
        let mut rules = Vec::new();
        for (file, source) in &self.modules {
            for rule in top_level_rules(file, source) {
                let name = rule.rsplit('.').next().unwrap_or_default();
                if keep(file, name) && !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        rules
    }

    fn config(&self, modules: &[(String, String)], entrypoint: &str) -> PolicyConfig {
        // Tests may run long: a slow CI machine must not fail them on the request-path budget.
        PolicyConfig {
            eval_timeout: Duration::from_secs(5),
            ..PolicyConfig::inline(modules.to_vec(), self.data.clone(), entrypoint)
        }
    }
}

/// Why a test rule runs on the interpreter alone.
struct NotOnVm(String);

/// The test rules prepared for the module's VM: the modules with each test rule's `with`
/// clauses hoisted into rules of their own, an interpreter over them to evaluate those, and what
/// was hoisted for each test rule (or why nothing could be).
struct VmSuite<'a> {
    dir: &'a PolicyDir,
    modules: Vec<(String, String)>,
    engine: Result<Engine, String>,
    plans: BTreeMap<String, Result<Hoisted, String>>,
}

/// One test rule's `with` clauses, each now a rule computing the value it substituted.
#[derive(Debug, Default)]
struct Hoisted {
    /// The rule computing `with input as X`.
    input: Option<String>,
    /// Base-document paths and the rules computing what `with data.<path> as X` puts there.
    data: Vec<(Vec<String>, String)>,
}

impl<'a> VmSuite<'a> {
    fn prepare(dir: &'a PolicyDir) -> Self {
        let parsed: Vec<Option<Module>> = dir.modules.iter().map(|(name, source)| parse(name, source)).collect();
        let packages: Vec<String> = parsed.iter().flatten().map(package_of).collect();
        let mut plans = BTreeMap::new();
        let modules: Vec<(String, String)> = dir
            .modules
            .iter()
            .zip(&parsed)
            .map(|((name, source), module)| {
                let source = match module {
                    Some(module) => hoist(module, source, &packages, &mut plans),
                    None => source.clone(),
                };
                (name.clone(), source)
            })
            .collect();
        let engine = PolicyDir { modules: modules.clone(), ..dir.clone() }.engine();
        Self { dir, modules, engine, plans }
    }

    /// Runs `rule` on the module's VM with its hoisted input and data, and on the interpreter
    /// the same way. `Ok(None)` when the VM agrees, `Ok(Some(why))` when it does not; `Err` when
    /// the rule cannot run on the VM, or when without its `with` clauses it no longer gives what
    /// it gave with them (`interpreted`): the clauses did more than set one input and data.
    fn run(&self, rule: &str, interpreted: &Result<Value, String>) -> Result<Option<String>, NotOnVm> {
        let hoisted = match self.plans.get(rule) {
            Some(Ok(hoisted)) => hoisted,
            Some(Err(why)) => return Err(NotOnVm(why.clone())),
            None => return Err(NotOnVm("its module does not parse".to_owned())),
        };
        let mut engine = self.engine.clone().map_err(NotOnVm)?;
        let mut value_of = |rule: &str| match engine.eval_rule(rule.to_owned()) {
            Ok(Value::Undefined) => Err(NotOnVm("the value of its `with` is undefined outside the rule".to_owned())),
            Ok(value) => Ok(value),
            Err(e) => Err(NotOnVm(format!("the value of its `with` cannot be computed outside the rule: {e}"))),
        };
        let input = hoisted.input.as_deref().map(&mut value_of).transpose()?.unwrap_or(Value::Undefined);
        let mut data = self.dir.data.clone();
        for (path, value_rule) in &hoisted.data {
            let value = serde_json::to_value(value_of(value_rule)?).map_err(|e| NotOnVm(e.to_string()))?;
            replace_at(&mut data, path, value).ok_or_else(|| {
                NotOnVm(format!("`with data.{}` replaces a value that is not in an object", path.join(".")))
            })?;
        }
        let data_value = Value::from_json_str(&data.to_string()).map_err(|e| NotOnVm(e.to_string()))?;
        engine.clear_data();
        engine.add_data(data_value).map_err(|e| NotOnVm(e.to_string()))?;
        engine.set_input(input.clone());
        let hoisted_result = engine.eval_rule(rule.to_owned()).map_err(|e| format!("error: {e}"));
        if !same(&hoisted_result, interpreted) {
            return Err(NotOnVm("without its `with` clauses the rule gives another result".to_owned()));
        }
        let config = PolicyConfig { data, ..self.dir.config(&self.modules, rule) };
        let policy =
            Policy::compile(&config).map_err(|e| NotOnVm(format!("the module's VM cannot compile it: {e}")))?;
        let on_vm = policy.evaluate(input).map_err(|e| format!("error: {e}"));
        Ok((!same(&on_vm, &hoisted_result)).then(|| match on_vm {
            Ok(value) => format!("the engines disagree: the module's VM gives {value}"),
            Err(e) => format!("the engines disagree: the module's VM fails with {e}"),
        }))
    }
}

/// Whether two evaluations came to the same: equal values, or both an error.
fn same(a: &Result<Value, String>, b: &Result<Value, String>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(_), Err(_)) => true,
        _ => false,
    }
}

/// A module as the engine parses it (Rego v1, regorus's default), or `None` if it does not parse.
fn parse(name: &str, source: &str) -> Option<Module> {
    let source = Source::from_contents(name.to_owned(), source.to_owned()).ok()?;
    let mut parser = Parser::new(&source).ok()?;
    parser.enable_rego_v1().ok()?;
    parser.parse().ok()
}

/// A module's package, without `data.`.
fn package_of(module: &Module) -> String {
    let package = module.package.refr.span().text();
    package.strip_prefix("data.").unwrap_or(package).to_owned()
}

/// The module's source with every test rule's `with` clauses removed where they can be hoisted,
/// and the hoisting rules appended; records each test rule's plan in `plans`.
fn hoist(
    module: &Module,
    source: &str,
    packages: &[String],
    plans: &mut BTreeMap<String, Result<Hoisted, String>>,
) -> String {
    let package = package_of(module);
    let mut removals = Vec::new();
    let mut appended = String::new();
    for rule in &module.policy {
        let Rule::Spec { span, bodies, .. } = rule.as_ref() else { continue };
        let text = span.text();
        let name = &text[..text.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(text.len())];
        if !name.starts_with("test_") {
            continue;
        }
        let path = format!("data.{package}.{name}");
        let plan = if plans.contains_key(&path) {
            Err("it is defined more than once".to_owned())
        } else {
            plan(name, &package, source, bodies, packages, &mut removals, &mut appended)
        };
        plans.insert(path, plan);
    }
    removals.sort_unstable();
    let mut rewritten = String::with_capacity(source.len() + appended.len());
    let mut at = 0;
    for (start, end) in removals {
        rewritten.push_str(source.get(at..start).unwrap_or_default());
        at = end;
    }
    rewritten.push_str(source.get(at..).unwrap_or_default());
    rewritten.push('\n');
    rewritten.push_str(&appended);
    rewritten
}

/// Hoists the `with` clauses of test rule `name`: each substituted value becomes a rule of its
/// own (after the statements that precede the first `with`, which may bind what it uses).
fn plan(
    name: &str,
    package: &str,
    source: &str,
    bodies: &[regorus::unstable::RuleBody],
    packages: &[String],
    removals: &mut Vec<(usize, usize)>,
    appended: &mut String,
) -> Result<Hoisted, String> {
    let clauses: Vec<(usize, &regorus::unstable::WithModifier)> = bodies
        .iter()
        .flat_map(|body| body.query.stmts.iter().enumerate())
        .flat_map(|(i, stmt)| stmt.with_mods.iter().map(move |clause| (i, clause)))
        .collect();
    let Some(&(first, _)) = clauses.first() else { return Ok(Hoisted::default()) };
    let [body] = bodies else { return Err("it uses `with` in a rule of several bodies".to_owned()) };
    let mut values: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, clause) in &clauses {
        let value = source.get(span_range(source, clause.r#as.span())).unwrap_or_default();
        let target = clause.refr.span().text().trim();
        if values.insert(target, value).is_some_and(|previous| previous != value) {
            return Err(format!("`with {target}` takes several values in one rule"));
        }
    }
    // The statements before the first `with`, as written (separators included).
    let stmts = &body.query.stmts;
    let preceding = match (stmts.first(), stmts.get(first)) {
        (Some(start), Some(end)) => source.get(start.span.start as usize..end.span.start as usize).unwrap_or_default(),
        _ => "",
    };
    let mut hoisted = Hoisted::default();
    let mut definitions = String::new();
    for (k, (target, value)) in values.iter().enumerate() {
        let rule = format!("__svidgate_with_{name}_{k}");
        let path = format!("data.{package}.{rule}");
        if *target == "input" {
            hoisted.input = Some(path);
        } else if let Some(data_path) = target.strip_prefix("data.")
            && data_path.split('.').all(|key| !key.is_empty() && key.chars().all(|c| c.is_alphanumeric() || c == '_'))
        {
            let under_a_package = packages.iter().any(|p| {
                data_path == p || data_path.starts_with(&format!("{p}.")) || p.starts_with(&format!("{data_path}."))
            });
            if under_a_package {
                return Err(format!("`with {target}` replaces a rule"));
            }
            hoisted.data.push((data_path.split('.').map(str::to_owned).collect(), path));
        } else {
            return Err(format!("`with {target}` replaces a function or a computed path"));
        }
        definitions.push_str(&format!("{rule} := __svidgate_value if {{\n{preceding}\n__svidgate_value := {value}\n}}\n"));
    }
    appended.push_str(&definitions);
    removals.extend(clauses.iter().map(|(_, clause)| {
        let range = span_range(source, &clause.span);
        (range.start, range.end)
    }));
    Ok(hoisted)
}

/// The bytes of `span` in `source`, quotes included: regorus's span of a string literal covers
/// its contents only, and so does the end of a span whose last token is one.
fn span_range(source: &str, span: &regorus::unstable::Span) -> std::ops::Range<usize> {
    let (start, end) = (span.start as usize, span.end as usize);
    let quote_at = |i: usize| source.as_bytes().get(i).copied().filter(|b| *b == b'"' || *b == b'`');
    let start = match (start.checked_sub(1).and_then(quote_at), quote_at(end)) {
        (Some(open), Some(close)) if open == close => start - 1,
        _ => start,
    };
    let end = if quote_at(end).is_some() { end + 1 } else { end };
    start..end
}

/// Replaces the value at `path` in `data` (creating objects on the way); `None` if a value on
/// the way is not an object.
fn replace_at(data: &mut serde_json::Value, path: &[String], value: serde_json::Value) -> Option<()> {
    let (last, parents) = path.split_last()?;
    let mut at = data;
    for key in parents {
        at = at.as_object_mut()?.entry(key.clone()).or_insert_with(|| serde_json::json!({}));
    }
    at.as_object_mut()?.insert(last.clone(), value);
    Some(())
}

/// Whether a module (a path relative to the policy directory) holds tests: `*_test.rego`, as
/// `opa test` and `opa build` tell them apart.
pub fn is_test_module(name: &str) -> bool {
    name.ends_with("_test.rego")
}

/// Finds `package a.b` and the rules defined at the start of a line (functions excluded).
fn top_level_rules(name: &str, source: &str) -> Vec<String> {
    let Ok(source) = Source::from_contents(name.to_owned(), source.to_owned()) else {
        return Vec::new();
    };
    let mut lexer = Lexer::new(&source);
    let mut tokens = Vec::new();
    while let Ok(token) = lexer.next_token() {
        if token.0 == TokenKind::Eof {
            break;
        }
        tokens.push((token.0.clone(), token.1.text().to_owned(), token.1.col));
    }
    let mut package = String::new();
    let mut rules = Vec::new();
    let mut i = 0;
    while let Some((kind, text, col)) = tokens.get(i) {
        i += 1;
        if *kind != TokenKind::Ident || *col != 1 {
            continue;
        }
        match text.as_str() {
            "package" => {
                package.clear();
                // `a`, then `.b` pairs.
                while let Some((TokenKind::Ident, part, _)) = tokens.get(i) {
                    package.push_str(part);
                    i += 1;
                    match (tokens.get(i), tokens.get(i + 1)) {
                        (Some((TokenKind::Symbol, dot, _)), Some((TokenKind::Ident, _, c)))
                            if dot == "." && *c != 1 =>
                        {
                            package.push('.');
                            i += 1;
                        }
                        _ => break,
                    }
                }
            }
            "import" => {}
            _ => {
                let rule = if text == "default" {
                    let Some((TokenKind::Ident, rule, _)) = tokens.get(i) else {
                        continue;
                    };
                    rule
                } else {
                    text
                };
                let is_function = matches!(tokens.get(i), Some((TokenKind::Symbol, open, _)) if open == "(");
                let path = format!("data.{package}.{rule}");
                if !is_function && !rules.contains(&path) {
                    rules.push(path);
                }
            }
        }
    }
    rules
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|source| LoadError::Io { path: dir.to_owned(), source })?;
    for entry in entries {
        let path = entry.map_err(|source| LoadError::Io { path: dir.to_owned(), source })?.path();
        if path.is_dir() {
            walk(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}
