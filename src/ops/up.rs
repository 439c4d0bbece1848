//! `continuum up`: apply the plan. Walks the resource graph (plus deletions) with the
//! engine; each step checks the host before changing it and records the result in
//! state at once.

mod device;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use petgraph::graph::{DiGraph, NodeIndex};
use tokio_util::sync::CancellationToken;

use super::{
    Did, Event, OpsError, ResourceResult, Settings, SharedObserver, random_secret, summarize,
};
use crate::engine::{Outcome, walk};
use crate::files::Store;
use crate::graph::{self, Action, Dep, Kind, Plan, ResourceGraph};
use crate::k3s::{self, Applied, NodeSpec};
use crate::recipe::{Environment, Host, Role};
use crate::registry::kubeconfig;
use crate::ssh::{HostConn, Pool, Remote};
use crate::state::{HostState, ResourceState, Secret, State, Status, now};

/// What `up` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UpReport {
    pub plan: Plan,
    pub results: Vec<ResourceResult>,
}

impl UpReport {
    pub fn changed(&self) -> usize {
        self.results.iter().filter(|r| r.changed).count()
    }
}

#[derive(Debug, Clone)]
struct Step {
    id: String,
    action: Action,
    kind: Option<Kind>,
    host: Option<String>,
    role: Option<Role>,
}

/// At most this many agents join at once: a join costs the server a CPU spike
/// (docs/k3s.md, "Devices and sizing").
const JOIN_BATCH: usize = 50;

pub(super) struct Ctx {
    joins: tokio::sync::Semaphore,
    /// The recipe's environment, before cloud addresses are filled in.
    base: Environment,
    /// `base` with AWS addresses from state; refreshed after each instance group.
    env: std::sync::RwLock<Arc<Environment>>,
    rg: std::sync::RwLock<Arc<ResourceGraph>>,
    pool: Arc<Pool>,
    pub(super) store: Store,
    pub(super) state: Mutex<State>,
    pub(super) obs: SharedObserver,
    pub(super) cloud: Option<super::cloud::CloudCtx>,
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
    fn rg(&self) -> Arc<ResourceGraph> {
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

/// Plan against the recorded state, refreshed from the hosts unless
/// `settings.refresh` is off (read-only; no lock). Hosts that could not be read are
/// returned with the reason, and planned from the state.
pub async fn plan(
    env: &Environment,
    settings: &Settings,
) -> Result<(ResourceGraph, Plan, BTreeMap<String, String>), OpsError> {
    let store = Store::new(&settings.state_dir, &env.name);
    let state = store.load()?;
    // AWS addresses come from state (unknown ones stay empty until `up` creates them).
    let env = crate::aws::provision::resolve(
        env,
        state.as_ref().and_then(|s| s.aws.as_ref()),
        &settings.state_dir,
    );
    let rg = graph::build(&env)?;
    let refreshed = match &state {
        Some(st) if settings.refresh => {
            let pool = Arc::new(settings.pool(&env.name)?);
            let r = super::refresh::refresh(&env, &rg, st, settings, &pool).await;
            pool.close().await;
            r?
        }
        _ => super::refresh::Refreshed::default(),
    };
    let plan = graph::plan_with_drift(&env, &rg, state.as_ref(), &refreshed.drift);
    Ok((rg, plan, refreshed.unreachable))
}

/// Converge the environment. `Ok` only when every resource is applied.
pub async fn up(
    env: &Environment,
    settings: &Settings,
    obs: SharedObserver,
    cancel: &CancellationToken,
    approve: impl FnOnce(&Plan) -> bool,
) -> Result<UpReport, OpsError> {
    let store = Store::new(&settings.state_dir, &env.name);
    let _lock = store.lock()?;
    let mut state = store.load()?.unwrap_or_else(|| State::new(&env.name));
    // Absolute, so `nodes remove` finds the recipe from any directory.
    state.recipe = Some(crate::files::absolute(&env.recipe_path));
    if state.cluster.token.is_empty() || state.cluster.agent_token.is_empty() {
        // Saved before any host sees them, so a crash cannot produce two tokens.
        if state.cluster.token.is_empty() {
            state.cluster.token = Secret::new(random_secret()?);
        }
        if state.cluster.agent_token.is_empty() {
            state.cluster.agent_token = Secret::new(random_secret()?);
        }
        store.save(&mut state)?;
    }
    // OSCAR/MinIO credentials (issue 4): given ones, else CSPRNG; saved before any
    // host sees them, kept across runs.
    if let Some(sl) = &env.serverless {
        let creds = crate::state::Credentials::resolve(
            &sl.credentials,
            state.serverless.as_ref(),
            &mut || random_secret().map_err(|e| e.to_string()),
        )
        .map_err(OpsError::Random)?;
        if state.serverless.as_ref() != Some(&creds) {
            state.serverless = Some(creds);
            store.save(&mut state)?;
        }
    }
    let base = env.clone();
    let env =
        crate::aws::provision::resolve(&base, state.aws.as_ref(), &settings.state_dir).into_owned();
    let rg = graph::build(&env)?;
    let pool = Arc::new(settings.pool(&env.name)?);
    let refreshed = if settings.refresh {
        super::refresh::refresh(&env, &rg, &state, settings, &pool).await?
    } else {
        super::refresh::Refreshed::default()
    };
    for (h, why) in &refreshed.unreachable {
        obs.event(Event::Warning {
            message: format!("cannot refresh `{h}` (planned from state): {why}"),
        });
    }
    let plan = graph::plan_with_drift(&env, &rg, Some(&state), &refreshed.drift);
    if plan.to_change() == 0 {
        pool.close().await;
        return Ok(UpReport {
            plan,
            results: Vec::new(),
        });
    }
    // Every per-arch binary the plan needs exists, before anything changes.
    crate::ops::preflight::check_artifacts(&env, &state, &plan)?;
    // Cloud: credentials, then instance types and images checked before any spend.
    let cloud = super::cloud::prepare(&base, &plan, settings, &store, &mut state).await?;
    if !approve(&plan) {
        pool.close().await;
        return Ok(UpReport {
            plan,
            results: Vec::new(),
        });
    }

    // Execution graph: the desired resources plus deletions, deletions before readiness
    // and before a re-creation on the same host.
    let mut g: DiGraph<Step, Dep> = rg.graph.map(
        |ix, r| {
            let change = plan.get(&r.id);
            Step {
                id: r.id.clone(),
                action: change.map_or(Action::NoOp, |c| c.action),
                kind: Some(rg.graph[ix].kind.clone()),
                host: r.host.clone(),
                role: r.role(),
            }
        },
        |_, d| *d,
    );
    let ready = rg.index.get(graph::CLUSTER_READY).copied();
    for c in plan.changes.iter().filter(|c| c.action == Action::Delete) {
        let ix = g.add_node(Step {
            id: c.id.clone(),
            action: Action::Delete,
            kind: None,
            host: c.host.clone(),
            role: c.role,
        });
        if let Some(r) = ready {
            // A removal that fails (host gone) does not withhold readiness.
            g.add_edge(ix, r, Dep::After);
        }
        if let Some(h) = &c.host {
            for role in [Role::Server, Role::Agent] {
                if let Some(other) = rg.index.get(&graph::node_id(role, h)) {
                    g.add_edge(ix, *other, Dep::Needs);
                }
            }
            // A node on an instance that is going away leaves the cluster before its
            // group terminates the instance.
            if let Some(grp) = super::cloud::group_of(&state, h)
                && let Some(gix) = rg.index.get(&crate::aws::provision::group_id(&grp))
            {
                g.add_edge(ix, *gix, Dep::Needs);
            }
        }
    }

    if let Some(order) = &plan.upgrade {
        add_upgrade_order(&mut g, &rg, order);
    }

    let ctx = Arc::new(Ctx {
        joins: tokio::sync::Semaphore::new(JOIN_BATCH),
        pool,
        env: std::sync::RwLock::new(Arc::new(env)),
        rg: std::sync::RwLock::new(Arc::new(rg)),
        base,
        store,
        state: Mutex::new(state),
        obs,
        cloud,
    });
    let changed: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    // Hosts that could not be reached at all (switched off): their steps are
    // `offline`, not `failed` (issue 9).
    let unreachable: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let steps: Arc<Vec<Step>> = Arc::new(g.node_weights().cloned().collect());
    let outcomes = walk(
        &g,
        settings.concurrency,
        cancel,
        |s| s.id.clone(),
        |ix: NodeIndex| {
            let ctx = ctx.clone();
            let steps = steps.clone();
            let changed = changed.clone();
            let unreachable = unreachable.clone();
            async move {
                let step = &steps[ix.index()];
                if step.action == Action::NoOp {
                    return Ok(());
                }
                ctx.obs.event(Event::Started {
                    id: step.id.clone(),
                    action: step.action,
                });
                match run_step(&ctx, step).await {
                    Ok(did) => {
                        changed
                            .lock()
                            .map(|mut m| m.insert(step.id.clone(), did.changed))
                            .ok();
                        ctx.obs.event(Event::Finished {
                            id: step.id.clone(),
                            changed: did.changed,
                            summary: did.summary,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        let msg = error_text(&e);
                        let offline = e.is_unreachable() && step.host.is_some();
                        if offline && let Some(h) = &step.host {
                            unreachable
                                .lock()
                                .map(|mut m| m.insert(h.clone(), msg.clone()))
                                .ok();
                        }
                        record_failure(
                            &ctx,
                            step,
                            &msg,
                            if offline {
                                Status::Offline
                            } else {
                                Status::Failed
                            },
                        );
                        ctx.obs.event(Event::Failed {
                            id: step.id.clone(),
                            error: msg.clone(),
                        });
                        Err(msg)
                    }
                }
            }
        },
    )
    .await;
    ctx.pool.close().await;

    let changed = changed.lock().map(|m| m.clone()).unwrap_or_default();
    let unreachable = unreachable.lock().map(|m| m.clone()).unwrap_or_default();
    let tolerated = tolerated_offline(&ctx.env(), &unreachable);
    if let Some(hosts) = &tolerated {
        ctx.obs.event(Event::Warning {
            message: format!(
                "{} agent(s) offline, within k3s.allow_unavailable ({}): {}; the next `up` tries again",
                hosts.len(),
                ctx.env().cluster.unavailable_allowed(),
                hosts.join(", ")
            ),
        });
    }
    let mut results = Vec::new();
    for (ix, outcome) in outcomes.iter().enumerate() {
        let step = &steps[ix];
        if step.action == Action::NoOp {
            continue;
        }
        let offline = step
            .host
            .as_ref()
            .filter(|h| unreachable.contains_key(*h))
            .map(|h| {
                if tolerated.as_ref().is_some_and(|t| t.contains(h)) {
                    "tolerated"
                } else {
                    "offline"
                }
            });
        let (name, detail) = match outcome {
            Outcome::Done => ("done", None),
            Outcome::Failed(e) => (offline.unwrap_or("failed"), Some(e.clone())),
            Outcome::Skipped { because } if offline.is_some() => {
                // A later step on a host that was already found offline.
                ctx.obs.event(Event::Skipped {
                    id: step.id.clone(),
                    because: because.clone(),
                });
                (
                    offline.unwrap_or("offline"),
                    Some(format!("skipped: {because}")),
                )
            }
            Outcome::Skipped { because } => {
                ctx.obs.event(Event::Skipped {
                    id: step.id.clone(),
                    because: because.clone(),
                });
                ("skipped", Some(format!("skipped: {because}")))
            }
            Outcome::Cancelled => {
                ctx.obs.event(Event::Cancelled {
                    id: step.id.clone(),
                });
                ("cancelled", None)
            }
        };
        results.push(ResourceResult {
            id: step.id.clone(),
            action: step.action,
            outcome: name.to_string(),
            changed: changed.get(&step.id).copied().unwrap_or(false),
            detail,
        });
    }
    summarize(&results, cancel.is_cancelled())?;
    Ok(UpReport { plan, results })
}

/// The agents' recorded secure token (empty until the first server is applied).
fn agent_join_token(ctx: &Ctx) -> Secret {
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

/// A version change rolls in the documented order (docs/k3s.md, "Upgrades"): each
/// server after the previous one (which waited until it was Ready at the new version),
/// then the agents batch by batch behind a gate step per batch (so edges stay linear in
/// the number of agents). A failed server stops the agents; an offline agent does not
/// stop the next batch.
fn add_upgrade_order(g: &mut DiGraph<Step, Dep>, rg: &ResourceGraph, order: &graph::UpgradeOrder) {
    let node = |role: Role, h: &str| rg.index.get(&graph::node_id(role, h)).copied();
    let servers: Vec<NodeIndex> = order
        .servers
        .iter()
        .filter_map(|s| node(Role::Server, s))
        .collect();
    for pair in servers.windows(2) {
        g.add_edge(pair[0], pair[1], Dep::Needs);
    }
    let mut previous: Vec<NodeIndex> = Vec::new();
    for (i, batch) in order.agent_batches.iter().enumerate() {
        let gate = g.add_node(Step {
            id: format!("upgrade-batch/{}", i + 1),
            action: Action::NoOp,
            kind: None,
            host: None,
            role: None,
        });
        if i == 0 {
            for s in &servers {
                g.add_edge(*s, gate, Dep::Needs);
            }
        }
        for p in &previous {
            g.add_edge(*p, gate, Dep::After);
        }
        previous = batch.iter().filter_map(|a| node(Role::Agent, a)).collect();
        for a in &previous {
            g.add_edge(gate, *a, Dep::Needs);
        }
    }
}

/// The unreachable hosts when `up` may still succeed without them: all of them agents
/// (servers are never optional) and no more than `k3s.allow_unavailable` allows.
/// Sorted host names.
fn tolerated_offline(
    env: &Environment,
    unreachable: &BTreeMap<String, String>,
) -> Option<Vec<String>> {
    if unreachable.is_empty() {
        return None;
    }
    let allowed = env.cluster.unavailable_allowed();
    let all_agents = unreachable
        .keys()
        .all(|h| env.cluster.role_of(h) == Some(Role::Agent));
    (all_agents && unreachable.len() <= allowed).then(|| unreachable.keys().cloned().collect())
}

pub(super) fn error_text(e: &OpsError) -> String {
    crate::error_chain(e)
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

fn record_failure(ctx: &Ctx, step: &Step, msg: &str, status: Status) {
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
                },
            );
        }
    });
}

fn host_of(ctx: &Ctx, name: &str) -> Option<Host> {
    if let Some(h) = ctx.env().hosts.get(name) {
        return Some(h.clone());
    }
    let st = ctx.state.lock().ok()?;
    st.hosts.get(name).map(|hs| hs.to_host(name))
}

async fn connect(ctx: &Ctx, name: &str) -> Result<Arc<HostConn>, OpsError> {
    let host = host_of(ctx, name).ok_or_else(|| {
        OpsError::K3s(k3s::K3sError::Protocol {
            host: name.to_string(),
            detail: "the host is neither in the inventory nor in state".into(),
        })
    })?;
    // Recorded before the attempt, so `status` shows where an offline host is
    // (issue 9); the host key fingerprint only once it answered.
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

async fn run_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    match (&step.kind, step.action) {
        (_, Action::Delete) if step.id.starts_with("aws-") => {
            super::cloud::delete_step(ctx, &step.id)
                .await
                .map(Did::from)
        }
        (_, Action::Delete) if step.id == graph::SERVERLESS => {
            serverless_delete_step(ctx, step).await.map(Did::from)
        }
        (_, Action::Delete) if step.id == graph::ENDPOINT => {
            endpoint_delete_step(ctx, step).await.map(Did::from)
        }
        (_, Action::Delete) => delete_step(ctx, step).await,
        (Some(Kind::Serverless), _) => serverless_step(ctx, step).await.map(Did::from),
        (Some(Kind::Endpoint), _) => endpoint_step(ctx, step).await.map(Did::from),
        (Some(Kind::K3sServer { .. } | Kind::K3sAgent), _) => node_step(ctx, step).await,
        (Some(Kind::ClusterReady), _) => ready_step(ctx, step).await,
        (Some(Kind::Kubeconfig), _) => kubeconfig_step(ctx, step).await,
        (Some(Kind::DevicePrep { device }), _) => {
            device::prep_step(ctx, step, *device).await.map(Did::from)
        }
        (Some(Kind::GpuRuntime), _) => device::gpu_step(ctx, step).await.map(Did::from),
        (
            Some(
                k @ (Kind::AwsVpc
                | Kind::AwsSubnet
                | Kind::AwsInternetGateway
                | Kind::AwsRoute
                | Kind::AwsSecurityGroup
                | Kind::AwsKeyPair
                | Kind::AwsInstances { .. }),
            ),
            action,
        ) => {
            mark(ctx, &step.id, Status::Pending, |_| {})?;
            let changed = super::cloud::step(ctx, &step.id, k, action).await?;
            mark(ctx, &step.id, Status::Applied, |_| {})?;
            Ok(Did::from(changed))
        }
        (None, _) => Ok(Did::unchanged("nothing to do")),
    }
}

fn resource(ctx: &Ctx, id: &str) -> Option<graph::Resource> {
    let rg = ctx.rg();
    rg.index.get(id).map(|ix| rg.graph[*ix].clone())
}

fn mark(
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
                },
            );
        }
        extra(st);
    })
}

async fn node_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let host = step.host.clone().unwrap_or_default();
    let role = step.role.unwrap_or(Role::Agent);
    let upgrading_from = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        graph::recorded_version(&st, &step.id).filter(|v| *v != ctx.env().cluster.version)
    };
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let conn = connect(ctx, &host).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "reading host facts".into(),
    });
    let facts = k3s::facts(conn.as_ref()).await?;
    // install.sh needs systemd or openrc: a host with neither is refused here, before
    // anything below changes it (docs/k3s.md, "Service managers").
    facts.service_manager(&host).map_err(OpsError::K3s)?;
    // An active ufw/firewalld must already let in what k3s needs (docs/k3s.md, "Host
    // firewalls"): refused before any change, with the commands that open it.
    {
        let env = ctx.env();
        let c = &env.cluster;
        let need = k3s::firewall::needs(
            role,
            c.ha,
            &c.flannel_backend,
            [
                c.cluster_cidr.as_deref().unwrap_or("10.42.0.0/16"),
                c.service_cidr.as_deref().unwrap_or("10.43.0.0/16"),
            ],
        );
        if let Some(commands) = k3s::firewall::missing_commands(&facts.firewall, &need) {
            return Err(OpsError::K3s(k3s::K3sError::FirewallClosed {
                host,
                firewall: facts.firewall.kind.clone(),
                commands,
            }));
        }
    }
    with_state(ctx, |st| {
        st.hosts.entry(host.clone()).or_default().arch = Some(facts.arch.clone());
    })?;
    // A Pi that was never prepared (not probed): stop before installing a k3s that
    // could not run pods, and say how to get it prepared.
    if facts.is_raspberry_pi() && facts.memory_cgroup == Some(false) {
        return Err(OpsError::K3s(k3s::K3sError::MemoryCgroupOff {
            host,
            model: facts.model.clone().unwrap_or_default(),
        }));
    }
    let probed = ctx
        .env()
        .hosts
        .get(&host)
        .is_some_and(|h| h.probed.is_some());
    if facts.is_jetson() && !probed {
        ctx.obs.event(Event::Warning {
            message: format!(
                "`{host}` is an {} that was not probed: it joins without GPU labels, toolkit or runtime checks; run `continuum inventory probe INVENTORY --host {host}` and `up` again",
                facts.model.as_deref().unwrap_or("NVIDIA Jetson")
            ),
        });
    }
    let is_init = ctx.env().cluster.init_server() == host && role == Role::Server;
    if role == Role::Agent && agent_join_token(ctx).is_empty() {
        // A state from before agents had their own token: read it from the first server.
        let init = ctx.env().cluster.init_server().to_string();
        let server = connect(ctx, &init).await?;
        let t = k3s::read_agent_token(server.as_ref()).await?;
        with_state(ctx, |st| st.cluster.agent_join_token = Secret::new(t))?;
    }
    let secrets = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        node_secrets(&st, is_init, role)
    };
    if secrets.iter().any(|(_, v)| v.is_empty()) {
        return Err(OpsError::K3s(k3s::K3sError::Protocol {
            host,
            detail: "no join token recorded: the first server has not finished".into(),
        }));
    }
    let attrs = resource(ctx, &step.id)
        .map(|r| r.attrs.clone())
        .unwrap_or_default();
    let pairs: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.expose())).collect();
    // Host-dependent keys (`selinux: true` on an enforcing host) join at rendering.
    let config = k3s::render_config(
        &ctx.env().name,
        &host,
        role,
        &facts.selinux.config(&attrs),
        &pairs,
    )?;
    // Labels and taints reach a live node only through the API (k3s applies them when
    // a node registers): a change of only those keys needs no restart.
    let before = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources
            .get(&step.id)
            .filter(|r| r.version.is_some() || !r.attrs.is_empty())
            .map(|r| r.attrs.clone())
    };
    let live_keys = |m: &BTreeMap<String, serde_json::Value>| {
        m.iter()
            .filter(|(k, _)| *k != "node-label" && *k != "node-taint")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let labels_before = before.as_ref().map(k3s::LabelsTaints::of);
    let labels_want = k3s::LabelsTaints::of(&attrs);
    let labels_changed = labels_before.as_ref().is_some_and(|b| *b != labels_want);
    let live_keys_only = labels_changed
        && upgrading_from.is_none()
        && before
            .as_ref()
            .is_some_and(|b| live_keys(b) == live_keys(&attrs));
    let spec = NodeSpec {
        role,
        version: &ctx.env().cluster.version,
        install: &ctx.env().cluster.install,
        config,
        live_keys_only,
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "installing k3s".into(),
    });
    let _join_slot = if role == Role::Agent {
        ctx.joins.acquire().await.ok()
    } else {
        None
    };
    // The serverless layer's RWX volumes are NFS mounts made by the kubelet with the
    // host's mount.nfs (docs/oscar.md, "NFS client on the nodes"): installed first, so
    // a host that cannot get it is refused before anything else changes.
    if ctx.env().serverless.is_some() && !facts.nfs_client {
        let manager = facts.pkg_managers.first().copied();
        let (package, script) = match manager {
            Some(m) => (
                m.nfs_client_package().to_string(),
                m.install_script(&[m.nfs_client_package()]),
            ),
            None => (
                "the NFS client (nfs-common, nfs-utils or nfs-client)".to_string(),
                "echo 'no apk, apt-get, dnf, yum or zypper on this host' >&2; exit 3".to_string(),
            ),
        };
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("installing the NFS client ({package})"),
        });
        let out = conn
            .run(&script, None, true, std::time::Duration::from_secs(600))
            .await?;
        if !out.success() {
            let last = out.tail().lines().last().unwrap_or("").trim().to_string();
            return Err(OpsError::K3s(k3s::K3sError::NfsClient {
                host,
                detail: match manager {
                    Some(m) => format!("`{m} install {package}` failed there ({last})"),
                    None => "it has no package manager continuum knows".to_string(),
                },
                package,
            }));
        }
    }
    // An enforcing SELinux host needs the policy packages before k3s (install.sh's
    // SELinux step is skipped with INSTALL_K3S_SKIP_DOWNLOAD): docs/k3s.md, "SELinux".
    let missing = facts.selinux.missing();
    if !missing.is_empty() {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("installing {}", missing.join(", ")),
        });
        let out = conn
            .run(
                &k3s::selinux::install_script(&facts.pkg_managers, &missing),
                None,
                true,
                std::time::Duration::from_secs(600),
            )
            .await?;
        if !out.success() {
            return Err(OpsError::K3s(k3s::K3sError::SelinuxPackages {
                host,
                missing: missing.iter().map(|m| (*m).to_string()).collect(),
                detail: out.tail().lines().last().unwrap_or("").to_string(),
            }));
        }
    }
    // From here on the host may hold k3s files: `down` must uninstall it.
    let bin_dir = facts.bin_dir(&host)?;
    with_state(ctx, |st| {
        let h = st.hosts.entry(host.clone()).or_default();
        h.k3s_installed = true;
        h.bin_dir = (bin_dir != k3s::DEFAULT_BIN_DIR).then(|| bin_dir.clone());
    })?;
    let init_host = ctx.env().cluster.init_server().to_string();
    let drain = upgrading_from.is_some() && role == Role::Agent && ctx.env().cluster.upgrade.drain;
    if drain {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: "cordoning and draining before the upgrade".into(),
        });
        let server = connect(ctx, &init_host).await?;
        super::shrink::drain(server.as_ref(), &host).await?;
    }
    let applied = k3s::apply_node(conn.as_ref(), &spec, &facts).await?;
    if let Some(from) = &upgrading_from {
        // Ready at the new version before the next server or batch starts.
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("waiting until Ready at {} (was {from})", spec.version),
        });
        let server = if host == init_host {
            conn.clone()
        } else {
            connect(ctx, &init_host).await?
        };
        k3s::wait_ready(
            server.as_ref(),
            std::slice::from_ref(&host),
            spec.version,
            false,
            ctx.env().cluster.readiness_timeout,
        )
        .await?;
        if drain {
            k3s::uncordon(server.as_ref(), &host).await?;
        }
    }
    if let Some(b) = labels_before.filter(|_| labels_changed) {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: "updating labels and taints on the live node".into(),
        });
        let server = if host == init_host {
            conn.clone()
        } else {
            connect(ctx, &init_host).await?
        };
        k3s::sync_labels_and_taints(server.as_ref(), &host, &labels_want, &b).await?;
    }
    if is_init {
        let join = k3s::read_join_token(conn.as_ref()).await?;
        let agent_join = k3s::read_agent_token(conn.as_ref()).await?;
        let url = graph::server_url(&ctx.env());
        mark(ctx, &step.id, Status::Applied, |st| {
            st.cluster.join_token = Secret::new(join);
            st.cluster.agent_join_token = Secret::new(agent_join);
            st.cluster.server_url = Some(url);
            st.cluster.init_server = Some(host.clone());
        })?;
    } else {
        mark(ctx, &step.id, Status::Applied, |_| {})?;
    }
    Ok(if let Some(from) = upgrading_from {
        Did::changed(format!("upgraded {from} -> {}, Ready", spec.version))
    } else if live_keys_only {
        Did::changed("labels and taints updated on the live node, no restart")
    } else if applied == Applied::Changed {
        Did::changed(format!("k3s {} {} applied", spec.version, role))
    } else {
        Did::unchanged(format!("k3s {} {} already as desired", spec.version, role))
    })
}

async fn ready_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let env = ctx.env();
    let init = env.cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    // Wait for the nodes that are applied; name the others (failed, offline, skipped):
    // they do not withhold the rest of the cluster (issue 9).
    let (applied, missing): (Vec<String>, Vec<String>) = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        env.cluster
            .servers
            .iter()
            .map(|s| (s, Role::Server))
            .chain(env.cluster.agents.iter().map(|a| (a, Role::Agent)))
            .map(|(h, role)| {
                let ok = st
                    .resources
                    .get(&graph::node_id(role, h))
                    .is_some_and(|r| r.status == Status::Applied);
                (h.clone(), ok)
            })
            .fold((Vec::new(), Vec::new()), |(mut a, mut m), (h, ok)| {
                if ok {
                    a.push(h)
                } else {
                    m.push(h)
                }
                (a, m)
            })
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: if missing.is_empty() {
            format!("waiting for {} node(s) to be Ready", applied.len())
        } else {
            format!(
                "waiting for {} node(s) to be Ready (not applied, not waited for: {})",
                applied.len(),
                missing.join(", ")
            )
        },
    });
    let coredns = !env.cluster.disable.iter().any(|d| d == "coredns");
    k3s::wait_ready(
        conn.as_ref(),
        &applied,
        &env.cluster.version,
        coredns,
        env.cluster.readiness_timeout,
    )
    .await?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    let mut summary = format!("{} node(s) Ready", applied.len());
    if !missing.is_empty() {
        summary.push_str(&format!("; not applied: {}", missing.join(", ")));
    }
    // Waiting changes nothing on the hosts.
    Ok(Did::unchanged(summary))
}

async fn kubeconfig_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    let text = k3s::read_kubeconfig(conn.as_ref()).await?;
    let server = ctx
        .rg_attr(&step.id, "server")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let entries = kubeconfig::from_k3s(&text, &ctx.env().kubeconfig.context, &server)?;
    // Absolute, so `down` from another directory removes the same entry (issue 9).
    let path = crate::files::absolute(&kubeconfig::default_path(
        ctx.env().kubeconfig.path.as_deref(),
    ));
    // A moved or renamed context: remove the old entry first.
    let old = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources.get(&step.id).map(|r| r.attrs.clone())
    };
    if let Some(old) = old
        && let (Some(p), Some(c)) = (
            old.get("resolved_path").and_then(|v| v.as_str()),
            old.get("context").and_then(|v| v.as_str()),
        )
        && (p != path.display().to_string() || c != ctx.env().kubeconfig.context)
    {
        kubeconfig::remove(std::path::Path::new(p), c)?;
    }
    let changed = kubeconfig::merge(&path, entries)?;
    let resolved = path.display().to_string();
    mark(ctx, &step.id, Status::Applied, |st| {
        if let Some(r) = st.resources.get_mut(graph::KUBECONFIG) {
            r.attrs
                .insert("resolved_path".into(), serde_json::json!(resolved));
        }
    })?;
    let context = &ctx.env().kubeconfig.context;
    Ok(if changed {
        Did::changed(format!("context `{context}` written to {resolved}"))
    } else {
        Did::unchanged(format!("context `{context}` already current in {resolved}"))
    })
}

async fn delete_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let Some(host) = step.host.clone() else {
        with_state(ctx, |st| {
            st.resources.remove(&step.id);
        })?;
        return Ok(Did::changed("removed from state"));
    };
    if device::is_device_resource(&step.id) {
        // Nothing to undo on the host (a memory cgroup left on is harmless).
        with_state(ctx, |st| {
            st.resources.remove(&step.id);
        })?;
        return Ok(Did::changed("removed from state"));
    }
    let still_used = ctx.env().hosts.contains_key(&host);
    let never_installed = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        !needs_uninstall(&st, &step.id, &host)
    };
    if never_installed {
        // Never got k3s from continuum: nothing to undo there, no connection needed.
        with_state(ctx, |st| {
            st.resources.remove(&step.id);
            if !still_used {
                st.hosts.remove(&host);
            }
        })?;
        return Ok(Did::changed("dropped: k3s was never installed there"));
    }
    // The host first: one that is gone is not drained for nothing, and the error says
    // how to forget it.
    let conn = connect(ctx, &host).await.map_err(|e| {
        let forget = format!("continuum nodes remove {} {host} --forget", ctx.env().name);
        forget_hint(e, &host, forget)
    })?;
    let server = if ctx.env().cluster.init_server() != host && step.role.is_some() {
        let init = ctx.env().cluster.init_server().to_string();
        let server = connect(ctx, &init).await?;
        // Declarative shrink (issue 5): quorum check for servers, cordon + drain first.
        device::before_node_delete(ctx, step, server.as_ref(), &host).await?;
        Some(server)
    } else {
        None
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "uninstalling k3s".into(),
    });
    k3s::uninstall(conn.as_ref()).await?;
    ctx.pool.drop_conn(&host).await;
    if let Some(server) = server {
        // Then the Node object, through the first server: once k3s is gone from the
        // host it cannot register again, and its node-password secret goes with it, so
        // a later join under the same name works (docs/k3s.md, "Removing a node").
        k3s::delete_node(server.as_ref(), &host).await?;
    }
    with_state(ctx, |st| {
        st.resources.remove(&step.id);
        if !still_used {
            st.hosts.remove(&host);
        } else if let Some(h) = st.hosts.get_mut(&host) {
            h.k3s_installed = false;
        }
    })?;
    Ok(Did::changed("uninstalled"))
}

/// Whether removing node resource `id` on `host` needs an uninstall there: the node
/// was applied once, or continuum started installing k3s on the host.
pub(super) fn needs_uninstall(st: &State, id: &str, host: &str) -> bool {
    st.resources
        .get(id)
        .is_some_and(|r| r.status == Status::Applied)
        || st.hosts.get(host).is_some_and(|h| h.k3s_installed)
}

/// An unreachable host that must be uninstalled: say how to drop it for good with
/// `forget` (the command that drops it without contacting it).
pub(super) fn forget_hint(e: OpsError, host: &str, forget: String) -> OpsError {
    if e.is_unreachable() {
        OpsError::Shrink(super::shrink::ShrinkError::Unreachable {
            host: host.to_string(),
            forget,
            source: Box::new(e),
        })
    } else {
        e
    }
}

/// The state entry of a host, as recorded (used by tests).
pub fn recorded_host(state: &State, name: &str) -> Option<HostState> {
    state.hosts.get(name).cloned()
}

// ---- serverless layer steps (issue 4); the work is in `super::serverless` ----

fn layer_inputs(
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
fn node_arches(ctx: &Ctx) -> BTreeMap<String, String> {
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

async fn serverless_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let (sl, creds) = layer_inputs(ctx)?;
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    super::serverless::check_arch(&node_arches(ctx))?;
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "uploading the OSCAR layer manifests".into(),
    });
    let changed = super::serverless::apply_layer(conn.as_ref(), &ctx.env(), &sl, &creds).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: format!("waiting for OSCAR at {}", sl.endpoint),
    });
    super::serverless::wait_ready(&sl, &creds).await?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    Ok(changed)
}

async fn endpoint_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let (sl, creds) = layer_inputs(ctx)?;
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let info = super::serverless::client(&sl, &creds)?
        .system_info()
        .await
        .map_err(super::serverless::LayerError::from)?;
    let arches = node_arches(ctx);
    let (arch, gpu) = super::serverless::arch_and_gpu(&ctx.env(), &arches);
    if arch == "mixed" {
        ctx.obs.event(Event::Warning {
            message: format!(
                "OSCAR cluster `{}` has nodes of several architectures ({}): keep one architecture per OSCAR cluster (docs/oscar.md, \"Architectures\")",
                sl.cluster_id,
                arches.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let changed =
        super::serverless::register(ctx.store.dir(), &ctx.env(), &sl, &creds, &info, &arch, gpu)?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    Ok(changed)
}

async fn serverless_delete_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    let changed = super::serverless::remove_layer(conn.as_ref()).await?;
    with_state(ctx, |st| {
        st.resources.remove(&step.id);
        st.serverless = None;
    })?;
    Ok(changed)
}

async fn endpoint_delete_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let removed = super::serverless::unregister(ctx.store.dir(), &ctx.env().name)?;
    with_state(ctx, |st| {
        st.resources.remove(&step.id);
    })?;
    Ok(!removed.is_empty())
}
