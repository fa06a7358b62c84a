//! cargo-fuzz target: `sm_ssh::fuzzing::plugin_args` (src/fuzzing.rs, invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sm_ssh_fuzz::fuzzing::plugin_args(data));
