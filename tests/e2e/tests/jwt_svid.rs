//! JWT-SVIDs in real Envoy (`envoy/demo/jwt-svid.yaml`): a listener that asks for no client
//! certificate, as behind an L7 load balancer, takes the caller's identity from its JWT-SVID, in
//! both modules. The JWT bundle is polled from nginx standing in for the SPIRE server's bundle
//! endpoint; tokens are signed by `svidgate_testpki::jwt`, an ES256 key made with ring.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing, reason = "test helpers: a failure is the test failing")]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::envoy::{self, Envoy};
use svidgate_e2e::nginx::Nginx;
use svidgate_e2e::pki::MintedDomain;
use svidgate_e2e::topology::{Modules, RunDir, path_str};
use svidgate_e2e::upstream::Upstream;
use svidgate_e2e::wait;
use svidgate_testpki::jwt::JwtAuthority;
use svidgate_testpki::{MODEL_SERVER, ORCHESTRATOR, PARTNER, TOOL_RUNTIME, TRUST_DOMAIN};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const AUDIENCE: &str = "spiffe://ai.internal/ns/inference/sa/model-server";
const BUNDLE: &str = "bundle.json";

fn stat(name: &str) -> String {
    format!("wasmcustom.svidgate.identity.{name}")
}

fn identity_configuration() -> Value {
    json!({
        "trust_domains": [TRUST_DOMAIN],
        "require_peer": true,
        "jwt_svid": {
            "audiences": [AUDIENCE],
            "bundle_endpoints": {TRUST_DOMAIN: {"cluster": "spire_bundle", "resource": format!("/{BUNDLE}"), "min_delay": "1s", "max_delay": "1s"}}
        }
    })
}

/// The identity keys, and a policy that lets the orchestrator in, read as OPA-Envoy policies read
/// the caller; its source is in the response for the test to see.
fn authz_configuration() -> Value {
    let mut config = identity_configuration();
    let rego = format!(
        "package envoy.authz\nimport rego.v1\ndefault allow := false\nallow := {{\"allowed\": true, \"response_headers_to_add\": {{\"x-svidgate-source\": input.svidgate.source}}}} if input.attributes.source.principal == \"{}\"\n",
        ORCHESTRATOR.spiffe_id
    );
    config["policy"] = json!({"rego": rego});
    config
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// A JWT-SVID of `sub` for `aud`, expiring `ttl` seconds from now (negative: in the past).
fn token(authority: &JwtAuthority, sub: &str, aud: &str, ttl: i64) -> String {
    let exp = i64::try_from(now()).unwrap() + ttl;
    let claims = json!({"sub": sub, "aud": [aud], "exp": exp, "iat": now()});
    format!("Bearer {}", authority.sign(&claims.to_string()).unwrap())
}

struct Site {
    envoy: Envoy,
    identity_port: u16,
    authz_port: u16,
    nginx: Nginx,
    app: Upstream,
    anonymous: TlsClient,
    tool_runtime: TlsClient,
    _run: RunDir,
}

impl Site {
    async fn start(authority: &JwtAuthority) -> Site {
        let run = RunDir::new("jwt-svid").unwrap();
        let pki = MintedDomain::mint(&run.path().join("certs")).unwrap();
        let root = run.path().join("spire-bundle");
        std::fs::create_dir_all(&root).unwrap();
        let nginx = Nginx::start(&root, run.path()).unwrap();
        nginx.publish(BUNDLE, JwtAuthority::bundle(&[authority], 1).as_bytes()).unwrap();
        let app = Upstream::start(UPSTREAM.as_ref(), MODEL_SERVER.name, run.path()).unwrap();
        let modules = Modules::built().unwrap();
        let config = envoy::render(
            &envoy::template("jwt-svid.yaml").unwrap(),
            &[
                ("workload", MODEL_SERVER.name.to_owned()),
                ("certs", path_str(pki.dir())),
                ("app_port", app.port().to_string()),
                ("identity_wasm", path_str(&modules.identity)),
                ("authz_wasm", path_str(&modules.authz)),
                ("bundle_port", nginx.port().to_string()),
                ("identity_configuration", envoy::yaml_string(&identity_configuration().to_string()).unwrap()),
                ("authz_configuration", envoy::yaml_string(&authz_configuration().to_string()).unwrap()),
            ],
        )
        .unwrap();
        let envoy = Envoy::start("envoy-jwt-svid", &config, run.path()).await.unwrap();
        let identity_port = envoy.listener_port("identity").await.unwrap();
        let authz_port = envoy.listener_port("authz").await.unwrap();
        let anonymous = TlsClient::new(&pki.bundle(), None).unwrap();
        let tool_runtime = TlsClient::new(&pki.bundle(), Some(&pki.cert(TOOL_RUNTIME.name).unwrap())).unwrap();
        Site { envoy, identity_port, authz_port, nginx, app, anonymous, tool_runtime, _run: run }
    }

    /// Sends `GET /v1/models` with `authorization` (if any) and a forged identity header, marked
    /// `marker`; returns the status and what the app saw of it.
    async fn send(&self, client: &TlsClient, port: u16, marker: &str, authorization: Option<&str>) -> (u16, Vec<svidgate_e2e::upstream::Seen>, Vec<String>) {
        let mut request = Request::new("GET", "/v1/models")
            .header("x-request-marker", marker)
            .header("x-forwarded-spiffe-id", "spiffe://ai.internal/ns/admin/sa/root");
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        let response = client.send(port, Http::H2, &request).await.unwrap();
        let sources = response.header_values("x-svidgate-source").into_iter().map(str::to_owned).collect();
        (response.status, self.app.seen_with_marker(marker).unwrap(), sources)
    }

    async fn counter(&self, name: &str) -> u64 {
        self.envoy.stat(&stat(name)).await.unwrap().unwrap_or(0)
    }

    async fn wait_for<F: std::future::Future<Output = bool>>(&self, what: &str, done: impl Fn() -> F) {
        let held = wait::until(Duration::from_millis(100), Duration::from_secs(15), async || Ok(done().await.then_some(()))).await.unwrap();
        assert!(held.is_some(), "{what}: not within 15 s\n{}", self.envoy.log_tail());
    }
}

#[tokio::test]
async fn jwt_svids_identify_callers_without_client_certificates_in_real_envoy() {
    let k1 = JwtAuthority::new("k1").unwrap();
    let mut site = Site::start(&k1).await;
    let valid = token(&k1, ORCHESTRATOR.spiffe_id, AUDIENCE, 300);
    site.wait_for("the polled jwt bundle in force", || async {
        site.send(&site.anonymous, site.identity_port, "warm-up", Some(&valid)).await.0 == 200
    })
    .await;

    // A valid token is the identity, in both modules; the token and the forged header never reach the app.
    for (port, module) in [(site.identity_port, "identity"), (site.authz_port, "authz")] {
        let marker = format!("valid-{module}");
        let (status, seen, sources) = site.send(&site.anonymous, port, &marker, Some(&valid)).await;
        assert_eq!(status, 200, "{module}\n{}", site.envoy.log_tail());
        assert_eq!(seen.len(), 1, "{module}");
        assert_eq!(seen[0].identities, [ORCHESTRATOR.spiffe_id], "{module}: exactly the token's identity");
        assert!(!seen[0].header_names.iter().any(|n| n.eq_ignore_ascii_case("authorization")), "{module}: {:?}", seen[0].header_names);
        if module == "authz" {
            assert_eq!(sources, ["jwt_svid"], "the policy saw the token as the principal's source");
        }
    }
    assert!(site.counter("jwt_svid.accepted").await >= 3);

    // Each bad token is refused with its own counter, before anything reaches the app.
    let forger = JwtAuthority::new("k1").unwrap();
    for (case, authorization, counter) in [
        ("forged", token(&forger, ORCHESTRATOR.spiffe_id, AUDIENCE, 300), "forged"),
        ("expired", token(&k1, ORCHESTRATOR.spiffe_id, AUDIENCE, -120), "expired"),
        ("wrong audience", token(&k1, ORCHESTRATOR.spiffe_id, "spiffe://ai.internal/ns/data/sa/vector-store", 300), "wrong_audience"),
        ("foreign trust domain", token(&k1, PARTNER.spiffe_id, AUDIENCE, 300), "foreign_trust_domain"),
        ("not a jwt", "Bearer e2e-secret-token".to_owned(), "malformed"),
    ] {
        for port in [site.identity_port, site.authz_port] {
            let before = site.counter(&format!("jwt_svid.denied.{counter}")).await;
            let (status, seen, _) = site.send(&site.anonymous, port, &format!("{case}-{port}"), Some(&authorization)).await;
            assert_eq!((status, seen.len()), (403, 0), "{case} on {port}");
            assert_eq!(site.counter(&format!("jwt_svid.denied.{counter}")).await, before + 1, "{case} on {port}");
        }
    }
    // No token and no certificate: require_peer denies, as before.
    assert_eq!(site.send(&site.anonymous, site.identity_port, "no-token", None).await.0, 403);

    // A client certificate always wins over a token: the tool runtime sending the orchestrator's
    // token is the tool runtime (and the authz policy, which lets the orchestrator in, denies it).
    let (status, seen, _) = site.send(&site.tool_runtime, site.identity_port, "peer-wins", Some(&valid)).await;
    assert_eq!(status, 200);
    assert_eq!(seen[0].identities, [TOOL_RUNTIME.spiffe_id]);
    assert!(!seen[0].header_names.iter().any(|n| n.eq_ignore_ascii_case("authorization")), "stripped all the same");
    assert_eq!(site.send(&site.tool_runtime, site.authz_port, "peer-wins-authz", Some(&valid)).await.0, 403);

    // The SPIRE server rotates its JWT key: within a poll, k1's tokens stop working, k2's start.
    let k2 = JwtAuthority::new("k2").unwrap();
    site.nginx.publish(BUNDLE, JwtAuthority::bundle(&[&k2], 2).as_bytes()).unwrap();
    let rotated = token(&k2, ORCHESTRATOR.spiffe_id, AUDIENCE, 300);
    site.wait_for("k2 in force", || async { site.send(&site.anonymous, site.identity_port, "k2", Some(&rotated)).await.0 == 200 }).await;
    site.wait_for("k1 out of force in every VM", || async {
        site.send(&site.anonymous, site.identity_port, "k1-again", Some(&valid)).await.0 == 403
            && site.send(&site.anonymous, site.authz_port, "k1-again", Some(&valid)).await.0 == 403
    })
    .await;
    assert!(std::fs::read_to_string(site.envoy.log_path()).unwrap().contains("jwt bundle of ai.internal from cluster spire_bundle in force"));

    // Fail-static: the bundle endpoint goes away, and then serves garbage; k2 keeps deciding.
    let failed = site.counter("jwt_bundle.fetch_failed").await;
    site.nginx.stop();
    site.wait_for("a failed poll, counted", || async { site.counter("jwt_bundle.fetch_failed").await > failed }).await;
    assert_eq!(site.send(&site.anonymous, site.authz_port, "k2-endpoint-down", Some(&rotated)).await.0, 200);
    site.nginx.restart().unwrap();
    let rejected = site.counter("jwt_bundle.rejected").await;
    site.nginx.publish(BUNDLE, br#"{"keys": [{"use": "jwt-svid", "kty": "oct", "kid": "k3", "k": "c2VjcmV0"}]}"#).unwrap();
    site.wait_for("a refused bundle, counted", || async { site.counter("jwt_bundle.rejected").await > rejected }).await;
    assert_eq!(site.send(&site.anonymous, site.identity_port, "k2-after-garbage", Some(&rotated)).await.0, 200);
    site.envoy.check_running().unwrap();
}
