//! Compiling a Rego policy to RVM bytecode once, and evaluating it per request.

use std::cell::RefCell;
use std::num::NonZeroU32;

use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::rvm::vm::VmError;
use regorus::utils::limits::ExecutionTimerConfig;
use regorus::{Engine, Value};

use super::bundle::{Bundle, BundleError};
use super::InputPlan;
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

/// A compiled policy: RVM bytecode with its data loaded, ready to evaluate inputs.
pub struct Policy {
    vm: RefCell<RegoVM>,
    entrypoint: String,
    plan: InputPlan,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy").field("entrypoint", &self.entrypoint).field("plan", &self.plan).finish()
    }
}

impl Policy {
    /// Parses and compiles `config`'s modules for its entrypoint. Syntax errors, unknown
    /// builtins, conflicts and a missing entrypoint are all refused here, not per request.
    pub fn compile(config: &PolicyConfig) -> Result<Self, ConfigError> {
        Self::build(config, &config.modules, &config.data, |_| Ok(())).map_err(|error| ConfigError::PolicyCompile {
            entrypoint: config.entrypoint.clone(),
            message: match error {
                BundleError::Compile(message) => message,
                other => other.to_string(),
            },
        })
    }

    /// Compiles a bundle's modules and data with `config`'s entrypoint and limits; every package
    /// must lie under the bundle's roots.
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
        for (name, source) in modules {
            let package = engine.add_policy(name.clone(), source.clone()).map_err(|e| fail(&e))?;
            check_package(&package)?;
        }
        let data = Value::from_json_str(&data.to_string()).map_err(|e| fail(&e))?;
        let entrypoint: regorus::Rc<str> = config.entrypoint.as_str().into();
        let compiled = engine.compile_with_entrypoint(&entrypoint).map_err(|e| fail(&e))?;
        let program = Compiler::compile_from_policy(&compiled, &[config.entrypoint.as_str()]).map_err(|e| fail(&e))?;
        if program.get_entry_point(&config.entrypoint).is_none() {
            return Err(fail(&"entrypoint is not defined by any module"));
        }
        let mut vm = RegoVM::new();
        vm.load_program(program);
        vm.set_data(data).map_err(|e| fail(&e))?;
        vm.set_max_instructions(config.max_instructions);
        vm.set_execution_timer_config(Some(ExecutionTimerConfig {
            limit: config.eval_timeout,
            check_interval: TIMER_CHECK_INTERVAL,
        }));
        Ok(Self { vm: RefCell::new(vm), entrypoint: config.entrypoint.clone(), plan: InputPlan::for_modules(modules) })
    }

    /// Which optional parts of the input the policy can read.
    pub fn input_plan(&self) -> &InputPlan {
        &self.plan
    }

    /// The rule evaluated per request.
    pub fn entrypoint(&self) -> &str {
        &self.entrypoint
    }

    /// Evaluates the entrypoint for `input`; `Value::Undefined` when the rule has no value.
    pub fn evaluate(&self, input: Value) -> Result<Value, EvalError> {
        let mut vm = self.vm.try_borrow_mut().map_err(|_| EvalError::Failed("re-entrant evaluation".to_owned()))?;
        vm.set_input(input);
        vm.execute_entry_point_by_name(&self.entrypoint).map_err(|error| match error {
            VmError::InstructionLimitExceeded { .. }
            | VmError::TimeLimitExceeded { .. }
            | VmError::MemoryLimitExceeded { .. }
            | VmError::MemoryBudgetExceeded { .. } => EvalError::Limit(error.to_string()),
            other => EvalError::Failed(other.to_string()),
        })
    }
}
