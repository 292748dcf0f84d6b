//! The distribution path end to end, on the built modules (`cargo xtask build`):
//!
//! - `layout_gate`: every artifact `svidgate-oci package` writes is one Istio's fetcher accepts
//!   (compat) or follows the CNCF spec (wasm), holds the module byte for byte, is reproducible,
//!   and is annotated with the revision the module logs at VM start.
//! - `registry`: push to Debian's `docker-registry` started here, pull back with skopeo and with
//!   the `oras` Python client: bytes and digests equal; HTTPS with basic authentication.
//! - `envoy_remote`: real Envoy loads the module through `vm_config.code.remote` pinned by its
//!   sha256 and enforces it; with a wrong sha256 every request is answered 503.
//! - `k8s_manifests`: the deployment manifests under `envoy/k8s/` parse, have the structure the
//!   controllers need, never fail open, pin digests, and carry plugin configurations the module
//!   accepts (through the wasmtime harness) with the policies in `policies/`.
//!
//! One test binary, so the harness (wasmtime) is linked once.

mod envoy_remote;
mod k8s_manifests;
mod layout_gate;
mod registry;
mod support;
