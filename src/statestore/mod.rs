//! Where an environment's state lives: the local state directory (`files::Store`,
//! unchanged) or an S3 bucket shared by a team (`s3`, with the `aws` feature).
//! `Store` is the one handle the operations hold; it dispatches to either backend
//! and keeps their contract: a lock naming its holder, loads that see a
//! complete state, saves that never lose another writer's update (docs/state.md).
//!
//! Files that belong to one controller (known_hosts, the AWS site's SSH key, the
//! endpoint catalog) stay in the local state directory whichever backend holds the
//! state, so `Store::dir` is always that directory.

#[cfg(feature = "aws")]
pub mod s3;

use std::path::{Path, PathBuf};

use crate::files::{self, StateError};
use crate::state::State;
use crate::state::shared::LockRecord;

/// An S3 (or S3-compatible) location for state, with how to reach it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Remote {
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
    /// Endpoint override (MinIO, moto); `None`: the SDK's (AWS_ENDPOINT_URL_S3 too).
    pub endpoint: Option<String>,
    /// Path-style addressing (`ENDPOINT/BUCKET/KEY`), which MinIO and moto need.
    pub path_style: bool,
    /// Region of the bucket; `None`: AWS_REGION, else us-east-1.
    pub region: Option<String>,
    /// age identity file (`AGE-SECRET-KEY-1...`) that decrypts the secrets.
    pub identity: Option<PathBuf>,
    /// More age recipients (`age1...`) the secrets are encrypted to, besides the
    /// identity's own.
    pub recipients: Vec<String>,
    /// The command recorded in the lock (`up`, `down`, ...).
    pub command: String,
    /// Access key id and secret for tools and tests; `None` (the CLI): the standard
    /// AWS credential chain.
    pub static_credentials: Option<(String, crate::state::Secret)>,
}

impl Remote {
    /// Parse `s3://BUCKET[/PREFIX]`.
    pub fn parse(url: &str) -> Result<Remote, StateError> {
        let (bucket, prefix) =
            crate::recipe::validators::s3_url(url).map_err(|reason| StateError::BadUrl {
                url: url.to_string(),
                reason,
            })?;
        Ok(Remote {
            bucket,
            prefix,
            command: "continuum".to_string(),
            ..Remote::default()
        })
    }

    /// The location a recipe's `state:` names.
    pub fn from_site(site: &crate::recipe::StateSite) -> Remote {
        Remote {
            bucket: site.bucket.clone(),
            prefix: site.prefix.clone(),
            endpoint: site.endpoint.clone(),
            path_style: site.path_style.unwrap_or(site.endpoint.is_some()),
            region: site.region.clone(),
            command: "continuum".to_string(),
            ..Remote::default()
        }
    }

    /// The location as a recipe's `state:` would give it (for `files::remote_note`).
    pub fn site(&self) -> crate::recipe::StateSite {
        crate::recipe::StateSite {
            url: self.url(),
            bucket: self.bucket.clone(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone(),
            path_style: Some(self.path_style),
            region: self.region.clone(),
        }
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn url(&self) -> String {
        if self.prefix.is_empty() {
            format!("s3://{}", self.bucket)
        } else {
            format!("s3://{}/{}", self.bucket, self.prefix)
        }
    }

    /// The object key of `NAME` under the prefix.
    pub fn key(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}/{name}", self.prefix)
        }
    }
}

/// Where state is: a local directory or S3.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Dir(PathBuf),
    S3(Remote),
}

impl Location {
    /// `s3://...` is S3; anything else is a local directory.
    pub fn parse(text: &str) -> Result<Location, StateError> {
        if text.starts_with("s3://") {
            Remote::parse(text).map(Location::S3)
        } else if text.contains("://") {
            Err(StateError::BadUrl {
                url: text.to_string(),
                reason: "only s3:// and local directories hold state".to_string(),
            })
        } else {
            Ok(Location::Dir(files::absolute(Path::new(text))))
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Location::Dir(d) => d.display().to_string(),
            Location::S3(r) => r.url(),
        }
    }
}

/// One environment's state, wherever it lives.
#[derive(Debug, Clone)]
pub enum Store {
    Local(files::Store),
    #[cfg(feature = "aws")]
    S3(s3::S3Store),
}

/// The environment's lock; released on drop (the S3 lock object is deleted, on the
/// condition that it is still the one this run created).
#[derive(Debug)]
pub enum Lock {
    Local(files::Lock),
    #[cfg(feature = "aws")]
    S3(s3::S3Lock),
}

/// Who holds an environment's lock, as `state unlock` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Holder {
    pub env: String,
    pub location: String,
    /// `None`: not locked.
    pub record: Option<LockRecord>,
    /// For a local lock: the PID in the lock file.
    pub pid: Option<String>,
    /// Whether this call broke the lock.
    pub broken: bool,
}

impl Store {
    /// The store of `env`: in `remote` when given, else in `dir` (which holds the
    /// controller's own files in both cases).
    pub fn open(dir: &Path, remote: Option<&Remote>, env: &str) -> Result<Store, StateError> {
        match remote {
            None => Ok(Store::Local(files::Store::new(dir, env))),
            #[cfg(feature = "aws")]
            Some(r) => s3::S3Store::open(r, dir, env).map(Store::S3),
            #[cfg(not(feature = "aws"))]
            Some(r) => Err(StateError::Unsupported { url: r.url() }),
        }
    }

    /// Open at a location (`state migrate`): a directory is its own files directory.
    pub fn at(loc: &Location, files_dir: &Path, env: &str) -> Result<Store, StateError> {
        match loc {
            Location::Dir(d) => Store::open(d, None, env),
            Location::S3(r) => Store::open(files_dir, Some(r), env),
        }
    }

    /// The local state directory (known_hosts, SSH keys, endpoint catalog).
    pub fn dir(&self) -> &Path {
        match self {
            Store::Local(s) => s.dir(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.dir(),
        }
    }

    /// Compare-and-swap races lost and merged by saves through this handle (always 0
    /// for the local store, whose lock excludes them).
    pub fn conflicts(&self) -> u64 {
        match self {
            Store::Local(_) => 0,
            #[cfg(feature = "aws")]
            Store::S3(s) => s.conflicts(),
        }
    }

    /// Where the state is: the file's path or the object's URL.
    pub fn location(&self) -> String {
        match self {
            Store::Local(s) => s.path().display().to_string(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.object_url(),
        }
    }

    pub fn lock(&self) -> Result<Lock, StateError> {
        match self {
            Store::Local(s) => s.lock().map(Lock::Local),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.lock().map(Lock::S3),
        }
    }

    /// Load the state; `Ok(None)` when the environment has none yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        match self {
            Store::Local(s) => s.load(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.load(),
        }
    }

    /// The state without its secrets (which an S3 store can show without the key).
    pub fn load_public(&self) -> Result<Option<State>, StateError> {
        match self {
            Store::Local(s) => Ok(s
                .load()?
                .map(|st| crate::state::shared::split_secrets(&st).0)),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.load_public(),
        }
    }

    pub fn load_existing(&self) -> Result<State, StateError> {
        match self {
            Store::Local(s) => s.load_existing(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.load()?.ok_or_else(|| StateError::NotFoundAt {
                env: s.env().to_string(),
                url: s.object_url(),
            }),
        }
    }

    /// Save and bump the serial. An S3 store that finds a newer object merges this
    /// writer's changes onto it and leaves the merged state in `state`.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        match self {
            Store::Local(s) => s.save(state),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.save(state),
        }
    }

    /// Remove the state and the local known_hosts (after a successful `down`).
    pub fn delete(&self) -> Result<(), StateError> {
        match self {
            Store::Local(s) => s.delete(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.delete(),
        }
    }

    /// Remove only the state (the source of a finished migration).
    pub fn remove_state(&self) -> Result<(), StateError> {
        match self {
            Store::Local(s) => s.remove_state(),
            #[cfg(feature = "aws")]
            Store::S3(s) => s.remove_state(),
        }
    }

    /// Who holds the lock; with `force`, break it (S3 only: a local lock frees itself
    /// when its process dies).
    pub fn holder(&self, force: bool) -> Result<Holder, StateError> {
        #[cfg(not(feature = "aws"))]
        let _ = force;
        match self {
            Store::Local(s) => {
                let pid = match s.lock() {
                    Ok(_free) => None,
                    Err(StateError::Locked { pid, .. }) => Some(pid),
                    Err(e) => return Err(e),
                };
                Ok(Holder {
                    env: s.env().to_string(),
                    location: s.path().display().to_string(),
                    record: None,
                    pid,
                    broken: false,
                })
            }
            #[cfg(feature = "aws")]
            Store::S3(s) => s.holder(force),
        }
    }
}

/// Names of the environments with state at `dir` or `remote`.
pub fn list(dir: &Path, remote: Option<&Remote>) -> Result<Vec<String>, StateError> {
    match remote {
        None => files::Store::list(dir),
        #[cfg(feature = "aws")]
        Some(r) => s3::list(r),
        #[cfg(not(feature = "aws"))]
        Some(r) => Err(StateError::Unsupported { url: r.url() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Built with `--no-default-features`, an S3 location is a typed error naming it.
    #[cfg(not(feature = "aws"))]
    #[test]
    fn s3_without_the_aws_feature_is_a_typed_error() {
        let r = Remote::parse("s3://team-state/x").expect("url");
        let err = Store::open(Path::new("/nonexistent"), Some(&r), "farm").expect_err("no S3");
        assert!(matches!(&err, StateError::Unsupported { url } if url == "s3://team-state/x"));
        assert!(err.to_string().contains("`aws`"), "{err}");
    }

    #[test]
    fn s3_urls() {
        let r = Remote::parse("s3://team-state/continuum/prod/").expect("url");
        assert_eq!(r.bucket, "team-state");
        assert_eq!(r.prefix, "continuum/prod");
        assert_eq!(r.key("farm.json"), "continuum/prod/farm.json");
        assert_eq!(r.url(), "s3://team-state/continuum/prod");
        let bare = Remote::parse("s3://team-state").expect("url");
        assert_eq!(bare.key("farm.lock"), "farm.lock");
        for bad in [
            "s3://",
            "s3://AB",
            "s3://-bucket/x",
            "s3://bucket/a/../b",
            "s3://bucket/a//b",
            "gs://bucket/x",
        ] {
            assert!(
                matches!(Location::parse(bad), Err(StateError::BadUrl { .. })),
                "{bad}"
            );
        }
        assert!(matches!(
            Location::parse("relative/dir"),
            Ok(Location::Dir(d)) if d.is_absolute()
        ));
    }
}
