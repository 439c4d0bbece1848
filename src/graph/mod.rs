//! The resource graph and the plan. Pure: no I/O, no clock.
//!
//! An edge `a -> b` means `b` needs `a`. `build` derives the desired resources from a
//! validated environment; `plan` compares them with the recorded state and says, for
//! each resource, what `up` would do and why. Deletions (resources in state that the
//! recipe no longer wants) are part of the same graph so one walk applies everything.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::recipe::{Environment, Role};

pub mod cloud;
pub mod device;
mod id;
mod nodes;
mod plan;
pub mod serverless;

pub use id::{AwsId, CLUSTER_READY, ENDPOINT, KUBECONFIG, ResourceId, SERVERLESS};
pub use nodes::{gpu_id, node_config, prep_id};
#[cfg(test)]
pub(crate) use plan::applied_state;
pub use plan::{Action, Change, Plan, UpgradeOrder, plan, plan_with_drift, recorded_version};

pub use crate::state::Kind;

/// One desired resource.
#[derive(Debug, Clone, Serialize)]
pub struct Resource {
    pub id: String,
    #[serde(flatten)]
    pub kind: Kind,
    pub host: Option<String>,
    /// Non-secret desired configuration (for nodes: config.yaml without the token).
    pub attrs: BTreeMap<String, Value>,
    pub hash: String,
}

impl Resource {
    pub fn role(&self) -> Option<Role> {
        match self.kind {
            Kind::K3sServer { .. } => Some(Role::Server),
            Kind::K3sAgent => Some(Role::Agent),
            _ => None,
        }
    }
}

/// What an edge `a -> b` of the resource graph means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dep {
    /// `b` needs `a`: when `a` fails, `b` is skipped.
    Needs,
    /// `b` only runs after `a` has settled (done, failed or skipped).
    After,
}

/// The desired resources and their dependencies.
#[derive(Debug, Clone)]
pub struct ResourceGraph {
    pub graph: DiGraph<Resource, Dep>,
    pub index: HashMap<String, NodeIndex>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// `k3s-server/HOST` or `k3s-agent/HOST`.
pub fn node_id(role: Role, host: &str) -> String {
    ResourceId::Node {
        role,
        host: host.to_string(),
    }
    .to_string()
}

/// The URL joiners use to reach the first server.
pub fn server_url(env: &Environment) -> String {
    let init = env.cluster.init_server();
    let addr = env.hosts.get(init).map_or(init, |h| h.address.as_str());
    format!("https://{}:6443", bracket_v6(addr))
}

fn bracket_v6(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}

pub fn hash_of(parts: &[&Value]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.to_string().as_bytes());
        h.update([0]);
    }
    hex::encode(&h.finalize()[..16])
}

/// Build the desired resource graph of an environment.
pub fn build(env: &Environment) -> Result<ResourceGraph, GraphError> {
    let mut g = DiGraph::new();
    let mut index = HashMap::new();
    let instance_groups = cloud::build(env, &mut g, &mut index);
    let c = &env.cluster;
    let install = match &c.install {
        crate::recipe::Install::Online { script_url } => json!({"online": script_url}),
        // The images source joins the hash only when it is not the default, so states
        // written before it existed keep their hashes (the refresh sees missing images).
        crate::recipe::Install::Bundle { dir, images } => match images {
            crate::recipe::Images::Bundle => json!({"bundle": dir.display().to_string()}),
            crate::recipe::Images::Registry => {
                json!({"bundle": dir.display().to_string(), "images": "registry"})
            }
        },
    };
    let mut add = |g: &mut DiGraph<Resource, Dep>, r: Resource| {
        let id = r.id.clone();
        let ix = g.add_node(r);
        index.insert(id, ix);
        ix
    };
    let mut nodes = Vec::new();
    let node = |host: &str, role: Role| {
        let attrs = node_config(env, host, role);
        let config = json!(attrs);
        let hash = hash_of(&[&config, &json!(c.version), &json!(role), &install]);
        Resource {
            id: node_id(role, host),
            kind: match role {
                Role::Server => Kind::K3sServer {
                    init: c.init_server() == host,
                },
                Role::Agent => Kind::K3sAgent,
            },
            host: Some(host.to_string()),
            attrs,
            hash,
        }
    };
    let init = add(&mut g, node(c.init_server(), Role::Server));
    nodes.push(init);
    for s in c.servers.iter().skip(1) {
        let ix = add(&mut g, node(s, Role::Server));
        g.add_edge(init, ix, Dep::Needs);
        nodes.push(ix);
    }
    for a in &c.agents {
        let ix = add(&mut g, node(a, Role::Agent));
        g.add_edge(init, ix, Dep::Needs);
        nodes.push(ix);
    }
    let expected: Vec<&String> = c.servers.iter().chain(c.agents.iter()).collect();
    let ready_attrs: BTreeMap<String, Value> = [
        ("nodes".to_string(), json!(expected)),
        ("version".to_string(), json!(c.version)),
    ]
    .into();
    let ready_hash = hash_of(&[&json!(ready_attrs)]);
    let ready = add(
        &mut g,
        Resource {
            id: CLUSTER_READY.into(),
            kind: Kind::ClusterReady,
            host: Some(c.init_server().to_string()),
            attrs: ready_attrs,
            hash: ready_hash,
        },
    );
    // Readiness needs the first server and runs after every other node, whatever
    // became of it: it waits for the nodes that were applied and names the others
    // (one offline device never withholds the cluster).
    for n in &nodes {
        g.add_edge(*n, ready, if *n == init { Dep::Needs } else { Dep::After });
        for grp in &instance_groups {
            g.add_edge(*grp, *n, Dep::Needs);
        }
    }
    let kc_attrs: BTreeMap<String, Value> = [
        ("context".to_string(), json!(env.kubeconfig.context)),
        (
            "path".to_string(),
            json!(
                env.kubeconfig
                    .path
                    .as_ref()
                    .map(|p| p.display().to_string())
            ),
        ),
        (
            "server".to_string(),
            json!(format!("https://{}:6443", bracket_v6(&c.api_endpoint))),
        ),
    ]
    .into();
    let kc_hash = hash_of(&[&json!(kc_attrs)]);
    let kc = add(
        &mut g,
        Resource {
            id: KUBECONFIG.into(),
            kind: Kind::Kubeconfig,
            host: Some(c.init_server().to_string()),
            attrs: kc_attrs,
            hash: kc_hash,
        },
    );
    // The kubeconfig needs only the first server; it is written after the readiness
    // wait, whatever came of it, so a partly converged cluster can still be reached.
    g.add_edge(init, kc, Dep::Needs);
    g.add_edge(ready, kc, Dep::After);
    // The OSCAR serverless layer: after the cluster is Ready.
    if let Some(sl) = &env.serverless {
        let (sl_res, ep_res) = serverless::resources(env, sl);
        let sl_ix = add(&mut g, sl_res);
        g.add_edge(ready, sl_ix, Dep::Needs);
        let ep_ix = add(&mut g, ep_res);
        g.add_edge(sl_ix, ep_ix, Dep::Needs);
        g.add_edge(kc, ep_ix, Dep::Needs);
    }
    nodes::add_device_nodes(env, &mut g, &mut index, ready);
    let rg = ResourceGraph { graph: g, index };
    check_acyclic(&rg.graph, |r| r.id.clone())?;
    Ok(rg)
}

/// Fail with the whole cycle (every member, in order) when the graph has one.
pub fn check_acyclic<N, E>(
    g: &DiGraph<N, E>,
    name: impl Fn(&N) -> String,
) -> Result<(), GraphError> {
    for scc in tarjan_scc(g) {
        let self_loop = scc.len() == 1 && g.contains_edge(scc[0], scc[0]);
        if scc.len() > 1 || self_loop {
            let mut names: Vec<String> = scc.iter().rev().map(|ix| name(&g[*ix])).collect();
            names.push(names[0].clone());
            return Err(GraphError::Cycle(names));
        }
    }
    Ok(())
}

/// Render the graph as Graphviz DOT.
pub fn to_dot(rg: &ResourceGraph, name: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", escape(name));
    let _ = writeln!(
        out,
        "  rankdir=LR;\n  node [shape=box, fontname=\"monospace\"];"
    );
    for ix in rg.graph.node_indices() {
        let r = &rg.graph[ix];
        let shape = match r.kind {
            Kind::K3sServer { init: true } => ", style=bold",
            Kind::ClusterReady | Kind::Kubeconfig => ", shape=ellipse",
            _ => "",
        };
        let _ = writeln!(
            out,
            "  \"{}\" [label=\"{}\"{shape}];",
            escape(&r.id),
            escape(&r.id)
        );
    }
    for e in rg.graph.edge_indices() {
        if let Some((a, b)) = rg.graph.edge_endpoints(e) {
            // Dashed: runs after, does not need (see `Dep`).
            let style = if rg.graph[e] == Dep::After {
                " [style=dashed]"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\"{style};",
                escape(&rg.graph[a].id),
                escape(&rg.graph[b].id)
            );
        }
    }
    out.push_str("}\n");
    out
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::flags;
    use crate::state::Status;

    #[test]
    fn cycle_is_reported_whole() {
        let mut g: DiGraph<&str, ()> = DiGraph::new();
        let a = g.add_node("a");
        let b = g.add_node("b");
        let c = g.add_node("c");
        let d = g.add_node("d");
        g.add_edge(a, b, ());
        g.add_edge(b, c, ());
        g.add_edge(c, a, ());
        g.add_edge(c, d, ());
        let err = check_acyclic(&g, |n| (*n).to_string()).expect_err("cycle");
        let GraphError::Cycle(members) = err;
        assert_eq!(members.len(), 4, "{members:?}");
        for n in ["a", "b", "c"] {
            assert!(members.iter().any(|m| m == n));
        }
        assert!(!members.iter().any(|m| m == "d"));
    }

    /// The example edge recipe and its graph.
    fn farm_edge() -> (Environment, ResourceGraph) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::files::load_recipe(&dir.join("farm-edge.yaml"))
            .expect("example")
            .env;
        let rg = build(&env).expect("graph");
        (env, rg)
    }

    /// An offline agent never withholds the kubeconfig or readiness; the
    /// first server does.
    #[test]
    fn readiness_and_kubeconfig_need_only_the_first_server() {
        let (env, rg) = farm_edge();
        let ix = |id: &str| rg.index[id];
        let dep = |a: &str, b: &str| rg.graph.find_edge(ix(a), ix(b)).map(|e| rg.graph[e]);
        let init = node_id(Role::Server, env.cluster.init_server());
        assert_eq!(dep(&init, CLUSTER_READY), Some(Dep::Needs));
        assert_eq!(dep(&init, KUBECONFIG), Some(Dep::Needs));
        assert_eq!(dep(CLUSTER_READY, KUBECONFIG), Some(Dep::After));
        assert!(!env.cluster.agents.is_empty());
        for a in &env.cluster.agents {
            assert_eq!(
                dep(&node_id(Role::Agent, a), CLUSTER_READY),
                Some(Dep::After)
            );
        }
        let dot = to_dot(&rg, &env.name);
        assert!(
            dot.contains(&format!(
                "\"{CLUSTER_READY}\" -> \"{KUBECONFIG}\" [style=dashed];"
            )),
            "{dot}"
        );
    }

    /// An inventory host's `external_ip` becomes its `node-external-ip`; a
    /// cloud host follows only the public-IP rule, so the two sources never mix.
    #[test]
    fn external_address_comes_from_the_host_kind() {
        let (mut env, _) = farm_edge();
        let server = env.cluster.init_server().to_string();
        let agent = env.cluster.agents[0].clone();
        let a = env.hosts.get_mut(&agent).expect("agent host");
        a.node_ip = Some("10.8.0.21".into());
        a.external_ip = Some("203.0.113.5".into());
        let cfg = node_config(&env, &agent, Role::Agent);
        assert_eq!(cfg["node-ip"], "10.8.0.21");
        assert_eq!(cfg["node-external-ip"], "203.0.113.5");

        let s = env.hosts.get_mut(&server).expect("server host");
        s.external_ip = Some("203.0.113.9".into());
        s.cloud = Some(crate::recipe::CloudHost {
            group: "cp".into(),
            index: 0,
            public_ip: Some("198.51.100.10".into()),
        });
        env.cluster.flannel_backend = "wireguard-native".into();
        let cfg = node_config(&env, &server, Role::Server);
        assert_eq!(cfg["node-external-ip"], "198.51.100.10");
        env.cluster.flannel_backend = "vxlan".into();
        let cfg = node_config(&env, &server, Role::Server);
        assert!(!cfg.contains_key("node-external-ip"), "{cfg:?}");
    }

    /// A node that was offline is tried again by the next `up`.
    #[test]
    fn offline_nodes_are_planned_again() {
        let (env, rg) = farm_edge();
        let mut state = applied_state(&env.name, &rg);
        let agent = node_id(Role::Agent, &env.cluster.agents[0]);
        if let Some(r) = state.resources.get_mut(&agent) {
            r.status = Status::Offline;
            r.last_error = Some("cannot connect".into());
        }
        let p = plan(&env, &rg, Some(&state));
        let c = p.get(&agent).expect("agent in plan");
        assert_eq!(c.action, Action::Create);
        assert!(c.reason.starts_with("offline last time"), "{}", c.reason);
        assert_eq!(p.get(CLUSTER_READY).map(|c| c.action), Some(Action::Update));
    }

    /// K3s warns about and skips a config.yaml key it does not know; continuum
    /// must never rely on that. Every key it renders for a node (the desired attributes
    /// plus the secrets `token` and, on servers, `agent-token`) is a flag of that node's
    /// k3s subcommand at the pinned version.
    #[test]
    fn every_rendered_config_key_is_a_flag_of_the_role() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let mut checked = 0;
        for f in std::fs::read_dir(&dir).expect("recipes") {
            let p = f.expect("entry").path();
            if p.extension().and_then(|e| e.to_str()) != Some("yaml") {
                continue;
            }
            let Ok(loaded) = crate::files::load_recipe(&p) else {
                continue;
            };
            let rg = build(&loaded.env).expect("graph");
            for r in rg.graph.node_weights() {
                let Some(role) = r.role() else { continue };
                let secrets: &[&str] = match role {
                    Role::Server => &["token", "agent-token"],
                    Role::Agent => &["token"],
                };
                for key in r
                    .attrs
                    .keys()
                    .map(String::as_str)
                    .chain(secrets.iter().copied())
                {
                    assert!(
                        flags::accepts(role, key),
                        "{}: {} renders `{key}`, which k3s {role} does not have",
                        p.display(),
                        r.id
                    );
                    checked += 1;
                }
            }
        }
        assert!(checked > 20, "only {checked} keys checked");
    }
}
