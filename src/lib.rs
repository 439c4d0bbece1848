//! continuum: provision k3s (and, later, the OSCAR serverless layer) over SSH hosts and
//! cloud VMs from a declarative recipe. See ARCHITECTURE.md for the module map.

pub mod recipe;
pub mod state;
pub mod graph;
pub mod engine;
pub mod ssh;
pub mod k3s;
pub mod registry;
pub mod ops;
pub mod cli;
