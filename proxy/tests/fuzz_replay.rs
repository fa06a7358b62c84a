//! The cargo-fuzz targets on the stable toolchain: the committed seed corpus
//! (`fuzz/corpus/<target>/`) and a few thousand reproducible mutants of it go
//! through the same functions libFuzzer calls, so the targets cannot rot and
//! every past finding (kept in the corpus) stays fixed.
//! `SM_SSH_FUZZ_REPLAY_CASES` sets the number of mutants (default 3000).

use std::path::Path;

use sm_ssh_proxy::fuzzing;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
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
    for input in fuzzing::mutants(&seeds, cases, 17) {
        run(&input);
    }
}

#[test]
fn frame_target() {
    replay("frame", fuzzing::frame);
}

#[test]
fn engine_target() {
    replay("engine", fuzzing::engine);
}

#[test]
fn smux_target() {
    replay("smux", fuzzing::smux);
}

#[test]
fn payloads_target() {
    replay("payloads", fuzzing::payloads);
}
