//! `continuum inventory probe`: connect to every host of an inventory (host keys pinned
//! in `STATE_DIR/_inventory.known_hosts`), run the read-only probe, store what was
//! learned in the inventory (`probed:`), and report per host.

use std::path::Path;

use super::{OpsError, Settings};
use crate::files::inventory;
use crate::probe;

/// Probe result of one host.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProbeRow {
    pub name: String,
    pub address: String,
    pub facts: Option<probe::Facts>,
    pub problems: Vec<String>,
    pub error: Option<String>,
}

/// Probe `only` (or every host) of the inventory at `path`.
pub async fn probe_inventory(
    path: &Path,
    only: &[String],
    settings: &Settings,
) -> Result<Vec<ProbeRow>, OpsError> {
    let (hosts, _) = crate::files::load_inventory(path)?;
    for o in only {
        if !hosts.contains_key(o) {
            return Err(inventory::InventoryError::NoSuchHost(o.clone()).into());
        }
    }
    // Not a DNS label, so it never collides with an environment's known_hosts.
    let pool = settings.pool("_inventory", None)?;
    let pool = &pool;
    // At most `--concurrency` hosts at once.
    let slots = tokio::sync::Semaphore::new(settings.concurrency.max(1));
    let slots = &slots;
    let jobs = hosts
        .values()
        .filter(|h| only.is_empty() || only.contains(&h.name))
        .map(|h| async move {
            let _slot = slots.acquire().await.ok();
            let res = match pool.get(h).await {
                Ok(c) => probe::probe(c.as_ref()).await,
                Err(e) => Err(e),
            };
            (h.name.clone(), h.address.clone(), res)
        });
    let results = futures_join(jobs.collect()).await;
    pool.close().await;
    let mut rows = Vec::new();
    let mut learned = Vec::new();
    for (name, address, res) in results {
        match res {
            Ok(f) => {
                learned.push((name.clone(), f.clone()));
                rows.push(ProbeRow {
                    name,
                    address,
                    problems: f.problems(),
                    facts: Some(f),
                    error: None,
                });
            }
            Err(e) => rows.push(ProbeRow {
                name,
                address,
                facts: None,
                problems: Vec::new(),
                error: Some(e.to_string()),
            }),
        }
    }
    if !learned.is_empty() {
        inventory::store_probed(path, &learned)?;
    }
    Ok(rows)
}

/// Drive borrowed futures to completion concurrently on this task (they borrow the
/// pool, so they cannot be spawned); results in input order.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut pinned: Vec<std::pin::Pin<Box<F>>> = fs.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    done.into_iter().flatten().collect()
}
