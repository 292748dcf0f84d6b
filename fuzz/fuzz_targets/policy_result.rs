//! A policy result: the decision never touches an identity header or splits a header value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::policy_result(data);
});
