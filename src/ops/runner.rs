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

use super::context::error_text;
use super::{Did, Event, OpsError, ResourceResult, SharedObserver};
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
