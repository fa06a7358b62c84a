//! cargo-fuzz target: `sm_ssh_proxy::fuzzing::smux` (its invariants are documented there).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sm_ssh_proxy::fuzzing::smux(data));
