//! The two OCI artifacts built from one module, byte for byte reproducible.
//!
//! - [`Kind::Compat`]: the Istio/Solo "compat" image. One `application/vnd.oci.image.layer.v1.tar+gzip`
//!   layer whose tar holds `plugin.wasm`, an OCI image config, and the `module.wasm.image/variant:
//!   compat` annotation. This is what Istio's `WasmPlugin` and Envoy Gateway's `EnvoyExtensionPolicy`
//!   pull (see [`crate::gate`]).
//! - [`Kind::Wasm`]: the CNCF TAG Runtime wasm artifact. Config `application/vnd.wasm.config.v0+json`,
//!   one `application/wasm` layer holding the module as is; for wasm-native tooling (ORAS, wasm
//!   runtimes). Istio does not fetch this one.
//!
//! Reproducible: the same module and [`Provenance`] give the same bytes, hence the same digests.
//! Every timestamp (tar mtime, `created`) is the provenance's, the gzip header carries no mtime,
//! name or OS, ownership is 0:0, and JSON is written from structs and `BTreeMap`s only (no
//! `serde_json::Value`, whose key order depends on a cargo feature another crate may turn on).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::Path;

use flate2::{Compression, GzBuilder};
use oci_client::manifest::{OciDescriptor, OciImageManifest};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::digest::Digest;

/// Media type of OCI image manifests (both kinds are image manifests).
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of the compat image's config.
pub const IMAGE_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the compat image's single layer.
pub const TAR_GZIP_LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of the CNCF wasm artifact's config.
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the CNCF wasm artifact's single layer: the module itself.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// The file Istio's fetcher looks for in a compat layer.
pub const PLUGIN_FILE_NAME: &str = "plugin.wasm";
/// Annotation Solo's compat spec requires on a compat image with an OCI tar+gzip layer.
pub const VARIANT_ANNOTATION: &str = "module.wasm.image/variant";

/// `org.opencontainers.image.*` annotation keys written on every manifest.
pub mod annotations {
    /// When the artifact's content was made (the provenance's timestamp, RFC 3339).
    pub const CREATED: &str = "org.opencontainers.image.created";
    /// The license of the module.
    pub const LICENSES: &str = "org.opencontainers.image.licenses";
    /// The git revision the module was built from (the one it logs at VM start).
    pub const REVISION: &str = "org.opencontainers.image.revision";
    /// The source repository URL.
    pub const SOURCE: &str = "org.opencontainers.image.source";
    /// The module name.
    pub const TITLE: &str = "org.opencontainers.image.title";
    /// The module version.
    pub const VERSION: &str = "org.opencontainers.image.version";
    /// The tag of a manifest inside an OCI image layout's `index.json`.
    pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
}

/// The license every module ships under (the workspace's).
pub const LICENSE: &str = env!("CARGO_PKG_LICENSE");

/// The first eight bytes of every core wasm module: `\0asm` and version 1.
const WASM_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// A built module to package.
#[derive(Clone, Debug)]
pub struct Module {
    /// The repository name it is pushed under, e.g. `svidgate-authz`.
    pub name: String,
    /// The file name it is built as, e.g. `svidgate_authz.wasm`.
    pub file_name: String,
    /// The `.wasm` bytes.
    pub bytes: Vec<u8>,
}

/// Where a module comes from, written into the annotations.
#[derive(Clone, Debug)]
pub struct Provenance {
    /// The module version (`org.opencontainers.image.version`).
    pub version: String,
    /// The git revision (`org.opencontainers.image.revision`).
    pub revision: String,
    /// The source repository URL (`org.opencontainers.image.source`).
    pub source: String,
    /// The content timestamp: tar mtime, `created` fields and annotation.
    pub created: OffsetDateTime,
}

/// Which artifact to build from a module. Serialized as [`Kind::as_str`] (`pins.json`'s `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Kind {
    /// The Istio/Solo compat image: one tar+gzip layer holding `plugin.wasm`.
    Compat,
    /// The CNCF wasm artifact: one `application/wasm` layer.
    Wasm,
}

/// Both kinds, in the order they are built and listed.
pub const KINDS: [Kind; 2] = [Kind::Compat, Kind::Wasm];

/// One blob of an artifact: its media type, bytes and digest.
#[derive(Clone, Debug)]
pub struct Blob {
    /// The media type its descriptor carries.
    pub media_type: String,
    /// The content.
    pub bytes: Vec<u8>,
    /// The digest of `bytes`.
    pub digest: Digest,
}

/// A built artifact: the manifest bytes exactly as pushed, and the blobs it references.
#[derive(Clone, Debug)]
pub struct Artifact {
    /// The repository name, e.g. `svidgate-authz`.
    pub name: String,
    /// Which kind it is.
    pub kind: Kind,
    /// The tag it is pushed under ([`Kind::tag`]).
    pub tag: String,
    /// The manifest, serialized once; its digest is the one to pin.
    pub manifest: Vec<u8>,
    /// The digest of `manifest`: Istio `WasmPlugin.sha256`, Envoy Gateway `image.sha256`.
    pub manifest_digest: Digest,
    /// The config blob.
    pub config: Blob,
    /// The layer blobs, in manifest order.
    pub layers: Vec<Blob>,
    /// The digest of the module itself: Envoy `vm_config.code.remote.sha256`.
    pub wasm_sha256: Digest,
}

/// Why an artifact cannot be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArtifactError {
    /// Archiving or compressing failed (in memory: only on absurd sizes).
    #[error("cannot write the layer archive")]
    Archive(#[source] std::io::Error),
    /// JSON serialization failed.
    #[error("cannot serialize {what}")]
    Json {
        /// What was being written.
        what: &'static str,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The bytes are not a core wasm module.
    #[error("{0:?} is not a wasm module (no \\0asm version 1 header)")]
    NotWasm(String),
    /// The module file is not there or unreadable.
    #[error("cannot read module {path:?}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The provenance timestamp cannot be written (before 1970 or past 2106 for a tar mtime).
    #[error("provenance timestamp {0} cannot be written")]
    Timestamp(OffsetDateTime),
}

impl Module {
    /// Reads a built module; the repository name is the file stem with `_` as `-`
    /// (`svidgate_authz.wasm` is pushed as `svidgate-authz`).
    pub fn read(path: &Path) -> Result<Self, ArtifactError> {
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| ArtifactError::Read { path: shown.clone(), source })?;
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| shown.clone());
        let stem = file_name.strip_suffix(".wasm").unwrap_or(&file_name);
        Ok(Self { name: stem.replace('_', "-"), file_name: file_name.clone(), bytes })
    }
}

impl Kind {
    /// The tag of this kind for a version: the compat image gets the plain version (what Istio
    /// and Envoy Gateway users reference), the CNCF artifact `<version>-wasm`.
    pub fn tag(self, version: &str) -> String {
        match self {
            Self::Compat => version.to_owned(),
            Self::Wasm => format!("{version}-wasm"),
        }
    }

    /// `compat` or `wasm`: the directory name of its layout.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Compat => "compat",
            Self::Wasm => "wasm",
        }
    }
}

impl Artifact {
    /// Builds the `kind` artifact of `module`.
    pub fn build(module: &Module, kind: Kind, provenance: &Provenance) -> Result<Self, ArtifactError> {
        if !module.bytes.starts_with(&WASM_HEADER) {
            return Err(ArtifactError::NotWasm(module.file_name.clone()));
        }
        let created = provenance.created.format(&Rfc3339).map_err(|_| ArtifactError::Timestamp(provenance.created))?;
        let wasm_sha256 = Digest::of(&module.bytes);
        let mut annotations = BTreeMap::from([
            (annotations::CREATED.to_owned(), created.clone()),
            (annotations::LICENSES.to_owned(), LICENSE.to_owned()),
            (annotations::REVISION.to_owned(), provenance.revision.clone()),
            (annotations::SOURCE.to_owned(), provenance.source.clone()),
            (annotations::TITLE.to_owned(), module.name.clone()),
            (annotations::VERSION.to_owned(), provenance.version.clone()),
        ]);
        let (config, layer) = match kind {
            Kind::Compat => {
                annotations.insert(VARIANT_ANNOTATION.to_owned(), "compat".to_owned());
                let tar = plugin_tar(&module.bytes, provenance.created)?;
                let config = ImageConfig::new(&created, Digest::of(&tar));
                let layer = Blob::new(TAR_GZIP_LAYER_MEDIA_TYPE, gzip(&tar)?);
                (Blob::new(IMAGE_CONFIG_MEDIA_TYPE, json("image config", &config)?), layer)
            }
            Kind::Wasm => {
                let config = WasmConfig::new(&created, &wasm_sha256);
                let layer = Blob::new(WASM_LAYER_MEDIA_TYPE, module.bytes.clone());
                (Blob::new(WASM_CONFIG_MEDIA_TYPE, json("wasm config", &config)?), layer)
            }
        };
        // ORAS names pulled files after the layer title; give the CNCF artifact's module its file name.
        let layer_annotations =
            (kind == Kind::Wasm).then(|| BTreeMap::from([(annotations::TITLE.to_owned(), module.file_name.clone())]));
        let manifest = OciImageManifest {
            schema_version: 2,
            media_type: Some(MANIFEST_MEDIA_TYPE.to_owned()),
            config: config.descriptor(None),
            layers: vec![layer.descriptor(layer_annotations)],
            subject: None,
            artifact_type: None,
            annotations: Some(annotations),
        };
        let manifest = json("manifest", &manifest)?;
        Ok(Self {
            name: module.name.clone(),
            kind,
            tag: kind.tag(&provenance.version),
            manifest_digest: Digest::of(&manifest),
            manifest,
            config,
            layers: vec![layer],
            wasm_sha256,
        })
    }

    /// The config and the layers: every blob the manifest references.
    pub fn blobs(&self) -> impl Iterator<Item = &Blob> {
        std::iter::once(&self.config).chain(&self.layers)
    }

    /// The content of a referenced blob.
    pub fn blob(&self, digest: &Digest) -> Option<&[u8]> {
        self.blobs().find(|b| &b.digest == digest).map(|b| b.bytes.as_slice())
    }
}

impl Blob {
    fn new(media_type: &str, bytes: Vec<u8>) -> Self {
        Self { media_type: media_type.to_owned(), digest: Digest::of(&bytes), bytes }
    }

    fn descriptor(&self, annotations: Option<BTreeMap<String, String>>) -> OciDescriptor {
        OciDescriptor {
            media_type: self.media_type.clone(),
            digest: self.digest.to_string(),
            // A Vec longer than i64::MAX bytes cannot exist.
            size: i64::try_from(self.bytes.len()).unwrap_or(i64::MAX),
            urls: None,
            annotations,
            artifact_type: None,
        }
    }
}

/// The OCI image config of the compat image: a `FROM scratch` image of one layer.
#[derive(Serialize)]
struct ImageConfig<'a> {
    created: &'a str,
    architecture: &'static str,
    os: &'static str,
    config: Empty,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

impl<'a> ImageConfig<'a> {
    fn new(created: &'a str, uncompressed_layer: Digest) -> Self {
        // Not a runnable image: the platform says what the one file in it is for.
        Self {
            created,
            architecture: "wasm",
            os: "wasip1",
            config: Empty {},
            rootfs: RootFs { kind: "layers", diff_ids: vec![uncompressed_layer.to_string()] },
        }
    }
}

/// The CNCF wasm artifact config (`application/vnd.wasm.config.v0+json`) of a core module.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: &'a str,
    architecture: &'static str,
    /// `wasip1`: a core module, not a component (which would be `wasip2` with a `component` field).
    os: &'static str,
    layer_digests: Vec<String>,
}

impl<'a> WasmConfig<'a> {
    fn new(created: &'a str, layer: &Digest) -> Self {
        Self { created, architecture: "wasm", os: "wasip1", layer_digests: vec![layer.to_string()] }
    }
}

/// A ustar archive of one regular file, `plugin.wasm`, owned by 0:0, mode 0644, at `mtime`.
fn plugin_tar(wasm: &[u8], mtime: OffsetDateTime) -> Result<Vec<u8>, ArtifactError> {
    let seconds = u64::try_from(mtime.unix_timestamp()).map_err(|_| ArtifactError::Timestamp(mtime))?;
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE_NAME).map_err(ArtifactError::Archive)?;
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(u64::try_from(wasm.len()).unwrap_or(u64::MAX));
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(seconds);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, wasm).map_err(ArtifactError::Archive)?;
    builder.into_inner().map_err(ArtifactError::Archive)
}

/// Gzip at the best level with an empty header (mtime 0, no name, OS "unknown"), so the output
/// depends only on the input and the (locked) miniz_oxide version.
fn gzip(bytes: &[u8]) -> Result<Vec<u8>, ArtifactError> {
    let mut encoder = GzBuilder::new().mtime(0).operating_system(255).write(Vec::new(), Compression::best());
    encoder.write_all(bytes).map_err(ArtifactError::Archive)?;
    encoder.finish().map_err(ArtifactError::Archive)
}

fn json(what: &'static str, value: &impl Serialize) -> Result<Vec<u8>, ArtifactError> {
    serde_json::to_vec(value).map_err(|source| ArtifactError::Json { what, source })
}

/// The artifact the unit tests of this crate package: a header-only module, fixed provenance.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;

    /// The smallest valid module: header only.
    pub(crate) const EMPTY_MODULE: [u8; 8] = WASM_HEADER;

    pub(crate) fn module() -> Module {
        Module { name: "svidgate-test".into(), file_name: "svidgate_test.wasm".into(), bytes: EMPTY_MODULE.to_vec() }
    }

    pub(crate) fn provenance() -> Provenance {
        Provenance {
            version: "0.1.0".into(),
            revision: "0123456789ab".into(),
            source: "https://github.com/svidgate/svidgate".into(),
            created: OffsetDateTime::UNIX_EPOCH,
        }
    }

    pub(crate) fn artifact(kind: Kind) -> Artifact {
        Artifact::build(&module(), kind, &provenance()).unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{EMPTY_MODULE, module, provenance};
    use super::*;

    fn manifest(artifact: &Artifact) -> serde_json::Value {
        serde_json::from_slice(&artifact.manifest).unwrap()
    }

    #[test]
    fn builds_the_same_bytes_twice() {
        for kind in KINDS {
            let (a, b) = (
                Artifact::build(&module(), kind, &provenance()).unwrap(),
                Artifact::build(&module(), kind, &provenance()).unwrap(),
            );
            assert_eq!(a.manifest, b.manifest, "{kind:?}");
            assert_eq!(a.layers[0].bytes, b.layers[0].bytes, "{kind:?}");
        }
    }

    /// Pins the exact output for a fixed input: a change here changes every published digest, so
    /// it must be deliberate (a flate2/miniz_oxide upgrade that changes compression shows up here).
    #[test]
    fn keeps_its_digests_for_a_fixed_input() {
        let compat = Artifact::build(&module(), Kind::Compat, &provenance()).unwrap();
        let wasm = Artifact::build(&module(), Kind::Wasm, &provenance()).unwrap();
        assert_eq!(
            compat.manifest_digest.as_str(),
            "sha256:6e560d2659ce18954ba46ebb20fcae2501ddf4678670fbab734251df8295af92"
        );
        assert_eq!(
            wasm.manifest_digest.as_str(),
            "sha256:dca919c45c124e62ecdbb419f6469f46d8311c026cd479824bb54c84767f14b3"
        );
    }

    #[test]
    fn annotates_source_revision_and_version() {
        for kind in KINDS {
            let m = manifest(&Artifact::build(&module(), kind, &provenance()).unwrap());
            let a = &m["annotations"];
            assert_eq!(a[annotations::SOURCE], "https://github.com/svidgate/svidgate");
            assert_eq!(a[annotations::REVISION], "0123456789ab");
            assert_eq!(a[annotations::VERSION], "0.1.0");
            assert_eq!(a[annotations::CREATED], "1970-01-01T00:00:00Z");
        }
    }

    #[test]
    fn a_new_revision_is_a_new_digest() {
        let other = Provenance { revision: "ba9876543210".into(), ..provenance() };
        let a = Artifact::build(&module(), Kind::Compat, &provenance()).unwrap();
        let b = Artifact::build(&module(), Kind::Compat, &other).unwrap();
        assert_ne!(a.manifest_digest, b.manifest_digest);
        assert_eq!(a.layers[0].digest, b.layers[0].digest, "the layer depends on the module and timestamp only");
    }

    #[test]
    fn compat_is_one_tar_gzip_layer_marked_compat() {
        let artifact = Artifact::build(&module(), Kind::Compat, &provenance()).unwrap();
        let m = manifest(&artifact);
        assert_eq!(m["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(m["config"]["mediaType"], IMAGE_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"].as_array().unwrap().len(), 1);
        assert_eq!(m["layers"][0]["mediaType"], TAR_GZIP_LAYER_MEDIA_TYPE);
        assert_eq!(m["annotations"][VARIANT_ANNOTATION], "compat");
        let config: serde_json::Value = serde_json::from_slice(&artifact.config.bytes).unwrap();
        let tar = flate2::read::GzDecoder::new(artifact.layers[0].bytes.as_slice());
        let tar = std::io::Read::bytes(tar).collect::<Result<Vec<u8>, _>>().unwrap();
        assert_eq!(config["rootfs"]["diff_ids"][0], Digest::of(&tar).as_str(), "diff_id is the uncompressed layer");
    }

    #[test]
    fn wasm_artifact_is_the_module_as_one_layer() {
        let artifact = Artifact::build(&module(), Kind::Wasm, &provenance()).unwrap();
        let m = manifest(&artifact);
        assert_eq!(m["config"]["mediaType"], WASM_CONFIG_MEDIA_TYPE);
        assert_eq!(m["layers"][0]["mediaType"], WASM_LAYER_MEDIA_TYPE);
        assert_eq!(artifact.layers[0].bytes, EMPTY_MODULE);
        assert_eq!(artifact.layers[0].digest, artifact.wasm_sha256);
        let config: serde_json::Value = serde_json::from_slice(&artifact.config.bytes).unwrap();
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["layerDigests"][0], artifact.wasm_sha256.as_str());
    }

    #[test]
    fn refuses_bytes_that_are_not_wasm() {
        let not_wasm = Module { bytes: b"#!/bin/sh\n".to_vec(), ..module() };
        assert!(matches!(Artifact::build(&not_wasm, Kind::Compat, &provenance()), Err(ArtifactError::NotWasm(_))));
    }

    #[test]
    fn names_repositories_after_the_file() {
        let dir = std::env::temp_dir().join(format!("svidgate-oci-module-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("svidgate_authz.wasm");
        std::fs::write(&path, EMPTY_MODULE).unwrap();
        let module = Module::read(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!((module.name.as_str(), module.file_name.as_str()), ("svidgate-authz", "svidgate_authz.wasm"));
    }
}
