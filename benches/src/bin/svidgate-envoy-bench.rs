//! `svidgate-envoy-bench [--rounds N] [--warmup S] [--seconds S] [--connections N] [--only TEXT]...
//! [--before DIR] [--host-calls]`:
//! the real-Envoy load benchmark (benches/src/envoy.rs); prints the Markdown table of the README's
//! Performance section. `cargo xtask bench envoy` builds the modules and runs it. `--before DIR`
//! also runs svidgate's rows on the modules in DIR (a copy of `target/modules` from before a
//! change), interleaved in the same rounds: before and after, measured in one run. `--host-calls`
//! adds rows of the no-op filter making host calls (one header-map read, one property read, one
//! header write, the identity module's six), the floor under any filter that does those.
//!
//! On a machine with two CPUs or more, Envoy runs pinned to CPU 0 and this process (the load
//! client, one thread) re-executes itself pinned to CPU 1 with `taskset`.

use std::process::{Command, ExitCode};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use svidgate_benches::envoy::{Settings, cpus, machine, run, table};

const PINNED: &str = "SVIDGATE_BENCH_PINNED";

fn main() -> Result<ExitCode> {
    let pin = cpus() >= 2 || std::env::var_os(PINNED).is_some();
    if pin && std::env::var_os(PINNED).is_none() {
        let me = std::env::current_exe()?;
        let status = Command::new("taskset")
            .args(["-c", "1"])
            .arg(me)
            .args(std::env::args_os().skip(1))
            .env(PINNED, "1")
            .status()
            .context("running taskset (util-linux)")?;
        return Ok(if status.success() { ExitCode::SUCCESS } else { ExitCode::FAILURE });
    }
    let settings = parse(std::env::args().skip(1), pin)?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = runtime.block_on(run(&settings))?;
    println!(
        "{} rounds, interleaved; {} s warm-up and {} s measured per run; {} kept-alive HTTP/1.1 connections over mTLS; medians (the two \"over\" columns: of the differences within each round). Machine: {}{}.\n",
        settings.rounds,
        settings.warmup.as_secs_f64(),
        settings.measure.as_secs_f64(),
        settings.connections,
        machine(),
        if pin { "; Envoy (one worker) pinned to CPU 0, the load client to CPU 1" } else { "; not pinned (one CPU)" },
    );
    print!("{}", table(&results));
    Ok(ExitCode::SUCCESS)
}

fn parse(mut args: impl Iterator<Item = String>, pin_envoy: bool) -> Result<Settings> {
    let mut settings = Settings {
        rounds: 3,
        warmup: Duration::from_secs(2),
        measure: Duration::from_secs(8),
        connections: 16,
        pin_envoy,
        only: Vec::new(),
        before: None,
        host_calls: false,
    };
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--rounds" => settings.rounds = value()?.parse()?,
            "--warmup" => settings.warmup = Duration::from_secs_f64(value()?.parse()?),
            "--seconds" => settings.measure = Duration::from_secs_f64(value()?.parse()?),
            "--connections" => settings.connections = value()?.parse()?,
            "--only" => settings.only.push(value()?),
            "--before" => settings.before = Some(value()?.into()),
            "--host-calls" => settings.host_calls = true,
            other => bail!("unknown argument {other:?}; see the top of benches/src/bin/svidgate-envoy-bench.rs"),
        }
    }
    Ok(settings)
}
