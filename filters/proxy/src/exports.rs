//! The callbacks every module exports: the root context's, and a stream's creation, request
//! headers and deletion. What a module adds is in its own crate (`filters/authz`).
#![expect(unsafe_code, reason = "no_mangle: the names the proxy calls the module by")]

use svidgate_core::filter::{Root, TICK};
use svidgate_core::host::Host;

use crate::{CONTEXTS, Contexts, GIT_SHA, KIND, LOG_LEVEL, ProxyWasm, with_root, with_stream};

/// Runs the constructors the linker gathered (the WASI libc's among them), once, first.
pub fn call_constructors() {
    #[cfg(target_os = "wasi")]
    {
        unsafe extern "C" {
            fn __wasm_call_ctors();
        }
        // SAFETY: called once, from `start`, before anything that needs the constructors.
        unsafe { __wasm_call_ctors() };
    }
}

/// A root context (`root_context_id` 0), or an HTTP stream of root context `root_context_id`.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    if root_context_id == 0 {
        let Some(kind) = KIND.get() else { return };
        CONTEXTS.with_borrow_mut(|contexts| {
            contexts.roots.retain(|(id, _)| *id != context_id);
            contexts.roots.push((context_id, Root::new(kind, GIT_SHA)));
        });
        return;
    }
    CONTEXTS.with_borrow_mut(|contexts| {
        let Contexts { roots, streams } = contexts;
        if let Some((_, root)) = roots.iter().find(|(id, _)| *id == root_context_id) {
            streams.insert(context_id, root.stream(context_id));
        }
    });
}

/// The context is gone.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    CONTEXTS.with_borrow_mut(|contexts| {
        if contexts.streams.remove(&context_id).is_none() {
            contexts.roots.retain(|(id, _)| *id != context_id);
        }
    });
}

/// The VM started (root context).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_vm_start(context_id: u32, _vm_configuration_size: usize) -> u32 {
    u32::from(with_root(context_id, |root| root.on_vm_start(&ProxyWasm)).unwrap_or(false))
}

/// The plugin's configuration arrived (root context). Every plugin ticks, if only to ask
/// Envoy's log level again (`LOG_LEVEL`); the core asks for the same period when it polls bundles.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    LOG_LEVEL.set(None);
    let configured = with_root(context_id, |root| root.on_configure(&ProxyWasm)).unwrap_or(false);
    ProxyWasm.set_tick_period(TICK);
    u32::from(configured)
}

/// The root context's timer.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_tick(context_id: u32) {
    LOG_LEVEL.set(None);
    with_root(context_id, |root| root.on_tick(&ProxyWasm));
}

/// The answer to an HTTP call a root context dispatched.
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_http_call_response(context_id: u32, token: u32, _headers: u32, body_size: usize, _trailers: u32) {
    with_root(context_id, |root| root.on_http_call_response(&ProxyWasm, token, body_size));
}

/// The request headers arrived (`end_of_stream` non-zero: the request has no body).
#[unsafe(no_mangle)]
pub extern "C" fn proxy_on_request_headers(context_id: u32, _headers: u32, end_of_stream: u32) -> u32 {
    #[cfg(feature = "test-crash-trigger")]
    crate::crash::on_request_headers();
    with_stream(context_id, |stream| stream.on_request_headers(&ProxyWasm, end_of_stream != 0))
}
