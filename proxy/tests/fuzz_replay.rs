//! The cargo-fuzz targets on the stable toolchain: the committed seed corpus
//! (`fuzz/corpus/<target>/`) and a few thousand reproducible mutants of it go
//! through the same functions libFuzzer calls, so the targets cannot rot and
//! every past finding (kept in the corpus) stays fixed.
//! `SM_SSH_FUZZ_REPLAY_CASES` sets the number of mutants (default 3000).

use std::path::PathBuf;

use sm_ssh_proxy::fuzzing;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

#[test]
fn frame_target() {
    fuzzing::replay(&corpus("frame"), fuzzing::frame);
}

#[test]
fn engine_target() {
    fuzzing::replay(&corpus("engine"), fuzzing::engine);
}

#[test]
fn smux_target() {
    fuzzing::replay(&corpus("smux"), fuzzing::smux);
}

#[test]
fn payloads_target() {
    fuzzing::replay(&corpus("payloads"), fuzzing::payloads);
}
