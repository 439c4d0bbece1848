//! The one step runner of `up` and `down`: walks an execution graph with the engine,
//! sends `Started`/`Finished`/`Failed` for every step that does something, keeps the
//! typed error of each failure, tells hosts that could not be reached (`offline`)
//! from failures, and turns the walk into per-resource results (sending `Skipped` and
//! `Cancelled`). What a step does, and what it records in state, is the caller's.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

use petgraph::graph::{DiGraph, NodeIndex};
use tokio_util::sync::CancellationToken;

use super::{Did, Event, OpsError, ResourceResult, SharedObserver, error_text};
use crate::engine::{Edge, Outcome, walk};
use crate::graph::Action;

/// What the runner needs to know of a step.
pub(super) trait Item: Clone + Send + Sync + 'static {
    fn id(&self) -> &str;
    fn action(&self) -> Action;
    /// The host the step works on, if any (an unreachable one makes it `offline`).
    fn host(&self) -> Option<&str>;
}

/// A finished walk.
pub(super) struct Ran<S> {
    pub steps: Vec<S>,
    pub outcomes: Vec<Outcome<Arc<OpsError>>>,
    /// Whether each step that ran changed something.
    pub changed: BTreeMap<String, bool>,
    /// Hosts that could not be reached at all, with the reason.
    pub unreachable: BTreeMap<String, String>,
}

/// Walk `g`; `exec` does one step; `failed` is told of each failure (with whether the
/// host was unreachable) before the `Failed` event, to record it in state.
pub(super) async fn run<S, E, F, Fut>(
    g: &DiGraph<S, E>,
    concurrency: usize,
    cancel: &CancellationToken,
    obs: &SharedObserver,
    exec: F,
    failed: impl Fn(&S, &str, bool) + Send + Sync + 'static,
) -> Ran<S>
where
    S: Item,
    E: Edge,
    F: Fn(S) -> Fut,
    Fut: Future<Output = Result<Did, OpsError>> + Send + 'static,
{
    let changed: Arc<Mutex<BTreeMap<String, bool>>> = Arc::default();
    let unreachable: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let failed = Arc::new(failed);
    let steps: Vec<S> = g.node_weights().cloned().collect();
    obs.expect(steps.iter().filter(|s| s.action() != Action::NoOp).count());
    let outcomes = walk(
        g,
        concurrency,
        cancel,
        |s: &S| s.id().to_string(),
        |ix: NodeIndex| {
            let step = steps[ix.index()].clone();
            let noop = step.action() == Action::NoOp;
            let work = (!noop).then(|| exec(step.clone()));
            let obs = obs.clone();
            let changed = changed.clone();
            let unreachable = unreachable.clone();
            let failed = failed.clone();
            async move {
                let Some(work) = work else {
                    return Ok(());
                };
                obs.event(Event::Started {
                    id: step.id().to_string(),
                    action: step.action(),
                });
                match work.await {
                    Ok(did) => {
                        if let Ok(mut m) = changed.lock() {
                            m.insert(step.id().to_string(), did.changed);
                        }
                        obs.event(Event::Finished {
                            id: step.id().to_string(),
                            changed: did.changed,
                            summary: did.summary,
                        });
                        Ok(())
                    }
                    Err(e) => {
                        let msg = error_text(&e);
                        let offline = e.is_unreachable() && step.host().is_some();
                        if offline
                            && let Some(h) = step.host()
                            && let Ok(mut m) = unreachable.lock()
                        {
                            m.insert(h.to_string(), msg.clone());
                        }
                        failed(&step, &msg, offline);
                        obs.event(Event::Failed {
                            id: step.id().to_string(),
                            error: msg,
                        });
                        Err(Arc::new(e))
                    }
                }
            }
        },
    )
    .await;
    let changed = changed.lock().map(|m| m.clone()).unwrap_or_default();
    let unreachable = unreachable.lock().map(|m| m.clone()).unwrap_or_default();
    Ran {
        steps,
        outcomes,
        changed,
        unreachable,
    }
}

impl<S: Item> Ran<S> {
    /// One result per step that had something to do. `offline` names the outcome of
    /// a step whose host could not be reached (`offline`, or `tolerated`), `None` for
    /// others; `done_detail` the detail of a step that succeeded.
    pub fn results(
        &self,
        obs: &SharedObserver,
        offline: impl Fn(&S) -> Option<&'static str>,
        done_detail: impl Fn(&S) -> Option<String>,
    ) -> Vec<ResourceResult> {
        let mut results = Vec::new();
        for (step, outcome) in self.steps.iter().zip(&self.outcomes) {
            if step.action() == Action::NoOp {
                continue;
            }
            let id = step.id().to_string();
            let off = offline(step);
            let (name, detail, error) = match outcome {
                Outcome::Done => ("done", done_detail(step), None),
                Outcome::Failed(e) => (
                    off.unwrap_or("failed"),
                    Some(error_text(e)),
                    Some(e.clone()),
                ),
                Outcome::Skipped { because } => {
                    obs.event(Event::Skipped {
                        id: id.clone(),
                        because: because.clone(),
                    });
                    (
                        off.unwrap_or("skipped"),
                        Some(format!("skipped: {because}")),
                        None,
                    )
                }
                Outcome::Cancelled => {
                    obs.event(Event::Cancelled { id: id.clone() });
                    ("cancelled", None, None)
                }
            };
            results.push(ResourceResult {
                changed: self.changed.get(&id).copied().unwrap_or(false),
                id,
                action: step.action(),
                outcome: name.to_string(),
                detail,
                error,
            });
        }
        results
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Dep;
    use crate::ops::Observer;
    use crate::ssh::SshError;

    #[derive(Debug, Clone)]
    struct T {
        id: &'static str,
        host: Option<&'static str>,
        action: Action,
    }

    impl Item for T {
        fn id(&self) -> &str {
            self.id
        }
        fn action(&self) -> Action {
            self.action
        }
        fn host(&self) -> Option<&str> {
            self.host
        }
    }

    #[derive(Default)]
    struct Events(Mutex<Vec<String>>);
    impl Observer for Events {
        fn event(&self, e: Event) {
            let line = match e {
                Event::Started { id, .. } => format!("started {id}"),
                Event::Finished { id, changed, .. } => format!("finished {id} {changed}"),
                Event::Failed { id, .. } => format!("failed {id}"),
                Event::Skipped { id, .. } => format!("skipped {id}"),
                Event::Cancelled { id } => format!("cancelled {id}"),
                _ => return,
            };
            if let Ok(mut v) = self.0.lock() {
                v.push(line);
            }
        }
        fn expect(&self, steps: usize) {
            if let Ok(mut v) = self.0.lock() {
                v.push(format!("expect {steps}"));
            }
        }
    }

    fn step(id: &'static str, host: Option<&'static str>) -> T {
        T {
            id,
            host,
            action: Action::Create,
        }
    }

    /// server -> agent-a (needs), server -> agent-b (needs), agent-b -> ready (after),
    /// plus a no-op gate; agent-b's host is switched off, the server's key changed in
    /// the second run.
    #[tokio::test]
    async fn failures_keep_their_type_and_offline_hosts_are_told_apart() {
        let mut g: DiGraph<T, Dep> = DiGraph::new();
        let server = g.add_node(step("k3s-server/s", Some("s")));
        let a = g.add_node(step("k3s-agent/a", Some("a")));
        let b = g.add_node(step("k3s-agent/b", Some("b")));
        let ready = g.add_node(step("cluster-ready", None));
        let gate = g.add_node(T {
            id: "gate",
            host: None,
            action: Action::NoOp,
        });
        g.add_edge(server, a, Dep::Needs);
        g.add_edge(server, b, Dep::Needs);
        g.add_edge(b, ready, Dep::After);
        g.add_edge(server, gate, Dep::Needs);
        let events = Arc::new(Events::default());
        let obs: SharedObserver = events.clone();
        let recorded: Arc<Mutex<Vec<(String, bool)>>> = Arc::default();
        let rec = recorded.clone();
        let ran = run(
            &g,
            4,
            &CancellationToken::new(),
            &obs,
            |t: T| async move {
                match t.id {
                    "k3s-agent/b" => Err(OpsError::Ssh(SshError::Connect {
                        host: "b".into(),
                        address: "10.0.0.2".into(),
                        attempts: 3,
                        detail: "No route to host".into(),
                    })),
                    "k3s-agent/a" => Ok(Did::unchanged("already converged")),
                    _ => Ok(Did::changed("installed")),
                }
            },
            move |t: &T, msg: &str, offline: bool| {
                if let Ok(mut v) = rec.lock() {
                    v.push((format!("{}: {msg}", t.id), offline));
                }
            },
        )
        .await;
        assert_eq!(ran.unreachable.keys().collect::<Vec<_>>(), vec!["b"]);
        let recorded = recorded.lock().map(|v| v.clone()).unwrap_or_default();
        assert_eq!(recorded.len(), 1);
        assert!(recorded[0].0.starts_with("k3s-agent/b: ") && recorded[0].1);
        let results = ran.results(
            &obs,
            |t| (t.host == Some("b")).then_some("offline"),
            |_| None,
        );
        let by_id: BTreeMap<&str, &ResourceResult> =
            results.iter().map(|r| (r.id.as_str(), r)).collect();
        // The gate did nothing and has no result; readiness ran after the failure.
        assert!(!by_id.contains_key("gate"));
        assert_eq!(by_id["k3s-agent/b"].outcome, "offline");
        assert!(
            by_id["k3s-agent/b"]
                .error
                .as_ref()
                .is_some_and(|e| e.is_unreachable())
        );
        assert_eq!(by_id["cluster-ready"].outcome, "done");
        assert!(by_id["k3s-server/s"].changed && !by_id["k3s-agent/a"].changed);
        let events = events.0.lock().map(|v| v.clone()).unwrap_or_default();
        assert!(
            events.contains(&"failed k3s-agent/b".to_string()),
            "{events:?}"
        );
        assert!(!events.iter().any(|e| e.ends_with(" gate")), "{events:?}");

        // A changed host key on the server: its dependants are skipped, and the
        // summary's error says so by type.
        let ran = run(
            &g,
            4,
            &CancellationToken::new(),
            &obs,
            |t: T| async move {
                if t.id == "k3s-server/s" {
                    Err(OpsError::Ssh(SshError::HostKeyChanged {
                        host: "s".into(),
                        address: "10.0.0.1".into(),
                        pinned: "SHA256:abc".into(),
                    }))
                } else {
                    Ok(Did::changed("x"))
                }
            },
            |_: &T, _: &str, _: bool| {},
        )
        .await;
        let results = ran.results(&obs, |_| None, |_| None);
        let skipped: Vec<&str> = results
            .iter()
            .filter(|r| r.outcome == "skipped")
            .map(|r| r.id.as_str())
            .collect();
        assert_eq!(skipped, vec!["k3s-agent/a", "k3s-agent/b"]);
        let Err(e) = crate::ops::summarize(&results, false) else {
            panic!("a failure must fail the run");
        };
        assert!(e.is_host_key(), "{e}");
        assert!(matches!(e, OpsError::Partial { failed: 1, .. }));
    }
}
