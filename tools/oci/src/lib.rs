//! Distribution of the svidgate modules as OCI artifacts.
//!
//! - [`artifact`]: builds, reproducibly, the two artifacts of one module: the Istio/Solo "compat"
//!   image (one tar+gzip layer holding `plugin.wasm`) and the CNCF wasm artifact (one
//!   `application/wasm` layer).
//! - [`layout`]: writes them as OCI image layouts on disk and reads layouts back, checking every
//!   blob against its digest.
//! - [`gate`]: what Istio's (and Envoy Gateway's) image fetcher would do with a manifest, and the
//!   CNCF wasm artifact rules; nothing is pushed that fails them.
//! - [`registry`]: pushes a layout over the OCI distribution API (oci-client) and checks the
//!   registry stored the manifest we wrote.
//! - [`render`]: fills the digest placeholders of the deployment manifests (`envoy/k8s/`).
//! - [`digest`]: `sha256:<hex>` digests, parsed once.
//!
//! The `svidgate-oci` binary (`src/main.rs`) drives these steps; `tools/oci/README.md` says how.

pub mod artifact;
pub mod digest;
pub mod gate;
pub mod layout;
pub mod registry;
pub mod render;

pub use artifact::{Artifact, Kind, Module, Provenance};
pub use digest::Digest;
