//! Orchestration of the user-facing operations (`up`, `down`, `status`): ties the
//! graph, the engine, the state store, SSH and k3s together. Progress goes to an
//! `Observer` (the CLI's output layer); nothing here prints.
//!
//! Invariants: the environment lock is held for the whole operation; state is saved
//! after every resource change (before a step: `pending`; after: `applied`/`failed`),
//! so a crash at any point is resumed by the next `up`.

mod cloud;
mod context;
pub mod down;
pub mod enroll;
pub mod inventory;
pub mod kinds;
pub mod preflight;
pub mod refresh;
pub mod removal;
mod runner;
pub mod serverless;
pub mod shrink;
pub mod statecmd;
pub mod status;
pub mod up;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::files::StateError;
use crate::files::kubeconfig::KubeconfigError;
use crate::graph::{Action, GraphError};
use crate::k3s::K3sError;
use crate::ssh::SshError;

/// Something the user should see while an operation runs.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Started {
        id: String,
        action: Action,
    },
    Progress {
        id: String,
        message: String,
    },
    /// `summary` says what the step did ("3 node(s) Ready", "uninstalled", "unchanged").
    Finished {
        id: String,
        changed: bool,
        summary: String,
    },
    Failed {
        id: String,
        error: String,
    },
    Skipped {
        id: String,
        because: String,
    },
    Cancelled {
        id: String,
    },
    Warning {
        message: String,
    },
}

/// Receives progress events (the CLI renders them as bars, lines or JSON).
pub trait Observer: Send + Sync {
    fn event(&self, event: Event);
    /// A walk of `steps` steps is about to start (`up`, `down`, `nodes remove`), so a
    /// display can size itself. Called by the step runner.
    fn expect(&self, _steps: usize) {}
}

/// An observer that drops everything (tests, benchmarks).
pub struct Silent;
impl Observer for Silent {
    fn event(&self, _: Event) {}
}

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error("cannot start the SSH connection pool")]
    Pool(#[source] std::io::Error),
    #[error("{failed} of {total} resource(s) failed:\n{details}")]
    Partial {
        failed: usize,
        total: usize,
        details: String,
        /// The typed errors of the failed resources.
        causes: Vec<Arc<OpsError>>,
    },
    #[error(
        "interrupted: in-flight steps finished and state was saved; run the command again to resume"
    )]
    Interrupted,
    /// Changes that cannot be made in place (the plan's `Refused`); nothing was changed.
    #[error("nothing was changed: {}", .0.join("; "))]
    Refused(Vec<String>),
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(transparent)]
    K3s(#[from] K3sError),
    #[error(transparent)]
    Kubeconfig(#[from] KubeconfigError),
    #[error("cannot generate a secret: {0}")]
    Random(String),
    #[error(transparent)]
    Cloud(#[from] crate::aws::provision::ProvisionError),
    /// The OSCAR serverless layer.
    #[error(transparent)]
    Serverless(#[from] serverless::LayerError),
    #[error(transparent)]
    Device(#[from] crate::k3s::device::DeviceError),
    #[error(transparent)]
    Shrink(#[from] removal::ShrinkError),
    #[error(transparent)]
    Inventory(#[from] crate::files::inventory::InventoryError),
    #[error(transparent)]
    Load(#[from] crate::recipe::LoadError),
    /// Enrolment pools (`continuum enroll`).
    #[error(transparent)]
    Enroll(#[from] enroll::EnrollError),
}

impl OpsError {
    /// The host could not be reached at all (switched off, out of range): nothing was
    /// changed on it. Edge devices are often in this state.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            OpsError::Ssh(SshError::Connect { .. })
                | OpsError::Shrink(shrink::ShrinkError::Unreachable { .. })
        )
    }

    /// Whether a host key problem is (one of) the cause(s).
    pub fn is_host_key(&self) -> bool {
        match self {
            OpsError::Ssh(
                SshError::HostKeyChanged { .. }
                | SshError::HostKeyMismatch { .. }
                | SshError::BastionKeyChanged { .. },
            ) => true,
            OpsError::Partial { causes, .. } => causes.iter().any(|c| c.is_host_key()),
            _ => false,
        }
    }
}

/// Settings shared by the operations.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The local state directory: the state itself unless `remote` is set, and the
    /// controller's own files (known_hosts, SSH keys, endpoints) in any case.
    pub state_dir: PathBuf,
    /// State in S3 (`--state s3://...`), shared by a team.
    pub remote: Option<crate::statestore::Remote>,
    pub concurrency: usize,
    pub connect_timeout: Duration,
    pub connect_attempts: u32,
    pub replace_host_keys: Vec<String>,
    /// Makes the EC2 provider of the AWS site (`aws::sdk::Sdk`: the credential chain).
    pub ec2: Arc<dyn crate::aws::Connect>,
    /// Waits and retries of the AWS provisioning steps.
    pub cloud: crate::aws::provision::Options,
    /// Read the hosts' facts before planning (`--refresh=false`: plan from state).
    pub refresh: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            state_dir: crate::files::default_dir(),
            remote: None,
            concurrency: 10,
            connect_timeout: Duration::from_secs(10),
            connect_attempts: 3,
            replace_host_keys: Vec::new(),
            ec2: Arc::new(crate::aws::sdk::Sdk),
            cloud: crate::aws::provision::Options::default(),
            refresh: true,
        }
    }
}

impl Settings {
    /// The state store of `env` (`remote` when set, else `state_dir`).
    pub fn store(&self, env: &str) -> Result<crate::statestore::Store, OpsError> {
        crate::statestore::Store::open(&self.state_dir, self.remote.as_ref(), env)
            .map_err(OpsError::State)
    }

    /// The SSH pool of `env`. `recorded`: the environment's state, whose host-key
    /// fingerprints every connection must match (docs/reliability.md, "Host trust").
    fn pool(
        &self,
        env: &str,
        recorded: Option<&crate::state::State>,
    ) -> Result<crate::ssh::Pool, OpsError> {
        crate::ssh::Pool::new(crate::ssh::PoolOptions {
            recorded: recorded.map(recorded_host_keys).unwrap_or_default(),
            known_hosts: crate::ssh::known_hosts_path(&self.state_dir, env),
            connect_timeout: self.connect_timeout,
            connect_attempts: self.connect_attempts,
            replace_host_keys: self.replace_host_keys.clone(),
            // Enough for every step in flight (a step may hold the first server's
            // connection besides its own) and for the hosts used again soon.
            max_open: (2 * self.concurrency).max(MIN_OPEN_CONNECTIONS),
        })
        .map_err(OpsError::Pool)
    }
}

/// The host-key fingerprints `state` recorded, by known_hosts name.
fn recorded_host_keys(state: &crate::state::State) -> std::collections::BTreeMap<String, String> {
    state
        .hosts
        .values()
        .filter_map(|h| {
            let fp = h.host_key_fingerprint.clone()?;
            (!h.address.is_empty()).then(|| (crate::ssh::known_hosts_name(&h.address, h.port), fp))
        })
        .collect()
}

/// The pool keeps at least this many master connections open (see `ssh::pool`).
const MIN_OPEN_CONNECTIONS: usize = 32;

/// An error and its causes on one line, as results and events show it.
fn error_text(e: &OpsError) -> String {
    crate::error_chain(e)
}

/// 32 random bytes from the OS CSPRNG, hex-encoded.
pub fn random_secret() -> Result<String, OpsError> {
    let mut buf = [0u8; 32];
    getrandom::fill(&mut buf).map_err(|e| OpsError::Random(e.to_string()))?;
    Ok(hex::encode(buf))
}

/// What one step did: whether it changed something, and in words for progress lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Did {
    pub changed: bool,
    pub summary: String,
}

impl Did {
    pub fn changed(summary: impl Into<String>) -> Self {
        Did {
            changed: true,
            summary: summary.into(),
        }
    }
    pub fn unchanged(summary: impl Into<String>) -> Self {
        Did {
            changed: false,
            summary: summary.into(),
        }
    }
}

impl From<bool> for Did {
    /// For steps that only know whether they changed something.
    fn from(changed: bool) -> Self {
        if changed {
            Did::changed("changed")
        } else {
            Did::unchanged("unchanged")
        }
    }
}

/// Per-resource result of an operation.
#[derive(Debug, Clone, Serialize)]
pub struct ResourceResult {
    pub id: String,
    pub action: Action,
    /// done, failed, skipped, cancelled, offline (the host could not be reached),
    /// tolerated (offline, within `k3s.allow_unavailable`)
    pub outcome: String,
    pub changed: bool,
    pub detail: Option<String>,
    /// The typed error of a failed step (`detail` is its text).
    #[serde(skip)]
    pub error: Option<Arc<OpsError>>,
}

/// Turn engine outcomes into results, events already sent; fail when any failed.
/// `tolerated` offline agents are not failures.
fn summarize(results: &[ResourceResult], cancelled: bool) -> Result<(), OpsError> {
    let failed: Vec<&ResourceResult> = results
        .iter()
        .filter(|r| matches!(r.outcome.as_str(), "failed" | "skipped" | "offline"))
        .collect();
    if !failed.is_empty() {
        let details = failed
            .iter()
            .map(|r| format!("  {}: {}", r.id, r.detail.as_deref().unwrap_or(&r.outcome)))
            .collect::<Vec<_>>()
            .join("\n");
        let details = if failed.iter().any(|r| r.outcome == "offline") {
            format!(
                "{details}\n  (hosts that could not be reached are `offline`: the next `up` tries them again; \
                 `k3s.allow_unavailable` lets `up` succeed without some agents)"
            )
        } else {
            details
        };
        return Err(OpsError::Partial {
            failed: results
                .iter()
                .filter(|r| r.outcome == "failed" || r.outcome == "offline")
                .count(),
            total: results.len(),
            details,
            causes: failed.iter().filter_map(|r| r.error.clone()).collect(),
        });
    }
    if cancelled {
        return Err(OpsError::Interrupted);
    }
    Ok(())
}

type SharedObserver = Arc<dyn Observer>;
