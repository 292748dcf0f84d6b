//! The plugin configuration JSON, for both modules: refused, or typed consistently.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    svidgate_core::fuzzing::plugin_configuration(data);
});
