//! Runs Rego unit tests (`test_*` rules, as `opa test` does) with the regorus build the module ships.
//!
//! Test rules run on regorus's interpreter, which supports `with`; every policy rule is also
//! compiled for the module's bytecode VM. Both use the module's builtin families, so a policy
//! using a builtin the module lacks fails here instead of at load in Envoy.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::unstable::{Lexer, Source, TokenKind};
use regorus::{Engine, Value};

use super::Policy;
use crate::config::PolicyConfig;

/// The outcome of one test rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestOutcome {
    /// `data.<package>.<rule>`.
    pub rule: String,
    /// `None` when the rule evaluated to `true`; otherwise what happened.
    pub failure: Option<String>,
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
                merge_at(&mut dir.data, &prefix, value)
                    .map_err(|message| LoadError::Data { path: path.clone(), message })?;
                dir.data_files.push((name, text));
            }
        }
        Ok(dir)
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

    /// Runs every test rule on regorus's interpreter (the VM's compiler does not support `with`
    /// yet), after compiling every policy rule for the module's VM: a rule the module could not
    /// run (an unknown builtin, an unsupported construct) is reported as a failure too.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        let mut outcomes = self.compile_outcomes();
        match self.engine() {
            Ok(mut engine) => outcomes.extend(self.run_tests_on(&mut engine)),
            Err(e) => outcomes.push(TestOutcome { rule: "data (loading the policies)".to_owned(), failure: Some(e) }),
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
                Some(TestOutcome {
                    rule: format!("{rule} (compiles for the module)"),
                    failure: Some(failure.to_string()),
                })
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

    /// Runs every test rule on `engine`; a rule passes when it evaluates to `true`.
    pub fn run_tests_on(&self, engine: &mut Engine) -> Vec<TestOutcome> {
        self.test_rules()
            .into_iter()
            .map(|rule| {
                let failure = match engine.eval_rule(rule.clone()) {
                    Ok(Value::Bool(true)) => None,
                    Ok(Value::Undefined) => Some("undefined (a condition is false)".to_owned()),
                    Ok(other) => Some(format!("evaluated to {other}")),
                    Err(e) => Some(format!("error: {e}")),
                };
                TestOutcome { rule, failure }
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

fn merge_at(data: &mut serde_json::Value, prefix: &[String], value: serde_json::Value) -> Result<(), String> {
    let mut target = data;
    for key in prefix {
        let object = target.as_object_mut().ok_or("conflicts with data at a parent path")?;
        target = object.entry(key.clone()).or_insert_with(|| serde_json::json!({}));
    }
    let (Some(target), serde_json::Value::Object(value)) = (target.as_object_mut(), value) else {
        return Err("must be an object merged into an object".to_owned());
    };
    for (k, v) in value {
        target.insert(k, v);
    }
    Ok(())
}
