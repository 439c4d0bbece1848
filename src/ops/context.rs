//! What the steps of one `up` share (`Ctx`: the environment and graph, refreshed as
//! cloud addresses appear; the connection pool; the state and its store; the
//! observer), and the bookkeeping every step does through it: connect to a host
//! (recording where it is first), mark a resource pending/applied/failed/offline
//! with an atomic save, read the secrets a node's config needs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::{OpsError, SharedObserver};
use crate::aws::Ec2Api;
use crate::aws::provision::{Options, Validated};
use crate::graph::{self, Action, Kind, ResourceGraph};
use crate::k3s;
use crate::recipe::{Environment, Host, Role};
use crate::ssh::{HostConn, Pool};
use crate::state::{HostState, ResourceState, Secret, State, Status, now};
use crate::statestore::Store;

/// One node of an execution graph.
#[derive(Debug, Clone)]
pub(super) struct Step {
    pub(super) id: String,
    pub(super) action: Action,
    pub(super) kind: Option<Kind>,
    pub(super) host: Option<String>,
    pub(super) role: Option<Role>,
}

impl super::runner::Item for Step {
    fn id(&self) -> &str {
        &self.id
    }
    fn action(&self) -> Action {
        self.action
    }
    fn host(&self) -> Option<&str> {
        self.host.as_deref()
    }
}

/// What the cloud steps of one `up` share.
pub(super) struct CloudCtx {
    pub api: Arc<dyn Ec2Api>,
    /// Images and usable zones (empty when nothing is launched in this run).
    pub valid: Validated,
    pub opts: Options,
}

/// At most this many agents join at once: a join costs the server a CPU spike
/// (docs/k3s.md, "Devices and sizing").
pub(super) const JOIN_BATCH: usize = 50;

pub(super) struct Ctx {
    pub(super) joins: tokio::sync::Semaphore,
    /// The recipe's environment, before cloud addresses are filled in.
    pub(super) base: Environment,
    /// `base` with AWS addresses from state; refreshed after each instance group.
    pub(super) env: std::sync::RwLock<Arc<Environment>>,
    pub(super) rg: std::sync::RwLock<Arc<ResourceGraph>>,
    pub(super) pool: Arc<Pool>,
    pub(super) store: Store,
    pub(super) state: Mutex<State>,
    pub(super) obs: SharedObserver,
    pub(super) cloud: Option<CloudCtx>,
}

impl Ctx {
    pub(super) fn env(&self) -> Arc<Environment> {
        self.env
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    /// A desired attribute of a resource in the current graph.
    pub(super) fn rg_attr(&self, id: &str, key: &str) -> Option<serde_json::Value> {
        resource(self, id).and_then(|r| r.attrs.get(key).cloned())
    }
    pub(super) fn rg(&self) -> Arc<ResourceGraph> {
        self.rg
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
    /// Re-resolve AWS addresses from state and rebuild the desired graph (ids are
    /// unchanged; attributes that name addresses change).
    pub(super) fn refresh(&self) -> Result<(), OpsError> {
        let cloud = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .aws
            .clone();
        let env = crate::aws::provision::resolve(&self.base, cloud.as_ref(), self.store.dir())
            .into_owned();
        let rg = graph::build(&env)?;
        *self
            .env
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(env);
        *self
            .rg
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(rg);
        Ok(())
    }
}

/// The agents' recorded secure token (empty until the first server is applied).
pub(super) fn agent_join_token(ctx: &Ctx) -> Secret {
    ctx.state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .cluster
        .agent_join_token
        .clone()
}

/// The secrets of a node's config.yaml (docs/k3s.md, "Tokens"): the first server gets
/// the cluster token, other servers the server join token; every server gets
/// `agent-token`; agents join with the agents' token only, so an agent host cannot
/// join as a server.
pub(super) fn node_secrets(st: &State, is_init: bool, role: Role) -> Vec<(&'static str, Secret)> {
    match role {
        Role::Server => vec![
            (
                "token",
                if is_init {
                    st.cluster.token.clone()
                } else {
                    st.cluster.join_token.clone()
                },
            ),
            ("agent-token", st.cluster.agent_token.clone()),
        ],
        Role::Agent => vec![("token", st.cluster.agent_join_token.clone())],
    }
}

/// Mutate and save the state in one critical section.
pub(super) fn with_state<T>(ctx: &Ctx, f: impl FnOnce(&mut State) -> T) -> Result<T, OpsError> {
    let mut st = ctx
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let out = f(&mut st);
    ctx.store.save(&mut st)?;
    Ok(out)
}

pub(super) fn record_failure(ctx: &Ctx, step: &Step, msg: &str, status: Status) {
    let _ = with_state(ctx, |st| {
        if let Some(r) = st.resources.get_mut(&step.id) {
            r.status = status;
            r.last_error = Some(msg.to_string());
            r.updated_at = now();
        } else {
            st.resources.insert(
                step.id.clone(),
                ResourceState {
                    status,
                    hash: String::new(),
                    host: step.host.clone(),
                    role: step.role,
                    attrs: BTreeMap::new(),
                    last_error: Some(msg.to_string()),
                    updated_at: now(),
                    version: None,
                    kind: step.kind.clone(),
                },
            );
        }
    });
}

pub(super) fn host_of(ctx: &Ctx, name: &str) -> Option<Host> {
    if let Some(h) = ctx.env().hosts.get(name) {
        return Some(h.clone());
    }
    let st = ctx.state.lock().ok()?;
    st.hosts.get(name).map(|hs| hs.to_host(name))
}

pub(super) async fn connect(ctx: &Ctx, name: &str) -> Result<Arc<HostConn>, OpsError> {
    let host = host_of(ctx, name).ok_or_else(|| {
        OpsError::K3s(k3s::K3sError::Protocol {
            host: name.to_string(),
            detail: "the host is neither in the inventory nor in state".into(),
        })
    })?;
    // Recorded before the attempt, so `status` shows where an offline host is
    //; the host key fingerprint only once it answered.
    with_state(ctx, |st| {
        let e = st.hosts.entry(name.to_string()).or_default();
        e.address = host.address.clone();
        e.port = host.port;
        e.user = host.user.clone();
        e.key = host.key.clone();
        e.bastion = host.bastion.clone();
        e.host_key = host.host_key.clone();
    })?;
    let conn = ctx.pool.get(&host).await?;
    if let Some(fp) = conn.fingerprint.clone() {
        with_state(ctx, |st| {
            st.hosts
                .entry(name.to_string())
                .or_default()
                .host_key_fingerprint = Some(fp);
        })?;
    }
    Ok(conn)
}

pub(super) fn resource(ctx: &Ctx, id: &str) -> Option<graph::Resource> {
    let rg = ctx.rg();
    rg.index.get(id).map(|ix| rg.graph[*ix].clone())
}

pub(super) fn mark(
    ctx: &Ctx,
    id: &str,
    status: Status,
    extra: impl FnOnce(&mut State),
) -> Result<(), OpsError> {
    let r = resource(ctx, id);
    let version = ctx.env().cluster.version.clone();
    with_state(ctx, |st| {
        if let Some(r) = r {
            let prev_attrs = st.resources.get(id).map(|p| p.attrs.clone());
            let prev_version = st.resources.get(id).and_then(|p| p.version.clone());
            st.resources.insert(
                id.to_string(),
                ResourceState {
                    status,
                    hash: if status == Status::Applied {
                        r.hash.clone()
                    } else {
                        st.resources
                            .get(id)
                            .map(|p| p.hash.clone())
                            .unwrap_or_default()
                    },
                    host: r.host.clone(),
                    role: r.role(),
                    attrs: if status == Status::Applied {
                        r.attrs.clone()
                    } else {
                        prev_attrs.unwrap_or_default()
                    },
                    last_error: None,
                    updated_at: now(),
                    // A node's version changes only once it is applied at the new one.
                    version: if status == Status::Applied && r.role().is_some() {
                        Some(version)
                    } else {
                        prev_version
                    },
                    kind: Some(r.kind.clone()),
                },
            );
        }
        extra(st);
    })
}

/// The state entry of a host, as recorded (used by tests).
pub fn recorded_host(state: &State, name: &str) -> Option<HostState> {
    state.hosts.get(name).cloned()
}

pub(super) fn layer_inputs(
    ctx: &Ctx,
) -> Result<
    (
        crate::recipe::serverless::Serverless,
        crate::state::Credentials,
    ),
    OpsError,
> {
    let sl = ctx.env().serverless.clone().ok_or_else(|| {
        OpsError::Serverless(super::serverless::LayerError::NoCredentials(
            ctx.env().name.clone(),
        ))
    })?;
    let creds = ctx
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .serverless
        .clone()
        .ok_or_else(|| {
            OpsError::Serverless(super::serverless::LayerError::NoCredentials(
                ctx.env().name.clone(),
            ))
        })?;
    Ok((sl, creds))
}

/// `uname -m` (k3s names) of the cluster's nodes, as recorded by their steps.
pub(super) fn node_arches(ctx: &Ctx) -> BTreeMap<String, String> {
    let st = ctx
        .state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    st.hosts
        .iter()
        .filter(|(n, _)| ctx.env().cluster.role_of(n).is_some())
        .filter_map(|(n, h)| Some((n.clone(), h.arch.clone()?)))
        .collect()
}
