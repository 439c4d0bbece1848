//! `continuum up`: apply the plan. Walks the resource graph (plus deletions) with the
//! engine; each step checks the host before changing it and records the result in
//! state at once.

mod device;
mod node;
mod steps;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use petgraph::graph::{DiGraph, NodeIndex};
use tokio_util::sync::CancellationToken;

pub use super::context::recorded_host;
use super::context::{
    Ctx, JOIN_BATCH, Step, agent_join_token, connect, layer_inputs, mark, node_arches,
    node_secrets, record_failure, resource, with_state,
};
use super::removal;
use super::runner;
use super::{
    Did, Event, OpsError, ResourceResult, Settings, SharedObserver, random_secret, summarize,
};
use crate::files::kubeconfig;
use crate::graph::{self, Action, Dep, Kind, Plan, ResourceGraph};
use crate::k3s::{self, Applied, NodeSpec};
use crate::recipe::{Environment, Role};
use crate::ssh::Remote;
use crate::state::{Secret, State, Status};

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

/// Plan against the recorded state, refreshed from the hosts unless
/// `settings.refresh` is off (read-only; no lock). Hosts that could not be read are
/// returned with the reason, and planned from the state.
pub async fn plan(
    env: &Environment,
    settings: &Settings,
) -> Result<(ResourceGraph, Plan, BTreeMap<String, String>), OpsError> {
    let store = settings.store(&env.name)?;
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
            let pool = Arc::new(settings.pool(&env.name, Some(st))?);
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
    let store = settings.store(&env.name)?;
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
    // OSCAR/MinIO credentials: given ones, else CSPRNG; saved before any
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
    let pool = Arc::new(settings.pool(&env.name, Some(&state))?);
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
    // Changes that cannot be made in place stop the run before anything changes.
    let refused: Vec<String> = plan
        .refused()
        .iter()
        .map(|c| format!("{}: {}", c.id, c.reason))
        .collect();
    if !refused.is_empty() {
        pool.close().await;
        return Err(OpsError::Refused(refused));
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
            // What it is, as recorded when it was applied.
            kind: state.resources.get(&c.id).and_then(|r| r.kind.clone()),
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
    let obs = ctx.obs.clone();
    let failed_ctx = ctx.clone();
    let ran = runner::run(
        &g,
        settings.concurrency,
        cancel,
        &obs,
        |step: Step| {
            let ctx = ctx.clone();
            async move { steps::run_step(&ctx, &step).await }
        },
        move |step: &Step, msg: &str, offline: bool| {
            let status = if offline {
                Status::Offline
            } else {
                Status::Failed
            };
            record_failure(&failed_ctx, step, msg, status);
        },
    )
    .await;
    ctx.pool.close().await;

    // Hosts that could not be reached at all (switched off) are `offline`, not
    // `failed`; within `k3s.allow_unavailable` they are tolerated.
    let tolerated = tolerated_offline(&ctx.env(), &ran.unreachable);
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
    let results = ran.results(
        &obs,
        |step| {
            step.host
                .as_ref()
                .filter(|h| ran.unreachable.contains_key(*h))
                .map(|h| {
                    if tolerated.as_ref().is_some_and(|t| t.contains(h)) {
                        "tolerated"
                    } else {
                        "offline"
                    }
                })
        },
        |_| None,
    );
    summarize(&results, cancel.is_cancelled())?;
    Ok(UpReport { plan, results })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Share;

    fn example(name: &str) -> (Environment, ResourceGraph) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::files::load_recipe(&dir.join(name))
            .expect("example")
            .env;
        let rg = graph::build(&env).expect("graph");
        (env, rg)
    }

    #[test]
    fn offline_agents_are_tolerated_only_within_allow_unavailable() {
        let (mut env, _) = example("farm-edge.yaml");
        let agents = env.cluster.agents.clone();
        assert!(!agents.is_empty());
        let server = env.cluster.init_server().to_string();
        let off = |hosts: &[&str]| -> BTreeMap<String, String> {
            hosts
                .iter()
                .map(|h| (h.to_string(), "no route to host".to_string()))
                .collect()
        };
        // Nothing is tolerated without `allow_unavailable`.
        assert_eq!(tolerated_offline(&env, &off(&[&agents[0]])), None);
        env.cluster.allow_unavailable = Some(Share::Count(1));
        assert_eq!(
            tolerated_offline(&env, &off(&[&agents[0]])),
            Some(vec![agents[0].clone()])
        );
        // A server is never optional, whatever the allowance.
        env.cluster.allow_unavailable = Some(Share::Percent(100));
        assert_eq!(tolerated_offline(&env, &off(&[&server])), None);
        assert_eq!(tolerated_offline(&env, &BTreeMap::new()), None);
        if agents.len() > 1 {
            env.cluster.allow_unavailable = Some(Share::Count(1));
            assert_eq!(
                tolerated_offline(&env, &off(&[&agents[0], &agents[1]])),
                None,
                "two offline agents, one allowed"
            );
        }
    }

    #[test]
    fn an_upgrade_rolls_servers_one_by_one_then_agents_behind_one_gate_per_batch() {
        let (env, rg) = example("farm-ha.yaml");
        let servers = env.cluster.servers.clone();
        let agents = env.cluster.agents.clone();
        assert!(servers.len() > 1 && !agents.is_empty());
        let mut g: DiGraph<Step, Dep> = rg.graph.map(
            |_, r| Step {
                id: r.id.clone(),
                action: Action::Update,
                kind: Some(r.kind.clone()),
                host: r.host.clone(),
                role: r.role(),
            },
            |_, d| *d,
        );
        let batches: Vec<Vec<String>> = agents.chunks(1).map(<[String]>::to_vec).collect();
        let order = graph::UpgradeOrder {
            from: vec!["v1.31.4+k3s1".into()],
            to: "v1.32.1+k3s1".into(),
            servers: servers.clone(),
            agent_batches: batches.clone(),
            drain: false,
        };
        let before = g.node_count();
        add_upgrade_order(&mut g, &rg, &order);
        // One gate per batch, nothing else added.
        assert_eq!(g.node_count(), before + batches.len());
        let ix = |id: &str| {
            g.node_indices()
                .find(|i| g[*i].id == id)
                .unwrap_or_else(|| panic!("{id} in the graph"))
        };
        let needs =
            |a: NodeIndex, b: NodeIndex| g.find_edge(a, b).is_some_and(|e| g[e] == Dep::Needs);
        for pair in servers.windows(2) {
            assert!(needs(
                ix(&graph::node_id(Role::Server, &pair[0])),
                ix(&graph::node_id(Role::Server, &pair[1]))
            ));
        }
        let gate1 = ix("upgrade-batch/1");
        for s in &servers {
            assert!(needs(ix(&graph::node_id(Role::Server, s)), gate1));
        }
        assert!(needs(
            gate1,
            ix(&graph::node_id(Role::Agent, &batches[0][0]))
        ));
        if batches.len() > 1 {
            // The next batch waits for the previous one to settle, not to succeed:
            // an offline agent does not stop the rollout.
            let first = ix(&graph::node_id(Role::Agent, &batches[0][0]));
            let gate2 = ix("upgrade-batch/2");
            assert!(
                g.find_edge(first, gate2)
                    .is_some_and(|e| g[e] == Dep::After)
            );
        }
        // The gates do nothing themselves.
        assert_eq!(g[gate1].action, Action::NoOp);
    }
}
