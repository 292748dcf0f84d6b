//! The deployment manifests under `envoy/k8s/`: parsed as Kubernetes would read them (every
//! YAML document), checked for the structure their controllers need, never failing open, pinning
//! digests, and carrying plugin configurations the module itself accepts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use serde_json::{Value, json};
use svidgate_harness::cases::ModuleKind;
use svidgate_harness::host::PluginOptions;

use crate::layout_gate::package;
use crate::support::{Scratch, cli, run, workspace_root};

/// The kinds the manifests may hold, at the API versions the tested controllers serve.
const KINDS: [(&str, &str); 11] = [
    ("ClusterSPIFFEID", "spire.spiffe.io/v1alpha1"),
    ("WasmPlugin", "extensions.istio.io/v1alpha1"),
    ("PeerAuthentication", "security.istio.io/v1"),
    ("EnvoyFilter", "networking.istio.io/v1alpha3"),
    ("EnvoyExtensionPolicy", "gateway.envoyproxy.io/v1alpha1"),
    ("ClientTrafficPolicy", "gateway.envoyproxy.io/v1alpha1"),
    ("Namespace", "v1"),
    ("ConfigMap", "v1"),
    ("Deployment", "apps/v1"),
    ("Service", "v1"),
    // The Prometheus Operator's alert rules (monitoring/prometheus-rule.yaml).
    ("PrometheusRule", "monitoring.coreos.com/v1"),
];

/// The seed's five components and their namespaces.
const COMPONENTS: [(&str, &str); 5] = [
    ("gateway", "edge"),
    ("orchestrator", "agents"),
    ("model-server", "inference"),
    ("vector-store", "storage"),
    ("tool-runtime", "tools"),
];

/// Which policy directory each protected component runs.
const POLICIES: [(&str, &str); 4] = [
    ("orchestrator", "orchestrator"),
    ("model-server", "seed"),
    ("vector-store", "vector-store"),
    ("tool-runtime", "tool-runtime"),
];

/// SPIRE backdates an SVID's notBefore by this much (`credtemplate.NotBeforeCushion`).
const SPIRE_NOT_BEFORE_CUSHION: Duration = Duration::from_secs(10);

/// One YAML document of one file.
struct Doc {
    file: PathBuf,
    value: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        at(&self.value, "/kind").as_str().unwrap_or_default()
    }

    fn name(&self) -> String {
        let namespace = at(&self.value, "/metadata/namespace").as_str().unwrap_or("-");
        let name = at(&self.value, "/metadata/name").as_str().unwrap_or("?");
        format!("{} {namespace}/{name} ({})", self.kind(), self.file.display())
    }
}

/// The value at a JSON pointer, `null` when absent (helpers may not index).
fn at<'v>(value: &'v Value, pointer: &str) -> &'v Value {
    value.pointer(pointer).unwrap_or(&Value::Null)
}

fn k8s_dir() -> PathBuf {
    workspace_root().join("envoy/k8s")
}

/// Every document of every `*.yaml` under `dir`.
fn documents(dir: &Path) -> Result<Vec<Doc>> {
    let files = svidgate_oci::render::manifest_files(dir)?;
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(document).with_context(|| format!("parsing {}", file.display()))?;
            if !value.is_null() {
                docs.push(Doc { file: file.clone(), value });
            }
        }
    }
    ensure!(!docs.is_empty(), "no manifests under {}", dir.display());
    Ok(docs)
}

fn of_kind<'a>(docs: &'a [Doc], kind: &str) -> Vec<&'a Doc> {
    docs.iter().filter(|d| d.kind() == kind).collect()
}

/// The module a WasmPlugin or Envoy Gateway wasm entry pulls, from its URL.
fn module_of(url: &str) -> Result<ModuleKind> {
    match url {
        u if u.contains("/svidgate-authz@") => Ok(ModuleKind::Authz),
        u if u.contains("/svidgate-identity@") => Ok(ModuleKind::Identity),
        other => bail!("{other} pins no svidgate module by digest"),
    }
}

/// Every plugin configuration with the module it is for and where it comes from.
fn plugin_configs(docs: &[Doc]) -> Result<Vec<(String, ModuleKind, Value)>> {
    let mut configs = Vec::new();
    for doc in of_kind(docs, "WasmPlugin") {
        let url = at(&doc.value, "/spec/url").as_str().with_context(|| format!("{}: no url", doc.name()))?;
        configs.push((doc.name(), module_of(url)?, at(&doc.value, "/spec/pluginConfig").clone()));
    }
    for doc in of_kind(docs, "EnvoyExtensionPolicy") {
        for wasm in at(&doc.value, "/spec/wasm").as_array().with_context(|| format!("{}: no wasm", doc.name()))? {
            let url = at(wasm, "/code/image/url").as_str().with_context(|| format!("{}: no image url", doc.name()))?;
            configs.push((doc.name(), module_of(url)?, at(wasm, "/config").clone()));
        }
    }
    Ok(configs)
}

/// Whether the module configures itself with `config`, through the wasmtime harness.
fn accepted(kind: ModuleKind, config: &Value) -> Result<bool> {
    let plugin_config = serde_json::to_vec(config)?;
    Ok(kind.module()?.start(PluginOptions { plugin_config, ..Default::default() })?.configured())
}

/// `1h`, `61m`, `90s`, `10ms`: the duration forms the manifests use.
fn duration(text: &str) -> Result<Duration> {
    let split = text.find(|c: char| !c.is_ascii_digit()).with_context(|| format!("{text:?} has no unit"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().with_context(|| format!("{text:?}"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        other => bail!("unknown unit {other:?} in {text:?}"),
    })
}

#[test]
fn every_manifest_is_a_known_kind_at_its_api_version() -> Result<()> {
    for doc in documents(&k8s_dir())? {
        let expected = KINDS.iter().find(|(kind, _)| *kind == doc.kind()).map(|(_, api)| *api);
        assert_eq!(doc.value["apiVersion"].as_str(), expected, "{}", doc.name());
        assert!(doc.value["metadata"]["name"].as_str().is_some_and(|n| !n.is_empty()), "{}", doc.name());
        let namespaced = !matches!(doc.kind(), "ClusterSPIFFEID" | "Namespace");
        assert_eq!(doc.value["metadata"]["namespace"].is_string(), namespaced, "{}: namespace", doc.name());
    }
    Ok(())
}

#[test]
fn every_component_gets_its_spiffe_id_as_in_the_seed() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    let ids = of_kind(&docs, "ClusterSPIFFEID");
    assert_eq!(ids.len(), COMPONENTS.len());
    for (component, namespace) in COMPONENTS {
        let id = ids
            .iter()
            .find(|d| d.value["metadata"]["name"] == component)
            .with_context(|| format!("no ClusterSPIFFEID {component}"))?;
        let spec = &id.value["spec"];
        assert_eq!(
            spec["spiffeIDTemplate"],
            "spiffe://ai.internal/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.ServiceAccountName }}"
        );
        assert_eq!(spec["podSelector"]["matchLabels"], json!({"app": component}));
        assert_eq!(spec["namespaceSelector"]["matchLabels"], json!({"kubernetes.io/metadata.name": namespace}));
        assert_eq!(
            spec["workloadSelectorTemplates"],
            json!(["k8s:ns:{{ .PodMeta.Namespace }}", "k8s:sa:{{ .PodSpec.ServiceAccountName }}"])
        );
        let ttl = duration(spec["ttl"].as_str().context("no ttl")?)?;
        assert!(ttl <= Duration::from_secs(3600), "{component}: SVIDs live longer than an hour (seed §6.2)");
    }
    Ok(())
}

#[test]
fn nothing_fails_open_and_every_module_is_pinned_by_digest() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    let plugins = of_kind(&docs, "WasmPlugin");
    assert_eq!(plugins.len(), 5, "one at the ingress gateway, one per protected component");
    for doc in plugins {
        let spec = &doc.value["spec"];
        assert_eq!(
            spec["failStrategy"],
            "FAIL_CLOSE",
            "{}: failStrategy must be written out as FAIL_CLOSE",
            doc.name()
        );
        assert!(matches!(spec["phase"].as_str(), Some("AUTHN" | "AUTHZ")), "{}: phase", doc.name());
        assert!(
            matches!(spec["imagePullPolicy"].as_str(), Some("IfNotPresent" | "Always")),
            "{}: imagePullPolicy",
            doc.name()
        );
        assert_eq!(spec["type"], "HTTP", "{}", doc.name());
        let url = spec["url"].as_str().context("url")?;
        let sha256 = spec["sha256"].as_str().with_context(|| format!("{}: no sha256 pin", doc.name()))?;
        let module = if module_of(url)? == ModuleKind::Authz { "svidgate-authz" } else { "svidgate-identity" };
        assert_eq!(
            url,
            format!("oci://${{registry}}/{module}@sha256:{sha256}"),
            "{}: url and sha256 must pin one digest",
            doc.name()
        );
        assert_eq!(sha256, format!("${{{}_digest}}", module.replace('-', "_")), "{}", doc.name());
        if module == "svidgate-authz" {
            assert_eq!(
                spec["match"],
                json!([{"mode": "SERVER"}]),
                "{}: the authz filter belongs on inbound traffic",
                doc.name()
            );
            assert_eq!(spec["phase"], "AUTHZ", "{}", doc.name());
        }
    }
    let policies = of_kind(&docs, "EnvoyExtensionPolicy");
    assert_eq!(policies.len(), 1);
    for doc in policies {
        assert_eq!(doc.value["spec"]["targetRefs"][0]["kind"], "Gateway", "{}", doc.name());
        for wasm in doc.value["spec"]["wasm"].as_array().context("wasm")? {
            assert_eq!(wasm["failOpen"], false, "{}: failOpen must be written out as false", doc.name());
            assert_eq!(wasm["code"]["type"], "Image", "{}", doc.name());
            let image = &wasm["code"]["image"];
            let sha256 = image["sha256"].as_str().with_context(|| format!("{}: no image.sha256", doc.name()))?;
            assert_eq!(image["url"], format!("${{registry}}/svidgate-identity@sha256:{sha256}"), "{}", doc.name());
        }
    }
    Ok(())
}

#[test]
fn every_proxy_refuses_underscore_headers_and_normalizes_paths() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    // Istio: one EnvoyFilter on every HTTP connection manager of the mesh, sidecars and gateways.
    let [filter] = of_kind(&docs, "EnvoyFilter")[..] else { anyhow::bail!("expected one EnvoyFilter") };
    assert_eq!(at(&filter.value, "/metadata/namespace"), "istio-system", "{}", filter.name());
    let patch = at(&filter.value, "/spec/configPatches/0");
    assert_eq!(at(patch, "/applyTo"), "NETWORK_FILTER");
    assert_eq!(at(patch, "/match/context"), "ANY");
    assert_eq!(at(patch, "/match/listener/filterChain/filter/name"), "envoy.filters.network.http_connection_manager");
    let hcm = at(patch, "/patch/value/typed_config");
    assert_eq!(at(hcm, "/common_http_protocol_options/headers_with_underscores_action"), "REJECT_REQUEST");
    assert_eq!(at(hcm, "/normalize_path"), true);
    assert_eq!(at(hcm, "/merge_slashes"), true);
    assert_eq!(at(hcm, "/path_with_escaped_slashes_action"), "REJECT_REQUEST");
    // Envoy Gateway: a ClientTrafficPolicy on the gateway the svidgate extension policy targets.
    let [policy] = of_kind(&docs, "ClientTrafficPolicy")[..] else { anyhow::bail!("expected one ClientTrafficPolicy") };
    let [extension] = of_kind(&docs, "EnvoyExtensionPolicy")[..] else { anyhow::bail!("expected one EnvoyExtensionPolicy") };
    assert_eq!(at(&policy.value, "/spec/targetRefs"), at(&extension.value, "/spec/targetRefs"), "{}", policy.name());
    assert_eq!(at(&policy.value, "/metadata/namespace"), at(&extension.value, "/metadata/namespace"));
    assert_eq!(at(&policy.value, "/spec/headers/withUnderscoresAction"), "RejectRequest");
    assert_eq!(at(&policy.value, "/spec/path/escapedSlashesAction"), "RejectRequest");
    assert_eq!(at(&policy.value, "/spec/path/disableMergeSlashes"), false);
    Ok(())
}

#[test]
fn every_plugin_config_is_accepted_by_its_module() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    let configs = plugin_configs(&docs)?;
    assert_eq!(configs.len(), 6);
    for (name, kind, config) in &configs {
        assert!(accepted(*kind, config)?, "{name}: {} refuses its configuration", kind.file_name());
    }
    // The check can fail: the module refuses a key it does not know (here a would-be bypass).
    let (name, kind, config) = configs.first().context("no configs")?;
    let mut bypass = config.clone();
    bypass["fail_open"] = json!(true);
    assert!(!accepted(*kind, &bypass)?, "{name}: the module accepted an unknown key");
    Ok(())
}

#[test]
fn plugin_configs_carry_the_policies_of_the_repository() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    for (component, dir) in POLICIES {
        let namespace = COMPONENTS.iter().find(|(c, _)| *c == component).map(|(_, ns)| *ns).context("component")?;
        let plugin = of_kind(&docs, "WasmPlugin")
            .into_iter()
            .find(|d| d.value["metadata"]["namespace"] == namespace)
            .with_context(|| format!("no WasmPlugin in {namespace}"))?;
        assert_eq!(plugin.value["spec"]["selector"]["matchLabels"], json!({"app": component}));
        let policy = &plugin.value["spec"]["pluginConfig"]["policy"];
        let policy_dir = workspace_root().join(format!("policies/{dir}"));
        let mut modules = serde_json::Map::new();
        for entry in std::fs::read_dir(&policy_dir)? {
            let file = entry?.file_name().to_string_lossy().into_owned();
            if file.ends_with(".rego") && !file.ends_with("_test.rego") {
                modules.insert(file.clone(), Value::from(std::fs::read_to_string(policy_dir.join(&file))?));
            }
        }
        let data: Value = serde_json::from_slice(&std::fs::read(policy_dir.join("data.json"))?)?;
        assert_eq!(policy["rego"], Value::Object(modules), "{component}: the policy differs from the modules of policies/{dir}");
        assert_eq!(policy["data"], data, "{component}: the data differs from policies/{dir}/data.json");
        assert_eq!(plugin.value["spec"]["pluginConfig"]["mode"], "sidecar");
        assert_eq!(plugin.value["spec"]["pluginConfig"]["require_peer"], true, "{component}");
    }
    Ok(())
}

#[test]
fn max_svid_ttl_admits_the_svids_spire_issues_and_no_longer_ones() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    let ttls: BTreeMap<String, Duration> = of_kind(&docs, "ClusterSPIFFEID")
        .iter()
        .map(|d| {
            Ok((
                d.value["metadata"]["name"].as_str().unwrap_or_default().to_owned(),
                duration(d.value["spec"]["ttl"].as_str().context("ttl")?)?,
            ))
        })
        .collect::<Result<_>>()?;
    let mut checked = 0;
    for doc in of_kind(&docs, "WasmPlugin") {
        let config = &doc.value["spec"]["pluginConfig"];
        let Some(max) = config["max_svid_ttl"].as_str() else { continue };
        let component = doc.value["spec"]["selector"]["matchLabels"]["app"].as_str().context("app label")?;
        let ttl = ttls.get(component).with_context(|| format!("{component} has no ClusterSPIFFEID"))?;
        let max = duration(max)?;
        assert!(
            *ttl + SPIRE_NOT_BEFORE_CUSHION <= max,
            "{}: SPIRE's {ttl:?} SVIDs span {:?}, more than max_svid_ttl {max:?}",
            doc.name(),
            *ttl + SPIRE_NOT_BEFORE_CUSHION
        );
        assert!(
            max < Duration::from_secs(2 * 3600),
            "{}: max_svid_ttl {max:?} would admit long-lived SVIDs",
            doc.name()
        );
        checked += 1;
    }
    assert_eq!(checked, POLICIES.len());
    Ok(())
}

#[test]
fn the_bundle_service_serves_the_bundles_config_map() -> Result<()> {
    let docs = documents(&k8s_dir())?;
    let deployment = of_kind(&docs, "Deployment").into_iter().next().context("no Deployment")?;
    let service = of_kind(&docs, "Service").into_iter().next().context("no Service")?;
    let pod = &deployment.value["spec"]["template"];
    assert_eq!(deployment.value["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
    assert_eq!(service.value["spec"]["selector"], pod["metadata"]["labels"], "the Service selects no bundle pod");
    let container = &pod["spec"]["containers"][0];
    let port_names: Vec<&Value> = container["ports"].as_array().context("ports")?.iter().map(|p| &p["name"]).collect();
    assert!(
        port_names.contains(&&service.value["spec"]["ports"][0]["targetPort"]),
        "targetPort is not a container port"
    );
    let image = container["image"].as_str().context("image")?;
    assert!(image.rsplit_once(':').is_some_and(|(_, tag)| tag != "latest" && !tag.contains('/')), "{image}: pin a tag");
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(container["securityContext"]["allowPrivilegeEscalation"], false);
    let volume = pod["spec"]["volumes"]
        .as_array()
        .context("volumes")?
        .iter()
        .find(|v| v["configMap"]["name"] == "svidgate-bundles")
        .context("no svidgate-bundles volume")?;
    let mount = container["volumeMounts"]
        .as_array()
        .context("mounts")?
        .iter()
        .find(|m| m["name"] == volume["name"])
        .context("bundles not mounted")?;
    let nginx = of_kind(&docs, "ConfigMap")
        .into_iter()
        .find(|c| c.value["metadata"]["name"] == "bundles-nginx")
        .context("no nginx config")?;
    let conf = nginx.value["data"]["default.conf"].as_str().context("default.conf")?;
    assert!(
        conf.contains(&format!("alias {}/;", mount["mountPath"].as_str().unwrap_or_default())),
        "nginx does not serve the mounted bundles:\n{conf}"
    );
    assert!(
        conf.contains(&format!("listen {};", container["ports"][0]["containerPort"])),
        "nginx listens elsewhere than the container port"
    );
    Ok(())
}

#[test]
fn rendered_manifests_pin_the_digests_of_the_packaged_modules() -> Result<()> {
    let scratch = Scratch::new("k8s-render")?;
    let (_, pins) = package(&scratch.join("oci"))?;
    let registry = "registry.example:5000/svidgate";
    let out = scratch.join("k8s");
    run(cli()
        .arg("render")
        .args(["--registry", registry])
        .arg("--pins")
        .arg(scratch.join("oci/pins.json"))
        .arg("--in")
        .arg(k8s_dir())
        .arg("--out")
        .arg(&out))?;
    let hex = |name: &str| -> Result<String> {
        let pin = pins
            .artifacts
            .iter()
            .find(|p| p.name == name && p.kind == svidgate_oci::Kind::Compat)
            .with_context(|| format!("no pin for {name}"))?;
        Ok(pin.manifest_digest.hex().to_owned())
    };
    let docs = documents(&out)?;
    assert_eq!(docs.len(), documents(&k8s_dir())?.len());
    for doc in &docs {
        assert!(!serde_json::to_string(&doc.value)?.contains("${"), "{}: a placeholder is left", doc.name());
    }
    for doc in of_kind(&docs, "WasmPlugin") {
        let spec = &doc.value["spec"];
        let module = if module_of(spec["url"].as_str().context("url")?)? == ModuleKind::Authz {
            "svidgate-authz"
        } else {
            "svidgate-identity"
        };
        let digest = hex(module)?;
        assert_eq!(spec["sha256"], digest, "{}", doc.name());
        assert_eq!(spec["url"], format!("oci://{registry}/{module}@sha256:{digest}"), "{}", doc.name());
    }
    for doc in of_kind(&docs, "EnvoyExtensionPolicy") {
        let image = &doc.value["spec"]["wasm"][0]["code"]["image"];
        assert_eq!(image["sha256"], hex("svidgate-identity")?, "{}", doc.name());
        assert_eq!(image["url"], format!("{registry}/svidgate-identity@sha256:{}", hex("svidgate-identity")?));
    }
    let id = of_kind(&docs, "ClusterSPIFFEID").into_iter().next().context("no ClusterSPIFFEID")?;
    assert!(
        id.value["spec"]["spiffeIDTemplate"].as_str().is_some_and(|t| t.contains("{{ .PodMeta.Namespace }}")),
        "render touched SPIRE's templates"
    );
    Ok(())
}

#[test]
fn render_refuses_a_registry_url_with_a_scheme() -> Result<()> {
    let scratch = Scratch::new("k8s-render-bad")?;
    std::fs::write(scratch.join("pins.json"), r#"{"artifacts": []}"#)?;
    let out = cli()
        .arg("render")
        .args(["--registry", "https://registry.example/svidgate"])
        .arg("--pins")
        .arg(scratch.join("pins.json"))
        .arg("--in")
        .arg(k8s_dir())
        .arg("--out")
        .arg(scratch.join("k8s"))
        .output()?;
    assert!(!out.status.success());
    assert!(!scratch.join("k8s").exists(), "render wrote manifests for a bad registry");
    Ok(())
}
