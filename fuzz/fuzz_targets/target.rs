//! cargo-fuzz target: `sm_ssh::fuzzing::target` (src/fuzzing.rs, invariants documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sm_ssh_fuzz::fuzzing::target(data));
