//! The peer certificate as Envoy hands it over (PEM, or DER wrapped into PEM): accepted only as
//! an SVID of the allowed trust domain, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = svidgate_core::fuzzing::peer_certificate(data);
});
