//! The plan: the desired graph compared with the recorded state (and the drift the
//! refresh found). For each resource, what `up` would do and why (create, update with
//! the attributes that differ, `version A -> B (restart)`, no-op), deletions of what
//! the recipe dropped, and the order a version change rolls in.

use std::collections::BTreeMap;

use petgraph::graph::NodeIndex;
use serde::Serialize;
use serde_json::Value;

use super::{CLUSTER_READY, Kind, Resource, ResourceGraph};
use crate::recipe::{Environment, Role};
use crate::state::{State, Status};

/// What `up` will do to one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    NoOp,
    Create,
    Update,
    Delete,
    /// Created again after its old form is deleted (a host that changed role).
    Replace,
    /// A change that cannot be made in place: `up` stops before changing anything.
    Refused,
}

#[derive(Debug, Clone, Serialize)]
pub struct Change {
    pub id: String,
    pub action: Action,
    pub reason: String,
    pub host: Option<String>,
    /// For deletions: the role the resource had.
    pub role: Option<Role>,
}

/// The plan: one entry per desired resource (in dependency order), then deletions.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub env: String,
    pub changes: Vec<Change>,
    /// Set when the k3s version changes on applied nodes: the order `up` follows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upgrade: Option<UpgradeOrder>,
}

/// How a version change rolls through the cluster.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct UpgradeOrder {
    /// Versions the nodes run now.
    pub from: Vec<String>,
    pub to: String,
    /// One at a time, in this order.
    pub servers: Vec<String>,
    /// After the servers, one batch at a time.
    pub agent_batches: Vec<Vec<String>>,
    /// Agents are cordoned and drained before, uncordoned after.
    pub drain: bool,
}

impl Plan {
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }
    pub fn to_change(&self) -> usize {
        self.changes
            .iter()
            .filter(|c| c.action != Action::NoOp)
            .count()
    }
    pub fn get(&self, id: &str) -> Option<&Change> {
        self.changes.iter().find(|c| c.id == id)
    }
    /// The changes `up` refuses to make.
    pub fn refused(&self) -> Vec<&Change> {
        self.changes
            .iter()
            .filter(|c| c.action == Action::Refused)
            .collect()
    }
}

/// Attributes of an instance group that EC2 cannot change on running instances.
const INSTANCE_KEYS_FIXED: [&str; 4] = ["instance_type", "image", "root_volume_gb", "spot"];

/// Updates that cannot be made in place become `Refused`: the VPC, the subnet and the
/// key pair of running instances, and an instance group's type, image, disk size or
/// market (docs/aws.md). continuum never replaces cloud resources behind the user's
/// back.
fn refuse_in_place(
    rg: &ResourceGraph,
    state: Option<&State>,
    env: &Environment,
    changes: &mut [Change],
) {
    for c in changes.iter_mut().filter(|c| c.action == Action::Update) {
        let Some(r) = rg.index.get(&c.id).map(|ix| &rg.graph[*ix]) else {
            continue;
        };
        let recorded = state.and_then(|s| s.resources.get(&c.id));
        match &r.kind {
            Kind::AwsVpc | Kind::AwsSubnet | Kind::AwsKeyPair => {
                c.action = Action::Refused;
                c.reason = format!(
                    "{}; cannot be changed in place (it would replace the network or the key of running instances): restore the recipe, or run `continuum down {}` and `up` again",
                    c.reason, env.name
                );
            }
            Kind::AwsInstances { group } => {
                let fixed = INSTANCE_KEYS_FIXED.iter().find(|k| {
                    recorded
                        .and_then(|p| p.attrs.get(**k))
                        .is_some_and(|was| r.attrs.get(**k).unwrap_or(&Value::Null) != was)
                });
                if let Some(key) = fixed {
                    c.action = Action::Refused;
                    c.reason = format!(
                        "changing `{key}` of instance group `{group}` would replace its instances; continuum does not replace instances in place: restore it, or add a new group and remove this one"
                    );
                }
            }
            _ => {}
        }
    }
}

/// A node created on a host whose node of the other role the plan deletes is a
/// `Replace`: k3s is uninstalled there, then installed again in its new role.
fn mark_replacements(changes: &mut [Change]) {
    let deleted: BTreeMap<String, String> = changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .filter_map(|c| match super::ResourceId::parse(&c.id)? {
            super::ResourceId::Node { host, .. } => Some((host, c.id.clone())),
            _ => None,
        })
        .collect();
    if deleted.is_empty() {
        return;
    }
    for c in changes.iter_mut().filter(|c| c.action == Action::Create) {
        if let Some(super::ResourceId::Node { host, .. }) = super::ResourceId::parse(&c.id)
            && let Some(old) = deleted.get(&host).filter(|old| **old != c.id)
        {
            c.action = Action::Replace;
            c.reason = format!(
                "replaces {old} (the host changed role): k3s is uninstalled, then installed again"
            );
        }
    }
}

/// Compare the desired graph with the recorded state.
pub fn plan(env: &Environment, rg: &ResourceGraph, state: Option<&State>) -> Plan {
    plan_with_drift(env, rg, state, &BTreeMap::new())
}

/// `plan`, with what a refresh found on the hosts (resource id -> what differs): a
/// node that state calls up to date but whose host drifted is updated.
pub fn plan_with_drift(
    env: &Environment,
    rg: &ResourceGraph,
    state: Option<&State>,
    drift: &BTreeMap<String, String>,
) -> Plan {
    let mut changes = Vec::new();
    // Dependency order, stable and readable: first server, servers, agents, then the rest.
    let rank = |r: &Resource| match r.kind {
        Kind::AwsVpc => 0,
        Kind::AwsSubnet | Kind::AwsInternetGateway => 1,
        Kind::AwsRoute | Kind::AwsSecurityGroup | Kind::AwsKeyPair => 2,
        Kind::AwsInstances { .. } => 3,
        Kind::K3sServer { init: true } => 4,
        Kind::K3sServer { init: false } => 5,
        Kind::K3sAgent => 6,
        Kind::ClusterReady => 7,
        Kind::Kubeconfig => 8,
        Kind::Serverless => 9,
        Kind::Endpoint => 10,
        Kind::DevicePrep { .. } => 3,
        Kind::GpuRuntime => 6,
    };
    let mut order: Vec<NodeIndex> = rg.graph.node_indices().collect();
    order.sort_by(|a, b| {
        (rank(&rg.graph[*a]), &rg.graph[*a].id).cmp(&(rank(&rg.graph[*b]), &rg.graph[*b].id))
    });
    let mut changed_nodes = false;
    let mut upgrading: Vec<(String, Option<Role>, String)> = Vec::new();
    for ix in order {
        let r = &rg.graph[ix];
        let recorded = state.and_then(|s| s.resources.get(&r.id));
        let upgrade_from = state
            .filter(|_| r.role().is_some())
            .and_then(|s| recorded_version(s, &r.id))
            .filter(|v| *v != env.cluster.version);
        let (action, reason) = match (&r.kind, recorded) {
            _ if upgrade_from.is_some() => (
                Action::Update,
                format!(
                    "version {} -> {} (restart)",
                    upgrade_from.as_deref().unwrap_or_default(),
                    env.cluster.version
                ),
            ),
            (Kind::ClusterReady, rec) => {
                if changed_nodes && rec.is_some() {
                    (
                        Action::Update,
                        "nodes change: wait until every node is Ready".to_string(),
                    )
                } else {
                    diff_reason(rec, r)
                }
            }
            (_, rec) => match (diff_reason(rec, r), drift.get(&r.id)) {
                ((Action::NoOp, _), Some(why)) => (Action::Update, format!("drift: {why}")),
                (d, _) => d,
            },
        };
        if action != Action::NoOp && matches!(r.kind, Kind::K3sServer { .. } | Kind::K3sAgent) {
            changed_nodes = true;
        }
        if let (Some(from), Some(h)) = (upgrade_from, &r.host) {
            upgrading.push((h.clone(), r.role(), from.clone()));
        }
        changes.push(Change {
            id: r.id.clone(),
            action,
            reason,
            host: r.host.clone(),
            role: r.role(),
        });
    }
    if let Some(s) = state {
        // Agents first, then servers, the first server last.
        let mut gone: Vec<(&String, &crate::state::ResourceState)> = s
            .resources
            .iter()
            .filter(|(id, _)| !rg.index.contains_key(*id))
            .collect();
        gone.sort_by_key(|(id, rs)| {
            (
                rs.role != Some(Role::Agent),
                s.cluster.init_server.as_deref() == rs.host.as_deref(),
                (*id).clone(),
            )
        });
        for (id, rs) in gone {
            let reason = match &rs.host {
                Some(h) if !env.hosts.contains_key(h) => {
                    format!("host `{h}` is no longer in the recipe")
                }
                // Serverless layer resources have a host but no role.
                Some(_) if rs.role.is_none() => "no longer in the recipe".to_string(),
                Some(_) => "the host changed role".to_string(),
                None => "no longer in the recipe".to_string(),
            };
            changes.push(Change {
                id: id.clone(),
                action: Action::Delete,
                reason,
                host: rs.host.clone(),
                role: rs.role,
            });
        }
    }
    mark_replacements(&mut changes);
    refuse_in_place(rg, state, env, &mut changes);
    Plan {
        env: env.name.clone(),
        upgrade: upgrade_order(env, &upgrading),
        changes,
    }
}

/// The k3s version an applied node runs, as recorded: its own record, else (states
/// written before nodes recorded it) the version `cluster-ready` last waited for.
pub fn recorded_version(state: &State, id: &str) -> Option<String> {
    let rs = state
        .resources
        .get(id)
        .filter(|r| r.status == Status::Applied)?;
    rs.version.clone().or_else(|| {
        state
            .resources
            .get(CLUSTER_READY)
            .and_then(|r| r.attrs.get("version"))
            .and_then(Value::as_str)
            .map(str::to_string)
    })
}

/// The order of a version change (docs/k3s.md, "Upgrades"): servers one at a time, the
/// first server first, each Ready at the new version before the next; then agents in
/// batches, in recipe order.
fn upgrade_order(
    env: &Environment,
    upgrading: &[(String, Option<Role>, String)],
) -> Option<UpgradeOrder> {
    if upgrading.is_empty() {
        return None;
    }
    let is = |h: &String, role: Role| upgrading.iter().any(|(u, r, _)| u == h && *r == Some(role));
    let c = &env.cluster;
    let servers: Vec<String> = c
        .servers
        .iter()
        .filter(|s| is(s, Role::Server))
        .cloned()
        .collect();
    let agents: Vec<String> = c
        .agents
        .iter()
        .filter(|a| is(a, Role::Agent))
        .cloned()
        .collect();
    let size = c.upgrade.batch_size(c.agents.len());
    let mut from: Vec<String> = upgrading.iter().map(|(_, _, f)| f.clone()).collect();
    from.sort();
    from.dedup();
    Some(UpgradeOrder {
        from,
        to: c.version.clone(),
        servers,
        agent_batches: agents.chunks(size).map(<[String]>::to_vec).collect(),
        drain: c.upgrade.drain,
    })
}

fn diff_reason(rec: Option<&crate::state::ResourceState>, r: &Resource) -> (Action, String) {
    match rec {
        None => (Action::Create, "not in state".to_string()),
        Some(rs) if rs.status == Status::Pending => (
            Action::Create,
            "an earlier run did not finish it".to_string(),
        ),
        Some(rs) if rs.status == Status::Offline => (
            Action::Create,
            format!(
                "offline last time: {}",
                rs.last_error.as_deref().unwrap_or("unreachable")
            ),
        ),
        Some(rs) if rs.status == Status::Failed => (
            Action::Create,
            format!(
                "failed last time: {}",
                rs.last_error.as_deref().unwrap_or("unknown error")
            ),
        ),
        Some(rs) if rs.hash != r.hash => {
            let mut keys: Vec<&str> = r
                .attrs
                .iter()
                .filter(|(k, v)| rs.attrs.get(*k) != Some(*v))
                .map(|(k, _)| k.as_str())
                .collect();
            keys.extend(
                rs.attrs
                    .keys()
                    .filter(|k| !r.attrs.contains_key(*k))
                    .map(String::as_str),
            );
            if keys.is_empty() {
                (
                    Action::Update,
                    "version or install source changed".to_string(),
                )
            } else {
                (Action::Update, format!("changed: {}", keys.join(", ")))
            }
        }
        Some(_) => (Action::NoOp, "up to date".to_string()),
    }
}

/// A state in which every resource of `rg` is applied as desired (tests of the plan).
#[cfg(test)]
pub(crate) fn applied_state(env: &str, rg: &ResourceGraph) -> State {
    let mut state = State::new(env);
    for r in rg.graph.node_weights() {
        state.resources.insert(
            r.id.clone(),
            crate::state::ResourceState {
                status: Status::Applied,
                hash: r.hash.clone(),
                host: r.host.clone(),
                role: r.role(),
                attrs: r.attrs.clone(),
                last_error: None,
                updated_at: 0,
                version: r.role().map(|_| env_version(rg)),
                kind: Some(r.kind.clone()),
            },
        );
    }
    state
}

/// The k3s version the graph's `cluster-ready` waits for (tests).
#[cfg(test)]
fn env_version(rg: &ResourceGraph) -> String {
    rg.index
        .get(CLUSTER_READY)
        .and_then(|ix| rg.graph[*ix].attrs.get("version"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::{ResourceId, build};

    fn example(name: &str) -> (Environment, ResourceGraph) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::files::load_recipe(&dir.join(name))
            .expect("example")
            .env;
        let rg = build(&env).expect("graph");
        (env, rg)
    }

    #[test]
    fn changes_ec2_cannot_make_in_place_are_refused_in_the_plan() {
        let (env, rg) = example("farm-hybrid.yaml");
        let state = applied_state(&env.name, &rg);
        assert!(plan(&env, &rg, Some(&state)).refused().is_empty());
        let mut changed = env.clone();
        if let Some(site) = changed.aws.as_mut() {
            site.groups[0].instance_type = "t3.large".into();
            if let crate::recipe::VpcChoice::Create { cidr } = &mut site.vpc {
                *cidr = "10.9.0.0/16".into();
            }
        }
        let rg2 = build(&changed).expect("graph");
        let p = plan(&changed, &rg2, Some(&state));
        let refused: Vec<&str> = p.refused().iter().map(|c| c.id.as_str()).collect();
        let group = &changed.aws.as_ref().expect("site").groups[0].name;
        assert!(
            refused.contains(&format!("aws-instances/{group}").as_str()),
            "{refused:?}"
        );
        let why = &p
            .get(&format!("aws-instances/{group}"))
            .expect("group")
            .reason;
        assert!(
            why.contains("`instance_type`") && why.contains("add a new group"),
            "{why}"
        );
        if matches!(
            env.aws.as_ref().map(|s| &s.vpc),
            Some(crate::recipe::VpcChoice::Create { .. })
        ) {
            assert!(refused.contains(&"aws-vpc"), "{refused:?}");
        }
        // Everything else may still change: the refusal is per resource.
        assert!(p.changes.iter().all(|c| c.action != Action::Update
            || !matches!(ResourceId::parse(&c.id), Some(ResourceId::Aws(_)))));
    }

    #[test]
    fn a_host_that_changes_role_is_replaced() {
        let (env, rg) = example("farm-edge.yaml");
        let mut state = applied_state(&env.name, &rg);
        let agent = env.cluster.agents[0].clone();
        // State knows the agent as a server (the recipe moved it to the agents).
        let old = state
            .resources
            .remove(&format!("k3s-agent/{agent}"))
            .expect("agent applied");
        state.resources.insert(
            format!("k3s-server/{agent}"),
            crate::state::ResourceState {
                role: Some(Role::Server),
                ..old
            },
        );
        let p = plan(&env, &rg, Some(&state));
        let created = p.get(&format!("k3s-agent/{agent}")).expect("agent");
        assert_eq!(created.action, Action::Replace, "{p:?}");
        assert!(
            created
                .reason
                .contains(&format!("replaces k3s-server/{agent}"))
        );
        assert_eq!(
            p.get(&format!("k3s-server/{agent}")).map(|c| c.action),
            Some(Action::Delete)
        );
        assert!(p.refused().is_empty());
    }
}
