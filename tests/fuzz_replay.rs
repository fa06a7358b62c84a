//! The binary's cargo-fuzz targets (`plugin_args`, `target`) on the stable
//! toolchain, through the `sm_ssh` library target (src/lib.rs): the seed
//! corpus in `fuzz/corpus/<target>/` and a few thousand reproducible mutants
//! (see proxy/tests/fuzz_replay.rs, which does the same for the engine's).

use std::path::Path;

use sm_ssh_proxy::fuzzing::mutants;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut seeds: Vec<Vec<u8>> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| std::fs::read(entry.expect("corpus entry").path()).expect("corpus file"))
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    let cases = std::env::var("SM_SSH_FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3000);
    for input in mutants(&seeds, cases, 17) {
        run(&input);
    }
}

#[test]
fn plugin_args_target() {
    replay("plugin_args", sm_ssh::fuzzing::plugin_args);
}

#[test]
fn target_target() {
    replay("target", sm_ssh::fuzzing::target);
}
