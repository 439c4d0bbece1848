//! continuum: provision k3s (and, later, the OSCAR serverless layer) over SSH hosts and
//! cloud VMs from a declarative recipe. See ARCHITECTURE.md for the module map.

pub mod aws;
pub mod cli;
pub mod engine;
pub mod files;
pub mod graph;
pub mod k3s;
pub mod ops;
pub mod oscar;
pub mod probe;
pub mod recipe;
pub mod render;
pub mod ssh;
pub mod state;
pub mod statestore;

/// An error and its sources on one line (`a: b: c`), skipping a source whose text
/// the line already holds.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}
