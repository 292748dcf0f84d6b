//! Hostile traffic in real Envoy, as the hostile-traffic report tried it, against svidgate on
//! its own: Envoy as it comes (header names with underscores forwarded, paths not normalized),
//! over HTTP/1.1 and HTTP/2, in front of the orchestrator's app in sidecar mode (the authz module
//! with `policies/orchestrator`, the gateway calling) and in perimeter mode (the identity module).
//!
//! What is asserted is what the app received, from its own report of every header name and the
//! request target byte for byte: a request is either refused (and the app never sees it), or it
//! arrives with exactly the identity svidgate set (the gateway's in sidecar mode, none at the
//! perimeter), no variant of the identity header, and the path the policy approved.

use svidgate_core::config::{DEFAULT_IDENTITY_HEADER, same_header_key};
use svidgate_e2e::client::{Http, Request, TlsClient};
use svidgate_e2e::topology::{Alone, Modules, SidecarOptions};
use svidgate_testpki::{GATEWAY, ORCHESTRATOR};

const UPSTREAM: &str = env!("CARGO_BIN_EXE_svidgate-upstream");
const ADMIN: &str = "spiffe://ai.internal/ns/admin/sa/root";

/// What must happen to a case's request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// A local reply with this status; the app sees nothing.
    Refused(u16),
    /// The app receives it, with exactly svidgate's identity and this request target.
    Forwarded(&'static str),
}

/// One hostile request and what must happen to it in sidecar and in perimeter mode.
struct Case {
    name: &'static str,
    path: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    /// HTTP/1.1 only (`Connection` has no place in HTTP/2).
    h1_only: bool,
    sidecar: Expect,
    perimeter: Expect,
}

fn case(name: &'static str, path: &'static str, headers: &[(&str, &str)], sidecar: Expect, perimeter: Expect) -> Case {
    let headers = headers.iter().map(|(n, v)| ((*n).to_owned(), v.as_bytes().to_vec())).collect();
    Case { name, path, headers, h1_only: false, sidecar, perimeter }
}

fn cases() -> Vec<Case> {
    use Expect::{Forwarded, Refused};
    let plan = "/v1/agent/plan";
    let forged = |name: &'static str| [(name, ADMIN)];
    let mut cases = vec![
        case("plain", plan, &[], Forwarded(plan), Forwarded(plan)),
        case("forged_header", plan, &forged("x-forwarded-spiffe-id"), Forwarded(plan), Forwarded(plan)),
        case("underscore_variant", plan, &forged("x_forwarded_spiffe_id"), Forwarded(plan), Forwarded(plan)),
        case(
            "mixed_variants",
            plan,
            &[("X_Forwarded-SPIFFE_Id", ADMIN), ("x-forwarded_spiffe-id", ADMIN), ("x-forwarded-spiffe_id", ADMIN)],
            Forwarded(plan),
            Forwarded(plan),
        ),
        case("mixed_case", plan, &forged("X-FORWARDED-SPIFFE-ID"), Forwarded(plan), Forwarded(plan)),
        case("comma_list", plan, &[("x-forwarded-spiffe-id", &format!("{ADMIN},{ADMIN}"))], Forwarded(plan), Forwarded(plan)),
        case("long_value", plan, &[("x-forwarded-spiffe-id", &"a".repeat(8192))], Forwarded(plan), Forwarded(plan)),
        case("dot_dot", "/v1/agent/../admin", &[], Refused(400), Refused(400)),
        case("encoded_dot_dot", "/v1/agent/%2e%2e/admin", &[], Refused(400), Refused(400)),
        case("encoded_slash", "/v1/agent/..%2fadmin", &[], Refused(400), Refused(400)),
        case("dot_then_dot_dot", "/v1/agent/./../admin", &[], Refused(400), Refused(400)),
        case("merged_slashes", "//v1/agent/../../admin", &[], Refused(400), Refused(400)),
        case("encoded_backslash", "/v1/agent%5c..%5cadmin", &[], Refused(400), Refused(400)),
        case("invalid_escape", "/v1/agent/%zz", &[], Refused(400), Refused(400)),
        // OPA's Envoy plugin refuses a query Go cannot parse; the identity module reads no query.
        case("query_semicolon", "/v1/agent/plan?a=1;b=2", &[], Refused(400), Forwarded("/v1/agent/plan?a=1;b=2")),
        case("denied_by_policy", "/v1/admin", &forged("x_forwarded_spiffe_id"), Refused(403), Forwarded("/v1/admin")),
    ];
    let many = (0..90).map(|_| ("x-forwarded-spiffe-id".to_owned(), ADMIN.as_bytes().to_vec())).collect();
    cases.push(Case { name: "ninety_copies", path: plan, headers: many, h1_only: false, sidecar: Forwarded(plan), perimeter: Forwarded(plan) });
    let nominated = [("connection", "x-forwarded-spiffe-id"), ("x-forwarded-spiffe-id", ADMIN)];
    cases.push(Case { h1_only: true, ..case("connection_nominated", plan, &nominated, Forwarded(plan), Forwarded(plan)) });
    // A value that is not UTF-8 (obs-text, legal on the wire) among the forged headers: the
    // module reads the header map lossily then, and still finds every identity header.
    let mut not_utf8 = case("not_utf8_value", plan, &[("x-forwarded-spiffe-id", ADMIN), ("x_forwarded_spiffe_id", ADMIN)], Forwarded(plan), Forwarded(plan));
    not_utf8.headers.insert(1, ("x-note".to_owned(), b"caf\xe9 \xff".to_vec()));
    cases.push(not_utf8);
    cases
}

#[tokio::test]
async fn hostile_requests_are_refused_or_reach_the_app_clean() {
    let modules = Modules::built().unwrap();
    let sidecar_options = SidecarOptions { envoy_defaults: true, ..SidecarOptions::new(&modules.authz) };
    let sidecar = Alone::start("hostile-sidecar", UPSTREAM.as_ref(), ORCHESTRATOR, &sidecar_options).await.unwrap();
    let perimeter_options = SidecarOptions {
        envoy_defaults: true,
        plugin: Some(serde_json::json!({"mode": "perimeter"})),
        ..SidecarOptions::new(&modules.identity)
    };
    let perimeter = Alone::start("hostile-perimeter", UPSTREAM.as_ref(), ORCHESTRATOR, &perimeter_options).await.unwrap();

    let (mut runs, mut refused, mut clean, mut problems) = (0, 0, 0, Vec::new());
    for (mode, site, identity) in [("sidecar", &sidecar, Some(GATEWAY.spiffe_id)), ("perimeter", &perimeter, None)] {
        let client = TlsClient::new(&site.pki.bundle(), Some(&site.pki.cert(GATEWAY.name).unwrap())).unwrap();
        for case in cases() {
            let expect = if mode == "sidecar" { case.sidecar } else { case.perimeter };
            for http in [Http::H1, Http::H2] {
                if case.h1_only && http == Http::H2 {
                    continue;
                }
                runs += 1;
                let label = format!("{mode} {http:?} {}", case.name);
                let marker = format!("{mode}-{http:?}-{}", case.name);
                let mut request = Request::new("POST", case.path).header("x-request-marker", &marker);
                for (name, value) in &case.headers {
                    request = request.header_bytes(name, value);
                }
                let response = match client.send(site.sidecar.inbound_port, http, &request).await {
                    Ok(response) => response,
                    Err(error) => {
                        problems.push(format!("{label}: {error:#}"));
                        continue;
                    }
                };
                let seen = site.sidecar.app.seen_with_marker(&marker).unwrap();
                match expect {
                    Expect::Refused(status) => {
                        if response.status != status || !seen.is_empty() {
                            problems.push(format!("{label}: expected {status}, refused; got {} and the app saw {seen:?}", response.status));
                        } else {
                            refused += 1;
                        }
                    }
                    Expect::Forwarded(target) => {
                        let [received] = seen.as_slice() else {
                            problems.push(format!("{label}: expected it at the app, got {} and {seen:?}", response.status));
                            continue;
                        };
                        let variants: Vec<&String> = received
                            .header_names
                            .iter()
                            .filter(|n| same_header_key(n, DEFAULT_IDENTITY_HEADER) && *n != DEFAULT_IDENTITY_HEADER)
                            .collect();
                        let identities: Vec<&str> = received.identities.iter().map(String::as_str).collect();
                        let want: Vec<&str> = identity.into_iter().collect();
                        if response.status != 200 || identities != want || !variants.is_empty() || received.target != target {
                            problems.push(format!(
                                "{label}: status {}, identities {identities:?} (want {want:?}), variants {variants:?}, target {:?} (want {target:?})",
                                response.status, received.target
                            ));
                        } else {
                            clean += 1;
                        }
                    }
                }
            }
        }
    }
    println!("hostile-traffic matrix: {runs} requests, {refused} refused, {clean} forwarded clean, {} problems", problems.len());
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert_eq!(refused + clean, runs);
    // The svidgate counters agree: the path guard refused the path cases in both modes.
    for site in [&sidecar, &perimeter] {
        let refused_paths = site.sidecar.envoy.stat("wasmcustom.svidgate.path_guard.refused").await.unwrap().unwrap_or(0);
        assert_eq!(refused_paths, 14, "7 path cases, HTTP/1.1 and HTTP/2");
    }
}
