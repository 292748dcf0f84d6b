//! Digest pins, and the deployment manifests (`envoy/k8s/`) filled with them.
//!
//! The manifests pin every module by digest, and a digest changes with every build (the revision
//! is annotated), so the files in the repository hold placeholders (`${registry}`,
//! `${svidgate_authz_digest}`, ...) inside quoted YAML strings. [`render`] fills them from the
//! `pins.json` that packaging writes, and refuses to leave one unfilled. The `${name}` form keeps
//! clear of the `{{ .PodMeta.Namespace }}` Go templates SPIRE's `ClusterSPIFFEID` carries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, Kind};
use crate::digest::Digest;

/// The digests of one packaged artifact: what a deployment pins.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pin {
    /// The repository name, e.g. `svidgate-authz`.
    pub name: String,
    /// `compat` or `wasm`.
    pub kind: Kind,
    /// The tag.
    pub tag: String,
    /// The manifest digest: Istio `WasmPlugin.sha256`, Envoy Gateway `image.sha256`, `@sha256:` in URLs.
    pub manifest_digest: Digest,
    /// The module's own sha256 (hex): Envoy `vm_config.code.remote.sha256`.
    pub wasm_sha256: String,
    /// Where it was pushed (`host/repository:tag`), once it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Every pin of one packaging run (`pins.json`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pins {
    /// One per artifact.
    pub artifacts: Vec<Pin>,
}

/// Why a template cannot be filled.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// A registry name that would not make a valid image URL.
    #[error("{0:?} is not a registry path (host[:port][/namespace], no scheme, no tag)")]
    Registry(String),
    /// A placeholder has no value.
    #[error("placeholder {0} has no value")]
    Unfilled(String),
}

impl Pin {
    /// The pin of a built artifact.
    pub fn of(artifact: &Artifact) -> Self {
        Self {
            name: artifact.name.clone(),
            kind: artifact.kind,
            tag: artifact.tag.clone(),
            manifest_digest: artifact.manifest_digest.clone(),
            wasm_sha256: artifact.wasm_sha256.hex().to_owned(),
            reference: None,
        }
    }
}

impl Pins {
    /// The values of the deployment placeholders for images under `registry` (`host[:port]/namespace`):
    /// `registry`, and per module `<name>_digest` (compat manifest digest, hex), `<name>_tag` and
    /// `<name>_wasm_sha256`, with `-` written `_` (`svidgate_authz_digest`).
    pub fn variables(&self, registry: &str) -> Result<BTreeMap<String, String>, RenderError> {
        let registry = registry.trim_end_matches('/');
        let valid = !registry.is_empty()
            && !registry.contains("://")
            && !registry.contains('@')
            && !registry.chars().any(char::is_whitespace)
            && registry.split('/').all(|part| !part.is_empty());
        if !valid {
            return Err(RenderError::Registry(registry.to_owned()));
        }
        let mut vars = BTreeMap::from([("registry".to_owned(), registry.to_owned())]);
        for pin in self.artifacts.iter().filter(|p| p.kind == Kind::Compat) {
            let name = pin.name.replace('-', "_");
            vars.insert(format!("{name}_digest"), pin.manifest_digest.hex().to_owned());
            vars.insert(format!("{name}_tag"), pin.tag.clone());
            vars.insert(format!("{name}_wasm_sha256"), pin.wasm_sha256.clone());
        }
        Ok(vars)
    }
}

/// Fills every `${name}` of `template`; a name without a non-empty value, or a `${` that does not
/// close, is an error, so no placeholder reaches a cluster.
pub fn render(template: &str, vars: &BTreeMap<String, String>) -> Result<String, RenderError> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("${") {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let Some(end) = from.find('}') else {
            return Err(RenderError::Unfilled(from.chars().take(40).collect()));
        };
        let (placeholder, after) = from.split_at(end + 1);
        let name = placeholder.trim_start_matches("${").trim_end_matches('}').trim();
        match vars.get(name).filter(|v| !v.is_empty()) {
            Some(value) => out.push_str(value),
            None => return Err(RenderError::Unfilled(placeholder.to_owned())),
        }
        rest = after;
    }
    out.push_str(rest);
    Ok(out)
}

/// Every `*.yaml` / `*.yml` file under `dir`, recursively, sorted: the deployment manifests.
pub fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                found.push(path);
            }
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pins() -> Pins {
        let digest = Digest::of(b"manifest");
        Pins {
            artifacts: vec![
                Pin {
                    name: "svidgate-authz".into(),
                    kind: Kind::Compat,
                    tag: "0.1.0".into(),
                    manifest_digest: digest,
                    wasm_sha256: Digest::of(b"module").hex().to_owned(),
                    reference: None,
                },
                Pin {
                    name: "svidgate-authz".into(),
                    kind: Kind::Wasm,
                    tag: "0.1.0-wasm".into(),
                    manifest_digest: Digest::of(b"other"),
                    wasm_sha256: Digest::of(b"module").hex().to_owned(),
                    reference: None,
                },
            ],
        }
    }

    #[test]
    fn fills_the_compat_digests() {
        let vars = pins().variables("registry.example:5000/svidgate").unwrap();
        let out = render("url: \"oci://${registry}/svidgate-authz@sha256:${svidgate_authz_digest}\"", &vars).unwrap();
        assert_eq!(
            out,
            format!(
                "url: \"oci://registry.example:5000/svidgate/svidgate-authz@sha256:{}\"",
                Digest::of(b"manifest").hex()
            )
        );
    }

    #[test]
    fn refuses_to_leave_a_placeholder() {
        let vars = pins().variables("ghcr.io/acme").unwrap();
        assert!(matches!(render("sha256: \"${svidgate_identity_digest}\"", &vars), Err(RenderError::Unfilled(_))));
        assert!(matches!(render("sha256: \"${svidgate_authz_digest\"", &vars), Err(RenderError::Unfilled(_))));
    }

    #[test]
    fn leaves_go_templates_alone() {
        let vars = pins().variables("ghcr.io/acme").unwrap();
        let template = "spiffeIDTemplate: \"spiffe://ai.internal/ns/{{ .PodMeta.Namespace }}/sa/{{ .PodSpec.Sa }}\"";
        assert_eq!(render(template, &vars).unwrap(), template);
    }

    #[test]
    fn refuses_registries_that_make_bad_urls() {
        for bad in ["", "https://ghcr.io/acme", "ghcr.io//acme", "ghcr.io/acme@sha256", "ghcr.io/a b"] {
            assert!(pins().variables(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn writes_kinds_and_digests_as_the_strings_pins_json_holds() {
        for kind in crate::artifact::KINDS {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.as_str());
        }
        let json = serde_json::to_value(pins()).unwrap();
        assert_eq!(json["artifacts"][0]["kind"], "compat");
        assert_eq!(json["artifacts"][1]["kind"], "wasm");
        assert_eq!(json["artifacts"][0]["manifest_digest"], Digest::of(b"manifest").as_str());
    }

    #[test]
    fn round_trips_as_json() {
        let json = serde_json::to_string(&pins()).unwrap();
        assert_eq!(serde_json::from_str::<Pins>(&json).unwrap(), pins());
    }
}

