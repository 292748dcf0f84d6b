//! Header stripping through the pipeline: no variant of an identity header survives, and no
//! other header is lost.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::identity_headers(data);
});
