//! The files continuum reads and owns on the controller machine: the state store and
//! its lock, atomic writes (`store`); the file system behind recipe loading (`Disk`,
//! `load_recipe`, `load_inventory`); the user's kubeconfig (`kubeconfig`); continuum's
//! catalog of OSCAR endpoints (`endpoints`); the oscar-cli configuration
//! (`oscar_cli`); inventory editing and import (`inventory`); the note of where an
//! environment's state lives when it is in S3 (`remote_note`).

pub mod endpoints;
pub mod inventory;
pub mod kubeconfig;
pub mod oscar_cli;
pub mod remote_note;
mod store;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub use store::{Lock, StateError, Store, absolute, default_dir, parent_dir, write_atomic};

use crate::recipe::{Diagnostic, Files, Host, LoadError, Loaded};

/// The file system as recipe loading sees it.
pub struct Disk;

impl Files for Disk {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        fs::read_to_string(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }
    fn is_file(&self, path: &Path) -> bool {
        path.is_file()
    }
    fn home(&self) -> Option<PathBuf> {
        dirs::home_dir()
    }
}

/// Load a recipe, the inventory it names and the files they refer to from disk.
pub fn load_recipe(path: &Path) -> Result<Loaded, LoadError> {
    crate::recipe::load_recipe(path, &Disk)
}

/// Load and validate an inventory from disk on its own (for `inventory` commands).
pub fn load_inventory(path: &Path) -> Result<(BTreeMap<String, Host>, Vec<Diagnostic>), LoadError> {
    crate::recipe::load_inventory(path, &Disk)
}
