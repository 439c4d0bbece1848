//! The state store: one JSON file per environment in the state directory, written
//! atomically (temp file + fsync + rename + directory fsync) with mode 0600, guarded by
//! an exclusive lock file that names the holder's PID; atomic writes of every other
//! file continuum owns (`write_atomic`).
//!
//! Invariants: a reader never sees a half-written file; a crash at any point leaves
//! either the previous or the next complete state; secrets live only here (0600) and in
//! the hosts' 0600 config files.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::state::{STATE_VERSION, State};

/// How long `Store::lock` waits for a lock that this very process still seems to hold
/// (see there).
const SELF_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot access state directory {path}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read state file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("state file {path} is corrupt")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("state file {path} has version {found}; this continuum understands {STATE_VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("cannot write state file {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "environment `{env}` is locked by another continuum process (pid {pid}); wait for it to finish, or remove {lock} if that process is gone"
    )]
    Locked {
        env: String,
        pid: String,
        lock: PathBuf,
    },
    #[error(
        "no state for environment `{env}` in {dir} (if it is kept in S3, give its location with --state s3://BUCKET/PREFIX)"
    )]
    NotFound { env: String, dir: PathBuf },
    #[error("no state for environment `{env}` at {url}")]
    NotFoundAt { env: String, url: String },
    #[error("invalid state location `{url}`: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "state location {url} needs the S3 backend, which this continuum was built without (cargo feature `aws`)"
    )]
    Unsupported { url: String },
    #[error("S3 {op} of {url} failed: {message}")]
    Remote {
        url: String,
        op: &'static str,
        message: String,
    },
    #[error(
        "S3 bucket `{bucket}` for state at {url} does not exist at {endpoint} (or is not visible with these credentials and region); create it, or fix --state"
    )]
    NoBucket {
        bucket: String,
        url: String,
        endpoint: String,
    },
    #[error("S3 bucket `{bucket}` for state at {url} is not in region {used}; {hint}")]
    BucketRegion {
        bucket: String,
        url: String,
        used: String,
        hint: String,
    },
    #[error("state object {url} is corrupt")]
    RemoteCorrupt {
        url: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("state object {url} has version {found}; this continuum understands {STATE_VERSION}")]
    RemoteVersion { url: String, found: u32 },
    #[error(
        "environment `{env}` is locked in {url} by {holder}; wait for it to finish, or if that run is gone, break the lock with `{unlock}`"
    )]
    RemoteLocked {
        env: String,
        url: String,
        holder: String,
        unlock: String,
    },
    #[error(
        "environment `{env}` in {url}: this run's lock was broken and is now held by {holder}; the last change was saved (merged), and this run stops so that two runs do not work on one environment"
    )]
    LockLost {
        env: String,
        url: String,
        holder: String,
    },
    #[error(
        "environment `{env}` in {url}: the state object kept changing under this writer ({attempts} compare-and-swap attempts); nothing was overwritten, try again"
    )]
    Conflict {
        env: String,
        url: String,
        attempts: u32,
    },
    #[error("environment `{env}` in {url}: {need} (docs/state.md, \"Secrets\")")]
    NoKey {
        env: String,
        url: String,
        need: String,
    },
    #[error("environment `{env}` in {url}: cannot {op} its secrets: {message}")]
    Crypto {
        env: String,
        url: String,
        op: &'static str,
        message: String,
    },
    #[error("cannot migrate environment `{env}`: {reason}")]
    Migrate { env: String, reason: String },
}

/// The state directory: `--state-dir`, else `$XDG_STATE_HOME/continuum`, else
/// `~/.local/state/continuum`.
pub fn default_dir() -> PathBuf {
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."))
        .join("continuum")
}

/// Handle to one environment's files under the state directory.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    env: String,
}

/// Exclusive lock on an environment; released on drop.
#[derive(Debug)]
pub struct Lock {
    _file: File,
    path: PathBuf,
}

impl Lock {
    /// The lock file (kept between runs: removing it could let two processes lock
    /// different inodes of the same name).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store {
    pub fn new(dir: &Path, env: &str) -> Self {
        Store {
            dir: dir.to_path_buf(),
            env: env.to_string(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn env(&self) -> &str {
        &self.env
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.env))
    }

    /// known_hosts file holding the host keys pinned for this environment.
    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join(format!("{}.known_hosts", self.env))
    }

    fn ensure_dir(&self) -> Result<(), StateError> {
        let err = |source| StateError::Dir {
            path: self.dir.clone(),
            source,
        };
        fs::create_dir_all(&self.dir).map_err(err)?;
        fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700)).map_err(err)
    }

    /// Take the exclusive lock for this environment or fail naming the holder.
    pub fn lock(&self) -> Result<Lock, StateError> {
        self.ensure_dir()?;
        let path = self.dir.join(format!("{}.lock", self.env));
        let err = |source| StateError::Write {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(err)?;
        // A lock this process released a moment ago can still be held by a child that
        // another thread forked before the release and that has not exec'd yet (the
        // forked descriptor shares the lock until exec closes it): when the holder is
        // this very process, wait a little before calling it locked.
        let own = std::process::id().to_string();
        let mut waited = std::time::Duration::ZERO;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = Self::holder(&mut file);
                    if holder != own || waited >= SELF_LOCK_WAIT {
                        return Err(StateError::Locked {
                            env: self.env.clone(),
                            pid: if holder.is_empty() {
                                "unknown".into()
                            } else {
                                holder
                            },
                            lock: path.clone(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    waited += std::time::Duration::from_millis(10);
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
            }
        }
        file.set_len(0).map_err(err)?;
        file.rewind().map_err(err)?;
        write!(file, "{}", std::process::id()).map_err(err)?;
        file.flush().map_err(err)?;
        Ok(Lock { _file: file, path })
    }

    /// The PID the lock file names (empty when unreadable).
    fn holder(file: &mut File) -> String {
        let mut pid = String::new();
        let _ = file.rewind();
        let _ = file.read_to_string(&mut pid);
        pid.trim().to_string()
    }

    pub fn exists(&self) -> bool {
        self.path().exists()
    }

    /// Load the state; `Ok(None)` when the environment has none yet.
    pub fn load(&self) -> Result<Option<State>, StateError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Read { path, source }),
        };
        let state: State = serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        if state.version != STATE_VERSION {
            return Err(StateError::Version {
                path,
                found: state.version,
            });
        }
        Ok(Some(state))
    }

    pub fn load_existing(&self) -> Result<State, StateError> {
        self.load()?.ok_or_else(|| StateError::NotFound {
            env: self.env.clone(),
            dir: self.dir.clone(),
        })
    }

    /// Atomically replace the state file (mode 0600) and bump the serial.
    pub fn save(&self, state: &mut State) -> Result<(), StateError> {
        self.ensure_dir()?;
        state.serial += 1;
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| StateError::Write {
            path: self.path(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path(), &bytes, 0o600).map_err(|source| StateError::Write {
            path: self.path(),
            source,
        })
    }

    /// Remove the state, its known_hosts and lock (after a successful `down`).
    pub fn delete(&self) -> Result<(), StateError> {
        for p in [self.path(), self.known_hosts()] {
            match fs::remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => return Err(StateError::Write { path: p, source }),
            }
        }
        Ok(())
    }

    /// Remove only the state file (the source of a finished `state migrate`).
    pub fn remove_state(&self) -> Result<(), StateError> {
        match fs::remove_file(self.path()) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Write {
                path: self.path(),
                source,
            }),
        }
    }

    /// Names of the environments that have a state file.
    pub fn list(dir: &Path) -> Result<Vec<String>, StateError> {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(StateError::Dir {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        };
        let mut out: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                // Only environments' state files: not the endpoint catalog, not the
                // notes of remote state (`ENV.remote.json`), not temp files.
                name.strip_suffix(".json")
                    .filter(|n| crate::recipe::check::common::is_env_name(n))
                    .map(str::to_string)
            })
            .collect();
        out.sort();
        Ok(out)
    }
}

/// Write `bytes` to `path` atomically with `mode`: temp file in the same directory,
/// fsync, rename over the target, fsync the directory. A bare file name (`inv.yaml`)
/// is written in the current directory.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(".continuum-")
        .permissions(fs::Permissions::from_mode(mode))
        .tempfile_in(dir)?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// The directory a file lives in: `.` for a bare name (whose `parent()` is empty).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// An absolute form of a user-given path (without resolving links), so that what is
/// recorded in state still names the same file from another working directory.
pub fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Secret;

    #[test]
    fn bare_names_live_in_the_current_directory() {
        assert_eq!(parent_dir(Path::new("inv.yaml")), Path::new("."));
        assert_eq!(parent_dir(Path::new("./inv.yaml")), Path::new("."));
        assert_eq!(parent_dir(Path::new("a/inv.yaml")), Path::new("a"));
        assert_eq!(parent_dir(Path::new("/inv.yaml")), Path::new("/"));
        assert!(absolute(Path::new("inv.yaml")).is_absolute());
    }

    #[test]
    fn list_names_environments_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        for f in [
            "farm.json",
            "edge-2.json",
            "endpoints.json",
            "farm.remote.json",
            ".continuum-x1.json",
            "farm.known_hosts",
            "farm.lock",
        ] {
            fs::write(dir.path().join(f), "{}").expect("write");
        }
        assert_eq!(Store::list(dir.path()).expect("list"), ["edge-2", "farm"]);
    }

    #[test]
    fn save_load_roundtrip_with_private_mode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(&dir.path().join("s"), "farm");
        let mut st = State::new("farm");
        st.cluster.token = Secret::new("abc");
        store.save(&mut st).expect("save");
        let back = store.load().expect("load").expect("present");
        assert_eq!(back, st);
        let mode = fs::metadata(store.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = fs::metadata(store.dir())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        assert_eq!(format!("{:?}", st.cluster.token), "Secret(***)");
    }

    #[test]
    fn second_lock_is_refused_with_pid() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), "farm");
        let _held = store.lock().expect("first lock");
        let err = store.lock().expect_err("second lock must fail");
        let msg = err.to_string();
        assert!(msg.contains(&std::process::id().to_string()), "{msg}");
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::new(dir.path(), "farm");
        fs::write(store.path(), "{ not json").expect("write");
        assert!(matches!(store.load(), Err(StateError::Corrupt { .. })));
    }
}
