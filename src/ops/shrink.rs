//! Declarative shrink: a host that leaves the inventory (or
//! `continuum nodes remove ENV HOST`) is cordoned and drained through the server, its
//! Node object deleted, k3s uninstalled on it, and state updated; nothing else is
//! touched. A server is only removed when etcd keeps its quorum afterwards.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::removal::record_removed;
pub use super::removal::{ShrinkError, known_hosts};
use super::up::{UpReport, up};
use super::{Event, OpsError, ResourceResult, Settings, SharedObserver};
use crate::files::inventory;
use crate::graph::{Action, Change, Plan};
use crate::k3s;
use crate::recipe::{self, Role};
use crate::state::{State, Status};
use crate::statestore::Store;

/// `continuum nodes remove ENV HOST [--forget]`: take a host the state knows out of
/// the environment, whether or not the inventory still lists it.
///
/// Without `forget`: drop it from the inventory (declarative), then converge, which
/// drains, deletes and uninstalls exactly that node. With `forget` (a device gone for
/// good: the device is not contacted; its Node object is deleted through a
/// server when one answers, it leaves the inventory and the state, and what may remain
/// on it is reported.
pub async fn remove_node(
    env_name: &str,
    host: &str,
    forget: bool,
    settings: &Settings,
    obs: SharedObserver,
    cancel: &CancellationToken,
    approve: impl FnOnce(&Plan) -> bool,
) -> Result<UpReport, OpsError> {
    let store = settings.store(env_name)?;
    let state = store.load_existing()?;
    let knows = state.hosts.contains_key(host)
        || state
            .resources
            .values()
            .any(|r| r.host.as_deref() == Some(host));
    if !knows {
        return Err(ShrinkError::NoSuchHost {
            env: env_name.to_string(),
            host: host.to_string(),
            known: known_hosts(&state),
        }
        .into());
    }
    let recipe_path = state
        .recipe
        .clone()
        .ok_or_else(|| ShrinkError::NoRecipe(env_name.to_string()))?;
    let env = crate::files::load_recipe(&recipe_path)?.env;
    if env.cluster.init_server() == host || state.cluster.init_server.as_deref() == Some(host) {
        return Err(ShrinkError::InitServer {
            env: env_name.to_string(),
            host: host.to_string(),
        }
        .into());
    }
    let role = state
        .resources
        .values()
        .filter(|r| r.host.as_deref() == Some(host))
        .find_map(|r| r.role)
        .or_else(|| env.cluster.role_of(host));
    if forget {
        return forget_node(env_name, host, role, &env, &store, settings, obs, approve).await;
    }
    if role == Some(Role::Server) {
        // Checked before the inventory changes, so a refusal leaves everything as it was.
        let pool = settings.pool(env_name, Some(&state))?;
        let init = env.cluster.init_server();
        let conn = pool.get(&env.hosts[init]).await?;
        let r = k3s::check_quorum(conn.as_ref(), host).await;
        drop(conn);
        pool.close().await;
        r?;
    }
    let env = if env.hosts.contains_key(host) {
        drop_from_inventory(&env, host, &recipe_path)?
    } else {
        // Already gone from the inventory: the plan deletes what state still has.
        env
    };
    let obs: SharedObserver = Arc::clone(&obs);
    up(&env, settings, obs, cancel, approve).await
}

/// Remove `host` from the recipe's inventory and reload the recipe; when the recipe
/// still names the host, restore the inventory and refuse.
fn drop_from_inventory(
    env: &recipe::Environment,
    host: &str,
    recipe_path: &std::path::Path,
) -> Result<recipe::Environment, OpsError> {
    let inv = env.inventory_path.clone();
    let old = inventory::read(&inv)?;
    inventory::write_checked(&inv, &inventory::edit::remove(&old, host)?)?;
    match crate::files::load_recipe(recipe_path) {
        Ok(l) => Ok(l.env),
        Err(source) => {
            let restore = crate::files::write_atomic(&inv, old.as_bytes(), 0o644);
            restore.map_err(|source| inventory::InventoryError::Write {
                path: inv.clone(),
                source,
            })?;
            Err(ShrinkError::RecipeNamesHost {
                host: host.to_string(),
                source,
            }
            .into())
        }
    }
}

/// `nodes remove --forget`: drop a device that is gone for good without contacting it.
#[allow(clippy::too_many_arguments)]
async fn forget_node(
    env_name: &str,
    host: &str,
    role: Option<Role>,
    env: &recipe::Environment,
    store: &Store,
    settings: &Settings,
    obs: SharedObserver,
    approve: impl FnOnce(&Plan) -> bool,
) -> Result<UpReport, OpsError> {
    let _lock = store.lock()?;
    let mut state = store.load_existing()?;
    let ids: Vec<String> = state
        .resources
        .iter()
        .filter(|(_, r)| r.host.as_deref() == Some(host))
        .map(|(id, _)| id.clone())
        .collect();
    let plan = Plan {
        env: env_name.to_string(),
        upgrade: None,
        changes: ids
            .iter()
            .map(|id| Change {
                id: id.clone(),
                action: Action::Delete,
                reason: "forgotten (--forget): the device is not contacted".to_string(),
                host: Some(host.to_string()),
                role: state.resources.get(id).and_then(|r| r.role),
            })
            .collect(),
    };
    if !approve(&plan) {
        return Ok(UpReport {
            plan,
            results: Vec::new(),
        });
    }
    // The inventory first: a recipe that still names the host refuses before anything.
    if env.hosts.contains_key(host) {
        let recipe_path = state
            .recipe
            .clone()
            .ok_or_else(|| ShrinkError::NoRecipe(env_name.to_string()))?;
        drop_from_inventory(env, host, &recipe_path)?;
    }
    // The Node object, through the first server that answers (best effort: a cluster
    // whose servers are all away keeps a NotReady entry, named in a warning).
    let node_deleted = if role.is_some() {
        delete_node_through_a_server(&state, host, settings, &obs).await
    } else {
        true
    };
    for id in &ids {
        record_removed(&mut state, id, host, false);
    }
    state.hosts.remove(host);
    store.save(&mut state)?;
    let left = k3s::leftovers(role);
    obs.event(Event::Warning {
        message: format!("forgot `{host}` without contacting it; what may remain on it: {left}"),
    });
    let results = ids
        .iter()
        .map(|id| {
            obs.event(Event::Finished {
                id: id.clone(),
                changed: true,
                summary: if node_deleted {
                    "forgotten".to_string()
                } else {
                    "forgotten (Node object left in the cluster)".to_string()
                },
            });
            ResourceResult {
                id: id.clone(),
                action: Action::Delete,
                outcome: "done".to_string(),
                changed: true,
                detail: Some(format!("forgotten; may remain on the device: {left}")),
                error: None,
            }
        })
        .collect();
    Ok(UpReport { plan, results })
}

/// Delete `host`'s Node object through the first recorded server that answers (the
/// quorum check first for a server). Whether it was deleted.
async fn delete_node_through_a_server(
    state: &State,
    host: &str,
    settings: &Settings,
    obs: &SharedObserver,
) -> bool {
    let mut servers: Vec<&String> = state
        .resources
        .values()
        .filter(|r| {
            r.role == Some(Role::Server)
                && r.status == Status::Applied
                && r.host.as_deref() != Some(host)
        })
        .filter_map(|r| r.host.as_ref())
        .collect();
    // The first server first.
    servers.sort_by_key(|s| state.cluster.init_server.as_ref() != Some(*s));
    let Ok(pool) = settings.pool(&state.env, Some(state)) else {
        return false;
    };
    let mut last = "no applied server in state".to_string();
    let mut deleted = false;
    for s in servers {
        let Some(target) = state.hosts.get(s).map(|h| h.to_host(s)) else {
            continue;
        };
        let conn = match pool.get(&target).await {
            Ok(c) => c,
            Err(e) => {
                last = e.to_string();
                continue;
            }
        };
        let r = async {
            if state
                .resources
                .contains_key(&crate::graph::node_id(Role::Server, host))
            {
                k3s::check_quorum(conn.as_ref(), host).await?;
            }
            k3s::delete_node(conn.as_ref(), host).await?;
            Ok::<(), OpsError>(())
        }
        .await;
        match r {
            Ok(()) => {
                deleted = true;
                break;
            }
            Err(e) => last = crate::error_chain(&e),
        }
    }
    pool.close().await;
    if !deleted {
        obs.event(Event::Warning {
            message: format!(
                "the Node object of `{host}` was not deleted ({last}); delete it later with `kubectl delete node {host}`"
            ),
        });
    }
    deleted
}
