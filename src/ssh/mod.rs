//! SSH transport: one OpenSSH master connection per host (openssh crate, native-mux),
//! honouring ~/.ssh/config and the inventory's user, port, key and bastion (ProxyJump).
//!
//! Invariants:
//! - Host keys are verified against the environment's own known_hosts file (in the
//!   state directory): first contact pins the key (`accept-new`), a changed key is
//!   refused with `SshError::HostKeyChanged` and never retried.
//! - At most `CHANNELS_PER_HOST` commands run on one host at a time (sshd's
//!   MaxSessions is 10, sshd_config(5)).
//! - Secrets travel on stdin, never in a command line.
//! - Non-root users run privileged commands with `sudo -n`; no password prompt can hang.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, Semaphore};

use crate::recipe::Host;

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

/// Options common to every connection of one run.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub connect_attempts: u32,
    /// Hosts whose pinned key is dropped before connecting (deliberate re-key).
    pub replace_host_keys: Vec<String>,
}

/// Connections to the hosts of one environment.
pub struct Pool {
    opts: PoolOptions,
    control_dir: tempfile::TempDir,
    conns: Mutex<HashMap<String, Slot>>,
}

/// A host's connection, opened at most once at a time (the inner lock serialises
/// connection attempts to the same host).
type Slot = Arc<Mutex<Option<Arc<HostConn>>>>;

/// An open master connection to one host.
pub struct HostConn {
    name: String,
    address: String,
    session: Session,
    channels: Semaphore,
    sudo: bool,
    pub fingerprint: Option<String>,
}

impl Pool {
    pub fn new(opts: PoolOptions) -> std::io::Result<Pool> {
        // Control socket paths are limited to ~100 bytes: keep the directory short.
        let control_dir = tempfile::Builder::new().prefix("cnt").tempdir_in("/tmp")?;
        Ok(Pool {
            opts,
            control_dir,
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// The connection to `host`, opened (with retries) on first use.
    pub async fn get(&self, host: &Host) -> Result<Arc<HostConn>, SshError> {
        let slot = {
            let mut map = self.conns.lock().await;
            map.entry(host.name.clone()).or_default().clone()
        };
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.session.check().await.is_ok()
        {
            return Ok(c.clone());
        }
        let conn = Arc::new(self.connect(host).await?);
        *guard = Some(conn.clone());
        Ok(conn)
    }

    /// Forget a host's connection (after a reboot or a failure).
    pub async fn drop_conn(&self, host: &str) {
        let slot = self.conns.lock().await.remove(host);
        if let Some(slot) = slot
            && let Some(c) = slot.lock().await.take()
            && let Ok(c) = Arc::try_unwrap(c)
        {
            let _ = c.session.close().await;
        }
    }

    /// Close every master connection.
    pub async fn close(&self) {
        let slots: Vec<_> = self.conns.lock().await.drain().map(|(_, s)| s).collect();
        for slot in slots {
            if let Some(c) = slot.lock().await.take()
                && let Ok(c) = Arc::try_unwrap(c)
            {
                let _ = c.session.close().await;
            }
        }
    }

    fn known_hosts_name(host: &Host) -> String {
        if host.port == 22 {
            host.address.clone()
        } else {
            format!("[{}]:{}", host.address, host.port)
        }
    }

    async fn prepare_known_hosts(&self, host: &Host) -> Result<(), SshError> {
        let path = &self.opts.known_hosts;
        let kh_err = |detail: String| SshError::KnownHosts {
            path: path.clone(),
            detail,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| kh_err(e.to_string()))?;
        }
        let name = Self::known_hosts_name(host);
        if self.opts.replace_host_keys.iter().any(|h| h == &host.name) && path.exists() {
            let out = tokio::process::Command::new("ssh-keygen")
                .arg("-R")
                .arg(&name)
                .arg("-f")
                .arg(path)
                .output()
                .await
                .map_err(|e| kh_err(format!("ssh-keygen -R: {e}")))?;
            if !out.status.success() {
                return Err(kh_err(
                    String::from_utf8_lossy(&out.stderr).trim().to_string(),
                ));
            }
            let _ = std::fs::remove_file(path.with_extension("known_hosts.old"));
        }
        if let Some(pin) = &host.host_key {
            // Re-checked here too: a pin is written into a file every later connection
            // trusts, so it must be one parsed key (docs/reliability.md, "Input validation").
            let pin = crate::recipe::validators::normalize_host_key(pin)
                .map_err(|why| kh_err(format!("the host_key pinned for `{}`: {why}", host.name)))?;
            let line = format!("{name} {pin}\n");
            let current = std::fs::read_to_string(path).unwrap_or_default();
            if !current.lines().any(|l| l.trim() == line.trim()) {
                let mut f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| kh_err(e.to_string()))?;
                use std::io::Write;
                f.write_all(line.as_bytes())
                    .map_err(|e| kh_err(e.to_string()))?;
            }
        }
        Ok(())
    }

    /// The ssh_config for a connection through a bastion (one per host and run, in the
    /// run's private control directory): every ssh started for it, the jump included,
    /// pins host keys in the environment's known_hosts (`accept-new`) and refuses a
    /// changed one; the jump authenticates with the host's key file; the user's
    /// ~/.ssh/config follows for everything else. The system-wide /etc/ssh/ssh_config
    /// is not read (`-F` replaces it).
    fn jump_config(&self, host: &Host, bastion: &str) -> Result<PathBuf, SshError> {
        let path = self
            .control_dir
            .path()
            .join(format!("{}.ssh_config", host.name));
        let err = |detail: String| SshError::KnownHosts {
            path: path.clone(),
            detail,
        };
        // ssh_config values: double-quoted, %-tokens expanded (so `%` doubled).
        let word = |p: &Path| {
            p.to_str()
                .filter(|t| !t.contains(['"', '\n', '\r']))
                .map(|t| format!("\"{}\"", t.replace('%', "%%")))
                .ok_or_else(|| {
                    err(format!(
                        "{} cannot be written into an ssh_config",
                        p.display()
                    ))
                })
        };
        let mut text = String::from(
            "# Written by continuum: ssh through a bastion checks every host key, the bastion's\n\
             # included, against the environment's known_hosts (docs/reliability.md, \"Host trust\").\n",
        );
        if let Some(k) = &host.key {
            // The bastion's address as validated at load (`[user@]host[:port]`).
            let (name, _) = jump_host_port(bastion);
            text.push_str(&format!("Host {name}\n  IdentityFile {}\n", word(k)?));
        }
        text.push_str(&format!(
            "Host *\n  UserKnownHostsFile {}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  Include ~/.ssh/config\n",
            word(&self.opts.known_hosts)?
        ));
        std::fs::write(&path, text).map_err(|e| err(e.to_string()))?;
        Ok(path)
    }

    /// Whether the bastion now offers keys none of which is the one pinned for it
    /// (`ssh-keyscan`, read-only, straight to the bastion as the jump reaches it).
    /// Returns its known_hosts name when it changed; `None` when nothing is pinned yet,
    /// the bastion does not answer, or a pinned key is still offered.
    async fn bastion_key_changed(&self, bastion: &str) -> Option<String> {
        let name = jump_known_hosts_name(bastion);
        let keys = |text: &str| -> std::collections::BTreeSet<(String, String)> {
            text.lines()
                .filter(|l| !l.starts_with('#'))
                .filter_map(|l| {
                    let mut w = l.split_whitespace().skip(1);
                    Some((w.next()?.to_string(), w.next()?.to_string()))
                })
                .collect()
        };
        let pinned = tokio::process::Command::new("ssh-keygen")
            .arg("-F")
            .arg(&name)
            .arg("-f")
            .arg(&self.opts.known_hosts)
            .stderr(Stdio::null())
            .output()
            .await
            .ok()?;
        let pinned = keys(&String::from_utf8_lossy(&pinned.stdout));
        if pinned.is_empty() {
            return None;
        }
        let (h, port) = jump_host_port(bastion);
        let scan = tokio::process::Command::new("ssh-keyscan")
            .args(["-T", "5", "-p", port.unwrap_or("22"), "--", h])
            .stderr(Stdio::null())
            .output()
            .await
            .ok()?;
        let offered = keys(&String::from_utf8_lossy(&scan.stdout));
        let same_type = offered
            .iter()
            .any(|(t, _)| pinned.iter().any(|(p, _)| p == t));
        (same_type && offered.is_disjoint(&pinned)).then_some(name)
    }

    async fn pinned_fingerprint(&self, host: &Host) -> Option<String> {
        let out = tokio::process::Command::new("ssh-keygen")
            .arg("-l")
            .arg("-F")
            .arg(Self::known_hosts_name(host))
            .arg("-f")
            .arg(&self.opts.known_hosts)
            .stderr(Stdio::null())
            .output()
            .await
            .ok()?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .find(|w| w.starts_with("SHA256:"))
            .map(str::to_string)
    }

    async fn connect(&self, host: &Host) -> Result<HostConn, SshError> {
        self.prepare_known_hosts(host).await?;
        let mut b = SessionBuilder::default();
        b.port(host.port)
            .known_hosts_check(KnownHosts::Add)
            .user_known_hosts_file(&self.opts.known_hosts)
            .control_directory(self.control_dir.path())
            .connect_timeout(self.opts.connect_timeout)
            .server_alive_interval(Duration::from_secs(15))
            // If continuum dies, idle masters go away on their own.
            .control_persist(ControlPersist::IdleFor(
                std::num::NonZeroUsize::new(60).unwrap_or(std::num::NonZeroUsize::MIN),
            ));
        if let Some(u) = &host.user {
            b.user(u.clone());
        }
        if let Some(k) = &host.key {
            b.keyfile(k);
        }
        if let Some(j) = &host.bastion {
            // OpenSSH runs the jump as a second ssh that gets `-F` but none of the
            // `-o` options above, so the bastion's key would be checked against the
            // user's own known_hosts (or not at all). A config file of the
            // environment's makes the jump pin and verify it like any host's.
            b.config_file(self.jump_config(host, j)?);
            b.jump_hosts([j.as_str()]);
        }
        let dest = host.address.clone();
        let mut attempt = 0;
        let mut delay = Duration::from_millis(500);
        let session = loop {
            attempt += 1;
            match b.connect_mux(&dest).await {
                Ok(s) => break s,
                Err(e) => {
                    let detail = error_chain(&e);
                    if detail.contains("REMOTE HOST IDENTIFICATION HAS CHANGED")
                        || detail.contains("Host key verification failed")
                    {
                        if host.host_key.is_some() {
                            return Err(SshError::HostKeyMismatch {
                                host: host.name.clone(),
                                address: host.address.clone(),
                            });
                        }
                        return Err(SshError::HostKeyChanged {
                            host: host.name.clone(),
                            address: host.address.clone(),
                            pinned: self
                                .pinned_fingerprint(host)
                                .await
                                .unwrap_or_else(|| "unknown".into()),
                        });
                    }
                    // The jump's own complaints do not reach us (its stderr is not the
                    // master's log): when a connection through a bastion fails, compare
                    // the bastion's key with the pinned one before anything else.
                    if let Some(b) = &host.bastion
                        && let Some(name) = self.bastion_key_changed(b).await
                    {
                        return Err(SshError::BastionKeyChanged {
                            host: host.name.clone(),
                            bastion: b.clone(),
                            name,
                            known_hosts: self.opts.known_hosts.clone(),
                        });
                    }
                    let permanent = detail.contains("Permission denied")
                        || detail.contains("Could not resolve");
                    if permanent || attempt >= self.opts.connect_attempts {
                        return Err(SshError::Connect {
                            host: host.name.clone(),
                            address: host.address.clone(),
                            attempts: attempt,
                            detail: detail.trim().to_string(),
                        });
                    }
                    tracing::debug!(host = %host.name, attempt, "connect failed, retrying: {detail}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(8));
                }
            }
        };
        let fingerprint = self.pinned_fingerprint(host).await;
        let mut conn = HostConn {
            name: host.name.clone(),
            address: host.address.clone(),
            session,
            channels: Semaphore::new(CHANNELS_PER_HOST),
            sudo: false,
            fingerprint,
        };
        // Who are we there, and can we become root without a prompt?
        let who = conn
            .exec("id -u; if [ \"$(id -u)\" != 0 ]; then sudo -n true 2>/dev/null && echo sudo-ok || echo sudo-no; fi", None, Duration::from_secs(30))
            .await?;
        let mut lines = who.stdout.lines();
        let uid = lines.next().unwrap_or("").trim().to_string();
        if uid != "0" {
            if lines.next().map(str::trim) != Some("sudo-ok") {
                return Err(SshError::NoSudo {
                    host: host.name.clone(),
                    user: host.user.clone().unwrap_or_else(|| "(ssh default)".into()),
                });
            }
            conn.sudo = true;
        }
        Ok(conn)
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

impl HostConn {
    pub fn address(&self) -> &str {
        &self.address
    }

    async fn exec(
        &self,
        cmdline: &str,
        stdin: Option<&[u8]>,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let lost = |detail: String| SshError::Disconnected {
            host: self.name.clone(),
            what: short(cmdline),
            detail,
        };
        let _permit = self
            .channels
            .acquire()
            .await
            .map_err(|e| lost(e.to_string()))?;
        let disc = |e: openssh::Error| lost(error_chain(&e));
        let fut = async {
            let mut cmd = self.session.raw_command(cmdline);
            cmd.stdin(if stdin.is_some() {
                openssh::Stdio::piped()
            } else {
                openssh::Stdio::null()
            })
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
            let mut child = cmd.spawn().await.map_err(disc)?;
            if let (Some(data), Some(mut w)) = (stdin, child.stdin().take()) {
                w.write_all(data).await.map_err(|e| lost(e.to_string()))?;
                w.shutdown().await.ok();
                drop(w);
            }
            let out = child.wait_with_output().await.map_err(disc)?;
            Ok(Output {
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(SshError::Timeout {
                host: self.name.clone(),
                what: short(cmdline),
                secs: timeout.as_secs(),
            }),
        }
    }
}

fn short(cmd: &str) -> String {
    let first = cmd
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    if first.len() > 80 {
        format!("{}...", &first[..first.floor_char_boundary(80)])
    } else {
        first.to_string()
    }
}

impl Remote for HostConn {
    async fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        root: bool,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        let cmdline = if root && self.sudo {
            format!("sudo -n sh -c {}", quote(script))
        } else {
            format!("sh -c {}", quote(script))
        };
        tracing::debug!(host = %self.name, "run: {}", short(script));
        self.exec(&cmdline, stdin, timeout).await
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The host and port of a bastion given as `[user@]host[:port]` (validated at load;
/// an IPv6 host in brackets).
fn jump_host_port(spec: &str) -> (&str, Option<&str>) {
    let hp = spec.rsplit_once('@').map_or(spec, |(_, h)| h);
    if let Some(rest) = hp.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (rest, None),
        }
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    }
}

/// How known_hosts names a bastion given as `[user@]host[:port]`.
fn jump_known_hosts_name(spec: &str) -> String {
    let (h, port) = jump_host_port(spec);
    match port {
        Some(p) if p != "22" => format!("[{h}]:{p}"),
        _ => h.to_string(),
    }
}

/// The known_hosts line name of a host (exposed for tests and status).
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

    #[test]
    fn bastions_are_named_as_known_hosts_names_them() {
        assert_eq!(
            jump_known_hosts_name("ops@10.250.0.71:2222"),
            "[10.250.0.71]:2222"
        );
        assert_eq!(jump_known_hosts_name("gw.example.org"), "gw.example.org");
        assert_eq!(jump_known_hosts_name("root@10.0.0.1:22"), "10.0.0.1");
        assert_eq!(jump_known_hosts_name("[fd00::1]:2200"), "[fd00::1]:2200");
    }
}
