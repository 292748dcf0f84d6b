//! OCI image layouts on disk: `oci-layout`, `index.json` and `blobs/sha256/<hex>`.
//!
//! One layout holds one artifact, tagged in `index.json` by `org.opencontainers.image.ref.name`,
//! so `skopeo copy oci:<dir>:<tag> ...` and `oras` read it as any other layout. [`read`] checks
//! every blob the manifest references against its digest and size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::manifest::{ImageIndexEntry, OciImageIndex};
use oci_spec::image::ImageManifest;
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, MANIFEST_MEDIA_TYPE, annotations};
use crate::digest::{Digest, DigestError};

/// Media type of `index.json`.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The layout version written to `oci-layout`.
pub const LAYOUT_VERSION: &str = "1.0.0";

/// An artifact read back from a layout: the manifest as stored and every blob it references.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The tag (`org.opencontainers.image.ref.name`) of its manifest.
    pub tag: String,
    /// The manifest bytes.
    pub manifest: Vec<u8>,
    /// Their digest.
    pub manifest_digest: Digest,
    /// Config and layers by digest, each checked against it.
    pub blobs: BTreeMap<Digest, Vec<u8>>,
}

/// Why a layout cannot be written or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayoutError {
    /// A blob's content does not match its digest or size.
    #[error("{path:?} does not match its descriptor ({what})")]
    Corrupt {
        /// The blob file.
        path: PathBuf,
        /// What differs.
        what: String,
    },
    /// A digest in the layout is not sha256.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// `index.json` does not hold exactly one manifest.
    #[error("{0:?} must list exactly one image manifest")]
    Index(PathBuf),
    /// A file cannot be read or written.
    #[error("{path:?}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A JSON file does not parse (or cannot be written).
    #[error("{path:?} is not valid")]
    Json {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The manifest is not an OCI image manifest.
    #[error("{path:?} is not an OCI image manifest")]
    Manifest {
        /// The blob file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// The directory exists and is not a layout: it is left alone.
    #[error("{0:?} exists and is not an OCI image layout; refusing to replace it")]
    NotALayout(PathBuf),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OciLayout {
    image_layout_version: String,
}

/// Writes `artifact` as an OCI image layout in `dir`, replacing a layout already there (a
/// directory that is something else is refused).
pub fn write(dir: &Path, artifact: &Artifact) -> Result<(), LayoutError> {
    if dir.exists() {
        if !dir.join("oci-layout").is_file() {
            return Err(LayoutError::NotALayout(dir.to_owned()));
        }
        std::fs::remove_dir_all(dir).map_err(|source| LayoutError::Io { path: dir.to_owned(), source })?;
    }
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|source| LayoutError::Io { path: blobs.clone(), source })?;
    write_json(&dir.join("oci-layout"), &OciLayout { image_layout_version: LAYOUT_VERSION.to_owned() })?;
    write_file(&blobs.join(artifact.manifest_digest.hex()), &artifact.manifest)?;
    for blob in artifact.blobs() {
        write_file(&blobs.join(blob.digest.hex()), &blob.bytes)?;
    }
    let index = OciImageIndex {
        schema_version: 2,
        media_type: Some(INDEX_MEDIA_TYPE.to_owned()),
        manifests: vec![ImageIndexEntry {
            media_type: MANIFEST_MEDIA_TYPE.to_owned(),
            digest: artifact.manifest_digest.to_string(),
            size: i64::try_from(artifact.manifest.len()).unwrap_or(i64::MAX),
            platform: None,
            annotations: Some(BTreeMap::from([(annotations::REF_NAME.to_owned(), artifact.tag.clone())])),
            artifact_type: None,
        }],
        artifact_type: None,
        annotations: None,
    };
    write_json(&dir.join("index.json"), &index)
}

/// Reads the one artifact of the layout in `dir`, checking every blob.
pub fn read(dir: &Path) -> Result<Layout, LayoutError> {
    let layout: OciLayout = read_json(&dir.join("oci-layout"))?;
    if layout.image_layout_version != LAYOUT_VERSION {
        return Err(LayoutError::NotALayout(dir.to_owned()));
    }
    let index_path = dir.join("index.json");
    let index: OciImageIndex = read_json(&index_path)?;
    let [entry] = index.manifests.as_slice() else {
        return Err(LayoutError::Index(index_path));
    };
    if entry.media_type != MANIFEST_MEDIA_TYPE {
        return Err(LayoutError::Index(index_path));
    }
    let tag = entry.annotations.as_ref().and_then(|a| a.get(annotations::REF_NAME)).cloned().unwrap_or_default();
    let manifest_digest = Digest::parse(&entry.digest)?;
    let manifest_path = blob_path(dir, &manifest_digest);
    let manifest = read_blob(&manifest_path, &manifest_digest, u64::try_from(entry.size).ok())?;
    let parsed = ImageManifest::from_reader(manifest.as_slice())
        .map_err(|source| LayoutError::Manifest { path: manifest_path.clone(), source })?;
    let mut blobs = BTreeMap::new();
    for descriptor in std::iter::once(parsed.config()).chain(parsed.layers()) {
        let digest = Digest::parse(descriptor.digest().as_ref())?;
        let bytes = read_blob(&blob_path(dir, &digest), &digest, Some(descriptor.size()))?;
        blobs.insert(digest, bytes);
    }
    Ok(Layout { tag, manifest, manifest_digest, blobs })
}

/// Where a blob lives in a layout.
pub fn blob_path(dir: &Path, digest: &Digest) -> PathBuf {
    dir.join("blobs").join("sha256").join(digest.hex())
}

impl Layout {
    /// The content of a referenced blob.
    pub fn blob(&self, digest: &Digest) -> Option<&[u8]> {
        self.blobs.get(digest).map(Vec::as_slice)
    }
}

fn read_blob(path: &Path, digest: &Digest, size: Option<u64>) -> Result<Vec<u8>, LayoutError> {
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Io { path: path.to_owned(), source })?;
    let found = u64::try_from(bytes.len()).unwrap_or(u64::MAX);
    if size.is_some_and(|s| s != found) {
        return Err(LayoutError::Corrupt { path: path.to_owned(), what: format!("{found} bytes, expected {size:?}") });
    }
    if &Digest::of(&bytes) != digest {
        return Err(LayoutError::Corrupt { path: path.to_owned(), what: "digest".to_owned() });
    }
    Ok(bytes)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), LayoutError> {
    std::fs::write(path, bytes).map_err(|source| LayoutError::Io { path: path.to_owned(), source })
}

fn write_json(path: &Path, value: &impl Serialize) -> Result<(), LayoutError> {
    let bytes = serde_json::to_vec(value).map_err(|source| LayoutError::Json { path: path.to_owned(), source })?;
    write_file(path, &bytes)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T, LayoutError> {
    let bytes = std::fs::read(path).map_err(|source| LayoutError::Io { path: path.to_owned(), source })?;
    serde_json::from_slice(&bytes).map_err(|source| LayoutError::Json { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::artifact::fixtures::artifact;
    use crate::artifact::{KINDS, Kind};

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("svidgate-oci-layout-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn reads_back_what_it_wrote() {
        for kind in KINDS {
            let dir = scratch(kind.as_str());
            let built = artifact(kind);
            write(&dir, &built).unwrap();
            let layout = read(&dir).unwrap();
            assert_eq!(layout.manifest, built.manifest);
            assert_eq!(layout.manifest_digest, built.manifest_digest);
            assert_eq!(layout.tag, kind.tag("0.1.0"));
            for blob in built.blobs() {
                assert_eq!(layout.blob(&blob.digest), Some(blob.bytes.as_slice()));
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn writes_the_files_the_layout_spec_names() {
        let dir = scratch("files");
        let built = artifact(Kind::Compat);
        write(&dir, &built).unwrap();
        let layout: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("oci-layout")).unwrap()).unwrap();
        assert_eq!(layout, serde_json::json!({"imageLayoutVersion": "1.0.0"}));
        let index: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], built.manifest_digest.as_str());
        assert!(blob_path(&dir, &built.manifest_digest).is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_corrupted_blob() {
        let dir = scratch("corrupt");
        let built = artifact(Kind::Compat);
        write(&dir, &built).unwrap();
        let layer = blob_path(&dir, &built.layers[0].digest);
        let mut bytes = std::fs::read(&layer).unwrap();
        bytes[0] ^= 0xff;
        std::fs::write(&layer, bytes).unwrap();
        assert!(matches!(read(&dir), Err(LayoutError::Corrupt { .. })));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn leaves_a_directory_that_is_not_a_layout_alone() {
        let dir = scratch("foreign");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("precious.txt"), "keep").unwrap();
        assert!(matches!(write(&dir, &artifact(Kind::Compat)), Err(LayoutError::NotALayout(_))));
        assert!(dir.join("precious.txt").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
