//! The request header map as Envoy serializes it, read in place: refused, or exactly the pairs
//! its length words frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::header_map(data);
});
