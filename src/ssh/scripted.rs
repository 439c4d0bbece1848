//! A test double of `Remote` (compiled for unit tests only): a host that answers from
//! a list of rules instead of running anything, and records every call.
//!
//! ```ignore
//! let host = Scripted::new("pi-01")
//!     .on("k3s --version", ok("k3s version v1.31.4+k3s1"))
//!     .once("/readyz", exit(1, "the server is restarting"))
//!     .on("/readyz", ok("ok"));
//! ```
//!
//! Rules are tried in the order given; the first whose pattern (a substring of the
//! script, or a predicate) matches answers. A `once` rule is used up by its match, so
//! a `once` before an `on` of the same pattern answers differently the first time. A
//! script no rule matches is an error naming it (`SshError::Disconnected` whose `what`
//! starts with `unexpected script`), printed to stderr, recorded like any call and
//! listed by `unexpected()`.

use std::sync::Mutex;
use std::time::Duration;

use super::{Output, Remote, SshError};

/// What a rule answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// The script ran and ended so.
    Output(Output),
    /// The host cannot be reached (`SshError::Connect`).
    Unreachable,
    /// The connection broke during the script (`SshError::Disconnected`).
    Disconnected,
    /// The script did not finish in time (`SshError::Timeout`).
    TimedOut,
}

/// Exit 0 with `stdout`.
pub fn ok(stdout: &str) -> Reply {
    Reply::Output(Output {
        status: Some(0),
        stdout: stdout.to_string(),
        stderr: String::new(),
    })
}

/// Exit `code` with `stderr`.
pub fn exit(code: i32, stderr: &str) -> Reply {
    Reply::Output(Output {
        status: Some(code),
        stdout: String::new(),
        stderr: stderr.to_string(),
    })
}

/// One `run` as the double saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub script: String,
    pub stdin: Option<Vec<u8>>,
    pub root: bool,
}

impl Call {
    /// The stdin as text (empty when none was sent).
    pub fn stdin_text(&self) -> String {
        String::from_utf8_lossy(self.stdin.as_deref().unwrap_or_default()).into_owned()
    }
}

/// A rule: which scripts it answers, what, and whether only once.
type Rule = (Box<dyn Fn(&str) -> bool + Send + Sync>, Reply, bool);

/// A scripted host (see the module's header).
pub struct Scripted {
    name: String,
    rules: Mutex<Vec<Rule>>,
    calls: Mutex<Vec<Call>>,
    unexpected: Mutex<Vec<String>>,
}

impl Scripted {
    pub fn new(name: &str) -> Scripted {
        Scripted {
            name: name.to_string(),
            rules: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            unexpected: Mutex::new(Vec::new()),
        }
    }

    fn rule(self, pattern: &str, reply: Reply, once: bool) -> Scripted {
        let p = pattern.to_string();
        lock(&self.rules).push((Box::new(move |s| s.contains(&p)), reply, once));
        self
    }

    /// Answer every script that contains `pattern` with `reply`.
    pub fn on(self, pattern: &str, reply: Reply) -> Scripted {
        self.rule(pattern, reply, false)
    }

    /// Answer the next script that contains `pattern` with `reply`, once.
    pub fn once(self, pattern: &str, reply: Reply) -> Scripted {
        self.rule(pattern, reply, true)
    }

    /// Answer every script for which `pred` holds with `reply`.
    pub fn on_fn(
        self,
        pred: impl Fn(&str) -> bool + Send + Sync + 'static,
        reply: Reply,
    ) -> Scripted {
        lock(&self.rules).push((Box::new(pred), reply, false));
        self
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The scripts of every call so far, in order.
    pub fn scripts(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.script).collect()
    }

    /// The calls whose stdin contains `needle`.
    pub fn sent_stdin_containing(&self, needle: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.stdin_text().contains(needle))
            .collect()
    }

    /// The scripts no rule matched (each was answered with an error), for code under
    /// test that swallows errors or retries.
    pub fn unexpected(&self) -> Vec<String> {
        lock(&self.unexpected).clone()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Remote for Scripted {
    async fn run(
        &self,
        script: &str,
        stdin: Option<&[u8]>,
        root: bool,
        timeout: Duration,
    ) -> Result<Output, SshError> {
        lock(&self.calls).push(Call {
            script: script.to_string(),
            stdin: stdin.map(<[u8]>::to_vec),
            root,
        });
        let mut rules = lock(&self.rules);
        let hit = rules.iter().position(|r| (r.0)(script));
        let reply = hit.map(|i| match rules[i].2 {
            true => rules.remove(i).1,
            false => rules[i].1.clone(),
        });
        let host = self.name.clone();
        let what = || script.lines().next().unwrap_or("").to_string();
        match reply {
            Some(Reply::Output(out)) => Ok(out),
            Some(Reply::Unreachable) => Err(SshError::Connect {
                host,
                address: "scripted".into(),
                attempts: 1,
                detail: "Connection refused (scripted)".into(),
            }),
            Some(Reply::Disconnected) => Err(SshError::Disconnected {
                host,
                what: what(),
                detail: "connection closed (scripted)".into(),
            }),
            Some(Reply::TimedOut) => Err(SshError::Timeout {
                host,
                what: what(),
                secs: timeout.as_secs(),
            }),
            None => {
                eprintln!("scripted host `{host}`: unexpected script (no rule matches):\n{script}");
                lock(&self.unexpected).push(script.to_string());
                Err(SshError::Disconnected {
                    host,
                    what: format!("unexpected script (no rule matches): {script}"),
                    detail: "the scripted host has no rule for it".into(),
                })
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
