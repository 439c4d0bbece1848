//! The lock object `PREFIX/ENV.lock` of an S3-backed environment: created with
//! `If-None-Match: *` holding who took it (`LockRecord`), refused naming the holder,
//! deleted on drop with `If-Match` on its own ETag (so a broken lock's former holder
//! never deletes its successor's), and broken only on request (`holder(force)`).

use std::sync::Arc;

use super::{Fail, Inner, S3Store};
use crate::files::StateError;
use crate::state::shared::{self, LockRecord};
use crate::statestore::Holder;

/// The lock object this run created; deleted on drop (if still ours).
#[derive(Debug)]
pub struct S3Lock {
    inner: Arc<Inner>,
    etag: String,
    record: LockRecord,
}

impl S3Lock {
    pub fn record(&self) -> &LockRecord {
        &self.record
    }
}

impl S3Store {
    fn lock_err(&self, op: &'static str, message: String) -> StateError {
        StateError::Remote {
            url: format!("s3://{}/{}", self.inner.remote.bucket, self.lock_key()),
            op,
            message,
        }
    }

    fn unlock_hint(&self) -> String {
        format!(
            "continuum --state {} state unlock {} --force",
            self.inner.remote.url(),
            self.inner.env
        )
    }

    /// The lock object's record and ETag. One that does not parse (written by hand,
    /// or by another tool) still holds the lock: it is shown as unreadable, and
    /// `--force` can break it.
    fn read_lock(&self) -> Result<Option<(LockRecord, String)>, StateError> {
        let Some((bytes, etag)) = self.get(self.lock_key())? else {
            return Ok(None);
        };
        let record = serde_json::from_slice(&bytes).unwrap_or_else(|e| LockRecord {
            owner: "unknown".to_string(),
            host: "unknown".to_string(),
            pid: 0,
            started: "unknown".to_string(),
            command: format!("unreadable lock object: {e}"),
            version: "unknown".to_string(),
            nonce: String::new(),
        });
        Ok(Some((record, etag)))
    }

    /// Who holds the lock now, when this store's run took it and has lost it
    /// (broken with `state unlock --force`, perhaps taken by another run); `None`
    /// while it is still ours or when this store holds no lock.
    pub(super) fn lock_taken_over(&self) -> Result<Option<String>, StateError> {
        let Some(mine) = self.held_lock() else {
            return Ok(None);
        };
        Ok(match self.read_lock()? {
            Some((_, etag)) if etag == mine => None,
            Some((held, _)) => Some(held.holder()),
            None => Some("nobody (the lock object was deleted)".to_string()),
        })
    }

    pub(super) fn lost_to(&self) -> Option<String> {
        self.inner
            .lost_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_lost_to(&self, holder: Option<String>) {
        *self
            .inner
            .lost_to
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = holder;
    }

    fn held_lock(&self) -> Option<String> {
        self.inner
            .held_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_held_lock(&self, etag: Option<String>) {
        *self
            .inner
            .held_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = etag;
    }

    /// Create the lock object, or fail naming who holds it.
    pub fn lock(&self) -> Result<S3Lock, StateError> {
        let record = LockRecord {
            owner: std::env::var("USER")
                .or_else(|_| std::env::var("LOGNAME"))
                .unwrap_or_else(|_| "unknown".to_string()),
            host: hostname(),
            pid: std::process::id(),
            started: shared::rfc3339(crate::state::now()),
            command: self.inner.remote.command.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            nonce: {
                let mut b = [0u8; 16];
                getrandom::fill(&mut b).map_err(|e| self.lock_err("nonce", e.to_string()))?;
                hex::encode(b)
            },
        };
        let body = serde_json::to_vec_pretty(&record)
            .map_err(|e| self.remote_err("encode", e.to_string()))?;
        // Twice: a lock released between our PUT and our GET is simply taken again.
        for _ in 0..2 {
            match self.put(self.lock_key(), body.clone(), None)? {
                Ok(etag) => {
                    self.set_held_lock(Some(etag.clone()));
                    return Ok(S3Lock {
                        inner: self.inner.clone(),
                        etag,
                        record,
                    });
                }
                Err(Fail::Condition) => {
                    let held = self.read_lock()?;
                    if let Some((held, etag)) = &held
                        && *held == record
                    {
                        // Our own PUT: it succeeded, its answer was lost and the
                        // retry was refused.
                        self.set_held_lock(Some(etag.clone()));
                        return Ok(S3Lock {
                            inner: self.inner.clone(),
                            etag: etag.clone(),
                            record,
                        });
                    }
                    if let Some((held, _)) = held {
                        return Err(StateError::RemoteLocked {
                            env: self.inner.env.clone(),
                            url: self.inner.remote.url(),
                            holder: held.holder(),
                            unlock: self.unlock_hint(),
                        });
                    }
                }
                Err(Fail::Missing) => {}
                Err(Fail::NoBucket) => return Err(self.no_bucket()),
                Err(Fail::Region(r)) => return Err(super::wrong_region(&self.inner.remote, r)),
                Err(Fail::Other(m)) => return Err(self.lock_err("PutObject", m)),
            }
        }
        Err(self.lock_err("PutObject", "the lock kept changing".into()))
    }

    /// Who holds the lock; with `force`, delete exactly the lock object shown.
    pub fn holder(&self, force: bool) -> Result<Holder, StateError> {
        let held = self.read_lock()?;
        let mut broken = false;
        if force && let Some((_, etag)) = &held {
            match self.delete_key(self.lock_key(), Some(etag.clone()))? {
                Ok(()) | Err(Fail::Missing) => broken = true,
                Err(Fail::Condition) => {
                    return Err(self.lock_err(
                        "DeleteObject",
                        "the lock changed hands while it was being broken; look again".into(),
                    ));
                }
                Err(Fail::NoBucket) => return Err(self.no_bucket()),
                Err(Fail::Region(r)) => return Err(super::wrong_region(&self.inner.remote, r)),
                Err(Fail::Other(m)) => return Err(self.lock_err("DeleteObject", m)),
            }
        }
        Ok(Holder {
            env: self.inner.env.clone(),
            location: self.inner.remote.url(),
            record: held.map(|h| h.0),
            pid: None,
            broken,
        })
    }
}

impl Drop for S3Lock {
    fn drop(&mut self) {
        let store = S3Store {
            inner: self.inner.clone(),
        };
        store.set_held_lock(None);
        match store.delete_key(store.lock_key(), Some(self.etag.clone())) {
            Ok(Ok(()) | Err(Fail::Missing)) => {}
            Ok(Err(Fail::Condition)) => tracing::warn!(
                "{}: the lock was broken and taken by another run; left it alone",
                store.inner.remote.url()
            ),
            Ok(Err(Fail::NoBucket | Fail::Region(_))) => tracing::warn!(
                "{}: cannot release the lock: the bucket is gone or moved",
                store.inner.remote.url()
            ),
            Ok(Err(Fail::Other(m))) => {
                tracing::warn!("{}: cannot release the lock: {m}", store.inner.remote.url());
            }
            Err(e) => tracing::warn!("cannot release the lock: {e}"),
        }
    }
}

/// This machine's name (`/proc/sys/kernel/hostname`, else `HOSTNAME`).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_string())
}
