//! SSH transport: one OpenSSH master connection per host (openssh crate, native-mux),
//! honouring ~/.ssh/config and the inventory's user, port, key and bastion (ProxyJump).
//!
//! Invariants:
//! - Host keys are verified against the environment's own known_hosts file (in the
//!   state directory): first contact pins the key (`accept-new`), a changed key is
//!   refused with `SshError::HostKeyChanged` and never retried. A first contact whose
//!   key is not the fingerprint the environment's state recorded for that address
//!   (`PoolOptions::recorded`) is refused the same way, before any command runs, and
//!   its key is not kept.
//! - At most `CHANNELS_PER_HOST` commands run on one host at a time (sshd's
//!   MaxSessions is 10, sshd_config(5)).
//! - Secrets travel on stdin, never in a command line.
//! - Non-root users run privileged commands with `sudo -n`; no password prompt can hang.
//!
//! This file holds the interface (`Remote`, `Output`, `SshError`, `quote`); the
//! connections are `pool`'s, host trust `known_hosts`'s; `scripted` is a test double
//! of `Remote` for unit tests.

pub mod firstcontact;
mod known_hosts;
mod pool;
#[cfg(test)]
pub mod scripted;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use known_hosts::entry_name as known_hosts_name;
pub use pool::{HostConn, Pool, PoolOptions};

/// Commands that may run at once on one host.
pub const CHANNELS_PER_HOST: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum SshError {
    #[error(
        "host key of `{host}` ({address}) has CHANGED since it was pinned ({pinned}); refusing to connect.\n  If the host was reinstalled on purpose, re-run with `--replace-host-key {host}`; otherwise treat this as a possible man-in-the-middle"
    )]
    HostKeyChanged {
        host: String,
        address: String,
        pinned: String,
    },
    #[error(
        "host key of `{host}` ({address}) does not match the `host_key` pinned in the inventory"
    )]
    HostKeyMismatch { host: String, address: String },
    #[error(
        "host key of the bastion `{bastion}` (the way to `{host}`) has CHANGED since it was pinned; refusing to connect.\n  If the bastion was reinstalled on purpose, drop its old key with `ssh-keygen -R '{name}' -f {known_hosts}`; otherwise treat this as a possible man-in-the-middle"
    )]
    BastionKeyChanged {
        host: String,
        bastion: String,
        /// The bastion as known_hosts names it (`host` or `[host]:port`).
        name: String,
        known_hosts: PathBuf,
    },
    #[error("cannot connect to `{host}` ({address}) after {attempts} attempt(s): {detail}")]
    Connect {
        host: String,
        address: String,
        attempts: u32,
        detail: String,
    },
    #[error(
        "user `{user}` on `{host}` cannot run sudo without a password; continuum needs `{user} ALL=(ALL) NOPASSWD: ALL` in /etc/sudoers.d/ (or connect as root)"
    )]
    NoSudo { host: String, user: String },
    #[error("lost the connection to `{host}` while running `{what}`: {detail}")]
    Disconnected {
        host: String,
        what: String,
        detail: String,
    },
    #[error("`{what}` on `{host}` did not finish within {secs} s")]
    Timeout {
        host: String,
        what: String,
        secs: u64,
    },
    #[error("cannot manage known_hosts {path}: {detail}")]
    KnownHosts { path: PathBuf, detail: String },
}

/// What a remote command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == Some(0)
    }
    /// Last lines of stderr (or stdout) for error messages.
    pub fn tail(&self) -> String {
        let src = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = src.trim().lines().collect();
        lines[lines.len().saturating_sub(6)..].join("\n")
    }
}

/// Quote a string for a POSIX shell.
pub fn quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The capability the k3s layer needs from a host: run shell, privileged or not.
pub trait Remote: Send + Sync {
    /// Run `script` with `sh -c` (as root when `root`), feeding `stdin`.
    fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        root: bool,
        timeout: Duration,
    ) -> impl std::future::Future<Output = Result<Output, SshError>> + Send;
    fn name(&self) -> &str;
}

/// The environment's own known_hosts file in the state directory.
pub fn known_hosts_path(state_dir: &Path, env: &str) -> PathBuf {
    state_dir.join(format!("{env}.known_hosts"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(quote("abc"), "abc");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
        assert_eq!(quote(""), "''");
    }
}
