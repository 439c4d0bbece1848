//! The house rules of ARCHITECTURE.md ("Layers"), checked on the source text:
//! - every top-level module of `src/` belongs to one layer (core, providers,
//!   operations, CLI) and refers only to its own layer and the ones beneath it;
//! - the core does no I/O: no async runtime, SSH, AWS, HTTP, file, process or
//!   environment access outside its unit tests;
//! - no circle of references among the top-level modules, nor among the files of one
//!   directory (a directory's `mod.rs` aside: children use their parent's types);
//! - no file in `src/` is longer than 600 lines unless its `//!` header says why.
//!
//! A reference is a `crate::NAME` path (or `super::NAME` between sibling files) in
//! code; comments and `#[cfg(test)]` modules are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Layers, lowest first, and the top-level modules of each.
const LAYERS: &[(&str, &[&str])] = &[
    ("core", &["recipe", "graph", "state", "render"]),
    (
        "providers",
        &["ssh", "aws", "k3s", "oscar", "files", "probe", "statestore"],
    ),
    ("operations", &["engine", "ops"]),
    ("cli", &["cli"]),
];

/// Words the core may not use outside its tests (I/O crates and std's I/O parts).
const CORE_FORBIDDEN: &[&str] = &[
    "tokio::",
    "openssh::",
    "ssh2::",
    "aws_sdk_ec2::",
    "aws_sdk_s3::",
    "age::",
    "aws_config::",
    "reqwest::",
    "std::fs",
    "fs::",
    "std::process",
    "std::env",
    "TcpStream",
    "UdpSocket",
    "dirs::",
    "tempfile",
    "getrandom",
    // std::path's own file system queries.
    ".exists()",
    ".is_dir()",
    ".is_file()",
    "read_dir(",
    "metadata(",
    "canonicalize(",
];

const MAX_LINES: usize = 600;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file: line comments, doc comments and `#[cfg(test)]` items removed.
fn code(text: &str) -> String {
    let mut out = String::new();
    let mut skip_depth: Option<i64> = None;
    let mut depth: i64 = 0;
    let mut pending_test = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        let line_code = match line.find("//") {
            // Keep `//` inside string literals of the line (URLs): only cut when the
            // part before it has an even number of quotes.
            Some(i) if line[..i].matches('"').count() % 2 == 0 => &line[..i],
            _ => line,
        };
        let opens = line_code.matches('{').count() as i64;
        let closes = line_code.matches('}').count() as i64;
        if let Some(d) = skip_depth {
            depth += opens - closes;
            if depth <= d {
                skip_depth = None;
            }
            continue;
        }
        if trimmed.starts_with("#[cfg(test)]") {
            pending_test = true;
            continue;
        }
        if pending_test {
            pending_test = false;
            if opens > closes {
                skip_depth = Some(depth);
                depth += opens - closes;
                continue;
            }
            if trimmed.ends_with(';') {
                continue;
            }
        }
        depth += opens - closes;
        out.push_str(line_code);
        out.push('\n');
    }
    out
}

/// Top-level module of a file under `src/` (`None` for `lib.rs` and `main.rs`).
fn top_of(rel: &Path) -> Option<String> {
    let mut parts = rel.components();
    let first = parts.next()?.as_os_str().to_string_lossy().to_string();
    if parts.next().is_none() {
        let stem = first.trim_end_matches(".rs");
        return (stem != "lib" && stem != "main").then(|| stem.to_string());
    }
    Some(first)
}

/// Identifiers that follow `prefix` in `code` (`crate::` -> `ops`, `graph`, ...).
fn names_after(code: &str, prefix: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(i) = rest.find(prefix) {
        let before = rest[..i].chars().next_back();
        rest = &rest[i + prefix.len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let name: String = rest
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&top))
}

/// Every cycle's members (Tarjan's strongly connected components of size > 1).
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    let mut g = petgraph::graph::DiGraph::<String, ()>::new();
    let mut ix = BTreeMap::new();
    let mut node = |g: &mut petgraph::graph::DiGraph<String, ()>, n: &str| {
        *ix.entry(n.to_string())
            .or_insert_with(|| g.add_node(n.to_string()))
    };
    for (a, bs) in edges {
        let ia = node(&mut g, a);
        for b in bs {
            let ib = node(&mut g, b);
            g.add_edge(ia, ib, ());
        }
    }
    petgraph::algo::tarjan_scc(&g)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|c| {
            let mut v: Vec<String> = c.into_iter().map(|i| g[i].clone()).collect();
            v.sort();
            v
        })
        .collect()
}

struct Source {
    rel: PathBuf,
    text: String,
    code: String,
}

fn sources() -> Vec<Source> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files
        .into_iter()
        .map(|p| {
            let text = std::fs::read_to_string(&p).expect("read source");
            Source {
                rel: p.strip_prefix(&root).expect("under src").to_path_buf(),
                code: code(&text),
                text,
            }
        })
        .collect()
}

#[test]
fn every_module_has_a_layer_and_refers_only_downwards() {
    let tops: BTreeSet<String> = sources().iter().filter_map(|s| top_of(&s.rel)).collect();
    let unplaced: Vec<&String> = tops.iter().filter(|t| layer_of(t).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "modules without a layer (add them to LAYERS and ARCHITECTURE.md): {unplaced:?}"
    );
    let mut wrong = Vec::new();
    for s in sources() {
        let Some(top) = top_of(&s.rel) else { continue };
        let own = layer_of(&top).expect("placed");
        for name in names_after(&s.code, "crate::") {
            let Some(theirs) = layer_of(&name) else {
                continue;
            };
            if theirs > own {
                wrong.push(format!(
                    "{} ({}) refers to `{name}` ({})",
                    s.rel.display(),
                    LAYERS[own].0,
                    LAYERS[theirs].0
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "upward references:\n{}", wrong.join("\n"));
}

#[test]
fn the_core_does_no_io() {
    let mut found = Vec::new();
    for s in sources() {
        let Some(top) = top_of(&s.rel) else { continue };
        if layer_of(&top) != Some(0) {
            continue;
        }
        for line in s.code.lines() {
            for w in CORE_FORBIDDEN {
                if line.contains(w) {
                    found.push(format!("{}: `{w}` in `{}`", s.rel.display(), line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "I/O in the core:\n{}", found.join("\n"));
}

#[test]
fn the_checks_see_what_they_must_find() {
    // Positive controls: the scanner finds a reference, skips comments and test
    // modules, and the cycle finder finds a circle.
    let c = code(
        "use crate::ops::up;\n// crate::cli in a comment\n#[cfg(test)]\nmod tests {\n    use crate::cli::x;\n}\nfn f() { crate::engine::walk(); }\n",
    );
    let names = names_after(&c, "crate::");
    assert_eq!(
        names,
        BTreeSet::from(["engine".to_string(), "ops".to_string()])
    );
    let mut e = BTreeMap::new();
    e.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    e.insert("b".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(cycles(&e), vec![vec!["a".to_string(), "b".to_string()]]);
}

#[test]
fn no_circle_of_references_among_modules() {
    let mut top_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    // Per directory: sibling file -> sibling files it refers to.
    let mut dir_edges: BTreeMap<PathBuf, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    let all = sources();
    let siblings: BTreeMap<PathBuf, BTreeSet<String>> = {
        let mut m: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
        for s in &all {
            let dir = s.rel.parent().unwrap_or(Path::new("")).to_path_buf();
            let stem = s
                .rel
                .file_stem()
                .map(|x| x.to_string_lossy().to_string())
                .unwrap_or_default();
            if stem != "mod" {
                m.entry(dir.clone()).or_default().insert(stem.clone());
            }
            // A directory module `x/` is the sibling `x` of the files beside it.
            if stem == "mod"
                && let Some(parent) = dir.parent()
                && let Some(name) = dir.file_name()
            {
                m.entry(parent.to_path_buf())
                    .or_default()
                    .insert(name.to_string_lossy().to_string());
            }
        }
        m
    };
    for s in &all {
        let Some(top) = top_of(&s.rel) else { continue };
        for name in names_after(&s.code, "crate::") {
            if name != top && layer_of(&name).is_some() {
                top_edges.entry(top.clone()).or_default().insert(name);
            }
        }
        // Sibling references: `super::NAME` from a file, `crate::a::b::NAME`, and
        // a directory's `mod.rs` aside.
        let stem = s
            .rel
            .file_stem()
            .map(|x| x.to_string_lossy().to_string())
            .unwrap_or_default();
        let (dir, me) = if stem == "mod" {
            let d = s.rel.parent().unwrap_or(Path::new(""));
            (
                d.parent().unwrap_or(Path::new("")).to_path_buf(),
                d.file_name()
                    .map(|x| x.to_string_lossy().to_string())
                    .unwrap_or_default(),
            )
        } else {
            (
                s.rel.parent().unwrap_or(Path::new("")).to_path_buf(),
                stem.clone(),
            )
        };
        let Some(sibs) = siblings.get(&dir) else {
            continue;
        };
        let module_path: Vec<String> = dir
            .components()
            .map(|c| c.as_os_str().to_string_lossy().to_string())
            .collect();
        let mut refs = names_after(&s.code, "super::");
        if !module_path.is_empty() {
            refs.extend(names_after(
                &s.code,
                &format!("crate::{}::", module_path.join("::")),
            ));
        }
        for r in refs {
            if r != me && sibs.contains(&r) {
                dir_edges
                    .entry(dir.clone())
                    .or_default()
                    .entry(me.clone())
                    .or_default()
                    .insert(r);
            }
        }
    }
    let mut circles: Vec<String> = cycles(&top_edges)
        .into_iter()
        .map(|c| format!("src: {}", c.join(" <-> ")))
        .collect();
    for (dir, edges) in &dir_edges {
        for c in cycles(edges) {
            circles.push(format!("src/{}: {}", dir.display(), c.join(" <-> ")));
        }
    }
    assert!(
        circles.is_empty(),
        "circles of references:\n{}",
        circles.join("\n")
    );
}

#[test]
fn files_stay_short_unless_their_header_says_why() {
    let mut long = Vec::new();
    for s in sources() {
        let lines = s.text.lines().count();
        let header: String = s
            .text
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        if lines > MAX_LINES && !header.contains("Longer than 600 lines") {
            long.push(format!("{} ({lines} lines)", s.rel.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines without a reason in their header (\"Longer than 600 lines because ...\"):\n{}",
        long.join("\n")
    );
}
