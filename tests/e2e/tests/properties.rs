//! The properties real Envoy 1.40 gives a wasm filter, against the recorded fixture
//! `tests/fixtures/envoy-1.40.0-properties.json` (what the wasmtime harness imitates).
//!
//! A probe module (`tests/e2e/probe`) answers each request with the raw bytes of every property.
//! Values that differ per run (certificates, ports) are compared by shape: "the PEM of the
//! client's leaf, byte for byte", "127.0.0.1:<port>". `SVIDGATE_RECORD_FIXTURES=1` rewrites the
//! fixture from this run.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::envoy::{Envoy, render};
use svidgate_e2e::paths;
use svidgate_e2e::pki::{CertFiles, MintedDomain};
use svidgate_e2e::topology::{RunDir, path_str};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, ROGUE, SvidSpec};

const FIXTURE: &str = "tests/fixtures/envoy-1.40.0-properties.json";

/// What a property's bytes are, in words that hold from run to run.
fn shape(name: &str, value: &Value, client: Option<&CertFiles>, digest: Option<&str>) -> String {
    if let Some(status) = value.get("status").and_then(Value::as_str) {
        return format!("status {status}");
    }
    let Some(hex) = value.get("hex").and_then(Value::as_str) else { return "absent".to_owned() };
    let text = value.get("utf8").and_then(Value::as_str);
    let client_pem = client.map(|c| c.cert_pem.as_str());
    match (name, text) {
        ("connection.peer_certificate", Some(t)) if Some(t) == client_pem => "client leaf PEM, byte for byte".to_owned(),
        ("connection.sha256_peer_certificate_digest", Some(t)) if Some(t) == digest => {
            "sha256 of the client leaf DER, 64 lower-case hex".to_owned()
        }
        ("connection.uri_san_peer_certificate", Some(t)) if t == ORCHESTRATOR.spiffe_id => "client's URI SAN".to_owned(),
        ("connection.uri_san_local_certificate", Some(t)) if t == MODEL_SERVER.spiffe_id => "server's URI SAN".to_owned(),
        ("source.address" | "destination.address", Some(t)) if is_loopback_with_port(t) => "127.0.0.1:<port>".to_owned(),
        ("connection.id" | "source.port", _) if hex.len() == 16 => "8-byte little-endian integer".to_owned(),
        ("connection.mtls", _) => format!("bytes {hex}"),
        // A protobuf Metadata, its map entries in no fixed order: decoded as the module does.
        ("metadata", _) => metadata_shape(hex, "envoy.filters.http.jwt_authn"),
        ("xds.route_metadata", _) => metadata_shape(hex, "svidgate"),
        (_, Some(t)) => format!("text {t:?}"),
        (_, None) => format!("bytes {hex}"),
    }
}

fn metadata_shape(hex: &str, namespace: &str) -> String {
    let bytes: Vec<u8> = (0..hex.len()).step_by(2).filter_map(|i| hex.get(i..i + 2)).filter_map(|h| u8::from_str_radix(h, 16).ok()).collect();
    let namespace = namespace.to_owned();
    match svidgate_core::authz::metadata::filter_metadata(&bytes, std::slice::from_ref(&namespace)) {
        Ok(found) => {
            let decoded: Vec<String> = found
                .iter()
                .map(|(ns, v)| {
                    let json = v.to_json_str().ok().and_then(|j| serde_json::from_str::<Value>(&j).ok()).unwrap_or_default();
                    format!("{ns}: {json}")
                })
                .collect();
            format!("Metadata filter_metadata {}", decoded.join(", "))
        }
        Err(error) => format!("undecodable: {error}"),
    }
}

fn is_loopback_with_port(text: &str) -> bool {
    text.strip_prefix("127.0.0.1:").is_some_and(|p| p.parse::<u16>().is_ok())
}

/// A recorded case: the properties and the client certificate (if any) that was presented.
struct Case {
    properties: Value,
    client: Option<CertFiles>,
}

/// Runs the probe in Envoy and returns, per case, the raw properties.
async fn record(run: &RunDir, pki: &MintedDomain) -> Result<BTreeMap<String, Case>> {
    let template = std::fs::read_to_string(paths::workspace_root().join("tests/e2e/probe/envoy-probe.yaml"))?;
    let config = render(&template, &[("certs", path_str(pki.dir())), ("probe_wasm", path_str(&paths::probe_wasm()?))])?;
    let envoy = Envoy::start("envoy-probe", &config, run.path()).await?;
    let orchestrator = pki.cert(ORCHESTRATOR.name)?;
    // Envoy's uri_san_peer_certificate names only the first URI SAN: svidgate parses the PEM for all.
    let two_sans = pki.issue("two-uri-sans", &SvidSpec::for_workload(ORCHESTRATOR).with_uri_san(ROGUE.spiffe_id))?;
    let (mtls, tls) = (envoy.listener_port("mtls").await?, envoy.listener_port("tls").await?);
    let mut cases = BTreeMap::new();
    for (case, client, port, http) in [
        ("mtls_http1", Some(&orchestrator), mtls, Http::H1),
        ("mtls_http2", Some(&orchestrator), mtls, Http::H2),
        ("mtls_two_uri_sans_http1", Some(&two_sans), mtls, Http::H1),
        ("tls_without_client_certificate_http1", None, tls, Http::H1),
    ] {
        let tls_client = TlsClient::new(&pki.bundle(), client)?;
        let response = tls_client.send(port, http, &Request::new("POST", "/v1/generate")).await?;
        anyhow::ensure!(response.status == 200, "{case}: {response:?}");
        let properties = response.json().with_context(|| case.to_owned())?;
        cases.insert(case.to_owned(), Case { properties, client: client.cloned() });
    }
    Ok(cases)
}

fn sha256_hex(pem: &str) -> Result<String> {
    let der = CertificateDer::from_pem_slice(pem.as_bytes())?;
    Ok(svidgate_testpki::sha256_hex(&der))
}

fn shapes(cases: &BTreeMap<String, Case>) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut out = BTreeMap::new();
    for (name, case) in cases {
        let digest = case.client.as_ref().map(|c| sha256_hex(&c.cert_pem)).transpose()?;
        let shaped = case
            .properties
            .as_object()
            .into_iter()
            .flatten()
            .map(|(property, value)| (property.clone(), shape(property, value, case.client.as_ref(), digest.as_deref())))
            .collect();
        out.insert(name.clone(), shaped);
    }
    Ok(out)
}

#[tokio::test]
async fn envoy_properties_match_the_recorded_fixture() {
    let run = RunDir::new("properties").unwrap();
    let pki = MintedDomain::mint(&run.path().join("certs")).unwrap();
    let cases = record(&run, &pki).await.unwrap();
    let live = shapes(&cases).unwrap();
    let raw: BTreeMap<&String, &Value> = cases.iter().map(|(name, case)| (name, &case.properties)).collect();

    let path = paths::workspace_root().join(FIXTURE);
    if std::env::var_os("SVIDGATE_RECORD_FIXTURES").is_some() {
        let fixture = json!({
            "envoy": paths::ENVOY_VERSION,
            "recorded_with": "tests/e2e/tests/properties.rs with SVIDGATE_RECORD_FIXTURES=1: probe module tests/e2e/probe in tests/e2e/probe/envoy-probe.yaml",
            "client": ORCHESTRATOR.spiffe_id,
            "server": MODEL_SERVER.spiffe_id,
            "shapes": live,
            "raw": raw,
        });
        std::fs::write(&path, serde_json::to_string_pretty(&fixture).unwrap() + "\n").unwrap();
    }
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(fixture["envoy"], paths::ENVOY_VERSION);
    let recorded: BTreeMap<String, BTreeMap<String, String>> = serde_json::from_value(fixture["shapes"].clone()).unwrap();
    assert_eq!(live, recorded, "Envoy's properties changed shape: re-record and check tests/harness");

    // What svidgate relies on, spelled out.
    let mtls = &live["mtls_http1"];
    assert_eq!(mtls["connection.peer_certificate"], "client leaf PEM, byte for byte");
    assert_eq!(mtls["connection.uri_san_peer_certificate"], "client's URI SAN");
    assert_eq!(mtls["connection.sha256_peer_certificate_digest"], "sha256 of the client leaf DER, 64 lower-case hex");
    assert_eq!(mtls["connection.mtls"], "bytes 01");
    assert_eq!(live["mtls_http2"]["request.protocol"], "text \"HTTP/2\"");
    assert_eq!(mtls["request.protocol"], "text \"HTTP/1.1\"");
    let two = &live["mtls_two_uri_sans_http1"];
    assert_eq!(two["connection.uri_san_peer_certificate"], "client's URI SAN", "the first of the two");
    assert_eq!(two["connection.peer_certificate"], "client leaf PEM, byte for byte");
    // Dynamic metadata (a set_metadata filter in front) only whole, as the bytes of a Metadata
    // message (authz/metadata.rs decodes them); a map inside it does not serialize.
    assert!(mtls["metadata"].starts_with("Metadata filter_metadata envoy.filters.http.jwt_authn: {\"payload\""), "{}", mtls["metadata"]);
    assert_eq!(mtls["metadata.filter_metadata.envoy.filters.http.jwt_authn"], "status SerializationFailure");
    assert_eq!(mtls["metadata.filter_metadata.envoy.filters.http.jwt_authn.payload.sub"], "text \"alice\"");
    // Per-route policies: the route's name, and one string of its metadata read by its path.
    assert_eq!(mtls["xds.route_name"], "text \"probe-route\"");
    assert_eq!(mtls["xds.route_metadata"], "Metadata filter_metadata svidgate: {\"policy\":\"mcp\"}");
    assert_eq!(mtls["xds.route_metadata.filter_metadata.svidgate.policy"], "text \"mcp\"");
    let anonymous = &live["tls_without_client_certificate_http1"];
    assert_eq!(anonymous["connection.mtls"], "bytes 00");
    assert_eq!(anonymous["connection.peer_certificate"], "absent");
}
