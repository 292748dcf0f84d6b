//! Runs one module's request path many times in the wasmtime harness, for a profiler:
//!
//! ```text
//! cargo build --release -p svidgate-harness --example profile_request
//! SVIDGATE_WASM_PERFMAP=1 perf record -g target/release/examples/profile_request MODULE.wasm CONFIG.json [REQUESTS [EXTRA_HEADERS]]
//! ```
//!
//! `SVIDGATE_WASM_PERFMAP` makes wasmtime write `/tmp/perf-<pid>.map`, so `perf report` names the
//! module's functions; build the module without `strip` (`--config profile.wasm-release.strip=false`)
//! to keep the names. The peer is the orchestrator's SVID; the request is a `POST /v1/generate`;
//! Envoy's log level is `info`, its default, so debug lines are not formatted, as in Envoy.
//! Prints the wasmtime fuel of one request: in its request-headers callback, and in all the
//! callbacks of its stream (context creation to deletion, a response's headers included).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "a developer tool: a failure stops it loudly")]

use svidgate_harness::host::{LogLevel, Module, PluginOptions};
use svidgate_testpki::{ORCHESTRATOR, TRUST_DOMAIN, TrustDomainCa};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(module), Some(config)) = (args.next(), args.next()) else {
        eprintln!("usage: profile_request MODULE.wasm CONFIG.json [REQUESTS [EXTRA_HEADERS]]");
        std::process::exit(2);
    };
    let requests: u64 = args.next().map_or(100_000, |n| n.parse().expect("REQUESTS is a number"));
    let extra: usize = args.next().map_or(0, |n| n.parse().expect("EXTRA_HEADERS is a number"));
    let module = Module::load(std::path::Path::new(&module)).unwrap();
    let config = std::fs::read(&config).expect("reading the configuration");
    let mut plugin = module.start(PluginOptions { plugin_config: config, log_level: Some(LogLevel::Info), ..PluginOptions::default() }).unwrap();
    assert!(plugin.configured(), "{:?}", plugin.logs());
    let configured_memory = plugin.memory_bytes();
    let svid = TrustDomainCa::new(TRUST_DOMAIN).unwrap().svid(ORCHESTRATOR).unwrap();
    plugin.set_property(&["connection", "peer_certificate"], svid.cert_pem.clone());
    plugin.set_property(&["connection", "sha256_peer_certificate_digest"], svid.sha256_hex());
    plugin.set_property(&["connection", "uri_san_peer_certificate"], ORCHESTRATOR.spiffe_id);
    let headers = [
        (":method", "POST"),
        (":path", "/v1/generate"),
        (":authority", "model-server.ai.internal"),
        (":scheme", "https"),
        ("content-type", "application/json"),
        ("x-request-id", "8f1c8a3e-6a43-4a57-9d0e-1f3b7c2e5a90"),
    ];
    // EXTRA_HEADERS more headers, to see what each header costs.
    let names: Vec<String> = (0..extra).map(|i| format!("x-extra-header-{i}")).collect();
    let headers: Vec<(&str, &str)> =
        headers.into_iter().chain(names.iter().map(|name| (name.as_str(), "00-4bf92f3577b34da6a3ce929d0e0e4736-01"))).collect();
    let response = [(":status", "200"), ("content-type", "application/json")];
    let (mut fuel, mut stream_fuel) = (0, 0);
    for _ in 0..requests {
        let before = plugin.fuel_consumed_total();
        let mut stream = plugin.stream();
        stream.request_headers(&headers, true).unwrap();
        fuel = stream.fuel_consumed_last();
        stream.response_headers(&response, true).unwrap();
        stream.finish().unwrap();
        stream_fuel = plugin.fuel_consumed_total() - before;
    }
    println!("{requests} requests; fuel of the last: {fuel} in its request-headers callback, {stream_fuel} in all its callbacks");
    println!("linear memory: {configured_memory} bytes once configured, {} after the requests", plugin.memory_bytes());
}
