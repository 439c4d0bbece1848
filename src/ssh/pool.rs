//! The connection pool: one OpenSSH master connection per host (openssh crate,
//! native-mux), opened on first use with retries and backoff, checked for root or
//! passwordless sudo; commands on it share `CHANNELS_PER_HOST` channels and a timeout.
//! Host trust (known_hosts, bastions) is `known_hosts`'s.
//!
//! At most `PoolOptions::max_open` masters stay open: before opening one more, the
//! pool closes the least recently used connections that no step holds. A fleet of
//! hundreds of hosts thus costs the controller a bounded number of ssh processes, not
//! one per host; a host whose connection was closed is connected again when a later
//! step needs it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::io::AsyncWriteExt;
use tokio::sync::{Mutex, Semaphore};

use super::{CHANNELS_PER_HOST, Output, Remote, SshError, known_hosts, quote};
use crate::recipe::Host;

/// Options common to every connection of one run.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub known_hosts: PathBuf,
    pub connect_timeout: Duration,
    pub connect_attempts: u32,
    /// Hosts whose pinned key is dropped before connecting (deliberate re-key).
    pub replace_host_keys: Vec<String>,
    /// Master connections kept open at most (idle ones beyond it are closed).
    pub max_open: usize,
    /// Host-key fingerprints the environment's state recorded, by known_hosts name
    /// (`address` or `[address]:port`). A controller whose own known_hosts has no
    /// entry yet (another checkout, a shared state) still refuses a host whose key is
    /// not the recorded one.
    pub recorded: BTreeMap<String, String>,
}

/// Connections to the hosts of one environment.
pub struct Pool {
    opts: PoolOptions,
    control_dir: tempfile::TempDir,
    conns: Mutex<HashMap<String, Slot>>,
    /// Host names, least recently used first.
    recent: Mutex<VecDeque<String>>,
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
            recent: Mutex::new(VecDeque::new()),
        })
    }

    /// Mark `host` as the most recently used.
    async fn touch(&self, host: &str) {
        let mut recent = self.recent.lock().await;
        if let Some(i) = recent.iter().position(|h| h == host) {
            recent.remove(i);
        }
        recent.push_back(host.to_string());
    }

    /// Close least recently used idle connections until fewer than `max_open` are
    /// open (a connection a step holds, or a slot being connected, is left alone).
    async fn make_room(&self, except: &str) {
        let slots: Vec<(String, Slot)> = {
            let map = self.conns.lock().await;
            let recent = self.recent.lock().await;
            recent
                .iter()
                .filter(|h| h.as_str() != except)
                .filter_map(|h| map.get(h).map(|s| (h.clone(), s.clone())))
                .collect()
        };
        let mut open = slots
            .iter()
            .filter(|(_, s)| s.try_lock().map_or(true, |g| g.is_some()))
            .count();
        for (host, slot) in slots {
            if open < self.opts.max_open.max(1) {
                break;
            }
            let Ok(mut guard) = slot.try_lock() else {
                continue;
            };
            let idle = guard.as_ref().is_some_and(|c| Arc::strong_count(c) == 1);
            if !idle {
                continue;
            }
            if let Some(c) = guard.take()
                && let Ok(c) = Arc::try_unwrap(c)
            {
                tracing::debug!(host = %host, "closing an idle connection (pool at its limit)");
                let _ = c.session.close().await;
                open -= 1;
            }
        }
    }

    /// The connection to `host`, opened (with retries) on first use.
    pub async fn get(&self, host: &Host) -> Result<Arc<HostConn>, SshError> {
        let slot = {
            let mut map = self.conns.lock().await;
            map.entry(host.name.clone()).or_default().clone()
        };
        self.touch(&host.name).await;
        let mut guard = slot.lock().await;
        if let Some(c) = guard.as_ref()
            && c.session.check().await.is_ok()
        {
            return Ok(c.clone());
        }
        self.make_room(&host.name).await;
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

    async fn connect(&self, host: &Host) -> Result<HostConn, SshError> {
        let replace = self.opts.replace_host_keys.iter().any(|h| h == &host.name);
        known_hosts::prepare(&self.opts.known_hosts, host, replace).await?;
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
            b.config_file(known_hosts::jump_config(
                self.control_dir.path(),
                &self.opts.known_hosts,
                host,
                j,
            )?);
            b.jump_hosts([j.as_str()]);
        }
        // The key state recorded for this address, unless it is being replaced.
        let recorded = self
            .opts
            .recorded
            .get(&known_hosts::name(host))
            .filter(|_| !replace);
        let pinned_before = match recorded {
            Some(_) => known_hosts::pinned_fingerprint(&self.opts.known_hosts, host).await,
            None => None,
        };
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
                            pinned: known_hosts::pinned_fingerprint(&self.opts.known_hosts, host)
                                .await
                                .unwrap_or_else(|| "unknown".into()),
                        });
                    }
                    // The jump's own complaints do not reach us (its stderr is not the
                    // master's log): when a connection through a bastion fails, compare
                    // the bastion's key with the pinned one before anything else.
                    if let Some(b) = &host.bastion
                        && let Some(name) =
                            known_hosts::bastion_key_changed(&self.opts.known_hosts, b).await
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
        // A key pinned before the connection is the one it was verified against; only
        // a first contact (`accept-new` just wrote it) needs the file read again.
        let fingerprint = match &pinned_before {
            Some(fp) => Some(fp.clone()),
            None => known_hosts::pinned_fingerprint(&self.opts.known_hosts, host).await,
        };
        if let Some(expected) = recorded
            && fingerprint.as_deref() != Some(expected.as_str())
        {
            // The key was accepted only because this controller's known_hosts had none
            // for the address: close before any command runs, and take back the pin
            // `accept-new` just wrote so that no later connection trusts it.
            let _ = session.close().await;
            if pinned_before.is_none() {
                known_hosts::forget(&self.opts.known_hosts, host).await?;
            }
            return Err(SshError::HostKeyChanged {
                host: host.name.clone(),
                address: host.address.clone(),
                pinned: format!("{expected}, recorded in the environment's state"),
            });
        }
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
