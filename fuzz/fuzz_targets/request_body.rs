//! A request body under the content types a policy gets parsed: JSON, forms, multipart.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::request_body(data);
});
