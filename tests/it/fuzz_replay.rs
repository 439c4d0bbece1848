//! Replays the kept fuzz corpora (fuzz/corpus/TARGET/*, grown by `scripts/fuzz` with
//! cargo-fuzz on nightly) through the same entry points on stable, in every test run:
//! an input that once crashed a loader stays a regression test (issue 14).

use crate::fuzz_entry::{TARGETS, corpus};
use crate::harness::root;

#[test]
fn every_kept_fuzz_input_loads_without_panic() {
    let mut total = 0;
    for (name, run) in TARGETS {
        let files = corpus(&root(), name);
        assert!(
            !files.is_empty(),
            "fuzz/corpus/{name} is empty: the corpora are kept in the repository"
        );
        for f in files {
            let data = std::fs::read(&f).expect("corpus file");
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{name}: {} panicked", f.display());
            total += 1;
        }
    }
    eprintln!("fuzz replay: {total} inputs");
}
