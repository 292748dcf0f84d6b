//! A request path: percent-decoding, `parsed_path`, `parsed_query` and the path guard agree.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &str| {
    svidgate_core::fuzzing::path(data);
});
