//! The binary's cargo-fuzz targets (`plugin_args`, `target`) on the stable
//! toolchain, through the `sm_ssh` library target (src/lib.rs): the seed
//! corpus in `fuzz/corpus/<target>/` and a few thousand reproducible mutants
//! (see proxy/tests/fuzz_replay.rs, which does the same for the engine's).

use std::path::PathBuf;

use sm_ssh_proxy::fuzzing::replay;

fn corpus(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

#[test]
fn plugin_args_target() {
    replay(&corpus("plugin_args"), sm_ssh::fuzzing::plugin_args);
}

#[test]
fn target_target() {
    replay(&corpus("target"), sm_ssh::fuzzing::target);
}
