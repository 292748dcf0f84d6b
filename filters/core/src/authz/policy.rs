//! Compiling a Rego policy to RVM bytecode once, and evaluating it per request; a policy the VM
//! compiler cannot compile (partial object rules with constant keys, `with`, ...) runs on
//! regorus's interpreter instead, in the same module, with the reason kept for logs and metrics.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::rc::Rc;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::vm::VmError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, LimitError, Value};

use super::bundle::{Bundle, BundleError};
use super::cache::DecisionCache;
use super::{InputPlan, Interpreted};
use crate::config::PolicyConfig;
use crate::config::ConfigError;

/// How many instructions run between two clock reads of the evaluation time limit.
const TIMER_CHECK_INTERVAL: NonZeroU32 = NonZeroU32::MIN.saturating_add(255);

/// Why one evaluation produced no result.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EvalError {
    /// A builtin error, a conflict, a re-entrant call.
    #[error("{0}")]
    Failed(String),
    /// The time, instruction or memory budget ran out.
    #[error("{0}")]
    Limit(String),
}

/// A compiled policy with its data loaded, ready to evaluate inputs at each of its entrypoints.
pub struct Policy {
    /// In the order of [`PolicyConfig::entrypoints`]; never empty.
    entries: Vec<Entry>,
    /// The interpreter, kept only when some entrypoint runs on it.
    interpreter: Option<RefCell<Engine>>,
}

/// One entrypoint: how it is evaluated and what it reads.
struct Entry {
    entrypoint: String,
    evaluator: Evaluator,
    plan: InputPlan,
    /// Its results by the request facts it reads, when it reads only a few (`super::cache`).
    cache: Option<DecisionCache<Rc<Interpreted>>>,
}

/// Which of regorus's engines evaluates an entrypoint.
enum Evaluator {
    /// RVM bytecode: compiled once, a few microseconds per decision.
    Vm(Box<RefCell<RegoVM>>),
    /// The tree-walking interpreter, for what the VM compiler refuses (the reason); several
    /// times slower.
    Interpreter(String),
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut list = f.debug_list();
        for entry in &self.entries {
            let interpreter = match &entry.evaluator {
                Evaluator::Vm(_) => None,
                Evaluator::Interpreter(reason) => Some(reason),
            };
            let cached = entry.cache.is_some();
            list.entry(&format_args!(
                "{} (interpreter: {interpreter:?}, plan: {:?}, cached: {cached})",
                entry.entrypoint, entry.plan
            ));
        }
        list.finish()
    }
}

impl Policy {
    /// Parses and compiles `config`'s modules for each of its entrypoints. Syntax errors,
    /// unknown builtins, conflicts and a missing entrypoint are all refused here, not per request.
    pub fn compile(config: &PolicyConfig) -> Result<Self, ConfigError> {
        Self::build(config, &config.modules, &config.data, |_| Ok(())).map_err(|error| ConfigError::PolicyCompile {
            entrypoint: config.entrypoints().join(", "),
            message: match error {
                BundleError::Compile(message) => message,
                other => other.to_string(),
            },
        })
    }

    /// Compiles a bundle's modules and data with `config`'s entrypoints and limits; every
    /// package must lie under the bundle's roots.
    pub fn compile_bundle(config: &PolicyConfig, bundle: &Bundle) -> Result<Self, BundleError> {
        Self::build(config, &bundle.modules, &bundle.data, |package| bundle.check_package(package))
    }

    fn build(
        config: &PolicyConfig,
        modules: &[(String, String)],
        data: &serde_json::Value,
        check_package: impl Fn(&str) -> Result<(), BundleError>,
    ) -> Result<Self, BundleError> {
        let fail = |e: &dyn std::fmt::Display| BundleError::Compile(e.to_string());
        let mut engine = Engine::new();
        let mut packages = Vec::new();
        for (name, source) in modules {
            let package = engine.add_policy(name.clone(), source.clone()).map_err(|e| fail(&e))?;
            check_package(&package)?;
            packages.push((name, package));
        }
        let data = Value::from_json_str(&data.to_string()).map_err(|e| fail(&e))?;
        let timer = ExecutionTimerConfig { limit: config.eval_timeout, check_interval: TIMER_CHECK_INTERVAL };
        let entrypoints = config.entrypoints();
        let mut plans = InputPlan::with_keys(modules, &entrypoints).into_iter();
        let mut entries = Vec::new();
        let mut interpreter_ready = false;
        // Every entrypoint through the VM compiler first, before the interpreter gets the data.
        let programs: Vec<_> = entrypoints
            .iter()
            .map(|&entrypoint| {
                let rule: regorus::Rc<str> = entrypoint.into();
                let program = engine.compile_with_entrypoint(&rule).map_err(|e| e.to_string()).and_then(|compiled| {
                    Compiler::compile_from_policy(&compiled, &[entrypoint]).map_err(|e| e.to_string())
                });
                (entrypoint, program)
            })
            .collect();
        for (entrypoint, vm_program) in programs {
            let fail_at = |e: &dyn std::fmt::Display| BundleError::Compile(format!("{entrypoint}: {e}"));
            let evaluator = match vm_program {
                Ok(program) => {
                    if program.get_entry_point(entrypoint).is_none() {
                        return Err(fail_at(&"entrypoint is not defined by any module"));
                    }
                    let mut vm = RegoVM::new();
                    vm.load_program(program);
                    vm.set_data(data.clone()).map_err(|e| fail_at(&e))?;
                    vm.set_max_instructions(config.max_instructions);
                    vm.set_execution_timer_config(Some(timer));
                    Evaluator::Vm(Box::new(RefCell::new(vm)))
                }
                Err(error) => {
                    // The entrypoint may also be a document that rules build key by key
                    // (`result["allowed"] := ...`), which only the interpreter evaluates; an
                    // entrypoint no rule declares is refused, and so is a builtin this build lacks.
                    let declared = packages.iter().any(|(name, package)| {
                        let relative = entrypoint.strip_prefix(package.as_str()).and_then(|rest| rest.strip_prefix('.'));
                        relative.is_some_and(|relative| engine.has_declared_rule_rooted_at(name, relative).unwrap_or(false))
                    });
                    if error.contains("Unknown function") || !declared {
                        return Err(fail_at(&error));
                    }
                    if !interpreter_ready {
                        // Non-strict builtin errors (a failing call is undefined), as OPA's Envoy
                        // plugin and the VM evaluate; the time limit applies, the instruction
                        // budget does not.
                        engine.add_data(data.clone()).map_err(|e| fail(&e))?;
                        engine.set_strict_builtin_errors(false);
                        engine.set_execution_timer_config(timer);
                        // `print` output is kept by the engine (and dropped after each
                        // evaluation), never written to the proxy's stdout.
                        engine.set_gather_prints(true);
                        interpreter_ready = true;
                    }
                    // The interpreter reports some compile-time problems only when it evaluates:
                    // one evaluation with an empty input finds those on the paths it reaches (an
                    // unsafe variable, a call to a function nobody defines) and refuses the policy here.
                    engine.set_input(Value::new_object());
                    if let Err(trial) = engine.eval_query(entrypoint.to_owned(), false) {
                        let trial = trial.to_string();
                        if ["is unsafe", "could not find function", "not a valid rule path"].iter().any(|m| trial.contains(m)) {
                            return Err(fail_at(&trial));
                        }
                    }
                    Evaluator::Interpreter(vm_refusal(&error))
                }
            };
            let (plan, key) = plans.next().unwrap_or((InputPlan::ALL, None));
            let capacity = config.decision_cache_entries;
            let cache = key.filter(|_| capacity > 0).map(|key| DecisionCache::new(key, capacity));
            entries.push(Entry { entrypoint: entrypoint.to_owned(), evaluator, plan, cache });
        }
        Ok(Self { entries, interpreter: interpreter_ready.then(|| RefCell::new(engine)) })
    }

    /// Why an entrypoint of the policy runs on regorus's interpreter rather than its VM; `None`
    /// when all run on the VM.
    pub fn interpreter_reason(&self) -> Option<&str> {
        self.entries.iter().find_map(|entry| match &entry.evaluator {
            Evaluator::Vm(_) => None,
            Evaluator::Interpreter(reason) => Some(reason.as_str()),
        })
    }

    /// Which optional parts of the input entrypoint `entry` can read (`None`: no such entry).
    pub fn input_plan(&self, entry: usize) -> Option<&InputPlan> {
        self.entries.get(entry).map(|entry| &entry.plan)
    }

    /// The decision cache of entrypoint `entry`, if its decisions are cached.
    pub(crate) fn cache(&self, entry: usize) -> Option<&DecisionCache<Rc<Interpreted>>> {
        self.entries.get(entry).and_then(|entry| entry.cache.as_ref())
    }

    /// Evaluates the first entrypoint for `input` (the only one, for tools that compile one);
    /// `Value::Undefined` when the rule has no value.
    pub fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        self.evaluate_at(0, input)
    }

    /// Evaluates entrypoint `entry` (in the order of [`PolicyConfig::entrypoints`]) for `input`.
    pub fn evaluate_at(&self, entry: usize, input: Value) -> Result<Value, EvalError> {
        let reentrant = || EvalError::Failed("re-entrant evaluation".to_owned());
        let Some(entry) = self.entries.get(entry) else {
            return Err(EvalError::Failed(format!("no entrypoint #{entry}")));
        };
        let vm = match &entry.evaluator {
            Evaluator::Vm(vm) => vm,
            Evaluator::Interpreter(_) => {
                let engine = self.interpreter.as_ref().ok_or_else(|| EvalError::Failed("no interpreter".to_owned()))?;
                let mut engine = engine.try_borrow_mut().map_err(|_| reentrant())?;
                engine.set_input(input);
                // A query, not a rule lookup: the entrypoint may be a document built key by key.
                let results = engine.eval_query(entry.entrypoint.clone(), false);
                let _ = engine.take_prints();
                let results = results.map_err(|error| {
                    if error.downcast_ref::<LimitError>().is_some() {
                        EvalError::Limit(error.to_string())
                    } else {
                        EvalError::Failed(error.to_string())
                    }
                })?;
                let value = results.result.first().and_then(|result| result.expressions.first());
                return Ok(value.map_or(Value::Undefined, |expression| expression.value.clone()));
            }
        };
        let mut vm = vm.try_borrow_mut().map_err(|_| reentrant())?;
        vm.set_input(input);
        vm.execute_entry_point_by_name(&entry.entrypoint).map_err(|error| match error {
            VmError::InstructionLimitExceeded { .. }
            | VmError::TimeLimitExceeded { .. }
            | VmError::MemoryLimitExceeded { .. }
            | VmError::MemoryBudgetExceeded { .. } => EvalError::Limit(error.to_string()),
            other => EvalError::Failed(other.to_string()),
        })
    }
}

/// The VM compiler's refusal in one line: its last `error:` line, without the source excerpt.
fn vm_refusal(message: &str) -> String {
    let line = message.lines().rev().find_map(|line| line.trim().strip_prefix("error:")).unwrap_or(message);
    line.trim().to_owned()
}
