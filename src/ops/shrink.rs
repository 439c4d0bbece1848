//! Declarative shrink (issue 5): a host that leaves the inventory (or
//! `continuum nodes remove ENV HOST`) is cordoned and drained through the server, its
//! Node object deleted, k3s uninstalled on it, and state updated; nothing else is
//! touched. A server is only removed when etcd keeps its quorum afterwards.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::up::{UpReport, up};
use super::{OpsError, Settings, SharedObserver};
use crate::graph::Plan;
use crate::inventory;
use crate::k3s::{self, BIN_PATH};
use crate::recipe::{self, Role};
use crate::ssh::{Remote, quote};
use crate::state::Store;

#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    #[error(
        "refusing to remove server `{host}`: etcd has {members} member(s), {healthy} of them Ready; \
         without it {left_healthy} of {left} would be Ready, below the quorum of {quorum}. Bring the \
         other servers back (or add one) first"
    )]
    Quorum {
        host: String,
        members: usize,
        healthy: usize,
        left: usize,
        left_healthy: usize,
        quorum: usize,
    },
    #[error("draining `{host}` through `{server}` failed: {detail}")]
    Drain {
        host: String,
        server: String,
        detail: String,
    },
    #[error("environment `{env}` has no host `{host}`")]
    NoSuchHost { env: String, host: String },
    #[error(
        "`{host}` is the first server of `{env}` (the one every node joined): it can only go with \
         `continuum down {env}`"
    )]
    InitServer { env: String, host: String },
    #[error("state of `{0}` does not name its recipe; run `continuum up RECIPE` once")]
    NoRecipe(String),
    #[error(
        "the recipe still names `{host}` (k3s.servers or k3s.agents): remove it there; the inventory \
         was left unchanged"
    )]
    RecipeNamesHost {
        host: String,
        #[source]
        source: recipe::LoadError,
    },
}

const SHORT: Duration = Duration::from_secs(180);

/// Refuse when removing server `host` would leave etcd without a Ready majority.
pub async fn check_quorum<R: Remote>(server: &R, host: &str) -> Result<(), OpsError> {
    let nodes = k3s::list_nodes(server).await?;
    let etcd: Vec<&k3s::NodeInfo> = nodes
        .iter()
        .filter(|n| n.roles.iter().any(|r| r == "etcd"))
        .collect();
    if !etcd.iter().any(|n| n.name == host) {
        return Ok(());
    }
    let members = etcd.len();
    let healthy = etcd.iter().filter(|n| n.ready == "True").count();
    let left = members - 1;
    let left_healthy = etcd
        .iter()
        .filter(|n| n.ready == "True" && n.name != host)
        .count();
    let quorum = left / 2 + 1;
    if left > 0 && left_healthy < quorum {
        return Err(ShrinkError::Quorum {
            host: host.to_string(),
            members,
            healthy,
            left,
            left_healthy,
            quorum,
        }
        .into());
    }
    Ok(())
}

/// Cordon and drain `node` through `server`; a node the API no longer has is fine.
pub async fn drain<R: Remote>(server: &R, node: &str) -> Result<(), OpsError> {
    let out = server
        .run(
            &format!(
                "{BIN_PATH} kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout=120s",
                quote(node)
            ),
            None,
            true,
            SHORT,
        )
        .await?;
    if out.success() || out.stderr.contains("NotFound") {
        return Ok(());
    }
    Err(ShrinkError::Drain {
        host: node.to_string(),
        server: server.name().to_string(),
        detail: out.tail(),
    }
    .into())
}

/// `continuum nodes remove ENV HOST`: take the host out of the inventory (declarative),
/// then converge, which drains, deletes and uninstalls exactly that node.
pub async fn remove_node(
    env_name: &str,
    host: &str,
    settings: &Settings,
    obs: SharedObserver,
    cancel: &CancellationToken,
    approve: impl FnOnce(&Plan) -> bool,
) -> Result<UpReport, OpsError> {
    let store = Store::new(&settings.state_dir, env_name);
    let state = store.load_existing()?;
    let recipe_path = state
        .recipe
        .clone()
        .ok_or_else(|| ShrinkError::NoRecipe(env_name.to_string()))?;
    let env = recipe::load_recipe(&recipe_path)?.env;
    if !env.hosts.contains_key(host) {
        return Err(ShrinkError::NoSuchHost {
            env: env_name.to_string(),
            host: host.to_string(),
        }
        .into());
    }
    if env.cluster.init_server() == host {
        return Err(ShrinkError::InitServer {
            env: env_name.to_string(),
            host: host.to_string(),
        }
        .into());
    }
    if env.cluster.role_of(host) == Some(Role::Server) {
        // Checked before the inventory changes, so a refusal leaves everything as it was.
        let pool = settings.pool(env_name)?;
        let init = env.cluster.init_server();
        let conn = pool.get(&env.hosts[init]).await?;
        let r = check_quorum(conn.as_ref(), host).await;
        drop(conn);
        pool.close().await;
        r?;
    }
    let inv = env.inventory_path.clone();
    let old = inventory::read(&inv)?;
    inventory::write_checked(&inv, &inventory::edit::remove(&old, host)?)?;
    let env = match recipe::load_recipe(&recipe_path) {
        Ok(l) => l.env,
        Err(source) => {
            let restore = crate::state::write_atomic(&inv, old.as_bytes(), 0o644);
            restore.map_err(|source| inventory::InventoryError::Write {
                path: inv.clone(),
                source,
            })?;
            return Err(ShrinkError::RecipeNamesHost {
                host: host.to_string(),
                source,
            }
            .into());
        }
    };
    let obs: SharedObserver = Arc::clone(&obs);
    up(&env, settings, obs, cancel, approve).await
}
