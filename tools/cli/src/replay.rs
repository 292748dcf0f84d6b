//! `svidgate replay`: re-evaluates recorded decisions (OPA decision-log JSON lines: `path`,
//! `input`, `result`, `decision_id`) against a new policy, and reports each one whose outcome
//! would change, so a policy change can be checked against real traffic before it ships.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use regorus::Value;
use svidgate_core::config::{DEFAULT_ENTRYPOINT, normalize_entrypoint};

use crate::{Evaluator, describe, load_policies, read, to_json};

/// re-evaluate recorded OPA decision logs against DIR and print every decision that would change
#[derive(Debug, clap::Args)]
pub(crate) struct ReplayArgs {
    /// the decision log: one OPA decision-log record (JSON) per line; - reads standard input
    #[arg(value_name = "LOG.jsonl")]
    log: PathBuf,
    /// the new policy: a directory (*.rego, data.json) or one .rego file
    #[arg(short, long, value_name = "DIR")]
    policy: PathBuf,
    /// exit 1 if any decision would change
    #[arg(long)]
    fail_on_change: bool,
}

pub(crate) fn replay(args: &ReplayArgs) -> Result<ExitCode> {
    let log = args.log.display();
    let dir = load_policies(&args.policy)?;
    // One compiled policy per entrypoint the log names.
    let mut evaluators: HashMap<String, Evaluator> = HashMap::new();
    let (mut total, mut changed) = (0usize, 0usize);
    for (number, line) in read(&args.log)?.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let record: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("{log}:{}: not json", number + 1))?;
        let entrypoint =
            normalize_entrypoint(record.get("path").and_then(|p| p.as_str()).unwrap_or(DEFAULT_ENTRYPOINT));
        let evaluator = match evaluators.entry(entrypoint) {
            Entry::Occupied(found) => found.into_mut(),
            Entry::Vacant(slot) => {
                let evaluator = Evaluator::new(&dir, slot.key())?;
                slot.insert(evaluator)
            }
        };
        let input = record.get("input").cloned().unwrap_or(serde_json::Value::Null);
        let recorded = record.get("result").map_or(Value::Undefined, |r| Value::from(r.clone()));
        let replayed = evaluator.evaluate(Value::from(input))?;
        total += 1;
        let (before, after) = (describe(&evaluator.decision(&recorded)), describe(&evaluator.decision(&replayed)));
        let (recorded, replayed) = (to_json(&recorded)?, to_json(&replayed)?);
        if before != after || recorded != replayed {
            changed += 1;
            let id = record.get("decision_id").and_then(|d| d.as_str()).unwrap_or("-");
            println!(
                "CHANGED {id} (line {}): {} -> {}; result {} -> {}",
                number + 1,
                before.trim_start_matches("decision: "),
                after.trim_start_matches("decision: "),
                recorded,
                replayed
            );
        }
    }
    println!("{total} decisions replayed, {changed} would change");
    Ok(if changed > 0 && args.fail_on_change { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
