//! The fuzz targets (`fuzz/`, a cargo-fuzz crate outside the workspace) run here over their
//! committed seed corpora: their bodies (`fuzz/src/`) are compiled into this test, so a
//! product change that breaks a target fails the workspace's build, and an input that once
//! crashed a target (added to its corpus with the fix) fails `cargo test` if the bug returns.

use std::fs;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

// The bodies are the public API of the fuzz crate, private here.
#[allow(unreachable_pub)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_targets;

use fuzz_targets::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    files.sort();
    files
}

#[test]
fn every_fuzz_target_runs_over_its_seed_corpus_without_a_panic() {
    let mut failures = Vec::new();
    for (name, body) in TARGETS {
        let inputs = files(&fuzz_dir().join("corpus").join(name));
        assert!(inputs.len() >= 3, "target {name}: too few seeds");
        for input in inputs {
            let data = fs::read(&input).expect("a corpus file");
            if catch_unwind(AssertUnwindSafe(|| body(&data))).is_err() {
                failures.push(input.display().to_string());
            }
        }
    }
    assert!(failures.is_empty(), "inputs that panic: {failures:#?}");
}

#[test]
fn every_target_has_a_binary_a_corpus_and_a_body() {
    let root = fuzz_dir();
    let manifest = fs::read_to_string(root.join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let names: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    for name in &names {
        assert!(
            manifest.contains(&format!("name = \"{name}\"")),
            "fuzz/Cargo.toml has no [[bin]] {name}"
        );
        let source = fs::read_to_string(root.join("fuzz_targets").join(format!("{name}.rs")))
            .unwrap_or_else(|e| panic!("fuzz_targets/{name}.rs: {e}"));
        assert!(
            source.contains(&format!("mesh_fuzz::{name}(data)")),
            "fuzz_targets/{name}.rs does not call its body"
        );
    }
    for dir in ["fuzz_targets", "corpus"] {
        for path in files(&root.join(dir)) {
            let stem = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default();
            assert!(
                names.contains(&stem),
                "{}: no target of that name in fuzz/src/lib.rs",
                path.display()
            );
        }
    }
}
