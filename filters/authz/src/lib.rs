//! `svidgate_authz.wasm`: the identity behaviour of `svidgate_identity.wasm` plus a Rego policy
//! evaluated by an embedded regorus bytecode VM, with the OPA Envoy plugin's input and result,
//! OPA bundles and decision logs.
//!
//! The request pipeline is `svidgate_core::filter`; `svidgate_proxy` connects it to Proxy-Wasm.

/// The module's entry point, called by the proxy when the VM starts.
mod entry {
    #![allow(missing_docs)]

    proxy_wasm::main! {{
        svidgate_proxy::start(|_| svidgate_proxy::root(svidgate_core::config::ModuleKind::Authz));
    }}
}
