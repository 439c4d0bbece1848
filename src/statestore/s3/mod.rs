//! Environment state in S3 or an S3-compatible store (aws-sdk-s3, `aws` feature):
//! `PREFIX/ENV.json` holds the state, `PREFIX/ENV.lock` the lock (docs/state.md).
//!
//! - Writes are compare-and-swap: `PutObject` with `If-Match` on the ETag this store
//!   last read or wrote (`If-None-Match: *` for the first). A lost race (412
//!   PreconditionFailed, or 409 ConditionalRequestConflict for concurrent conditional
//!   writes) re-reads the object, merges this writer's changes onto it
//!   (`state::shared::merge` against the base it had read) and tries again, a bounded
//!   number of times. Nothing is ever written unconditionally.
//! - The lock (`lock.rs`) is an object created with `If-None-Match: *` holding a
//!   `LockRecord`; it is deleted with `If-Match` on its own ETag, so a run never
//!   deletes a lock it does not hold. A stale lock is broken only by
//!   `state unlock --force`.
//! - Secrets (`state::shared::SECRET_FIELDS`) are not in the object in clear: they
//!   are encrypted with age (X25519) to the team's recipients (`seal.rs`); the rest
//!   of the state stays readable JSON.
//!
//! The store is called from synchronous code (the state is saved under a mutex by
//! steps running on the caller's runtime), so the SDK runs on a small runtime of its
//! own and each call waits for its answer on a channel; that runtime is shut down in
//! the background when the last handle goes.

mod fail;
mod list;
mod lock;
mod seal;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use fail::{Fail, fail, no_bucket, wrong_region};
pub use list::list;
pub use lock::S3Lock;
use seal::{Sealed, read_identity};

use aws_sdk_s3::Client;
use aws_sdk_s3::primitives::ByteStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Remote;
use crate::files::StateError;
use crate::state::shared;
use crate::state::{STATE_VERSION, State};

/// Compare-and-swap attempts of one save before it gives up (each lost attempt
/// means another writer stored something in between).
const CAS_ATTEMPTS: u32 = 16;

/// The pause before compare-and-swap attempt `attempt` (from 1): 40 ms doubling up to
/// 640 ms, each time a random 50-100 % of it.
fn cas_backoff(attempt: u32) -> std::time::Duration {
    let full = 20u64 << attempt.min(5);
    let mut b = [0u8; 1];
    let spread = getrandom::fill(&mut b).map_or(255, |()| b[0]);
    std::time::Duration::from_millis(full / 2 + full * u64::from(spread) / 510)
}

/// The version of the object layout (`Envelope`).
const FORMAT: u32 = 1;

/// What the state object holds: the state without its secrets, and the secrets
/// encrypted with age.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    format: u32,
    state: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    secrets: Option<Sealed>,
}

/// A runtime of the store's own (see the module header); shut down in the
/// background on drop, which is allowed inside another runtime.
struct Rt(Option<tokio::runtime::Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    rt: Rt,
    client: Client,
    remote: Remote,
    env: String,
    dir: PathBuf,
    /// The full state (secrets included) as last read or written, and its ETag: the
    /// base of the next compare-and-swap.
    base: Mutex<Option<(Value, String)>>,
    identity: Option<age::x25519::Identity>,
    recipients: Vec<age::x25519::Recipient>,
    /// Compare-and-swap races lost (and merged) by saves through this store.
    conflicts: std::sync::atomic::AtomicU64,
    /// The ETag of the lock object this store's run holds (`lock.rs`), while held.
    held_lock: Mutex<Option<String>>,
    /// Who took the lock over once this store's run lost it: every later save still
    /// saves, then fails, so the run stops.
    lost_to: Mutex<Option<String>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("url", &self.remote.url())
            .field("env", &self.env)
            .finish_non_exhaustive()
    }
}

/// One environment's state in S3.
#[derive(Debug, Clone)]
pub struct S3Store {
    inner: Arc<Inner>,
}

fn runtime(url: &str) -> Result<Rt, StateError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("continuum-s3")
        .enable_all()
        .build()
        .map(|rt| Rt(Some(rt)))
        .map_err(|e| StateError::Remote {
            url: url.to_string(),
            op: "client start",
            message: e.to_string(),
        })
}

/// Run `fut` on `rt` and wait for it from any thread (also inside another runtime).
fn block<T: Send + 'static>(
    rt: &Rt,
    url: &str,
    fut: impl Future<Output = T> + Send + 'static,
) -> Result<T, StateError> {
    let gone = || StateError::Remote {
        url: url.to_string(),
        op: "call",
        message: "the S3 client's runtime stopped".to_string(),
    };
    let rt = rt.0.as_ref().ok_or_else(gone)?;
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().map_err(|_| gone())
}

/// The region the client signs for: the location's, else AWS_REGION, else us-east-1.
fn region(remote: &Remote) -> String {
    remote
        .region
        .clone()
        .or_else(|| std::env::var("AWS_REGION").ok().filter(|r| !r.is_empty()))
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// The S3 client for `remote`: the project's loader (timeouts), the standard
/// credential chain, the endpoint and path-style overrides, and the SDK's standard
/// retries (safe here: a retried conditional write either succeeds or loses the
/// compare-and-swap, which the merge handles).
async fn client(remote: Remote) -> Client {
    let region = region(&remote);
    let mut loader = crate::aws::sdk::loader(&region);
    if let Some((key, secret)) = &remote.static_credentials {
        loader = loader.credentials_provider(aws_sdk_s3::config::Credentials::new(
            key,
            secret.expose(),
            None,
            None,
            "static",
        ));
    }
    let conf = loader.load().await;
    Client::from_conf(s3_config(&remote, &conf))
}

/// The client configuration of `remote` on the loaded SDK configuration. With an
/// endpoint override (MinIO, Ceph, R2, ...) checksums are computed and checked only
/// where an operation requires one, unless AWS_REQUEST_CHECKSUM_CALCULATION /
/// AWS_RESPONSE_CHECKSUM_VALIDATION (or the profile) say otherwise: the SDK's default
/// adds a CRC32 to every PutObject, which a number of S3-compatible stores refuse
/// (docs/state.md, "Addressing and precedence").
fn s3_config(remote: &Remote, conf: &aws_config::SdkConfig) -> aws_sdk_s3::Config {
    use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
    let mut b = aws_sdk_s3::config::Builder::from(conf)
        .force_path_style(remote.path_style)
        .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3));
    if let Some(ep) = &remote.endpoint {
        b = b.endpoint_url(ep);
        if conf.request_checksum_calculation().is_none() {
            b = b.request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        }
        if conf.response_checksum_validation().is_none() {
            b = b.response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        }
    }
    b.build()
}

impl S3Store {
    /// A store for `env` in `remote`; `dir` is the local directory for the
    /// controller's own files.
    pub fn open(remote: &Remote, dir: &Path, env: &str) -> Result<S3Store, StateError> {
        let url = remote.url();
        let identity = match &remote.identity {
            Some(p) => Some(read_identity(p, &url, env)?),
            None => None,
        };
        let mut recipients = Vec::new();
        for r in &remote.recipients {
            let parsed =
                r.trim()
                    .parse::<age::x25519::Recipient>()
                    .map_err(|e| StateError::NoKey {
                        env: env.to_string(),
                        url: url.clone(),
                        need: format!("`{r}` is not an age X25519 recipient (age1...): {e}"),
                    })?;
            recipients.push(parsed);
        }
        if let Some(id) = &identity {
            let own = id.to_public();
            if !recipients.iter().any(|r| r.to_string() == own.to_string()) {
                recipients.push(own);
            }
        }
        let rt = runtime(&url)?;
        let client = block(&rt, &url, client(remote.clone()))?;
        Ok(S3Store {
            inner: Arc::new(Inner {
                rt,
                client,
                remote: remote.clone(),
                env: env.to_string(),
                dir: dir.to_path_buf(),
                base: Mutex::new(None),
                identity,
                recipients,
                conflicts: std::sync::atomic::AtomicU64::new(0),
                held_lock: Mutex::new(None),
                lost_to: Mutex::new(None),
            }),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many compare-and-swap races saves through this store lost and merged.
    pub fn conflicts(&self) -> u64 {
        self.inner
            .conflicts
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn env(&self) -> &str {
        &self.inner.env
    }

    fn state_key(&self) -> String {
        self.inner.remote.key(&format!("{}.json", self.inner.env))
    }

    fn lock_key(&self) -> String {
        self.inner.remote.key(&format!("{}.lock", self.inner.env))
    }

    /// `s3://BUCKET/PREFIX/ENV.json`.
    pub fn object_url(&self) -> String {
        format!("s3://{}/{}", self.inner.remote.bucket, self.state_key())
    }

    fn remote_err(&self, op: &'static str, message: String) -> StateError {
        StateError::Remote {
            url: self.object_url(),
            op,
            message,
        }
    }

    fn no_bucket(&self) -> StateError {
        no_bucket(&self.inner.remote)
    }

    /// GET an object: its body and ETag, or `None` when absent.
    fn get(&self, key: String) -> Result<Option<(Vec<u8>, String)>, StateError> {
        let client = self.inner.client.clone();
        let bucket = self.inner.remote.bucket.clone();
        let r = block(&self.inner.rt, &self.object_url(), async move {
            let out = match client.get_object().bucket(bucket).key(key).send().await {
                Ok(o) => o,
                Err(e) => return Err(fail(e)),
            };
            let etag = out.e_tag().unwrap_or_default().to_string();
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| Fail::Other(e.to_string()))?;
            Ok((body.into_bytes().to_vec(), etag))
        })?;
        match r {
            Ok(x) => Ok(Some(x)),
            Err(Fail::Missing) => Ok(None),
            Err(Fail::Condition) => Err(self.remote_err("GetObject", "precondition".into())),
            Err(Fail::NoBucket) => Err(self.no_bucket()),
            Err(Fail::Region(r)) => Err(wrong_region(&self.inner.remote, r)),
            Err(Fail::Other(m)) => Err(self.remote_err("GetObject", m)),
        }
    }

    /// Conditional PUT: `If-Match: etag`, or `If-None-Match: *` without one.
    fn put(
        &self,
        key: String,
        body: Vec<u8>,
        if_match: Option<String>,
    ) -> Result<Result<String, Fail>, StateError> {
        let client = self.inner.client.clone();
        let bucket = self.inner.remote.bucket.clone();
        block(&self.inner.rt, &self.object_url(), async move {
            let mut req = client
                .put_object()
                .bucket(bucket)
                .key(key)
                .content_type("application/json")
                .body(ByteStream::from(body));
            req = match if_match {
                Some(e) => req.if_match(e),
                None => req.if_none_match("*"),
            };
            match req.send().await {
                Ok(o) => Ok(o.e_tag().unwrap_or_default().to_string()),
                Err(e) => Err(fail(e)),
            }
        })
    }

    fn delete_key(
        &self,
        key: String,
        if_match: Option<String>,
    ) -> Result<Result<(), Fail>, StateError> {
        let client = self.inner.client.clone();
        let bucket = self.inner.remote.bucket.clone();
        block(&self.inner.rt, &self.object_url(), async move {
            let mut req = client.delete_object().bucket(bucket).key(key);
            if let Some(e) = if_match {
                req = req.if_match(e);
            }
            match req.send().await {
                Ok(_) => Ok(()),
                Err(e) => Err(fail(e)),
            }
        })
    }

    /// Parse an object into its envelope's public state and sealed secrets.
    fn parse(&self, bytes: &[u8]) -> Result<(State, Option<Sealed>), StateError> {
        let corrupt = |source| StateError::RemoteCorrupt {
            url: self.object_url(),
            source,
        };
        let env: Envelope = serde_json::from_slice(bytes).map_err(corrupt)?;
        if env.format != FORMAT {
            return Err(StateError::RemoteVersion {
                url: self.object_url(),
                found: env.format,
            });
        }
        let state: State = serde_json::from_value(env.state).map_err(corrupt)?;
        if state.version != STATE_VERSION {
            return Err(StateError::RemoteVersion {
                url: self.object_url(),
                found: state.version,
            });
        }
        Ok((state, env.secrets))
    }

    /// The full state and its ETag, or `None`.
    fn fetch(&self) -> Result<Option<(State, String)>, StateError> {
        let Some((bytes, etag)) = self.get(self.state_key())? else {
            return Ok(None);
        };
        let (mut state, sealed) = self.parse(&bytes)?;
        if let Some(s) = &sealed {
            let secrets = self.open_secrets(s)?;
            shared::restore_secrets(&mut state, &secrets);
        }
        Ok(Some((state, etag)))
    }

    fn to_value(&self, state: &State) -> Result<Value, StateError> {
        serde_json::to_value(state).map_err(|e| self.remote_err("encode", e.to_string()))
    }

    fn set_base(&self, base: Option<(Value, String)>) {
        let mut g = self
            .inner
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *g = base;
    }

    fn base(&self) -> Option<(Value, String)> {
        self.inner
            .base
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Load the state (secrets decrypted); it becomes the base of the next save.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        match self.fetch()? {
            Some((state, etag)) => {
                self.set_base(Some((self.to_value(&state)?, etag)));
                Ok(Some(state))
            }
            None => {
                self.set_base(None);
                Ok(None)
            }
        }
    }

    /// The state without its secrets; needs no key.
    pub fn load_public(&self) -> Result<Option<State>, StateError> {
        match self.get(self.state_key())? {
            Some((bytes, _)) => Ok(Some(self.parse(&bytes)?.0)),
            None => Ok(None),
        }
    }

    /// Compare-and-swap save (module header). On return `state` is what the object
    /// now holds: this writer's changes on top of any it raced with.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        state.serial += 1;
        let mut lost = self.lost_to();
        for attempt in 0..CAS_ATTEMPTS {
            if attempt > 0 {
                // Writers that keep colliding (S3's 409 for conditional writes in
                // flight at once) spread out instead of retrying in lockstep.
                std::thread::sleep(cas_backoff(attempt));
            }
            let mine = self.to_value(state)?;
            let (public, secrets) = shared::split_secrets(state);
            let body = serde_json::to_vec_pretty(&Envelope {
                format: FORMAT,
                state: self.to_value(&public)?,
                secrets: self.seal(&secrets)?,
            })
            .map_err(|e| self.remote_err("encode", e.to_string()))?;
            let base = self.base();
            match self.put(self.state_key(), body, base.as_ref().map(|b| b.1.clone()))? {
                Ok(etag) => {
                    self.set_base(Some((mine, etag)));
                    // Saved (merged, nothing lost); but a run whose lock was broken
                    // must not go on beside the run that took it over.
                    return match lost {
                        Some(holder) => Err(StateError::LockLost {
                            env: self.inner.env.clone(),
                            url: self.inner.remote.url(),
                            holder,
                        }),
                        None => Ok(()),
                    };
                }
                Err(Fail::Condition) => {
                    self.inner
                        .conflicts
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    // Under a lock nobody else writes: someone who did broke it.
                    if lost.is_none() {
                        lost = self.lock_taken_over()?;
                        self.set_lost_to(lost.clone());
                    }
                    let base_value =
                        base.map_or_else(|| Value::Object(Default::default()), |b| b.0);
                    let latest = self.fetch()?;
                    let Some((theirs, etag)) = latest else {
                        // Deleted meanwhile: write ours as the first version.
                        self.set_base(None);
                        continue;
                    };
                    let theirs_value = self.to_value(&theirs)?;
                    let merged = shared::merge(&base_value, &mine, &theirs_value);
                    let mut next: State = serde_json::from_value(merged).map_err(|source| {
                        StateError::RemoteCorrupt {
                            url: self.object_url(),
                            source,
                        }
                    })?;
                    next.serial = next.serial.max(theirs.serial + 1).max(state.serial);
                    tracing::debug!(
                        "{}: lost a compare-and-swap to serial {}; merged and retrying",
                        self.object_url(),
                        theirs.serial
                    );
                    *state = next;
                    self.set_base(Some((theirs_value, etag)));
                }
                Err(Fail::Missing) => {
                    // If-Match on an object deleted meanwhile.
                    self.set_base(None);
                }
                Err(Fail::NoBucket) => return Err(self.no_bucket()),
                Err(Fail::Region(r)) => return Err(wrong_region(&self.inner.remote, r)),
                Err(Fail::Other(m)) => return Err(self.remote_err("PutObject", m)),
            }
        }
        Err(StateError::Conflict {
            env: self.inner.env.clone(),
            url: self.object_url(),
            attempts: CAS_ATTEMPTS,
        })
    }

    /// Remove the state object and the local known_hosts (after `down`).
    pub fn delete(&self) -> Result<(), StateError> {
        self.remove_state()?;
        let kh = self
            .inner
            .dir
            .join(format!("{}.known_hosts", self.inner.env));
        match std::fs::remove_file(&kh) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write { path: kh, source }),
        }
    }

    /// Remove the state object only.
    pub fn remove_state(&self) -> Result<(), StateError> {
        match self.delete_key(self.state_key(), None)? {
            Ok(()) | Err(Fail::Missing) => {
                self.set_base(None);
                Ok(())
            }
            Err(Fail::Condition) => Err(self.remote_err("DeleteObject", "precondition".into())),
            Err(Fail::NoBucket) => Err(self.no_bucket()),
            Err(Fail::Region(r)) => Err(wrong_region(&self.inner.remote, r)),
            Err(Fail::Other(m)) => Err(self.remote_err("DeleteObject", m)),
        }
    }
}
