//! `svidgate_identity.wasm`: strips forged identity headers and injects the validated peer's
//! SPIFFE ID. No Rego: a small module for perimeters and for sidecars that need no policy.
//!
//! The request pipeline is `svidgate_core::filter`; `svidgate_proxy` connects it to Proxy-Wasm.

/// The module's entry point, called by the proxy when the VM starts.
mod entry {
    #![allow(missing_docs)]

    proxy_wasm::main! {{
        svidgate_proxy::start(|_| svidgate_proxy::root(svidgate_core::config::ModuleKind::Identity));
    }}
}
