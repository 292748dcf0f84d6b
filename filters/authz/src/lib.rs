//! `svidgate_authz.wasm`: the identity behaviour of `svidgate_identity.wasm` plus a Rego policy
//! evaluated by an embedded regorus bytecode VM, with the OPA Envoy plugin's input and result,
//! OPA bundles and decision logs.
//!
//! The request pipeline is `svidgate_core::filter`; `svidgate_proxy` connects it to Proxy-Wasm
//! and exports the callbacks both modules take. This module also reads request bodies (for a
//! policy that reads `parsed_body`) and adds the response headers a policy asks for, so it
//! exports those three callbacks too. Envoy enters the VM for nothing else: no response body
//! chunk, no access log.
#![expect(unsafe_code, reason = "no_mangle: the names the proxy calls")]

/// The module's entry point, called by the proxy once, before any callback.
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    svidgate_proxy::start(svidgate_core::config::ModuleKind::Authz);
}

/// A request body chunk: `body_size` is all of the body the proxy holds for this filter.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_body(context_id: u32, body_size: usize, end_of_stream: u32) -> u32 {
    svidgate_proxy::on_request_body(context_id, body_size, end_of_stream)
}

/// Request trailers, which end the body.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_trailers(context_id: u32, _trailers: u32) -> u32 {
    svidgate_proxy::on_request_trailers(context_id)
}

/// The response headers, to add the policy's `response_headers_to_add`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_response_headers(context_id: u32, _headers: u32, _end_of_stream: u32) -> u32 {
    svidgate_proxy::on_response_headers(context_id)
}
