//! The layout gate: would Istio fetch a module from this manifest, and is a CNCF wasm artifact
//! what the CNCF spec says? Nothing is pushed that fails here.
//!
//! [`istio_module`] follows Istio's image fetcher (`pkg/wasm/imagefetcher.go`, which Envoy Gateway
//! also uses) but keeps to what every Istio release accepts: a Docker manifest or a "compat" image
//! with exactly one tar+gzip layer holding `plugin.wasm` (recent Istio reads the last of several
//! layers, older releases require exactly one), or the two-layer "oci" variant with one
//! `application/vnd.module.wasm.content.layer.v1+wasm` layer. Like Istio it then checks the module
//! starts with the wasm magic number.
//!
//! The manifest is re-parsed with `oci-spec`, an implementation independent of the `oci-client`
//! types [`crate::artifact`] writes with, and every referenced blob must match its digest and size.

use std::io::Read as _;

use oci_spec::image::{Descriptor, ImageManifest};
use serde::Deserialize;

use crate::artifact::{
    PLUGIN_FILE_NAME, TAR_GZIP_LAYER_MEDIA_TYPE, WASM_CONFIG_MEDIA_TYPE, WASM_LAYER_MEDIA_TYPE, annotations,
};
use crate::digest::Digest;

/// Docker's manifest media type; Istio reads such images as compat images.
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's gzip layer media type.
pub const DOCKER_LAYER_MEDIA_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// The wasm layer of Solo's two-layer "oci" variant.
pub const SOLO_WASM_LAYER_MEDIA_TYPE: &str = "application/vnd.module.wasm.content.layer.v1+wasm";

/// The largest module the gate unpacks (the shipped ones are under 2 MB).
const MAX_MODULE_BYTES: u64 = 64 << 20;
const WASM_MAGIC: [u8; 4] = [0x00, 0x61, 0x73, 0x6d];

/// How Istio reads an image it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum IstioVariant {
    /// One tar+gzip layer holding `plugin.wasm` (OCI or Docker media types).
    Compat,
    /// Two layers, one of them the raw module.
    Oci,
}

/// What the gate found in an image Istio accepts.
#[derive(Clone, Debug)]
pub struct IstioModule {
    /// How Istio reads it.
    pub variant: IstioVariant,
    /// The module Istio would hand to Envoy.
    pub wasm: Vec<u8>,
}

/// The provenance annotations a manifest carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Annotated {
    /// `org.opencontainers.image.source`.
    pub source: String,
    /// `org.opencontainers.image.revision`.
    pub revision: String,
    /// `org.opencontainers.image.version`.
    pub version: String,
}

/// Why the gate refuses a manifest.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GateError {
    /// A referenced blob is not there.
    #[error("blob {0} is missing")]
    BlobMissing(String),
    /// A referenced blob does not have the size its descriptor says.
    #[error("blob {digest} has {found} bytes, its descriptor says {expected}")]
    BlobSize {
        /// The blob.
        digest: String,
        /// The descriptor's size.
        expected: u64,
        /// The content's size.
        found: u64,
    },
    /// A CNCF wasm artifact breaks a rule of its spec.
    #[error("not a CNCF wasm artifact: {0}")]
    Cncf(String),
    /// A descriptor's digest is not sha256.
    #[error(transparent)]
    Digest(#[from] crate::digest::DigestError),
    /// Neither way Istio reads images works.
    #[error("istio cannot fetch a module from this image: as a compat image: {compat}; as the oci variant: {oci}")]
    Istio {
        /// Why it is not a compat image.
        compat: String,
        /// Why it is not the two-layer variant.
        oci: String,
    },
    /// The manifest does not parse as an OCI image manifest.
    #[error("not an OCI image manifest")]
    Manifest(#[source] oci_spec::OciSpecError),
    /// A provenance annotation is absent or empty.
    #[error("annotation {0} is missing")]
    MissingAnnotation(&'static str),
    /// The module found is not wasm.
    #[error("the module found ({0} bytes) does not start with the wasm magic number")]
    NotWasm(usize),
    /// `schemaVersion` is not 2.
    #[error("schemaVersion is {0}, not 2")]
    SchemaVersion(u32),
}

/// The module Istio (and Envoy Gateway) would load from this manifest, or why it would not.
/// `blob` returns the content of a referenced blob.
pub fn istio_module<'b>(manifest: &[u8], blob: impl Fn(&Digest) -> Option<&'b [u8]>) -> Result<IstioModule, GateError> {
    let manifest = parse(manifest)?;
    let layers = manifest.layers();
    let docker = manifest.media_type().as_ref().map(|m| m.as_ref()) == Some(DOCKER_MANIFEST_MEDIA_TYPE);
    let compat_type = if docker { DOCKER_LAYER_MEDIA_TYPE } else { TAR_GZIP_LAYER_MEDIA_TYPE };
    let compat = match layers.as_slice() {
        [layer] if layer.media_type().as_ref() == compat_type => {
            plugin_from_tar_gzip(content(layer, &blob)?).map(|wasm| (IstioVariant::Compat, wasm))
        }
        [layer] => Err(format!("its layer is {}, not {compat_type}", layer.media_type())),
        _ => Err(format!("it has {} layers, not exactly one", layers.len())),
    };
    let found = match compat {
        Ok(found) => found,
        // Istio reads Docker manifests only as compat images.
        Err(compat) if docker => {
            return Err(GateError::Istio { compat, oci: "a docker manifest is not tried as one".into() });
        }
        Err(compat) => match oci_variant(layers, &blob)? {
            Ok(wasm) => (IstioVariant::Oci, wasm),
            Err(oci) => return Err(GateError::Istio { compat, oci }),
        },
    };
    // Every blob must be intact, as a registry would insist, not only the one Istio reads.
    content(manifest.config(), &blob)?;
    for layer in layers {
        content(layer, &blob)?;
    }
    let (variant, wasm) = found;
    if !wasm.starts_with(&WASM_MAGIC) || wasm.len() < 8 {
        return Err(GateError::NotWasm(wasm.len()));
    }
    Ok(IstioModule { variant, wasm })
}

/// The module in a CNCF wasm artifact (config `application/vnd.wasm.config.v0+json`, exactly one
/// `application/wasm` layer, config `architecture: wasm`, `os: wasip1`, `layerDigests` naming the
/// layer), or why it is not one.
pub fn cncf_module<'b>(manifest: &[u8], blob: impl Fn(&Digest) -> Option<&'b [u8]>) -> Result<Vec<u8>, GateError> {
    let manifest = parse(manifest)?;
    let config = manifest.config();
    if config.media_type().as_ref() != WASM_CONFIG_MEDIA_TYPE {
        return Err(GateError::Cncf(format!("config is {}, not {WASM_CONFIG_MEDIA_TYPE}", config.media_type())));
    }
    let [layer] = manifest.layers().as_slice() else {
        return Err(GateError::Cncf(format!("{} layers, not exactly one", manifest.layers().len())));
    };
    if layer.media_type().as_ref() != WASM_LAYER_MEDIA_TYPE {
        return Err(GateError::Cncf(format!("layer is {}, not {WASM_LAYER_MEDIA_TYPE}", layer.media_type())));
    }
    let parsed: WasmConfig = serde_json::from_slice(content(config, &blob)?)
        .map_err(|e| GateError::Cncf(format!("config does not parse: {e}")))?;
    let layer_digest = Digest::parse(layer.digest().as_ref())?;
    if parsed.architecture != "wasm" || parsed.os != "wasip1" {
        return Err(GateError::Cncf(format!("platform {}/{}, not wasm/wasip1", parsed.architecture, parsed.os)));
    }
    if parsed.layer_digests != [layer_digest.to_string()] {
        return Err(GateError::Cncf(format!(
            "layerDigests {:?} do not name the layer {layer_digest}",
            parsed.layer_digests
        )));
    }
    let wasm = content(layer, &blob)?;
    if !wasm.starts_with(&WASM_MAGIC) {
        return Err(GateError::NotWasm(wasm.len()));
    }
    Ok(wasm.to_vec())
}

/// The source, revision and version annotations, all required and non-empty.
pub fn provenance(manifest: &[u8]) -> Result<Annotated, GateError> {
    let manifest = parse(manifest)?;
    let empty = std::collections::HashMap::new();
    let annotations_map = manifest.annotations().as_ref().unwrap_or(&empty);
    let get = |key: &'static str| {
        annotations_map.get(key).filter(|v| !v.trim().is_empty()).cloned().ok_or(GateError::MissingAnnotation(key))
    };
    Ok(Annotated {
        source: get(annotations::SOURCE)?,
        revision: get(annotations::REVISION)?,
        version: get(annotations::VERSION)?,
    })
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig {
    architecture: String,
    os: String,
    layer_digests: Vec<String>,
}

fn parse(manifest: &[u8]) -> Result<ImageManifest, GateError> {
    let parsed = ImageManifest::from_reader(manifest).map_err(GateError::Manifest)?;
    if parsed.schema_version() != 2 {
        return Err(GateError::SchemaVersion(parsed.schema_version()));
    }
    Ok(parsed)
}

/// A descriptor's content, checked against its digest and size.
fn content<'b>(descriptor: &Descriptor, blob: &impl Fn(&Digest) -> Option<&'b [u8]>) -> Result<&'b [u8], GateError> {
    let digest = Digest::parse(descriptor.digest().as_ref())?;
    let bytes = blob(&digest).ok_or_else(|| GateError::BlobMissing(digest.to_string()))?;
    let found = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if found != descriptor.size() {
        return Err(GateError::BlobSize { digest: digest.to_string(), expected: descriptor.size(), found });
    }
    if Digest::of(bytes) != digest {
        return Err(GateError::BlobMissing(format!("{digest} (content has another digest)")));
    }
    Ok(bytes)
}

/// Istio's `extractWasmPluginBinary`: the first entry whose base name is `plugin.wasm`.
fn plugin_from_tar_gzip(layer: &[u8]) -> Result<Vec<u8>, String> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let entries = archive.entries().map_err(|e| format!("its layer is not tar+gzip: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("its layer is not tar+gzip: {e}"))?;
        let path = entry.path().map_err(|e| format!("bad tar entry name: {e}"))?.into_owned();
        if path.file_name().is_some_and(|n| n == PLUGIN_FILE_NAME) {
            if entry.header().entry_type() != tar::EntryType::Regular {
                return Err(format!("{} is not a regular file", path.display()));
            }
            let mut wasm = Vec::new();
            entry
                .take(MAX_MODULE_BYTES)
                .read_to_end(&mut wasm)
                .map_err(|e| format!("cannot read {PLUGIN_FILE_NAME}: {e}"))?;
            return Ok(wasm);
        }
    }
    Err(format!("{PLUGIN_FILE_NAME} is not in its layer"))
}

/// Istio's `extractOCIArtifactImage`: exactly two layers, one of them the raw module.
/// The outer `Err` is a broken blob, the inner one why the variant does not apply.
fn oci_variant<'b>(
    layers: &[Descriptor],
    blob: &impl Fn(&Digest) -> Option<&'b [u8]>,
) -> Result<Result<Vec<u8>, String>, GateError> {
    if layers.len() != 2 {
        return Ok(Err(format!("it has {} layers, not 2", layers.len())));
    }
    match layers.iter().find(|l| l.media_type().as_ref() == SOLO_WASM_LAYER_MEDIA_TYPE) {
        Some(layer) => Ok(Ok(content(layer, blob)?.to_vec())),
        None => Ok(Err(format!("no layer is {SOLO_WASM_LAYER_MEDIA_TYPE}"))),
    }
}

#[cfg(test)]
mod tests;
