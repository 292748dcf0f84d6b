//! One short round of the real-Envoy load benchmark (benches/src/envoy.rs), so that it keeps
//! working: every variant starts its Envoy, answers every request with the status it should, and
//! shows up in the table. No timing is asserted; the figures come from `cargo xtask bench envoy`.

#![allow(clippy::unwrap_used, clippy::indexing_slicing, reason = "test: a failure is the test failing")]

use std::time::Duration;

use svidgate_benches::envoy::{Settings, run, table, variants};

#[test]
fn every_variant_runs_in_real_envoy() {
    let settings = Settings {
        rounds: 1,
        warmup: Duration::from_millis(200),
        measure: Duration::from_millis(500),
        connections: 4,
        pin_envoy: false,
        only: Vec::new(),
        before: None,
        host_calls: true,
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let results = runtime.block_on(run(&settings)).unwrap();
    assert_eq!(results.len(), variants(false, true).len());
    for (variant, samples) in &results {
        let [sample] = samples.as_slice() else { panic!("{}: {samples:?}", variant.name) };
        assert!(sample.rps > 0.0 && sample.cpu_us > 0.0 && sample.rss_mb > 0.0, "{}: {sample:?}", variant.name);
        assert!(sample.p50_us <= sample.p99_us, "{}: {sample:?}", variant.name);
    }
    let table = table(&results);
    println!("{table}");
    for variant in variants(false, true) {
        assert!(table.contains(&format!("| {} |", variant.name)), "{table}");
    }
}
