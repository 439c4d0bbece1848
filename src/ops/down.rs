//! `continuum down ENV`: uninstall k3s everywhere, agents first, then the joined
//! servers, then the first server; remove the kubeconfig context; delete the state.
//!
//! Needs only the state (not the recipe). A host that cannot be reached keeps its
//! resources in state and makes `down` fail, so a later `down` retries it; the other
//! hosts are still cleaned. Teardown can always finish: a node that never
//! had k3s installed is dropped without connecting, and `--forget HOST` drops a device
//! that is gone for good, listing what may remain on it.

use std::sync::Arc;

use petgraph::graph::DiGraph;
use tokio_util::sync::CancellationToken;

use super::removal::{Leave, forget_hint, leave_for, record_removed};
use super::runner::{self, Item};
use super::{Did, Event, OpsError, ResourceResult, Settings, SharedObserver, summarize};
use crate::files::kubeconfig;
use crate::graph::{self, Action, Dep};
use crate::k3s;
use crate::recipe::Role;
use crate::state::State;

/// One node of the delete graph: a k3s node to take out, or a phase gate (no node,
/// nothing to do).
#[derive(Debug, Clone)]
struct DownStep {
    id: String,
    node: Option<DownNode>,
}

/// The k3s node a delete step takes out, and how.
#[derive(Debug, Clone)]
struct DownNode {
    host: String,
    role: Role,
    leave: Leave,
}

impl Item for DownStep {
    fn id(&self) -> &str {
        &self.id
    }
    fn action(&self) -> Action {
        if self.node.is_some() {
            Action::Delete
        } else {
            Action::NoOp
        }
    }
    fn host(&self) -> Option<&str> {
        self.node.as_ref().map(|n| n.host.as_str())
    }
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct DownReport {
    pub results: Vec<ResourceResult>,
    pub state_deleted: bool,
}

/// Tear the environment down.
pub async fn down(
    env: &str,
    forget: &[String],
    settings: &Settings,
    obs: SharedObserver,
    cancel: &CancellationToken,
) -> Result<DownReport, OpsError> {
    let store = settings.store(env)?;
    let _lock = store.lock()?;
    let Some(state) = store.load()? else {
        return Ok(DownReport {
            results: Vec::new(),
            state_deleted: false,
        });
    };
    // Every host to forget must be one the state knows: a typo must not pass silently.
    for h in forget {
        let known = state.hosts.contains_key(h)
            || state
                .resources
                .values()
                .any(|r| r.host.as_deref() == Some(h.as_str()));
        if !known {
            return Err(super::removal::ShrinkError::NoSuchHost {
                env: env.to_string(),
                host: h.clone(),
                known: super::removal::known_hosts(&state),
            }
            .into());
        }
    }
    // Devices that joined through an enrolment pool are not in state and continuum has
    // no access to them: they lose their cluster with its servers (docs/enrolment.md).
    if !state.pools.is_empty() {
        let names: Vec<&str> = state.pools.keys().map(String::as_str).collect();
        obs.event(Event::Warning {
            message: format!(
                "devices that joined through the pool(s) {} are not contacted: they lose the cluster with its servers; uninstall k3s on them with k3s-agent-uninstall.sh",
                names.join(", ")
            ),
        });
    }
    let pool = Arc::new(settings.pool(env, Some(&state))?);
    let state = Arc::new(std::sync::Mutex::new(state));
    let init = state
        .lock()
        .ok()
        .and_then(|s| s.cluster.init_server.clone());

    // Phases: agents, joined servers, first server.
    let nodes: Vec<(String, String, Role)> = {
        let st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources
            .iter()
            .filter_map(|(id, r)| Some((id.clone(), r.host.clone()?, r.role?)))
            // Nodes on AWS instances go with their instances (terminated below).
            .filter(|(_, host, _)| super::cloud::group_of(&st, host).is_none())
            .collect()
    };
    let phase_of = |(_, host, role): &(String, String, Role)| match role {
        Role::Agent => 0,
        Role::Server if Some(host) != init.as_ref() => 1,
        Role::Server => 2,
    };
    // One delete graph: agents, then joined servers, then the first server, each phase
    // ordered after the previous one through a gate (edges stay linear in the number of
    // nodes); a failure does not stop the next phase.
    let mut g: DiGraph<DownStep, Dep> = DiGraph::new();
    {
        let st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut gate: Option<petgraph::graph::NodeIndex> = None;
        for phase in 0..3 {
            let batch: Vec<&(String, String, Role)> =
                nodes.iter().filter(|n| phase_of(n) == phase).collect();
            if batch.is_empty() {
                continue;
            }
            let members: Vec<_> = batch
                .iter()
                .map(|(id, host, role)| {
                    let leave = leave_for(&st, id, host, forget.contains(host));
                    let ix = g.add_node(DownStep {
                        id: id.clone(),
                        node: Some(DownNode {
                            host: host.clone(),
                            role: *role,
                            leave,
                        }),
                    });
                    if let Some(gate) = gate {
                        g.add_edge(gate, ix, Dep::After);
                    }
                    ix
                })
                .collect();
            let next = g.add_node(DownStep {
                id: format!("down-phase/{}", phase + 1),
                node: None,
            });
            for m in members {
                g.add_edge(m, next, Dep::After);
            }
            gate = Some(next);
        }
    }
    let ran = runner::run(
        &g,
        settings.concurrency,
        cancel,
        &obs,
        |step: DownStep| {
            let DownStep { id, node } = step;
            let pool = pool.clone();
            let state = state.clone();
            let store = store.clone();
            let obs = obs.clone();
            let env = env.to_string();
            async move {
                // The runner never runs a gate (it does nothing).
                let Some(DownNode { host, role, leave }) = node else {
                    return Ok(Did::unchanged("nothing to do"));
                };
                let did = match leave {
                    Leave::Uninstall => {
                        let target = {
                            let st = state
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            st.hosts.get(&host).map(|h| h.to_host(&host))
                        };
                        let target = target.ok_or_else(|| {
                            k3s::K3sError::Protocol {
                                host: host.clone(),
                                detail: format!(
                                    "no connection details in state; if the device is gone for good, run `continuum down {env} --forget {host}`"
                                ),
                            }
                        })?;
                        let conn = pool.get(&target).await.map_err(|e| {
                            let forget = format!("continuum down {env} --forget {host}");
                            forget_hint(OpsError::from(e), &host, forget)
                        })?;
                        obs.event(Event::Progress {
                            id: id.clone(),
                            message: "uninstalling k3s".into(),
                        });
                        k3s::uninstall(conn.as_ref()).await?;
                        pool.drop_conn(&host).await;
                        Did::changed("uninstalled")
                    }
                    Leave::NeverInstalled => {
                        Did::changed("dropped: k3s was never installed there")
                    }
                    Leave::Forget => {
                        let left = k3s::leftovers(Some(role));
                        obs.event(Event::Warning {
                            message: format!(
                                "forgot `{host}` without contacting it; what may remain on it: {left}"
                            ),
                        });
                        Did::changed("forgotten without contact (see the warning above)")
                    }
                };
                let mut st = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                record_removed(&mut st, &id, &host, false);
                store.save(&mut st)?;
                Ok::<Did, OpsError>(did)
            }
        },
        |_: &DownStep, _: &str, _: bool| {},
    )
    .await;
    let mut results = ran.results(
        &obs,
        |_| None,
        |step| match step.node.as_ref()? {
            DownNode {
                leave: Leave::Uninstall,
                ..
            } => None,
            DownNode {
                leave: Leave::NeverInstalled,
                ..
            } => Some("dropped: k3s was never installed there".to_string()),
            DownNode {
                leave: Leave::Forget,
                role,
                ..
            } => Some(format!(
                "forgotten; may remain on the device: {}",
                k3s::leftovers(Some(*role))
            )),
        },
    );
    pool.close().await;

    // The AWS site: terminate by tag sweep, then the network, in order. Only once the
    // on-prem nodes are gone (a failure there keeps the cloud side for a retry too).
    let onprem_failed = results.iter().any(|r| r.outcome != "done");
    if !onprem_failed && !cancel.is_cancelled() {
        let cloud_hosts: Vec<String> = {
            let st = state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            st.aws
                .as_ref()
                .map(|c| {
                    c.groups
                        .values()
                        .flat_map(|g| g.instances.keys().cloned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let outcome = super::cloud::teardown(env, settings, &state, &store, &obs).await;
        match outcome {
            Ok(None) => {}
            Ok(Some(t)) => {
                let mut st = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                st.resources
                    .retain(|_, r| r.host.as_ref().is_none_or(|h| !cloud_hosts.contains(h)));
                st.hosts.retain(|h, _| !cloud_hosts.contains(h));
                store.save(&mut st)?;
                drop(st);
                results.push(ResourceResult {
                    id: "aws".into(),
                    action: Action::Delete,
                    outcome: "done".into(),
                    changed: true,
                    detail: Some(format!(
                        "terminated {} instance(s); deleted {}",
                        t.terminated.len(),
                        if t.deleted.is_empty() {
                            "no network resources".to_string()
                        } else {
                            t.deleted.join(", ")
                        }
                    )),
                    error: None,
                });
            }
            Err(e) => {
                let msg = super::error_text(&e);
                obs.event(Event::Failed {
                    id: "aws".into(),
                    error: msg.clone(),
                });
                results.push(ResourceResult {
                    id: "aws".into(),
                    action: Action::Delete,
                    outcome: "failed".into(),
                    changed: false,
                    detail: Some(msg),
                    error: Some(std::sync::Arc::new(e)),
                });
            }
        }
    }

    let remaining_nodes = {
        let st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources.values().any(|r| r.role.is_some())
            || st.aws.as_ref().is_some_and(|c| !c.is_empty())
    };
    let mut state_deleted = false;
    if !remaining_nodes && !cancel.is_cancelled() {
        let mut st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        remove_kubeconfig(&mut st)?;
        // The OSCAR endpoint and its oscar-cli entry.
        super::serverless::unregister(&settings.state_dir, env)?;
        store.delete()?;
        state_deleted = true;
        results.push(ResourceResult {
            id: graph::KUBECONFIG.into(),
            action: Action::Delete,
            outcome: "done".into(),
            changed: true,
            detail: None,
            error: None,
        });
    }
    summarize(&results, cancel.is_cancelled())?;
    Ok(DownReport {
        results,
        state_deleted,
    })
}

fn remove_kubeconfig(st: &mut State) -> Result<(), OpsError> {
    let Some(r) = st.resources.get(graph::KUBECONFIG) else {
        return Ok(());
    };
    let path = r.attrs.get("resolved_path").and_then(|v| v.as_str());
    let context = r.attrs.get("context").and_then(|v| v.as_str());
    if let (Some(p), Some(c)) = (path, context) {
        kubeconfig::remove(std::path::Path::new(p), c)?;
    }
    Ok(())
}
