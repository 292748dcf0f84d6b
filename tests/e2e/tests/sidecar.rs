//! One sidecar Envoy with svidgate authz in front of its app: who gets in, with which identity,
//! and who is refused where (TLS handshake or svidgate).

use anyhow::{Result, ensure};
use svidgate_e2e::client::{Http, Request, Response, TlsClient};
use svidgate_e2e::pki::{self, CertFiles};
use svidgate_e2e::topology::{Alone, Modules, SidecarOptions};
use svidgate_testpki::{GATEWAY, MODEL_SERVER, ORCHESTRATOR, ROGUE, SvidSpec, VECTOR_STORE, Workload};
use time::Duration;

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const ID_HEADER: &str = "x-forwarded-spiffe-id";

async fn start(label: &str, workload: Workload, allow_expired_certificate: bool) -> Result<Alone> {
    let modules = Modules::built()?;
    let options = SidecarOptions { allow_expired_certificate, ..SidecarOptions::new(&modules.authz) };
    Alone::start(label, UPSTREAM.as_ref(), workload, &options).await
}

fn client(alone: &Alone, cert: Option<&CertFiles>) -> Result<TlsClient> {
    TlsClient::new(&alone.pki.bundle(), cert)
}

/// Sends `request` tagged with `marker`; returns the response and what the app saw with that marker.
async fn send(alone: &Alone, client: &TlsClient, http: Http, request: Request, marker: &str) -> Result<(Response, Vec<Vec<String>>)> {
    let response = client.send(alone.sidecar.inbound_port, http, &request.header("x-request-marker", marker)).await?;
    let seen = alone.sidecar.app.seen_with_marker(marker)?.into_iter().map(|s| s.identities).collect();
    Ok((response, seen))
}

/// Expects requests to fail before any HTTP response and the app to see nothing; returns the
/// TLS alert the server sent.
async fn expect_refused(alone: &Alone, client: &TlsClient, marker: &str) -> Result<String> {
    for http in [Http::H1, Http::H2] {
        let request = Request::new("POST", "/v1/generate").header("x-request-marker", marker);
        let result = client.send(alone.sidecar.inbound_port, http, &request).await;
        ensure!(result.is_err(), "{http:?}: expected a refused handshake, got {result:?}");
    }
    ensure!(alone.sidecar.app.seen_with_marker(marker)?.is_empty(), "a refused request reached the app");
    match client.handshake(alone.sidecar.inbound_port).await {
        Ok(()) => anyhow::bail!("the server accepted the handshake"),
        Err(error) => Ok(format!("{error:#}")),
    }
}

#[tokio::test]
async fn allows_listed_caller_and_injects_exactly_its_id_over_http1_and_http2() {
    let alone = start("allow", MODEL_SERVER, false).await.unwrap();
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    for (http, marker) in [(Http::H1, "h1"), (Http::H2, "h2")] {
        let (response, seen) =
            send(&alone, &orchestrator, http, Request::new("POST", "/v1/generate"), marker).await.unwrap();
        assert_eq!(response.status, 200, "{http:?}: {response:?}");
        assert_eq!(seen, vec![vec![ORCHESTRATOR.spiffe_id.to_owned()]], "{http:?}");
        let body = response.json().unwrap();
        assert_eq!(body["x-forwarded-spiffe-id"], serde_json::json!([ORCHESTRATOR.spiffe_id]));
        assert_eq!(body["path"], "/v1/generate");
    }
}

#[tokio::test]
async fn replaces_forged_identity_headers_mixed_case_repeated_and_empty() {
    let alone = start("forged", MODEL_SERVER, false).await.unwrap();
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let forgeries: [(&str, &[&str]); 4] = [
        ("single", &[GATEWAY.spiffe_id]),
        ("repeated", &[GATEWAY.spiffe_id, ROGUE.spiffe_id, ORCHESTRATOR.spiffe_id]),
        ("empty", &[""]),
        ("empty-and-valid", &["", GATEWAY.spiffe_id]),
    ];
    for (name, values) in forgeries {
        // HTTP/1.1 header names go out Title-Cased (X-Forwarded-Spiffe-Id); HTTP/2 requires lower case.
        for http in [Http::H1, Http::H2] {
            let mut request = Request::new("POST", "/v1/generate");
            for value in values {
                request = request.header(ID_HEADER, value);
            }
            let marker = format!("{name}-{http:?}");
            let (response, seen) = send(&alone, &orchestrator, http, request, &marker).await.unwrap();
            assert_eq!(response.status, 200, "{marker}: {response:?}");
            assert_eq!(seen, vec![vec![ORCHESTRATOR.spiffe_id.to_owned()]], "{marker}");
        }
    }
    let spoofs = alone.sidecar.envoy.stat("wasmcustom.svidgate.identity.spoof_attempts").await.unwrap();
    assert_eq!(spoofs, Some(8), "{}", alone.sidecar.envoy.stats_matching("svidgate").await.unwrap());
}

#[tokio::test]
async fn denies_caller_missing_from_allowed_callers_with_the_policy_reply() {
    let alone = start("deny", VECTOR_STORE, false).await.unwrap();
    let rogue = client(&alone, Some(&alone.pki.cert(ROGUE.name).unwrap())).unwrap();
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    for http in [Http::H1, Http::H2] {
        let marker = format!("rogue-{http:?}");
        let (response, seen) = send(&alone, &rogue, http, Request::new("POST", "/v1/collections/product-docs/query"), &marker).await.unwrap();
        assert_eq!(response.status, 403, "{response:?}");
        assert_eq!(response.header_values("x-svidgate-policy"), ["vector-store"]);
        assert_eq!(response.body, r#"{"error": "caller may not use this collection"}"#);
        assert!(seen.is_empty(), "a denied request reached the app: {seen:?}");
        // The listed caller gets through on the same sidecar: the denial is about the caller.
        let marker = format!("orchestrator-{http:?}");
        let (response, seen) =
            send(&alone, &orchestrator, http, Request::new("POST", "/v1/collections/product-docs/query"), &marker).await.unwrap();
        assert_eq!(response.status, 200, "{response:?}");
        assert_eq!(seen, vec![vec![ORCHESTRATOR.spiffe_id.to_owned()]]);
    }
}

#[tokio::test]
async fn seed_policy_denies_unlisted_caller_and_other_routes_with_403() {
    let alone = start("seed-deny", MODEL_SERVER, false).await.unwrap();
    let rogue = client(&alone, Some(&alone.pki.cert(ROGUE.name).unwrap())).unwrap();
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let cases = [
        (&rogue, "POST", "/v1/generate", "rogue"),
        (&orchestrator, "GET", "/v1/generate", "get"),
        (&orchestrator, "POST", "/v1/admin", "admin"),
    ];
    for (client, method, path, marker) in cases {
        let (response, seen) = send(&alone, client, Http::H2, Request::new(method, path), marker).await.unwrap();
        // The seed's policy returns {"allowed": false}: deny_status, empty body (as OPA's plugin).
        assert_eq!((response.status, response.body.as_str()), (403, ""), "{marker}: {response:?}");
        assert!(seen.is_empty(), "{marker} reached the app");
    }
}

#[tokio::test]
async fn refuses_handshake_without_client_certificate_or_from_untrusted_ca() {
    let alone = start("handshake", MODEL_SERVER, false).await.unwrap();
    let anonymous = client(&alone, None).unwrap();
    let error = expect_refused(&alone, &anonymous, "anonymous").await.unwrap();
    assert!(error.contains("received fatal alert: CertificateRequired"), "{error}");
    let untrusted = pki::issue_untrusted(alone.run.path(), "untrusted-orchestrator", ORCHESTRATOR).unwrap();
    let impostor = client(&alone, Some(&untrusted)).unwrap();
    let error = expect_refused(&alone, &impostor, "untrusted").await.unwrap();
    // BoringSSL finds the trusted root by name (both roots are "ai.internal test root"), then the
    // signature check fails: it answers decrypt_error rather than unknown_ca.
    assert!(error.contains("received fatal alert: DecryptError") || error.contains("UnknownCA"), "{error}");
    // The same sidecar lets the genuine orchestrator in.
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let (response, _) = send(&alone, &orchestrator, Http::H2, Request::new("POST", "/v1/generate"), "ok").await.unwrap();
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn svidgate_denies_svid_with_two_uri_sans_that_envoy_tls_accepts() {
    let alone = start("two-sans", MODEL_SERVER, false).await.unwrap();
    // The orchestrator's ID first, so Envoy's uri_san_peer_certificate alone would look fine.
    let spec = SvidSpec::for_workload(ORCHESTRATOR).with_uri_san(ROGUE.spiffe_id);
    let two = alone.pki.issue("two-uri-sans", &spec).unwrap();
    let caller = client(&alone, Some(&two)).unwrap();
    for http in [Http::H1, Http::H2] {
        let marker = format!("two-{http:?}");
        let (response, seen) = send(&alone, &caller, http, Request::new("POST", "/v1/generate"), &marker).await.unwrap();
        assert_eq!(response.status, 403, "{response:?}");
        assert!(seen.is_empty(), "reached the app: {seen:?}");
    }
    let denied = alone.sidecar.envoy.stat("wasmcustom.svidgate.identity.denied").await.unwrap();
    assert_eq!(denied, Some(2));
}

#[tokio::test]
async fn svidgate_denies_expired_svid_even_when_envoy_tls_accepts_it() {
    // allow_expired_certificate: true makes Envoy's TLS accept it; svidgate must not.
    let alone = start("expired", MODEL_SERVER, true).await.unwrap();
    let spec = SvidSpec::for_workload(ORCHESTRATOR).valid_between(Duration::minutes(-90), Duration::minutes(-30));
    let expired = alone.pki.issue("expired-orchestrator", &spec).unwrap();
    let caller = client(&alone, Some(&expired)).unwrap();
    for http in [Http::H1, Http::H2] {
        let marker = format!("expired-{http:?}");
        let (response, seen) = send(&alone, &caller, http, Request::new("POST", "/v1/generate"), &marker).await.unwrap();
        assert_eq!(response.status, 403, "{response:?}");
        assert!(seen.is_empty(), "reached the app: {seen:?}");
    }
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    let (response, _) = send(&alone, &orchestrator, Http::H1, Request::new("POST", "/v1/generate"), "fresh").await.unwrap();
    assert_eq!(response.status, 200);
}

#[tokio::test]
async fn envoy_refuses_expired_svid_at_handshake_by_default() {
    let alone = start("expired-default", MODEL_SERVER, false).await.unwrap();
    let spec = SvidSpec::for_workload(ORCHESTRATOR).valid_between(Duration::minutes(-90), Duration::minutes(-30));
    let expired = alone.pki.issue("expired-orchestrator", &spec).unwrap();
    let error = expect_refused(&alone, &client(&alone, Some(&expired)).unwrap(), "expired").await.unwrap();
    assert!(error.contains("received fatal alert: CertificateExpired"), "{error}");
}

#[tokio::test]
async fn gives_the_policy_other_filters_dynamic_metadata_as_metadata_context() {
    // Another filter in front writes dynamic metadata (set_metadata here, in the shape jwt_authn
    // writes a verified token's payload); the policy reads it as OPA-Envoy policies do, from
    // the namespaces configured as ext_authz's `metadata_context_namespaces`.
    let filters = r#"          - name: envoy.filters.http.set_metadata
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.set_metadata.v3.Config
              metadata:
              - metadata_namespace: envoy.filters.http.jwt_authn
                value:
                  payload: { sub: alice, scope: [models.read, tools.call] }
              - metadata_namespace: envoy.filters.http.not_listed
                value: { secret: true }
"#;
    let rego = r#"package envoy.authz
import rego.v1
default allow := false
metadata := input.attributes.metadataContext.filterMetadata
allow if {
    metadata["envoy.filters.http.jwt_authn"].payload.sub == "alice"
    "tools.call" in metadata["envoy.filters.http.jwt_authn"].payload.scope
    not metadata["envoy.filters.http.not_listed"]
    input.attributes.request.http.path != "/admin"
}"#;
    let plugin = serde_json::json!({"trust_domains": ["ai.internal"], "policy": {
        "rego": rego, "metadata_context_namespaces": ["envoy.filters.http.jwt_authn"],
    }});
    let modules = Modules::built().unwrap();
    let options =
        SidecarOptions { plugin: Some(plugin), filters_before: Some(filters.to_owned()), ..SidecarOptions::new(&modules.authz) };
    let alone = Alone::start("metadata-context", UPSTREAM.as_ref(), MODEL_SERVER, &options).await.unwrap();
    let orchestrator = client(&alone, Some(&alone.pki.cert(ORCHESTRATOR.name).unwrap())).unwrap();
    for http in [Http::H1, Http::H2] {
        let allowed = orchestrator.send(alone.sidecar.inbound_port, http, &Request::new("POST", "/v1/tools/call")).await.unwrap();
        assert_eq!(allowed.status, 200, "{http:?}: {allowed:?}");
        let denied = orchestrator.send(alone.sidecar.inbound_port, http, &Request::new("POST", "/admin")).await.unwrap();
        assert_eq!(denied.status, 403, "{http:?}: {denied:?}");
    }
}
