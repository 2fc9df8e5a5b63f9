//! Replays every committed fuzz input through the functions the fuzz targets call
//! (`janus_server::fuzz`): the crashes found so far (`server/fuzz/regressions/<target>/`, each
//! fixed) and the seed corpus (`server/fuzz/corpus/<target>/`). Runs on stable in the ordinary
//! `cargo test`; the fuzzing itself is `scripts/fuzz.sh`.

use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// Files under `dir/<target>/`, sorted (none if the folder does not exist).
fn inputs(dir: &Path, target: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir.join(target)) else { return Vec::new() };
    let mut files: Vec<PathBuf> =
        entries.map(|e| e.unwrap().path()).filter(|p| p.is_file() && !p.ends_with(".gitkeep")).collect();
    files.sort();
    files
}

fn replay(kind: &str) -> usize {
    let dir = fuzz_dir().join(kind);
    let mut n = 0;
    for target in janus_server::fuzz::TARGETS {
        for file in inputs(&dir, target) {
            let data = std::fs::read(&file).unwrap();
            let ok = std::panic::catch_unwind(|| janus_server::fuzz::run(target, &data));
            assert!(matches!(ok, Ok(true)), "{target} fails on {}", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn every_fixed_crash_stays_fixed() {
    let dir = fuzz_dir().join("regressions");
    for target in janus_server::fuzz::TARGETS {
        assert!(dir.join(target).is_dir(), "no regressions folder for {target}");
    }
    // A wrong path or an emptied folder would otherwise pass with nothing replayed.
    assert!(replay("regressions") >= 1, "no regression inputs under {}", dir.display());
}

#[test]
fn the_seed_corpus_runs_clean() {
    assert!(replay("corpus") >= janus_server::fuzz::TARGETS.len(), "the corpus is missing");
}

#[test]
fn every_target_has_a_corpus_and_a_fuzz_binary() {
    let dir = fuzz_dir();
    for target in janus_server::fuzz::TARGETS {
        assert!(!inputs(&dir.join("corpus"), target).is_empty(), "no seeds for {target}");
        assert!(dir.join("fuzz_targets").join(format!("{target}.rs")).is_file(), "no fuzz target {target}");
    }
    assert!(!janus_server::fuzz::run("no_such_target", b""));
}
