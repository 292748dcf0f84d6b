//! Any string either fails to parse with a typed error, or parses into an ID whose parts
//! reassemble into the input and which parses again to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    svidgate_core::spiffe::check_round_trip(input);
});
