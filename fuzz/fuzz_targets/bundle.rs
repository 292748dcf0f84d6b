//! An OPA bundle, gzipped or a bare tar stream (GNU long names, pax headers): refused, or read
//! into modules inside the bundle.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::bundle(data);
});
