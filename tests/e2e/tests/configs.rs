//! Every Envoy configuration under `envoy/` passes `envoy --mode validate`, and every svidgate
//! plugin configuration in them is accepted by svidgate's own parser and policy compiler.
//!
//! Envoy's validation mode reads the files a config names (certificates, the `.wasm`), so the
//! demo templates are rendered with freshly minted certificates and the built modules, and the
//! SPIRE configs get their `/etc/envoy/...` paths pointed at those. It does not run the modules,
//! hence the second check.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use serde_yaml::Value;
use svidgate_core::config::ModuleKind;
use svidgate_core::filter::Root;
use svidgate_core::host::memory::MemoryHost;
use svidgate_e2e::envoy::{self, render, template};
use svidgate_e2e::paths;
use svidgate_e2e::pki::MintedDomain;
use svidgate_e2e::topology::{Modules, Policy, RunDir, path_str, plugin_configuration};
use svidgate_testpki::{GATEWAY, MODEL_SERVER, ORCHESTRATOR};

/// Every Envoy configuration under `envoy/` (YAML that is not a Kubernetes manifest, nor a
/// Prometheus rule file under `envoy/monitoring`), relative to it.
fn envoy_configs() -> Result<BTreeSet<String>> {
    fn walk(dir: &Path, root: &Path, out: &mut BTreeSet<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path == root.join("monitoring") {
                // Alert rules and their promtool tests: tests/monitoring.rs and `cargo xtask test` check them.
                continue;
            } else if path.is_dir() {
                walk(&path, root, out)?;
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                // envoy/k8s holds Kubernetes manifests (Istio WasmPlugin, SPIRE CRDs): not Envoy bootstraps.
                let kubernetes = std::fs::read_to_string(&path)?.lines().any(|l| l.starts_with("apiVersion:"));
                if !kubernetes {
                    out.insert(path.strip_prefix(root)?.to_string_lossy().into_owned());
                }
            }
        }
        Ok(())
    }
    let mut out = BTreeSet::new();
    walk(&paths::envoy_dir(), &paths::envoy_dir(), &mut out)?;
    Ok(out)
}

/// The demo templates rendered as the topology renders them (ports are placeholders: validation binds nothing).
fn render_demo(name: &str, run: &Path, pki: &MintedDomain, modules: &Modules) -> Result<String> {
    let vars = [
        ("workload", MODEL_SERVER.name.to_owned()),
        ("certs", path_str(pki.dir())),
        ("run_dir", path_str(run)),
        ("app_port", "8080".to_owned()),
        ("allow_expired_certificate", "false".to_owned()),
        ("model_server_port", "9001".to_owned()),
        ("vector_store_port", "9002".to_owned()),
        ("tool_runtime_port", "9003".to_owned()),
        ("orchestrator_port", "9004".to_owned()),
        ("identity_wasm", path_str(&modules.identity)),
        ("authz_wasm", path_str(&modules.authz)),
        ("version", "1".to_owned()),
        ("bundle_port", "9005".to_owned()),
        ("logs_port", "9006".to_owned()),
    ];
    let mut vars = vars.to_vec();
    if name == "authz-ecds.yaml" {
        let plugin = plugin_configuration(&Policy::for_workload(MODEL_SERVER)?, &[]).to_string();
        vars.push(("plugin_configuration", envoy::yaml_string(&plugin)?));
    }
    if name == "sidecar-bundle.yaml" {
        // The configuration README's "Bundles" section shows: bundle-only, stale after 10 minutes.
        let plugin = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "policy": {
            "bundle": {"cluster": "bundle_service", "resource": "/bundles/svidgate.tar.gz"},
            "max_policy_age": "10m",
            "decision_logs": {"service": {"cluster": "decision_logs"}, "decision_id_header": "x-svidgate-decision-id"}}});
        vars.push(("plugin_configuration", envoy::yaml_string(&plugin.to_string())?));
    }
    if name == "jwt-svid.yaml" {
        // The README's "JWT-SVIDs" section shows: the trust domain's bundle endpoint polled through spire_bundle.
        let jwt_svid = serde_json::json!({"audiences": ["spiffe://ai.internal/ns/inference/sa/model-server"],
            "bundle_endpoints": {"ai.internal": {"cluster": "spire_bundle"}}});
        let identity = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "jwt_svid": jwt_svid});
        let authz = serde_json::json!({"trust_domains": ["ai.internal"], "require_peer": true, "jwt_svid": jwt_svid,
            "policy": {"rego": "package envoy.authz\ndefault allow := false\n"}});
        vars.push(("identity_configuration", envoy::yaml_string(&identity.to_string())?));
        vars.push(("authz_configuration", envoy::yaml_string(&authz.to_string())?));
    }
    render(&template(name)?, &vars)
}

/// A bootstrap that carries the ECDS resource inline in place of the sidecar's discovery block,
/// so that `envoy --mode validate` checks the resource too.
fn inline_ecds(sidecar: &str, ecds: &str) -> Result<String> {
    let ecds: Value = serde_yaml::from_str(ecds)?;
    let resource = ecds.get("resources").and_then(|r| r.get(0)).context("no ecds resource")?;
    let mut bootstrap: Value = serde_yaml::from_str(sidecar)?;
    let filters = bootstrap
        .get_mut("static_resources")
        .and_then(|s| s.get_mut("listeners"))
        .and_then(|l| l.get_mut(0))
        .and_then(|l| l.get_mut("filter_chains"))
        .and_then(|c| c.get_mut(0))
        .and_then(|c| c.get_mut("filters"))
        .and_then(|f| f.get_mut(0))
        .and_then(|f| f.get_mut("typed_config"))
        .and_then(|t| t.get_mut("http_filters"))
        .and_then(Value::as_sequence_mut)
        .context("sidecar has no http_filters")?;
    let first = filters.first_mut().context("no http filter")?;
    ensure!(first.get("config_discovery").is_some(), "the first filter is not the ecds one");
    let mut inline = serde_yaml::Mapping::new();
    inline.insert("name".into(), resource.get("name").cloned().context("resource without name")?);
    inline.insert("typed_config".into(), resource.get("typed_config").cloned().context("no typed_config")?);
    *first = Value::Mapping(inline);
    Ok(serde_yaml::to_string(&bootstrap)?)
}

/// The SPIRE configs with their deployment paths pointed at the built modules and minted files.
fn localize_spire(config: &str, modules: &Modules, pki: &MintedDomain) -> Result<String> {
    let wasm_dir = modules.authz.parent().context("module has no directory")?;
    let gateway = pki.cert(GATEWAY.name)?;
    Ok(config
        .replace("/etc/envoy/svidgate/", &format!("{}/", path_str(wasm_dir)))
        .replace("/etc/envoy/tls/public.pem", &path_str(&gateway.cert))
        .replace("/etc/envoy/tls/public.key", &path_str(&gateway.key)))
}

/// Every svidgate plugin configuration in a config: (module file name, configuration JSON).
fn plugin_configurations(config: &str) -> Result<Vec<(String, String)>> {
    fn walk(value: &Value, out: &mut Vec<(String, String)>) {
        match value {
            Value::Mapping(map) => {
                let module = value.get("vm_config").and_then(|v| v.get("code")).and_then(|c| c.get("local"));
                let module = module.and_then(|l| l.get("filename")).and_then(Value::as_str);
                let configuration = value.get("configuration").and_then(|c| c.get("value")).and_then(Value::as_str);
                if let (Some(module), Some(configuration)) = (module, configuration) {
                    let file = module.rsplit('/').next().unwrap_or(module).to_owned();
                    out.push((file, configuration.to_owned()));
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Sequence(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&serde_yaml::from_str(config)?, &mut out);
    Ok(out)
}

/// Parses (and for authz, compiles) a plugin configuration as the module would in on_configure;
/// refuses dry-run policies (they let denials through) and configurations that do not require a peer.
fn check_plugin(module: &str, json: &str) -> Result<()> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    ensure!(value.pointer("/policy/dry_run") != Some(&serde_json::Value::Bool(true)), "dry_run lets denials through");
    let sidecar = value.get("mode").and_then(serde_json::Value::as_str) != Some("perimeter");
    ensure!(!sidecar || value.get("require_peer") == Some(&serde_json::Value::Bool(true)), "a sidecar must require_peer");
    let kind = match module {
        "svidgate_identity.wasm" => ModuleKind::Identity,
        "svidgate_authz.wasm" => ModuleKind::Authz,
        other => bail!("unknown module {other}"),
    };
    // The module's own configure step (parse, compile the policy), on the core's map-backed host.
    let host = MemoryHost::new(json);
    let configured = Root::new(kind, "configs-test").on_configure(&host);
    ensure!(configured, "{module} refuses its configuration: {:?}", host.state().logs);
    Ok(())
}

/// The HTTP connection manager settings every config under `envoy/` must carry (README "Security").
const HARDENING: [(&str, &str); 4] = [
    ("common_http_protocol_options.headers_with_underscores_action", "REJECT_REQUEST"),
    ("normalize_path", "true"),
    ("merge_slashes", "true"),
    ("path_with_escaped_slashes_action", "REJECT_REQUEST"),
];

/// Checks every HTTP connection manager of a config for [`HARDENING`]; returns how many it had.
fn check_hardening(config: &str) -> Result<usize> {
    fn managers<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
        match value {
            Value::Mapping(map) => {
                let kind = value.get("@type").and_then(Value::as_str).unwrap_or_default();
                if kind.ends_with(".HttpConnectionManager") {
                    out.push(value);
                }
                map.values().for_each(|v| managers(v, out));
            }
            Value::Sequence(items) => items.iter().for_each(|v| managers(v, out)),
            _ => {}
        }
    }
    let config: Value = serde_yaml::from_str(config)?;
    let mut found = Vec::new();
    managers(&config, &mut found);
    for hcm in &found {
        let prefix = hcm.get("stat_prefix").and_then(Value::as_str).unwrap_or("?");
        for (key, want) in HARDENING {
            let value = key.split('.').try_fold(*hcm, |at, part| at.get(part));
            let got = match value {
                Some(Value::Bool(b)) => b.to_string(),
                Some(Value::String(s)) => s.clone(),
                _ => String::new(),
            };
            ensure!(got == want, "HTTP connection manager {prefix}: {key} is {got:?}, not {want}");
        }
    }
    Ok(found.len())
}

/// Validates one file with Envoy, checks its connection managers' hardening and its plugin
/// configurations; returns how many plugin configurations it had.
fn check(label: &str, config: &str, dir: &Path) -> Result<usize> {
    let path: PathBuf = dir.join(label.replace('/', "-"));
    std::fs::write(&path, config)?;
    envoy::validate(&path).with_context(|| label.to_owned())?;
    ensure!(check_hardening(config).with_context(|| label.to_owned())? > 0, "{label}: no HTTP connection manager");
    let plugins = plugin_configurations(config)?;
    for (module, json) in &plugins {
        check_plugin(module, json).with_context(|| label.to_owned())?;
    }
    Ok(plugins.len())
}

#[test]
fn every_config_under_envoy_validates_and_its_plugin_configurations_load() {
    let run = RunDir::new("configs").unwrap();
    let pki = MintedDomain::mint(&run.path().join("certs")).unwrap();
    let modules = Modules::built().unwrap();
    let mut checked = BTreeSet::new();
    let mut plugins = 0;
    // The ECDS files the sidecars point at must exist for validation too.
    let ecds = render_demo("authz-ecds.yaml", run.path(), &pki, &modules).unwrap();
    std::fs::write(run.path().join(format!("{}-authz.yaml", MODEL_SERVER.name)), &ecds).unwrap();
    std::fs::write(run.path().join(format!("{}-authz.yaml", ORCHESTRATOR.name)), &ecds).unwrap();
    for name in ["sidecar.yaml", "orchestrator.yaml", "gateway.yaml", "sidecar-bundle.yaml", "jwt-svid.yaml"] {
        let config = render_demo(name, run.path(), &pki, &modules).unwrap();
        plugins += check(&format!("demo/{name}"), &config, run.path()).unwrap();
        checked.insert(format!("demo/{name}"));
    }
    let sidecar = render_demo("sidecar.yaml", run.path(), &pki, &modules).unwrap();
    plugins += check("demo/authz-ecds.yaml", &inline_ecds(&sidecar, &ecds).unwrap(), run.path()).unwrap();
    checked.insert("demo/authz-ecds.yaml".to_owned());
    for name in ["gateway.yaml", "model-server.yaml", "orchestrator.yaml"] {
        let original = std::fs::read_to_string(paths::envoy_dir().join("spire").join(name)).unwrap();
        let config = localize_spire(&original, &modules, &pki).unwrap();
        plugins += check(&format!("spire/{name}"), &config, run.path()).unwrap();
        checked.insert(format!("spire/{name}"));
    }
    assert_eq!(checked, envoy_configs().unwrap(), "a config under envoy/ is not validated by this test");
    // gateway (x2), sidecar-bundle, jwt-svid (x2), authz-ecds, spire model-server and orchestrator carry svidgate configurations.
    assert_eq!(plugins, 8);
}

#[test]
fn spire_configs_embed_the_policies_the_demo_runs() {
    let root = paths::workspace_root();
    for (config, policy) in [
        ("envoy/spire/model-server.yaml", "policies/seed/authz.rego"),
        ("envoy/spire/orchestrator.yaml", "policies/orchestrator/authz.rego"),
    ] {
        let plugins = plugin_configurations(&std::fs::read_to_string(root.join(config)).unwrap()).unwrap();
        let [(module, json)] = plugins.as_slice() else { panic!("{config}: expected one plugin, got {plugins:?}") };
        assert_eq!(module, "svidgate_authz.wasm");
        let json: serde_json::Value = serde_json::from_str(json).unwrap();
        let embedded = json["policy"]["rego"]["authz.rego"].as_str().unwrap();
        assert_eq!(embedded, std::fs::read_to_string(root.join(policy)).unwrap(), "{config} embeds a stale {policy}");
        assert_eq!(json["require_peer"], true, "{config}");
        let demo = Policy::for_workload(if policy.contains("seed") { MODEL_SERVER } else { ORCHESTRATOR }).unwrap();
        assert_eq!(json["policy"]["data"], demo.data);
        assert_eq!(json["policy"]["rego"], serde_json::json!(demo.modules), "{config}: every module of the policy");
    }
    for config in ["envoy/spire/gateway.yaml", "envoy/spire/model-server.yaml", "envoy/spire/orchestrator.yaml"] {
        let text = std::fs::read_to_string(root.join(config)).unwrap();
        assert!(text.contains("failure_policy: FAIL_RELOAD"), "{config}");
    }
}

#[test]
fn every_authz_filter_under_envoy_may_hold_headers_for_the_body() {
    // Without it, Envoy turns the filter's pause at the headers into one that never delivers the
    // body, and a policy that reads the body waits forever (tests/e2e/tests/bodies.rs).
    let mut filters = 0;
    for name in envoy_configs().unwrap() {
        let text = std::fs::read_to_string(paths::envoy_dir().join(&name)).unwrap();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, _) in lines.iter().enumerate().filter(|(_, l)| **l == "root_id: svidgate-authz") {
            filters += 1;
            let config = lines.get(i..).unwrap_or_default().iter().take_while(|l| !l.starts_with("vm_config:"));
            assert!(config.clone().any(|l| *l == "allow_on_headers_stop_iteration: true"), "{name}: {:?}", config.collect::<Vec<_>>());
        }
    }
    assert_eq!(filters, 5, "the svidgate-authz filters under envoy/");
}

#[test]
fn no_config_under_envoy_fails_open() {
    for name in envoy_configs().unwrap() {
        let text = std::fs::read_to_string(paths::envoy_dir().join(&name)).unwrap();
        for line in text.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let open = line.starts_with("failure_policy:") && !line.contains("FAIL_RELOAD") && !line.contains("FAIL_CLOSED");
            assert!(!open && !line.starts_with("fail_open:"), "{name}: {line}");
            assert!(!line.starts_with("failure_mode_allow: true"), "{name}: {line}");
        }
    }
}
