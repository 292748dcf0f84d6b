use std::collections::BTreeMap;
use std::io::Write as _;

use serde_json::json;

use super::*;
use crate::artifact::fixtures::{EMPTY_MODULE, artifact};
use crate::artifact::{Artifact, IMAGE_CONFIG_MEDIA_TYPE, KINDS, Kind, MANIFEST_MEDIA_TYPE};

/// A hand-made image: a manifest over `layers` (media type, content), with an empty config.
struct Image {
    manifest: Vec<u8>,
    blobs: BTreeMap<Digest, Vec<u8>>,
}

fn image(media_type: Option<&str>, layers: &[(&str, Vec<u8>)]) -> Image {
    let mut blobs = BTreeMap::new();
    let mut descriptor = |media_type: &str, bytes: Vec<u8>| {
        let digest = Digest::of(&bytes);
        let d = json!({"mediaType": media_type, "digest": digest.as_str(), "size": bytes.len()});
        blobs.insert(digest, bytes);
        d
    };
    let config = descriptor(IMAGE_CONFIG_MEDIA_TYPE, b"{}".to_vec());
    let layers: Vec<_> = layers.iter().map(|(t, b)| descriptor(t, b.clone())).collect();
    let mut manifest = json!({"schemaVersion": 2, "config": config, "layers": layers});
    if let Some(m) = media_type {
        manifest["mediaType"] = json!(m);
    }
    Image { manifest: serde_json::to_vec(&manifest).unwrap(), blobs }
}

fn tar_gz(entries: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, bytes) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, path, *bytes).unwrap();
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&builder.into_inner().unwrap()).unwrap();
    gz.finish().unwrap()
}

fn istio(image: &Image) -> Result<IstioModule, GateError> {
    istio_module(&image.manifest, |d| image.blobs.get(d).map(Vec::as_slice))
}

fn artifact_blobs(artifact: &Artifact) -> BTreeMap<Digest, Vec<u8>> {
    artifact.blobs().map(|b| (b.digest.clone(), b.bytes.clone())).collect()
}

#[test]
fn istio_accepts_the_compat_image_we_build() {
    let compat = artifact(Kind::Compat);
    let found = istio_module(&compat.manifest, |d| compat.blob(d)).unwrap();
    assert_eq!(found.variant, IstioVariant::Compat);
    assert_eq!(found.wasm, EMPTY_MODULE);
}

#[test]
fn istio_refuses_the_cncf_artifact_we_build() {
    let wasm = artifact(Kind::Wasm);
    let err = istio_module(&wasm.manifest, |d| wasm.blob(d)).unwrap_err();
    assert!(matches!(err, GateError::Istio { .. }), "{err}");
}

#[test]
fn the_cncf_artifact_we_build_follows_its_spec() {
    let wasm = artifact(Kind::Wasm);
    assert_eq!(cncf_module(&wasm.manifest, |d| wasm.blob(d)).unwrap(), EMPTY_MODULE);
}

#[test]
fn the_compat_image_is_not_a_cncf_artifact() {
    let compat = artifact(Kind::Compat);
    assert!(matches!(cncf_module(&compat.manifest, |d| compat.blob(d)), Err(GateError::Cncf(_))));
}

#[test]
fn istio_accepts_plugin_wasm_under_a_directory() {
    let layer = tar_gz(&[("etc/", b""), ("./filters/plugin.wasm", &EMPTY_MODULE)]);
    let found = istio(&image(None, &[(TAR_GZIP_LAYER_MEDIA_TYPE, layer)])).unwrap();
    assert_eq!(found.wasm, EMPTY_MODULE);
}

#[test]
fn istio_accepts_a_docker_compat_image() {
    let layer = tar_gz(&[("plugin.wasm", &EMPTY_MODULE)]);
    let found = istio(&image(Some(DOCKER_MANIFEST_MEDIA_TYPE), &[(DOCKER_LAYER_MEDIA_TYPE, layer)])).unwrap();
    assert_eq!(found.variant, IstioVariant::Compat);
}

#[test]
fn istio_accepts_the_two_layer_oci_variant() {
    let image = image(
        Some(MANIFEST_MEDIA_TYPE),
        &[
            ("application/vnd.module.wasm.runtime.config.v1+json", b"{}".to_vec()),
            (SOLO_WASM_LAYER_MEDIA_TYPE, EMPTY_MODULE.to_vec()),
        ],
    );
    let found = istio(&image).unwrap();
    assert_eq!((found.variant, found.wasm.as_slice()), (IstioVariant::Oci, EMPTY_MODULE.as_slice()));
}

#[test]
fn istio_refuses_a_compat_image_with_two_tar_layers() {
    let layer = tar_gz(&[("plugin.wasm", &EMPTY_MODULE)]);
    let image = image(None, &[(TAR_GZIP_LAYER_MEDIA_TYPE, layer.clone()), (TAR_GZIP_LAYER_MEDIA_TYPE, layer)]);
    assert!(matches!(istio(&image), Err(GateError::Istio { .. })));
}

#[test]
fn istio_refuses_a_layer_without_plugin_wasm() {
    let layer = tar_gz(&[("svidgate_authz.wasm", &EMPTY_MODULE)]);
    let err = istio(&image(None, &[(TAR_GZIP_LAYER_MEDIA_TYPE, layer)])).unwrap_err();
    assert!(err.to_string().contains("plugin.wasm is not in its layer"), "{err}");
}

#[test]
fn istio_refuses_an_uncompressed_tar_layer() {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(8);
    header.set_cksum();
    builder.append_data(&mut header, "plugin.wasm", EMPTY_MODULE.as_slice()).unwrap();
    let layer = builder.into_inner().unwrap();
    assert!(istio(&image(None, &[("application/vnd.oci.image.layer.v1.tar", layer)])).is_err());
}

#[test]
fn istio_refuses_a_plugin_that_is_not_wasm() {
    let layer = tar_gz(&[("plugin.wasm", b"#!/bin/sh\necho not a module\n")]);
    assert!(matches!(istio(&image(None, &[(TAR_GZIP_LAYER_MEDIA_TYPE, layer)])), Err(GateError::NotWasm(_))));
}

#[test]
fn refuses_a_missing_or_tampered_blob() {
    for kind in KINDS {
        let built = artifact(kind);
        let mut blobs = artifact_blobs(&built);
        blobs.remove(&built.config.digest);
        assert!(matches!(
            istio_module(&built.manifest, |d| blobs.get(d).map(Vec::as_slice)),
            Err(GateError::BlobMissing(_) | GateError::Istio { .. })
        ));
        assert!(matches!(
            cncf_module(&built.manifest, |d| blobs.get(d).map(Vec::as_slice)),
            Err(GateError::BlobMissing(_) | GateError::Cncf(_))
        ));
    }
    let compat = artifact(Kind::Compat);
    let mut blobs = artifact_blobs(&compat);
    let layer = blobs.get_mut(&compat.layers[0].digest).unwrap();
    let last = layer.len() - 1;
    layer[last] ^= 0xff;
    assert!(istio_module(&compat.manifest, |d| blobs.get(d).map(Vec::as_slice)).is_err());
}

#[test]
fn refuses_what_is_not_a_manifest() {
    assert!(matches!(istio_module(b"{\"schemaVersion\": 2}", |_| None), Err(GateError::Manifest(_))));
    assert!(matches!(istio_module(b"not json", |_| None), Err(GateError::Manifest(_))));
}

#[test]
fn reads_the_provenance_annotations() {
    let annotated = provenance(&artifact(Kind::Compat).manifest).unwrap();
    assert_eq!(annotated.revision, "0123456789ab");
    assert_eq!(annotated.version, "0.1.0");
    assert_eq!(annotated.source, "https://github.com/svidgate/svidgate");
}

#[test]
fn refuses_a_manifest_without_provenance() {
    let bare = image(None, &[(TAR_GZIP_LAYER_MEDIA_TYPE, tar_gz(&[("plugin.wasm", &EMPTY_MODULE)]))]);
    assert!(matches!(provenance(&bare.manifest), Err(GateError::MissingAnnotation(annotations::SOURCE))));
}
