//! continuum: provision k3s (and, later, the OSCAR serverless layer) over SSH hosts and
//! cloud VMs from a declarative recipe. See ARCHITECTURE.md for the module map.

pub mod cli;
pub mod engine;
pub mod graph;
pub mod inventory;
pub mod k3s;
pub mod ops;
pub mod recipe;
pub mod registry;
pub mod ssh;
pub mod state;
