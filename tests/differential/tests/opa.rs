//! The differential suite: svidgate's engine, as the authz module builds it, against real Go OPA
//! v1.20.2 on the corpus (`corpus/`), with `divergences.yaml` the list of accepted differences.

use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use svidgate_differential::{Opa, accepted, corpus_dir, load_corpus, run};

#[test]
fn svidgate_decides_as_go_opa_on_the_corpus() -> Result<()> {
    let entries = load_corpus(&corpus_dir())?;
    let run = run(&entries)?;
    let accepted = accepted()?;

    let loaded = run.envoy.iter().filter(|(_, loads, _, _)| *loads).count();
    let decided_as_opa = run.envoy.iter().filter(|(_, loads, inputs, agreed)| *loads && inputs == agreed).count();
    println!(
        "differential ({} flavor): {} Envoy policies ({} inputs): {loaded} load in svidgate, {decided_as_opa} decide every input as OPA; \
         {} probe evaluations; {} divergences ({} listed as permissive)",
        svidgate_differential::FLAVOR,
        run.envoy.len(),
        run.envoy_evaluations,
        run.probe_evaluations,
        run.divergences.len(),
        accepted.values().filter(|a| a.permissive).count(),
    );
    for (entry, loads, inputs, agreed) in &run.envoy {
        println!("  {entry}: {}", if *loads { format!("{agreed}/{inputs} as OPA") } else { "refused at load".to_owned() });
    }

    let mut problems = Vec::new();
    for divergence in &run.divergences {
        match accepted.get(&divergence.id) {
            None => problems.push(format!("not in divergences.yaml: {} ({})", divergence.id, divergence.detail)),
            Some(listed) if divergence.permissive.is_some_and(|found| found != listed.permissive) => {
                problems.push(format!(
                    "{}: divergences.yaml says permissive: {}, the run found the opposite ({})",
                    divergence.id, listed.permissive, divergence.detail
                ));
            }
            Some(_) => {}
        }
    }
    let found: BTreeSet<&str> = run.divergences.iter().map(|d| d.id.as_str()).collect();
    for id in accepted.keys().filter(|id| !found.contains(id.as_str())) {
        problems.push(format!("listed in divergences.yaml but no longer occurs: {id}"));
    }
    ensure!(problems.is_empty(), "{} problems:\n{}", problems.len(), problems.join("\n"));
    Ok(())
}

/// Every policy we ship also compiles in OPA, with its data and its tests.
#[test]
fn every_policy_under_policies_compiles_in_opa() -> Result<()> {
    let policies = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let mut checked = 0;
    for dir in std::fs::read_dir(&policies)? {
        let dir = dir?.path();
        if !dir.is_dir() {
            continue;
        }
        let mut opa = Opa::new()?;
        for file in std::fs::read_dir(&dir)? {
            let path = file?.path();
            if path.extension().is_some_and(|e| e == "rego") {
                let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                opa.add_policy(&name, &std::fs::read_to_string(&path)?)
                    .with_context(|| format!("OPA refuses {}", path.display()))?;
                checked += 1;
            }
        }
        if let Ok(data) = std::fs::read_to_string(dir.join("data.json")) {
            opa.add_data(&serde_json::from_str(&data)?).with_context(|| format!("{}/data.json", dir.display()))?;
        }
        opa.compile().with_context(|| format!("OPA refuses {}", dir.display()))?;
    }
    ensure!(checked > 0, "no policy under {}", policies.display());
    Ok(())
}
