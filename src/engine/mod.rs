//! The graph walk. Starts a node as soon as all its dependencies are settled, runs at
//! most `concurrency` nodes at once, and on a failure skips only the nodes that *need*
//! the failed one: independent branches run to the end. Cancellation (Ctrl-C) starts
//! nothing new, lets in-flight nodes finish and marks the rest cancelled.
//!
//! Two kinds of edge (`Edge::needs`): a *needs* edge `a -> b` runs `b` only when `a`
//! succeeded (otherwise `b` is skipped, and so is everything that needs `b`); an
//! *after* edge only orders: `b` waits until `a` is settled (done, failed or skipped)
//! and then runs anyway. For example, `cluster-ready` runs *after* every
//! agent but *needs* only the first server, so one offline device never withholds the
//! rest of the cluster.
//!
//! The engine knows nothing about SSH or k3s: the caller's closure does the work and
//! saves state after each node.

use std::collections::VecDeque;
use std::future::Future;

use petgraph::Direction;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::visit::EdgeRef;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Result of one node of a walk; `X` is the steps' error type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<X = String> {
    Done,
    Failed(X),
    /// Not started because a dependency failed.
    Skipped {
        because: String,
    },
    /// Not started because the walk was cancelled.
    Cancelled,
}

/// What an edge of a walked graph means.
pub trait Edge {
    /// `true`: the target needs the source to succeed. `false`: the target only runs
    /// after the source has settled, whatever its outcome.
    fn needs(&self) -> bool;
}

/// The resource graph's edges: `Needs` is a *needs* edge, `After` orders only.
impl Edge for crate::graph::Dep {
    fn needs(&self) -> bool {
        *self == crate::graph::Dep::Needs
    }
}

/// Plain edges are *needs* edges.
impl Edge for () {
    fn needs(&self) -> bool {
        true
    }
}

/// Walk `graph` (edge a→b: b runs after a; see `Edge`), calling `run` for each node.
///
/// `name` gives a node's display name (used in skip reasons). Returns one outcome per
/// node, indexed like the graph.
pub async fn walk<N, E, X, F, Fut>(
    graph: &DiGraph<N, E>,
    concurrency: usize,
    cancel: &CancellationToken,
    name: impl Fn(&N) -> String,
    run: F,
) -> Vec<Outcome<X>>
where
    E: Edge,
    X: Send + 'static,
    F: Fn(NodeIndex) -> Fut,
    Fut: Future<Output = Result<(), X>> + Send + 'static,
{
    let n = graph.node_count();
    let concurrency = concurrency.max(1);
    let mut outcome: Vec<Option<Outcome<X>>> = (0..n).map(|_| None).collect();
    let mut waiting: Vec<usize> = graph
        .node_indices()
        .map(|ix| graph.neighbors_directed(ix, Direction::Incoming).count())
        .collect();
    let mut ready: VecDeque<NodeIndex> = graph
        .node_indices()
        .filter(|ix| waiting[ix.index()] == 0)
        .collect();
    let mut running: JoinSet<(NodeIndex, Result<(), X>)> = JoinSet::new();

    loop {
        while !cancel.is_cancelled() && running.len() < concurrency {
            let Some(ix) = ready.pop_front() else { break };
            let fut = run(ix);
            running.spawn(async move { (ix, fut.await) });
        }
        if running.is_empty() {
            break;
        }
        let joined = tokio::select! {
            j = running.join_next() => j,
            () = cancel.cancelled(), if !cancel.is_cancelled() => continue,
        };
        let Some(joined) = joined else { break };
        let (ix, result) = match joined {
            Ok(pair) => pair,
            Err(e) => {
                // A panicking step is a bug; treat it as a failure of an unknown node.
                tracing::error!("a step task ended abnormally: {e}");
                continue;
            }
        };
        let failed = result.as_ref().err().map(|_| name(&graph[ix]));
        outcome[ix.index()] = Some(match result {
            Ok(()) => Outcome::Done,
            Err(e) => Outcome::Failed(e),
        });
        // Settle what follows: a node whose dependency did not succeed is skipped when
        // it needs it; every settled node releases the nodes that only run after it.
        let mut settled = vec![(ix, failed)];
        while let Some((from, failed)) = settled.pop() {
            for e in graph.edges_directed(from, Direction::Outgoing) {
                let next = e.target();
                if outcome[next.index()].is_some() {
                    continue;
                }
                if let Some(f) = &failed
                    && e.weight().needs()
                {
                    outcome[next.index()] = Some(Outcome::Skipped {
                        because: format!("{f} failed"),
                    });
                    settled.push((next, Some(f.clone())));
                    continue;
                }
                let w = &mut waiting[next.index()];
                *w = w.saturating_sub(1);
                if *w == 0 {
                    ready.push_back(next);
                }
            }
        }
        ready.retain(|r| outcome[r.index()].is_none());
    }
    outcome
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Cancelled))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use petgraph::visit::{Dfs, Reversed};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    /// Whether `a` is an ancestor of `b`.
    fn depends_on<N, E>(graph: &DiGraph<N, E>, b: NodeIndex, a: NodeIndex) -> bool {
        let rev = Reversed(graph);
        let mut dfs = Dfs::new(rev, b);
        while let Some(x) = dfs.next(rev) {
            if x == a && x != b {
                return true;
            }
        }
        false
    }

    fn diamond() -> DiGraph<&'static str, ()> {
        // root -> a -> a2 ; root -> b ; a2,b -> end
        let mut g = DiGraph::new();
        let root = g.add_node("root");
        let a = g.add_node("a");
        let a2 = g.add_node("a2");
        let b = g.add_node("b");
        let end = g.add_node("end");
        g.add_edge(root, a, ());
        g.add_edge(a, a2, ());
        g.add_edge(root, b, ());
        g.add_edge(a2, end, ());
        g.add_edge(b, end, ());
        g
    }

    /// Walk `g` (nodes named by their weight) where only `failing` fails, with `error`.
    async fn walk_failing<E: Edge>(
        g: &DiGraph<&'static str, E>,
        failing: &'static str,
        error: &'static str,
    ) -> Vec<Outcome> {
        let names: Vec<&str> = g.node_weights().copied().collect();
        walk(
            g,
            4,
            &CancellationToken::new(),
            |n| (*n).to_string(),
            |ix| {
                let name = names[ix.index()];
                async move {
                    if name == failing {
                        Err(error.to_string())
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await
    }

    #[tokio::test]
    async fn failure_skips_only_descendants() {
        let g = diamond();
        let out = walk_failing(&g, "a", "boom").await;
        assert_eq!(out[0], Outcome::Done);
        assert_eq!(out[1], Outcome::Failed("boom".into()));
        assert_eq!(
            out[2],
            Outcome::Skipped {
                because: "a failed".into()
            }
        );
        assert_eq!(out[3], Outcome::Done, "independent branch finishes");
        assert_eq!(
            out[4],
            Outcome::Skipped {
                because: "a failed".into()
            }
        );
    }

    /// An edge that only orders (`cluster-ready` after an offline agent).
    #[derive(Clone, Copy)]
    struct Soft(bool);
    impl Edge for Soft {
        fn needs(&self) -> bool {
            !self.0
        }
    }

    #[tokio::test]
    async fn after_edges_run_the_target_whatever_the_source_did() {
        // server -> agent1 (needs), server -> agent2 (needs), agent2 -> prep-less gpu
        // (needs); agents and gpu -> ready (after); server -> ready (needs);
        // ready -> kubeconfig (after).
        let mut g: DiGraph<&str, Soft> = DiGraph::new();
        let server = g.add_node("server");
        let a1 = g.add_node("a1");
        let a2 = g.add_node("a2");
        let gpu = g.add_node("gpu");
        let ready = g.add_node("ready");
        let kc = g.add_node("kubeconfig");
        g.add_edge(server, a1, Soft(false));
        g.add_edge(server, a2, Soft(false));
        g.add_edge(a2, gpu, Soft(false));
        g.add_edge(server, ready, Soft(false));
        for n in [a1, a2, gpu] {
            g.add_edge(n, ready, Soft(true));
        }
        g.add_edge(ready, kc, Soft(true));
        g.add_edge(server, kc, Soft(false));
        let names: Vec<&str> = g.node_weights().copied().collect();
        let order = Arc::new(std::sync::Mutex::new(Vec::new()));
        let out = walk(
            &g,
            4,
            &CancellationToken::new(),
            |n| (*n).to_string(),
            |ix| {
                let name = names[ix.index()];
                let order = order.clone();
                async move {
                    order.lock().map(|mut o| o.push(name)).ok();
                    match name {
                        "a2" | "ready" => Err("offline".to_string()),
                        _ => Ok(()),
                    }
                }
            },
        )
        .await;
        assert_eq!(out[a1.index()], Outcome::Done);
        assert_eq!(out[a2.index()], Outcome::Failed("offline".into()));
        assert_eq!(
            out[gpu.index()],
            Outcome::Skipped {
                because: "a2 failed".into()
            }
        );
        assert_eq!(out[ready.index()], Outcome::Failed("offline".into()));
        assert_eq!(out[kc.index()], Outcome::Done, "after-edge only orders");
        let order = order.lock().map(|o| o.clone()).unwrap_or_default();
        let pos = |n: &str| order.iter().position(|o| *o == n);
        assert!(
            pos("ready") > pos("a1") && pos("ready") > pos("a2"),
            "{order:?}"
        );
        assert!(pos("kubeconfig") > pos("ready"), "{order:?}");

        // The first server failing still skips everything that needs it, through
        // after-edges too only where a needs-edge reaches.
        let out = walk_failing(&g, "server", "down").await;
        for n in [a1, a2, gpu, ready, kc] {
            assert_eq!(
                out[n.index()],
                Outcome::Skipped {
                    because: "server failed".into()
                },
                "{}",
                names[n.index()]
            );
        }
    }

    #[tokio::test]
    async fn concurrency_is_capped() {
        let mut g: DiGraph<usize, ()> = DiGraph::new();
        for i in 0..20 {
            g.add_node(i);
        }
        let now = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let out: Vec<Outcome> = walk(
            &g,
            3,
            &CancellationToken::new(),
            |n| n.to_string(),
            |_| {
                let now = now.clone();
                let max = max.clone();
                async move {
                    let cur = now.fetch_add(1, Ordering::SeqCst) + 1;
                    max.fetch_max(cur, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    now.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            },
        )
        .await;
        assert!(out.iter().all(|o| *o == Outcome::Done));
        assert_eq!(max.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn cancel_finishes_in_flight_and_starts_nothing() {
        let g = diamond();
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        let names: Vec<&str> = g.node_weights().copied().collect();
        let out: Vec<Outcome> = walk(
            &g,
            1,
            &cancel,
            |n| (*n).to_string(),
            |ix| {
                let name = names[ix.index()];
                let c2 = c2.clone();
                async move {
                    if name == "root" {
                        c2.cancel();
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Ok(())
                }
            },
        )
        .await;
        assert_eq!(out[0], Outcome::Done, "in-flight step completes");
        assert!(out[1..].iter().all(|o| *o == Outcome::Cancelled), "{out:?}");
    }

    #[test]
    fn ancestry() {
        let g = diamond();
        assert!(depends_on(&g, NodeIndex::new(4), NodeIndex::new(0)));
        assert!(!depends_on(&g, NodeIndex::new(0), NodeIndex::new(4)));
        assert!(!depends_on(&g, NodeIndex::new(3), NodeIndex::new(1)));
    }
}
