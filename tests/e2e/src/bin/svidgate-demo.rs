//! `svidgate-demo [--once] [--out DIR]`: the seed article's zero-trust flow on one machine.
//!
//! Mints the `ai.internal` trust domain, starts the gateway, the orchestrator, the model server,
//! the vector store and the tool runtime (each app behind its own sidecar Envoy with svidgate),
//! walks through the seed's requests and prints what happened to each. Then it keeps running
//! with curl commands to try, until Ctrl-C; `--once` exits after the walk-through, with a
//! non-zero status if any request did not end as the seed says it must.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use serde_json::json;
use svidgate_e2e::client::{self, Http, Request, Response, TlsClient};
use svidgate_e2e::paths;
use svidgate_e2e::topology::{Modules, RunDir, Topology};
use svidgate_e2e::upstream::Upstream;
use svidgate_testpki::{GATEWAY, MODEL_SERVER, ORCHESTRATOR, ROGUE, TOOL_RUNTIME, VECTOR_STORE, Workload};

const USAGE: &str = "usage: svidgate-demo [--once] [--out DIR]

  --once     exit after the walk-through (for CI); the exit status says whether every request
             ended as expected
  --out DIR  where certificates, rendered configs and logs go (default: target/svidgate-demo)";

/// The response header in which every sidecar sends its decision id (decision logs are on).
const DECISION_ID_HEADER: &str = "x-svidgate-decision-id";

/// What a request must end as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Reaches the app with exactly this identity.
    Allow(&'static str),
    /// Refused by the policy (or svidgate) with this status; never reaches the app.
    Deny(u16),
    /// Refused by TLS before any HTTP.
    Refused,
}

/// One line of the table.
struct Row {
    caller: String,
    target: String,
    request: String,
    decision: String,
    status: String,
    saw: String,
    ok: bool,
    /// The decision id the sidecar sent back (`x-svidgate-decision-id`), if any.
    decision_id: Option<String>,
    /// What its decision-log record says, for a denial shown below the table.
    log: Option<String>,
}

/// A POST with a JSON body.
fn json_post(path: &str, body: &serde_json::Value) -> Request {
    Request::new("POST", path).header("content-type", "application/json").body(body.to_string())
}

/// What a request's JSON body asks for, for the table: the model, or the JSON-RPC method and tool.
fn asks_for(request: &Request) -> String {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(&request.body) else { return String::new() };
    match (text(&body, "/model"), text(&body, "/method"), text(&body, "/params/name")) {
        (Some(model), _, _) => format!(" model {model}"),
        (_, Some(method), Some(name)) => format!(" {method} {name}"),
        (_, Some(method), None) => format!(" {method}"),
        _ => String::new(),
    }
}

/// The string at a JSON pointer.
fn text<'a>(value: &'a serde_json::Value, pointer: &str) -> Option<&'a str> {
    value.pointer(pointer).and_then(serde_json::Value::as_str)
}

/// The decision-log record (svidgate's console decision log, one JSON line in the Envoy log) with
/// decision id `id`, summarized: what was asked, by whom, and the policy's answer.
fn decision_record(envoy_log: &std::path::Path, id: &str) -> Option<String> {
    let log = std::fs::read_to_string(envoy_log).ok()?;
    let record: serde_json::Value = log
        .lines()
        .filter(|line| line.contains(id))
        .find_map(|line| line.find("{\"").and_then(|start| serde_json::from_str(line.get(start..)?).ok()))?;
    let asked = match (text(&record, "/input/parsed_body/model"), text(&record, "/input/parsed_body/params/name")) {
        (Some(model), _) => format!("parsed_body.model = {model:?}"),
        (_, Some(tool)) => format!("parsed_body.params.name = {tool:?}"),
        _ => format!("path {}", text(&record, "/input/attributes/request/http/path").unwrap_or("-")),
    };
    let caller = text(&record, "/input/attributes/source/principal").unwrap_or("-");
    let allowed = record.pointer("/result/allowed").cloned().unwrap_or_default();
    let answer = match text(&record, "/result/body") {
        Some(body) => format!("allowed = {allowed}, body {body}"),
        None => format!("allowed = {allowed}"),
    };
    Some(format!("decision {id}: {asked}, caller {caller}, {answer}"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut once = false;
    let mut out = paths::workspace_root().join("target/svidgate-demo");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--once" => once = true,
            "--out" => out = PathBuf::from(args.next().context(USAGE)?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let upstream_bin = std::env::current_exe()?.with_file_name("svidgate-upstream");
    if !upstream_bin.is_file() {
        bail!("{} is missing: cargo build -p svidgate-e2e --bins", upstream_bin.display());
    }
    let modules = Modules::built()?;
    let envoy = paths::envoy_bin()?;
    println!("svidgate demo: Envoy {}, modules in {}", paths::ENVOY_VERSION, paths::wasm_dir().display());
    let run = RunDir::at(&out, true)?;
    let started = Instant::now();
    println!("minting trust domain ai.internal and starting 5 Envoys and 4 apps in {} ...", run.path().display());
    let mut topology = Topology::start(run.path(), &modules, &upstream_bin).await?;
    println!("topology ready in {:.1}s ({})\n", started.elapsed().as_secs_f64(), envoy.display());

    let rows = walk(&mut topology).await?;
    print_table(&rows);
    let failures = rows.iter().filter(|r| !r.ok).count();
    if once {
        if failures > 0 {
            bail!("{failures} request(s) did not end as expected; logs are in {}", run.path().display());
        }
        println!("every request ended as the seed says it must.");
        return Ok(());
    }
    print_try_it(&topology);
    tokio::signal::ctrl_c().await.context("waiting for Ctrl-C")?;
    println!("\nstopping Envoys and apps ...");
    drop(topology);
    println!("stopped. Certificates, configs and logs stay in {}", run.path().display());
    Ok(())
}

/// The seed's flow, request by request.
async fn walk(t: &mut Topology) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let bundle = t.pki.bundle();
    let public = TlsClient::new(&bundle, None)?;
    let rogue = TlsClient::new(&bundle, Some(&t.pki.cert(ROGUE.name)?))?;
    let generate = Request::new("POST", "/v1/generate");
    let marked = |request: &Request, n: usize| request.clone().header("x-request-marker", &format!("demo-{n}"));

    // 1. The perimeter: a public client tries to pass as the orchestrator.
    let spoof = Request::new("POST", "/v1/agent/plan").header("x-forwarded-spiffe-id", ORCHESTRATOR.spiffe_id);
    let n = rows.len();
    let result = public.send(t.gateway_port, Http::H2, &marked(&spoof, n)).await;
    let caller = "public client (spoofs the orchestrator's ID)";
    rows.push(row(caller, "gateway -> orchestrator", &t.orchestrator.app, n, &spoof, result, Expect::Allow(GATEWAY.spiffe_id)));

    // 2-7. The orchestrator app calls the services through its own sidecar (plain HTTP to
    // localhost): the seed's generate, an OpenAI-style chat completion, a RAG query and MCP tool
    // calls; then, prompt-injected, a model and a tool its policies do not give it.
    let sidecar = "orchestrator (via its sidecar)";
    let injected = "orchestrator, prompt-injected";
    let chat = |model: &str| {
        json_post("/v1/chat/completions", &json!({"model": model, "max_tokens": 256, "messages": [
            {"role": "user", "content": "Summarize the Q3 report."}]}))
    };
    let tool = |id: u64, name: &str, arguments: serde_json::Value| {
        json_post("/mcp", &json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name, "arguments": arguments}}))
    };
    let allow = Expect::Allow(ORCHESTRATOR.spiffe_id);
    for (caller, target, request, expect) in [
        (sidecar, MODEL_SERVER, Request::new("POST", "/v1/generate"), allow),
        (sidecar, MODEL_SERVER, chat("llama-3.1-8b-instruct"), allow),
        (sidecar, VECTOR_STORE, Request::new("POST", "/v1/collections/product-docs/query"), allow),
        (sidecar, TOOL_RUNTIME, tool(1, "search", json!({"query": "Q3 revenue"})), allow),
        (injected, MODEL_SERVER, chat("gpt-4o-internal"), Expect::Deny(403)),
        (injected, TOOL_RUNTIME, tool(2, "shell", json!({"cmd": "cat /etc/shadow"})), Expect::Deny(403)),
    ] {
        let n = rows.len();
        let result = client::plain(t.outbound_port(target)?, &marked(&request, n)).await;
        let sidecar = t.service(target)?;
        let mut row = row(caller, target.name, &sidecar.app, n, &request, result, expect);
        row.log = row.decision_id.as_deref().and_then(|id| decision_record(&sidecar.envoy.log_path(), id));
        rows.push(row);
    }

    // 6-7. A workload of the trust domain with a valid SVID that no policy lets in.
    let app = &t.model_server.app;
    let n = rows.len();
    let result = rogue.send(t.model_server.inbound_port, Http::H2, &marked(&generate, n)).await;
    rows.push(row("rogue-agent (valid SVID, direct mTLS)", MODEL_SERVER.name, app, n, &generate, result, Expect::Deny(403)));
    let forged = generate.clone().header("x-forwarded-spiffe-id", ORCHESTRATOR.spiffe_id);
    let n = rows.len();
    let result = rogue.send(t.model_server.inbound_port, Http::H1, &marked(&forged, n)).await;
    let caller = "rogue-agent (forges the orchestrator's ID)";
    rows.push(row(caller, MODEL_SERVER.name, app, n, &forged, result, Expect::Deny(403)));

    // 8. No client certificate: the handshake fails.
    let n = rows.len();
    let result = public.send(t.model_server.inbound_port, Http::H2, &marked(&generate, n)).await;
    rows.push(row("anyone without an SVID", MODEL_SERVER.name, app, n, &generate, result, Expect::Refused));

    // 9-10. The caller is removed from data.allowed_callers.generate through Envoy's ECDS, then restored.
    let original = t.model_server.policy().data.clone();
    t.model_server.set_policy_data(json!({"allowed_callers": {"generate": []}})).await?;
    let n = rows.len();
    let result = client::plain(t.outbound_port(MODEL_SERVER)?, &marked(&generate, n)).await;
    let caller = "orchestrator, after removal from the data";
    rows.push(row(caller, MODEL_SERVER.name, &t.model_server.app, n, &generate, result, Expect::Deny(403)));
    t.model_server.set_policy_data(original).await?;
    let n = rows.len();
    let result = client::plain(t.outbound_port(MODEL_SERVER)?, &marked(&generate, n)).await;
    let expect = Expect::Allow(ORCHESTRATOR.spiffe_id);
    rows.push(row("orchestrator, data restored", MODEL_SERVER.name, &t.model_server.app, n, &generate, result, expect));
    Ok(rows)
}

/// One table row: what the client got, checked against what the app itself logged.
fn row(caller: &str, target: &str, app: &Upstream, n: usize, request: &Request, result: Result<Response>, expect: Expect) -> Row {
    let forged = request.headers.iter().any(|(n, _)| n == "x-forwarded-spiffe-id");
    let mut row = Row {
        caller: caller.to_owned(),
        target: target.to_owned(),
        request: format!(
            "{} {}{}{}",
            request.method,
            request.path,
            asks_for(request),
            if forged { " + forged id header" } else { "" }
        ),
        decision: String::new(),
        status: "-".to_owned(),
        saw: "-".to_owned(),
        ok: false,
        decision_id: None,
        log: None,
    };
    if let Ok(response) = &result {
        row.decision_id = response.header_values(DECISION_ID_HEADER).first().map(|id| (*id).to_owned());
    }
    let reached = match app.seen_with_marker(&format!("demo-{n}")) {
        Ok(seen) => seen,
        Err(error) => {
            row.decision = format!("cannot read the app's log: {error:#}");
            return row;
        }
    };
    match result {
        Ok(response) if response.status == 200 => {
            row.decision = "allow".to_owned();
            row.status = response.status.to_string();
            let identities: Vec<&[String]> = reached.iter().map(|s| s.identities.as_slice()).collect();
            row.ok = matches!((expect, identities.as_slice()), (Expect::Allow(id), [[seen]]) if seen == id);
            row.saw = match identities.as_slice() {
                [] => "(did not reach the app)".to_owned(),
                [[]] => "(no identity header)".to_owned(),
                [ids] => ids.join(", "),
                _ => "(reached the app several times)".to_owned(),
            };
        }
        Ok(response) => {
            row.decision = "deny".to_owned();
            row.status = response.status.to_string();
            row.ok = expect == Expect::Deny(response.status) && reached.is_empty();
        }
        Err(error) => {
            row.decision = "refused (TLS)".to_owned();
            row.ok = expect == Expect::Refused && reached.is_empty();
            if !row.ok {
                row.saw = format!("{error:#}");
            }
        }
    }
    if !reached.is_empty() && !matches!(expect, Expect::Allow(_)) {
        row.saw = "REACHED THE APP".to_owned();
    }
    row
}

fn print_table(rows: &[Row]) {
    let headers = ["#", "caller", "target", "request", "decision", "status", "identity the upstream saw"];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let decision = if r.ok { r.decision.clone() } else { format!("{} (UNEXPECTED)", r.decision) };
            [(i + 1).to_string(), r.caller.clone(), r.target.clone(), r.request.clone(), decision, r.status.clone(), r.saw.clone()]
        })
        .collect();
    let mut widths = headers.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        println!("| {} |", padded.join(" | "));
    };
    line(&headers.map(str::to_owned));
    println!("|{}|", widths.iter().map(|w| "-".repeat(w + 2)).collect::<Vec<_>>().join("|"));
    for row in &cells {
        line(row);
    }
    println!();
    for (i, row) in rows.iter().enumerate() {
        if let Some(log) = &row.log {
            println!("#{} decision log of {}: {log}", i + 1, row.target);
        }
    }
    println!();
}

fn print_try_it(t: &Topology) {
    let certs = t.pki.dir().display();
    let model = t.model_server.inbound_port;
    let model_out = t.outbound_port(MODEL_SERVER).unwrap_or_default();
    let id = "x-forwarded-spiffe-id";
    println!("The topology keeps running. Try (Ctrl-C stops everything):\n");
    println!("  # the public side of the gateway strips a forged identity; the orchestrator sees the gateway's");
    println!(
        "  curl --cacert {certs}/bundle.pem -H '{id}: {}' -X POST https://localhost:{}/v1/agent/plan\n",
        ORCHESTRATOR.spiffe_id, t.gateway_port
    );
    println!("  # the orchestrator app calling the model server through its sidecar (plain HTTP to localhost)");
    println!("  curl -X POST http://127.0.0.1:{model_out}/v1/generate\n");
    println!("  # mTLS straight to the model server's sidecar as the orchestrator (allowed) and as rogue-agent (403)");
    for (name, label) in [(ORCHESTRATOR, "orchestrator"), (ROGUE, "rogue")] {
        let Workload { name: file, .. } = name;
        println!(
            "  curl --cacert {certs}/bundle.pem --cert {certs}/{file}.pem --key {certs}/{file}.key -X POST https://localhost:{model}/v1/generate   # {label}"
        );
    }
    println!("\n  # no client certificate: refused at the handshake");
    println!("  curl --cacert {certs}/bundle.pem -X POST https://localhost:{model}/v1/generate\n");
    println!("  # who may call /v1/generate is data: edit it in the ECDS file (replace it with a rename:");
    println!("  # Envoy watches for moves) and Envoy applies it without a restart");
    println!("  {}\n", t.model_server.ecds_path().display());
    println!("  # Envoy admin APIs: gateway {}, model server {}", t.gateway.admin_port(), t.model_server.envoy.admin_port());
}
