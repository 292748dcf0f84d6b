//! Runs Rego unit tests (`test_*` rules, as `opa test` does) on the engine the module ships.
//!
//! Each test rule is compiled to RVM bytecode and evaluated like a request decision, so a test
//! that uses a builtin the module lacks fails here instead of in production.

use std::path::{Path, PathBuf};
use std::time::Duration;

use regorus::Value;
use regorus::unstable::{Lexer, Source, TokenKind};

use super::{DEFAULT_MAX_INSTRUCTIONS, Policy, PolicyConfig};

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
}

impl PolicyDir {
    /// Loads `root` recursively.
    pub fn load(root: &Path) -> Result<Self, LoadError> {
        let mut dir = Self { modules: Vec::new(), data: serde_json::json!({}) };
        let mut files = Vec::new();
        walk(root, &mut files)?;
        files.sort();
        for path in files {
            let relative = path.strip_prefix(root).unwrap_or(&path);
            let name = relative.to_string_lossy().into_owned();
            let read = |p: &Path| std::fs::read_to_string(p).map_err(|source| LoadError::Io { path: p.to_owned(), source });
            if name.ends_with(".rego") {
                dir.modules.push((name, read(&path)?));
            } else if relative.file_name().is_some_and(|f| f == "data.json") {
                let value: serde_json::Value = serde_json::from_str(&read(&path)?)
                    .map_err(|e| LoadError::Data { path: path.clone(), message: e.to_string() })?;
                let prefix: Vec<String> = relative
                    .parent()
                    .into_iter()
                    .flat_map(|p| p.components())
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                merge_at(&mut dir.data, &prefix, value)
                    .map_err(|message| LoadError::Data { path: path.clone(), message })?;
            }
        }
        Ok(dir)
    }

    /// The `test_*` rules of every module, as `data.<package>.<rule>`, in file order.
    pub fn test_rules(&self) -> Vec<String> {
        let mut rules = Vec::new();
        for (name, source) in &self.modules {
            for rule in test_rules(name, source) {
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        rules
    }

    /// Runs every test rule; a rule passes when it evaluates to `true`.
    pub fn run_tests(&self) -> Vec<TestOutcome> {
        self.test_rules().into_iter().map(|rule| self.run_test(rule)).collect()
    }

    fn run_test(&self, rule: String) -> TestOutcome {
        let config = PolicyConfig {
            modules: self.modules.clone(),
            data: self.data.clone(),
            entrypoint: rule.clone(),
            error_status: 403,
            eval_timeout: Duration::from_secs(5),
            max_instructions: DEFAULT_MAX_INSTRUCTIONS,
        };
        let failure = match Policy::compile(&config) {
            Err(e) => Some(e.to_string()),
            Ok(policy) => match policy.evaluate(Value::new_object()) {
                Ok(Value::Bool(true)) => None,
                Ok(Value::Undefined) => Some("undefined (a condition is false)".to_owned()),
                Ok(other) => Some(format!("evaluated to {other}")),
                Err(e) => Some(format!("error: {e}")),
            },
        };
        TestOutcome { rule, failure }
    }
}

/// Finds `package a.b` and the rules at the start of a line whose name starts with `test_`.
fn test_rules(name: &str, source: &str) -> Vec<String> {
    let Ok(source) = Source::from_contents(name.to_owned(), source.to_owned()) else { return Vec::new() };
    let mut lexer = Lexer::new(&source);
    let mut package = String::new();
    let mut rules = Vec::new();
    let mut in_package = false;
    while let Ok(token) = lexer.next_token() {
        let text = token.1.text();
        match token.0 {
            TokenKind::Eof => break,
            TokenKind::Ident if text == "package" && token.1.col == 1 => in_package = true,
            TokenKind::Ident if in_package => package.push_str(text),
            TokenKind::Symbol if in_package && text == "." => package.push('.'),
            _ if in_package => in_package = false,
            _ => {}
        }
        if !in_package && token.0 == TokenKind::Ident && token.1.col == 1 && text.starts_with("test_") {
            rules.push(format!("data.{package}.{text}"));
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
