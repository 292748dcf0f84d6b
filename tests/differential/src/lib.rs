//! svidgate's Rego engine against real Go OPA.
//!
//! The corpus (`corpus/`, see its README) holds policies in the shapes public OPA-Envoy policies
//! use, each with inputs, and probe policies per builtin family and language feature. Each
//! directory is loaded into a fresh Go OPA engine ([`opa`]) and compiled as svidgate's authz
//! module compiles its policy (the configuration parsed by the core, the RVM program built by
//! `Policy::compile`), every input evaluated on both, and the results compared: values (numbers
//! numerically) and, for Envoy policies, the decision each side's Envoy plugin takes ([`envoy`]).
//! `divergences.yaml` lists every accepted difference with its reason; the test fails on any
//! difference not listed and on any listed one that no longer occurs.

pub mod envoy;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use serde_json::Value as Json;
use svidgate_core::authz::Policy;
use svidgate_core::config::{Config, ModuleKind};

pub use svidgate_opa::{Opa, Outcome};

/// `cases.yaml` of one corpus directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cases {
    /// The public policy (or the question) this directory's shape comes from.
    pub source: String,
    /// An Envoy policy: the plugin's `path`, slash-separated under `data`.
    pub entrypoint: Option<String>,
    /// A probe: the package whose `rules` are compared one by one.
    pub package: Option<String>,
    /// The probe rules.
    #[serde(default)]
    pub rules: Vec<String>,
    /// The inputs; a probe without inputs is evaluated once with `{}`.
    #[serde(default)]
    pub inputs: Vec<NamedInput>,
}

/// One input of a corpus directory.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedInput {
    /// Unique within the directory.
    pub name: String,
    /// The whole input document.
    pub input: Json,
}

/// One corpus directory: its modules, data and cases.
#[derive(Debug)]
pub struct Entry {
    /// `envoy/<kind>` or `probes/<family>`.
    pub id: String,
    /// (file name, source), sorted by name.
    pub modules: Vec<(String, String)>,
    /// `data.json`, or `{}`.
    pub data: Json,
    /// `cases.yaml`.
    pub cases: Cases,
}

impl Entry {
    /// Whether its results are read as OPA's Envoy plugin reads them.
    pub fn is_envoy(&self) -> bool {
        self.cases.entrypoint.is_some()
    }

    /// (entrypoint, label) pairs: the Envoy path once, or each probe rule.
    pub fn entrypoints(&self) -> Vec<(String, String)> {
        match (&self.cases.entrypoint, &self.cases.package) {
            (Some(entrypoint), _) => vec![(entrypoint.clone(), String::new())],
            (None, Some(package)) => self.cases.rules.iter().map(|rule| (format!("{package}/{rule}"), rule.clone())).collect(),
            (None, None) => Vec::new(),
        }
    }

    /// The inputs, or the one empty input of a probe without any.
    pub fn inputs(&self) -> Vec<(String, Json)> {
        if self.cases.inputs.is_empty() {
            return vec![(String::new(), Json::Object(serde_json::Map::new()))];
        }
        self.cases.inputs.iter().map(|i| (i.name.clone(), i.input.clone())).collect()
    }
}

/// The corpus directory of this crate.
pub fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus")
}

/// Every directory under `corpus/envoy` and `corpus/probes`, sorted.
pub fn load_corpus(root: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for group in ["envoy", "probes"] {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join(group))
            .with_context(|| format!("{}", root.join(group).display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<std::io::Result<_>>()?;
        dirs.retain(|dir| dir.is_dir());
        dirs.sort();
        for dir in dirs {
            let name = dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            entries.push(load_entry(&format!("{group}/{name}"), &dir).with_context(|| dir.display().to_string())?);
        }
    }
    Ok(entries)
}

fn load_entry(id: &str, dir: &Path) -> Result<Entry> {
    let mut modules = Vec::new();
    for file in std::fs::read_dir(dir)? {
        let path = file?.path();
        if path.extension().is_some_and(|e| e == "rego") {
            let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            modules.push((name, std::fs::read_to_string(&path)?));
        }
    }
    modules.sort();
    let data = match std::fs::read_to_string(dir.join("data.json")) {
        Ok(text) => serde_json::from_str(&text).context("data.json")?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Json::Object(serde_json::Map::new()),
        Err(e) => return Err(e.into()),
    };
    let cases: Cases = serde_yaml::from_str(&std::fs::read_to_string(dir.join("cases.yaml"))?).context("cases.yaml")?;
    if modules.is_empty() {
        bail!("no .rego files");
    }
    if cases.entrypoint.is_some() == cases.package.is_some() {
        bail!("cases.yaml needs either `entrypoint` (an Envoy policy) or `package` and `rules` (a probe)");
    }
    Ok(Entry { id: id.to_owned(), modules, data, cases })
}

/// Go OPA with the entry's modules and data, or why OPA refuses them.
pub fn opa_engine(entry: &Entry) -> Result<Opa> {
    let mut opa = Opa::new()?;
    for (name, source) in &entry.modules {
        opa.add_policy(name, source).with_context(|| format!("OPA refuses {name}"))?;
    }
    opa.add_data(&entry.data)?;
    opa.compile()?;
    Ok(opa)
}

/// The entry compiled for `entrypoint` exactly as the authz module compiles its configured
/// policy: the plugin configuration parsed by the core, then `Policy::compile` (RVM bytecode).
pub fn svidgate_policy(entry: &Entry, entrypoint: &str) -> Result<Policy, String> {
    let rego: serde_json::Map<String, Json> =
        entry.modules.iter().map(|(name, source)| (name.clone(), Json::String(source.clone()))).collect();
    let config = serde_json::json!({
        "trust_domains": ["ai.internal"],
        "policy": {"rego": rego, "data": entry.data, "entrypoint": entrypoint},
    });
    let config = Config::parse(ModuleKind::Authz, config.to_string().as_bytes()).map_err(|e| e.to_string())?;
    let settings = config.policy.ok_or("no policy in the authz configuration")?;
    Policy::compile(&settings).map_err(|e| e.to_string())
}

/// Evaluates `input` on a compiled policy, as an [`Outcome`].
pub fn svidgate_eval(policy: &Policy, input: &Json) -> Outcome {
    let input = match regorus::Value::from_json_str(&input.to_string()) {
        Ok(input) => input,
        Err(e) => return Outcome::Error(e.to_string()),
    };
    match policy.evaluate(input) {
        Ok(regorus::Value::Undefined) => Outcome::Undefined,
        Ok(value) => match value.to_json_str().map(|text| serde_json::from_str(&text)) {
            Ok(Ok(json)) => Outcome::Value(json),
            Ok(Err(e)) => Outcome::Error(format!("result is not JSON: {e}")),
            Err(e) => Outcome::Error(format!("result is not JSON: {e}")),
        },
        Err(error) => Outcome::Error(error.to_string()),
    }
}

/// Whether svidgate's outcome agrees with OPA's: values equal with numbers compared
/// numerically, both undefined, or both errors (whatever the words). A builtin error in OPA
/// agrees with svidgate's undefined: the reference library evaluates with strict builtin errors,
/// OPA's default and the Envoy plugin's leave the failing call undefined, as svidgate does.
pub fn same_outcome(opa: &Outcome, ours: &Outcome) -> bool {
    match (opa, ours) {
        (Outcome::Value(a), Outcome::Value(b)) => same_json(a, b),
        (Outcome::Undefined, Outcome::Undefined) | (Outcome::Error(_), Outcome::Error(_)) => true,
        (error @ Outcome::Error(_), Outcome::Undefined) => error.is_builtin_error(),
        _ => false,
    }
}

/// JSON equality with numbers compared by value (`1` and `1.0`, `1e3` and `1000`).
pub fn same_json(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(a), Json::Number(b)) => {
            a == b || a.as_f64().zip(b.as_f64()).is_some_and(|(a, b)| a == b || (a - b).abs() <= f64::EPSILON * a.abs())
        }
        (Json::Array(a), Json::Array(b)) => a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same_json(a, b)),
        (Json::Object(a), Json::Object(b)) => {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// One difference between svidgate and OPA, named as `divergences.yaml` names it.
#[derive(Clone, Debug, PartialEq)]
pub struct Divergence {
    /// `<entry>` (refused at load), `<entry>:<input>` or `<entry>:<rule>[@<input>]`.
    pub id: String,
    /// svidgate lets through what OPA refuses (Envoy entries); `None` where the run cannot
    /// tell (probes, and OPA's strict builtin errors): `divergences.yaml` says, by hand.
    pub permissive: Option<bool>,
    /// What each side gave.
    pub detail: String,
}

/// Everything one run found.
#[derive(Debug, Default)]
pub struct Run {
    /// Every difference.
    pub divergences: Vec<Divergence>,
    /// Envoy entries: (entry, loads in svidgate, inputs, inputs decided as OPA decides).
    pub envoy: Vec<(String, bool, usize, usize)>,
    /// Probe rules evaluated (rule × input).
    pub probe_evaluations: usize,
    /// Inputs evaluated on Envoy entries.
    pub envoy_evaluations: usize,
}

/// Runs every entry on both engines. An entry OPA refuses is an error of the corpus.
pub fn run(entries: &[Entry]) -> Result<Run> {
    let mut run = Run::default();
    for entry in entries {
        let opa = match opa_engine(entry) {
            Ok(opa) => opa,
            // A probe of what OPA refuses at compile time: svidgate must refuse it too.
            Err(refusal) if !entry.is_envoy() => {
                for (entrypoint, rule) in entry.entrypoints() {
                    if svidgate_policy(entry, &entrypoint).is_ok() {
                        let id = format!("{}:{rule}", entry.id);
                        let detail = format!("svidgate compiles what OPA refuses: {refusal:#}");
                        run.divergences.push(Divergence { id, permissive: None, detail });
                    }
                    run.probe_evaluations += 1;
                }
                continue;
            }
            Err(refusal) => return Err(refusal.context(format!("{}: every Envoy policy of the corpus must load in OPA", entry.id))),
        };
        let mut refused_at_load = None;
        let mut agreed = 0;
        let inputs = entry.inputs();
        for (entrypoint, rule) in entry.entrypoints() {
            let policy = match svidgate_policy(entry, &entrypoint) {
                Ok(policy) => Some(policy),
                Err(error) if entry.is_envoy() => {
                    refused_at_load = Some(error);
                    None
                }
                Err(error) => {
                    let id = format!("{}:{rule}", entry.id);
                    run.divergences.push(Divergence { id, permissive: None, detail: format!("svidgate refuses it: {error}") });
                    continue;
                }
            };
            for (name, input) in &inputs {
                let theirs = opa.eval(&entrypoint, input)?;
                let Some(policy) = &policy else { continue };
                let ours = svidgate_eval(policy, input);
                let id = match (entry.is_envoy(), name.is_empty()) {
                    (true, _) => format!("{}:{name}", entry.id),
                    (false, true) => format!("{}:{rule}", entry.id),
                    (false, false) => format!("{}:{rule}@{name}", entry.id),
                };
                if entry.is_envoy() {
                    run.envoy_evaluations += 1;
                    let (opa_decision, our_decision) = (envoy::opa_decision(&theirs), envoy::svidgate_decision(&ours));
                    let values_agree = same_outcome(&theirs, &ours);
                    if values_agree && opa_decision == our_decision {
                        agreed += 1;
                        continue;
                    }
                    // The reference library evaluates with strict builtin errors (a fixed setting
                    // of the bridge); OPA's Envoy plugin does not, and there the failing call is
                    // only undefined. Which way OPA-Envoy decides is then unknown here: such
                    // divergences are listed, with the reasoning, by hand.
                    let permissive =
                        (!theirs.is_builtin_error()).then(|| our_decision.more_permissive_than(&opa_decision));
                    let detail = format!(
                        "OPA {theirs:?} -> {opa_decision:?}; svidgate {ours:?} -> {our_decision:?}"
                    );
                    run.divergences.push(Divergence { id, permissive, detail });
                } else {
                    run.probe_evaluations += 1;
                    if !same_outcome(&theirs, &ours) {
                        let detail = format!("OPA {theirs:?}; svidgate {ours:?}");
                        run.divergences.push(Divergence { id, permissive: None, detail });
                    }
                }
            }
        }
        if entry.is_envoy() {
            if let Some(error) = &refused_at_load {
                let detail = format!("svidgate refuses it at load: {error}");
                run.divergences.push(Divergence { id: entry.id.clone(), permissive: Some(false), detail });
            }
            run.envoy.push((entry.id.clone(), refused_at_load.is_none(), inputs.len(), agreed));
        }
    }
    Ok(run)
}

/// The module flavor whose engine this build tests: `lean` (svidgate_authz.wasm) or `full`
/// (svidgate_authz_full.wasm, feature `full`).
pub const FLAVOR: &str = if cfg!(feature = "full") { "full" } else { "lean" };

/// One accepted divergence in `divergences.yaml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// As [`Divergence::id`].
    pub id: String,
    /// Why it is accepted, and what would fix it.
    pub reason: String,
    /// It lets through what OPA denies: a security bug still open.
    #[serde(default)]
    pub permissive: bool,
    /// Only in this flavor (`lean` or `full`); in both when absent.
    #[serde(default)]
    pub flavor: Option<String>,
}

/// The accepted divergences of this build's flavor, by id.
pub fn accepted() -> Result<BTreeMap<String, Accepted>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("divergences.yaml");
    let list: Vec<Accepted> = serde_yaml::from_str(&std::fs::read_to_string(&path)?).context("divergences.yaml")?;
    let mut by_id = BTreeMap::new();
    for accepted in list.into_iter().filter(|a| a.flavor.as_deref().is_none_or(|flavor| flavor == FLAVOR)) {
        let id = accepted.id.clone();
        if by_id.insert(id.clone(), accepted).is_some() {
            bail!("divergences.yaml lists {id} twice");
        }
    }
    Ok(by_id)
}
