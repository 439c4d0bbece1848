//! How a run ends: the documented exit codes (README.md, "Exit codes"), the error that
//! maps to each, and the signals (SIGINT, SIGTERM) that stop a run between steps.

use tokio_util::sync::CancellationToken;

use crate::ops;

pub const OK: i32 = 0;
pub const ERROR: i32 = 1;
pub const INVALID: i32 = 2;
pub const PARTIAL: i32 = 3;
pub const LOCKED: i32 = 4;
pub const HOST_KEY: i32 = 5;
/// SIGINT (Ctrl-C), as shells report a process that died of it (128 + 2).
pub const INTERRUPTED: i32 = 130;
/// SIGTERM (128 + 15): stopped by a service manager, a CI timeout, `kill`.
pub const TERMINATED: i32 = 143;

/// The signal that cancelled this run (0: none), for its exit code.
static CANCELLED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// `up`/`down` without `--yes` and without a terminal to ask on.
#[derive(Debug, thiserror::Error)]
#[error("changes need confirmation: re-run with --yes (no terminal to ask on)")]
pub struct NeedsYes;

/// A token cancelled by SIGINT or SIGTERM: in-flight steps finish (and are recorded),
/// no new one starts, the lock is released on the way out, and the exit code says
/// which signal it was (130 or 143).
pub(crate) fn cancel_on_signals() -> CancellationToken {
    use std::sync::atomic::Ordering;
    use tokio::signal::unix::{SignalKind, signal};
    let token = CancellationToken::new();
    let t = token.clone();
    // Registered here, before the task first runs: from now on the signals no longer
    // end the process (whose lock, an S3 object, would stay behind).
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    tokio::spawn(async move {
        let wait = |s: Option<tokio::signal::unix::Signal>| async move {
            match s {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let sig = tokio::select! {
            () = wait(int.take()) => 2,
            () = wait(term.take()) => 15,
        };
        CANCELLED_BY.store(sig, Ordering::SeqCst);
        tracing::warn!(
            "{}: finishing in-flight steps, starting no new ones",
            if sig == 15 { "SIGTERM" } else { "interrupt" }
        );
        t.cancel();
    });
    token
}

/// Run `op`, which holds an environment's lock, until it ends or SIGINT/SIGTERM
/// arrives. On a signal `op` is dropped where it waits, which releases the lock on the
/// way out (an S3 lock object is deleted), and the run ends as interrupted (130/143).
/// Without this the signal's default action would end the process with the lock
/// object left in the bucket, refusing every later run until `state unlock --force`.
pub(crate) async fn until_signal<T>(
    op: impl std::future::Future<Output = Result<T, ops::OpsError>>,
) -> Result<T, ops::OpsError> {
    let cancel = cancel_on_signals();
    tokio::select! {
        r = op => r,
        () = cancel.cancelled() => Err(ops::OpsError::Interrupted),
    }
}

/// Map an error chain to the documented exit code.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ops::OpsError>() {
            return match e {
                _ if e.is_host_key() => HOST_KEY,
                ops::OpsError::State(
                    crate::files::StateError::Locked { .. }
                    | crate::files::StateError::RemoteLocked { .. }
                    | crate::files::StateError::LockLost { .. },
                ) => LOCKED,
                ops::OpsError::Partial { .. } => PARTIAL,
                ops::OpsError::Cloud(crate::aws::provision::ProvisionError::Invalid(_))
                | ops::OpsError::Refused(_)
                | ops::OpsError::Shrink(ops::shrink::ShrinkError::NoSuchHost { .. }) => INVALID,
                ops::OpsError::Interrupted => {
                    if CANCELLED_BY.load(std::sync::atomic::Ordering::SeqCst) == 15 {
                        TERMINATED
                    } else {
                        INTERRUPTED
                    }
                }
                _ => ERROR,
            };
        }
        if cause.downcast_ref::<crate::recipe::LoadError>().is_some()
            || cause.downcast_ref::<NeedsYes>().is_some()
            || cause
                .downcast_ref::<crate::files::inventory::InventoryError>()
                .is_some()
        {
            return INVALID;
        }
        if let Some(
            crate::files::StateError::Locked { .. }
            | crate::files::StateError::RemoteLocked { .. }
            | crate::files::StateError::LockLost { .. },
        ) = cause.downcast_ref::<crate::files::StateError>()
        {
            return LOCKED;
        }
        if let Some(crate::files::StateError::BadUrl { .. }) =
            cause.downcast_ref::<crate::files::StateError>()
        {
            return INVALID;
        }
    }
    ERROR
}
