//! `svidgate_identity.wasm`: strips forged identity headers and injects the validated peer's
//! SPIFFE ID. No Rego: a small module for perimeters and for sidecars that need no policy.
//!
//! The request pipeline is `svidgate_core::filter`; `svidgate_proxy` connects it to Proxy-Wasm
//! and exports the callbacks this module takes: the root context's, and a stream's creation,
//! request headers and deletion. Envoy enters the VM for nothing else: no body chunk, no
//! response, no access log.

/// The module's entry point, called by the proxy once, before any callback.
#[expect(unsafe_code, reason = "no_mangle: the name the proxy calls")]
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    svidgate_proxy::start(svidgate_core::config::ModuleKind::Identity);
}
