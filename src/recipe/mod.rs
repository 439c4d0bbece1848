//! Recipes and inventories: the YAML a user writes, its validation (with file:line:col
//! diagnostics) and the validated model the rest of continuum consumes.
//!
//! The way in: `parse` reads a file (through `Files`) into the positioned `raw` types,
//! `check` turns them into the `model` section by section, `diag` carries what was
//! wrong, `paths` resolves the paths a file names. `validators` and `flags` hold the
//! value rules and k3s flag tables the checks apply; `serverless` and `device` are the
//! models of the OSCAR layer and of probed devices.

pub mod check;
pub mod device;
pub mod diag;
pub mod flags;
pub mod model;
pub mod parse;
pub mod paths;
pub mod raw;
pub mod serverless;
pub mod validators;

pub use diag::{Diagnostic, Severity};

use std::path::{Path, PathBuf};

/// What loading a recipe reads from the machine it runs on: the recipe and inventory
/// files, the keys and certificates they name, the home directory `~/` stands for.
/// The recipe checks do no I/O themselves; `files::Disk` is the file system's
/// implementation, and tests give an in-memory one.
pub trait Files {
    fn read(&self, path: &Path) -> std::io::Result<String>;
    fn exists(&self, path: &Path) -> bool;
    fn is_dir(&self, path: &Path) -> bool;
    fn is_file(&self, path: &Path) -> bool;
    fn home(&self) -> Option<PathBuf>;
}
pub use check::{Loaded, inventory_roles, load_inventory, load_recipe};
pub use model::{
    AddressKind, AwsSite, AwsSsh, CloudHost, Cluster, Environment, Firewall, Host, ImageRef,
    Images, Install, InstanceGroup, KubeconfigTarget, Role, Secret, Share, StateSite, Upgrade,
    VpcChoice,
};
pub use parse::LoadError;
