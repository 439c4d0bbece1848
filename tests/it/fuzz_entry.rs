//! The fuzz entry points (issue 14): one function per input format continuum reads, each
//! feeding arbitrary bytes through the real loader and asserting only what must hold for
//! any input: no panic, and for a write that succeeded, a file that reads back.
//!
//! Shared by the cargo-fuzz targets (fuzz/fuzz_targets/*.rs include this file) and by
//! `fuzz_replay`, which replays the kept corpora (fuzz/corpus/TARGET/) on stable in
//! every test run.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::json;

/// A private directory per thread, reused across inputs (the loaders take paths).
fn scratch() -> PathBuf {
    thread_local! {
        static DIR: tempfile::TempDir = tempfile::Builder::new()
            .prefix("continuum-fuzz")
            .tempdir()
            .expect("a temporary directory");
    }
    DIR.with(|d| d.path().to_path_buf())
}

fn put(name: &str, data: &[u8]) -> PathBuf {
    let p = scratch().join(name);
    std::fs::write(&p, data).expect("write the input");
    p
}

/// A recipe (with a small inventory beside it, which it may or may not name).
pub fn recipe(data: &[u8]) {
    put(
        "inventory.yaml",
        b"hosts:\n  - name: s1\n    address: 10.0.0.1\n    role: server\n",
    );
    let p = put("recipe.yaml", data);
    let _ = continuum::files::load_recipe(&p);
}

/// An inventory on its own, then its host list as `inventory list` reads it.
pub fn inventory(data: &[u8]) {
    let p = put("inv.yaml", data);
    let _ = continuum::files::load_inventory(&p);
    let _ = continuum::files::inventory::list(&p);
}

/// An Ansible inventory (INI or YAML: the importer decides), as `inventory import`.
pub fn ansible(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = continuum::files::inventory::ansible::import("fuzz.ini", &text);
    let _ = continuum::files::inventory::ansible::import("fuzz.yml", &text);
}

/// An oscar-cli FDL file.
pub fn fdl(data: &[u8]) {
    let p = put("fdl.yaml", data);
    let _ = continuum::oscar::fdl::load(&p);
}

/// An existing oscar-cli config (YAML and JSON names): read it, then add an entry; a
/// write that succeeded reads back with the entry in it.
pub fn oscar_cli(data: &[u8]) {
    for name in ["oscar-cli.yaml", "oscar-cli.json"] {
        let p = put(name, data);
        let _ = continuum::files::oscar_cli::entries(&p);
        let e = continuum::files::oscar_cli::Entry {
            endpoint: "https://oscar.example".into(),
            auth_user: "oscar".into(),
            auth_password: continuum::state::Secret::new("pw".to_string()),
            ssl_verify: true,
        };
        if continuum::files::oscar_cli::upsert(&p, "fuzz", &e, false).is_ok() {
            let back = continuum::files::oscar_cli::entries(&p).expect("reads back");
            assert!(back.contains_key("fuzz"), "{}", p.display());
        }
    }
}

/// An existing kubeconfig: merge a context into it; a merge that succeeded reads back
/// with the context in it.
pub fn kubeconfig(data: &[u8]) {
    let p = put("kubeconfig", data);
    let entries = (
        json!({"name": "fz", "cluster": {"server": "https://10.0.0.1:6443"}}),
        json!({"name": "fz", "user": {"token": "t"}}),
        json!({"name": "fz", "context": {"cluster": "fz", "user": "fz"}}),
    );
    if continuum::files::kubeconfig::merge(&p, entries).is_ok() {
        assert!(
            continuum::files::kubeconfig::has_context(&p, "fz"),
            "merged context missing"
        );
    }
}

/// One entry point: arbitrary bytes in, a panic on a broken promise.
pub type Entry = fn(&[u8]);

/// Every target by name (the corpus directories are named after them).
pub const TARGETS: [(&str, Entry); 6] = [
    ("recipe", recipe),
    ("inventory", inventory),
    ("ansible", ansible),
    ("fdl", fdl),
    ("oscar_cli", oscar_cli),
    ("kubeconfig", kubeconfig),
];

/// The kept corpus of `target` (empty when none is kept).
pub fn corpus(root: &Path, target: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(root.join("fuzz/corpus").join(target))
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    v.sort();
    v
}
