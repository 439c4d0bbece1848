//! The checks of a parsed recipe and inventory, turning the `raw` types into the
//! validated model, and the order they run in: the inventory, then the `aws:` site
//! (whose instances join the host table), then the recipe's own sections.
//!
//! Invariant: `load_recipe` either returns a fully validated `Environment` (plus
//! warnings) or every problem it found, each with file:line:col. It never panics on
//! input and has no side effects besides reading the two files (and checking that
//! referenced local paths exist).
//!
//! One file per section: `inventory` (hosts), `aws` (the `aws:` site), `cluster`
//! (name, `k3s:`, `kubeconfig:`), `serverless` (the OSCAR layer), `extra`
//! (`k3s.extra_config`); `common` holds what several of them check the same way.

pub mod aws;
pub mod cluster;
pub mod common;
pub mod extra;
pub mod inventory;
pub mod serverless;
pub mod state;

use std::collections::BTreeMap;
use std::path::Path;

use super::Files;
use super::diag::{Diagnostic, Severity, Sink, pos};
use super::model::{Environment, Host};
use super::parse::{LoadError, parse, read};
use super::paths::resolve_path;
use super::raw::{self, RoleHint};
use cluster::check_recipe;
use common::HostTable;
use inventory::check_inventory;

/// A validated environment and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub env: Environment,
    pub warnings: Vec<Diagnostic>,
}

/// Load a recipe and the inventory it names (and its AWS site's hosts).
pub fn load_recipe(path: &Path, files: &dyn Files) -> Result<Loaded, LoadError> {
    let text = read(files, path)?;
    let recipe: raw::RecipeFile = parse(files, path, &text)?;
    let mut all = Vec::new();
    let (mut hosts, mut roles, inv_path) = match &recipe.inventory {
        Some(inv) => {
            let inv_path = resolve_path(path, &inv.value, files.home().as_deref());
            let inv_text = match files.read(&inv_path) {
                Ok(t) => t,
                Err(e) => {
                    let mut sink = Sink::new(path, files);
                    sink.error(
                        pos(inv),
                        format!("cannot read inventory {}: {e}", inv_path.display()),
                    )
                    .help("the inventory path is relative to the recipe file");
                    return Err(LoadError::Invalid(sink.items));
                }
            };
            let inventory: raw::InventoryFile = parse(files, &inv_path, &inv_text)?;
            let mut inv_sink = Sink::new(&inv_path, files);
            let (hosts, roles) = check_inventory(&inventory, &inv_path, &mut inv_sink);
            all.extend(inv_sink.items);
            (hosts, roles, inv_path)
        }
        None => (HostTable::new(), BTreeMap::new(), path.to_path_buf()),
    };
    let mut sink = Sink::new(path, files);
    let mut groups = aws::Groups::new();
    let site = recipe
        .aws
        .as_ref()
        .and_then(|a| aws::check_site(a, path, &mut sink, &mut hosts, &mut roles, &mut groups));
    if recipe.inventory.is_none() && recipe.aws.is_none() {
        sink.error(pos(&recipe.name), "the recipe has no hosts")
            .help("name an inventory (`inventory: ../inventories/farm.yaml`) or declare an `aws:` site");
    }
    let env = check_recipe(&recipe, path, &inv_path, hosts, &roles, &groups, &mut sink);
    let state_site = recipe
        .state
        .as_ref()
        .and_then(|s| state::check_state(s, &mut sink));

    all.extend(sink.items);
    if all.iter().any(|d| d.severity == Severity::Error) {
        return Err(LoadError::Invalid(all));
    }
    match env {
        Some(mut env) => {
            env.aws = site;
            env.state = state_site;
            Ok(Loaded { env, warnings: all })
        }
        None => Err(LoadError::Invalid(all)),
    }
}

/// Load and validate an inventory on its own (for `inventory` commands).
pub fn load_inventory(
    path: &Path,
    files: &dyn Files,
) -> Result<(BTreeMap<String, Host>, Vec<Diagnostic>), LoadError> {
    let text = read(files, path)?;
    let inventory: raw::InventoryFile = parse(files, path, &text)?;
    let mut sink = Sink::new(path, files);
    let (hosts, _) = check_inventory(&inventory, path, &mut sink);
    if sink.has_errors() {
        return Err(LoadError::Invalid(sink.items));
    }
    Ok((
        hosts.into_iter().map(|(k, (h, _))| (k, h)).collect(),
        sink.items,
    ))
}

/// Role hints of an inventory's hosts (for `inventory list`).
pub fn inventory_roles(
    path: &Path,
    files: &dyn Files,
) -> Result<BTreeMap<String, String>, LoadError> {
    let text = read(files, path)?;
    let inventory: raw::InventoryFile = parse(files, path, &text)?;
    Ok(inventory
        .hosts
        .value
        .iter()
        .filter_map(|h| {
            h.role.as_ref().map(|r| {
                let role = match r.value {
                    RoleHint::Server => "server",
                    RoleHint::Agent => "agent",
                };
                (h.name.value.trim().to_string(), role.to_string())
            })
        })
        .collect())
}
