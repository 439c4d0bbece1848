//! The serverless steps of `up` and `down`: upload the OSCAR layer's
//! manifests to the first server, wait until OSCAR answers through the endpoint users
//! will use, register the endpoint (catalog + oscar-cli), and undo each of these.
//!
//! Removing a manifest removes its component (docs/k3s.md, "Manifests, the deploy
//! controller and helm-controller"): k3s leaves the objects of a deleted file in place,
//! so a file that is no longer wanted is first hidden from k3s (renamed to a dot-file),
//! then its objects are deleted stage by stage (`serverless::removal`), each stage
//! waited for with a bounded timeout, and only then is the file removed.
//!
//! Invariants: manifests are written with root rights, mode 0600 (they hold the OSCAR
//! and MinIO passwords), from stdin (never argv), only when their content differs; the
//! layer's files all start with `continuum-oscar-`, so stale ones are found as a set;
//! a retiring file stays on the server until every object it defines is gone, so a
//! rerun after a crash finishes the removal; manifest text is never logged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod retire;

pub use retire::REMOVAL_TIMEOUT;
use retire::{REMOVAL_POLL, present, retire, root};

use crate::files::endpoints::{self, Endpoint, EndpointsError};
use crate::files::oscar_cli::{self, OscarCliError};
use crate::oscar::ReadyError;
use crate::oscar::client::{ClientError, Oscar, SystemInfo};
use crate::oscar::removal::{self, Deletion, ManifestError, Round};
use crate::recipe::Environment;
use crate::recipe::serverless::Serverless;
use crate::render::oscar::{self as manifests, FILE_PREFIX, MANIFESTS_DIR, RenderError};
use crate::ssh::{Remote, quote};
use crate::state::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    K3s(#[from] crate::k3s::K3sError),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Ready(#[from] ReadyError),
    #[error(transparent)]
    Endpoints(#[from] EndpointsError),
    #[error(transparent)]
    OscarCli(#[from] OscarCliError),
    #[error("no OSCAR credentials in state for environment `{0}`")]
    NoCredentials(String),
    #[error(
        "`{host}` is {arch}: OSCAR's images exist for amd64 and arm64 only (docs/oscar.md, \"Architectures\")"
    )]
    UnsupportedArch { host: String, arch: String },
    #[error(transparent)]
    Removal(Box<RemovalError>),
}

/// Why a manifest and its component could not be removed (boxed: large).
#[derive(Debug, thiserror::Error)]
pub enum RemovalError {
    #[error(
        "cannot remove {dir}/{file} on `{host}`: {source}; fix or delete the file by hand, then run again"
    )]
    Manifest {
        host: String,
        dir: &'static str,
        file: String,
        #[source]
        source: ManifestError,
    },
    #[error(
        "removing {file} on `{host}`: {what} is still there after {secs} s{last}; {hint}. The file stays as {dir}/{retiring} (k3s ignores it) and the next run continues"
    )]
    Timeout {
        host: String,
        dir: &'static str,
        file: String,
        retiring: String,
        what: String,
        secs: u64,
        /// The last message kubectl gave about it, as `: MESSAGE`, or empty.
        last: String,
        hint: String,
    },
}

impl From<RemovalError> for LayerError {
    fn from(e: RemovalError) -> Self {
        LayerError::Removal(Box::new(e))
    }
}

/// Refuse nodes OSCAR has no images for (32-bit ARM), before anything is uploaded.
pub fn check_arch(arches: &BTreeMap<String, String>) -> Result<(), LayerError> {
    match arches
        .iter()
        .find(|(_, a)| a.as_str() != "amd64" && a.as_str() != "arm64")
    {
        Some((host, arch)) => Err(LayerError::UnsupportedArch {
            host: host.clone(),
            arch: arch.clone(),
        }),
        None => Ok(()),
    }
}

/// Converge the layer's manifests on the first server. Returns whether anything
/// changed.
pub async fn apply_layer<R: Remote>(
    r: &R,
    env: &Environment,
    s: &Serverless,
    creds: &Credentials,
) -> Result<bool, LayerError> {
    let wanted = manifests::render(&env.name, s, creds)?;
    let have = present(r).await?;
    // Components no longer wanted go first (and a removal an earlier run left
    // half-done is finished), so a replaced one never runs next to its successor.
    let stale: Vec<String> = have
        .live
        .keys()
        .filter(|f| !wanted.iter().any(|m| &m.file == *f))
        .cloned()
        .collect();
    let mut changed = !stale.is_empty() || !have.retiring.is_empty();
    retire(r, &stale, &have.retiring, REMOVAL_TIMEOUT, REMOVAL_POLL).await?;
    for m in &wanted {
        let sha = crate::k3s::sha256_hex(m.text.as_bytes());
        let path = format!("{MANIFESTS_DIR}/{}", m.file);
        // A file whose earlier removal was just finished lost its objects and its
        // Addon record: write it again even when its content is the same.
        let finished = have.retiring.contains(&m.file);
        match have.live.get(&m.file) {
            Some((h, mode)) if *h == sha && !finished => {
                if mode != "600" {
                    root(
                        r,
                        "fixing a manifest's mode",
                        &format!("chmod 0600 {}", quote(&path)),
                        None,
                    )
                    .await?;
                    changed = true;
                }
            }
            _ => {
                let tmp = format!("{MANIFESTS_DIR}/.{}.continuum-tmp", m.file);
                // k3s applies *.yaml only, so the dot-file temp is never half-applied.
                let script = format!(
                    "set -e; umask 077; mkdir -p {MANIFESTS_DIR}; cat > {t}; chmod 0600 {t}; mv -f {t} {p}",
                    t = quote(&tmp),
                    p = quote(&path)
                );
                root(
                    r,
                    &format!("writing {}", m.file),
                    &script,
                    Some(m.text.as_bytes()),
                )
                .await?;
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Remove every component of the layer from the cluster, then its manifests.
pub async fn remove_layer<R: Remote>(r: &R) -> Result<bool, LayerError> {
    let have = present(r).await?;
    let live: Vec<String> = have.live.keys().cloned().collect();
    let had = !live.is_empty() || !have.retiring.is_empty();
    retire(r, &live, &have.retiring, REMOVAL_TIMEOUT, REMOVAL_POLL).await?;
    Ok(had)
}

/// The OSCAR client for the cluster as users reach it.
pub fn client(s: &Serverless, creds: &Credentials) -> Result<Oscar, LayerError> {
    Ok(Oscar::new(
        &s.cluster_id,
        &s.endpoint,
        &creds.oscar_user,
        creds.oscar_password.clone(),
        s.oscar_cli.ssl_verify,
        Duration::from_secs(10),
    )?)
}

/// Wait for `/health` and `/system/info` through the user-facing endpoint.
pub async fn wait_ready(s: &Serverless, creds: &Credentials) -> Result<SystemInfo, LayerError> {
    let c = client(s, creds)?;
    Ok(crate::oscar::wait_ready(
        &s.cluster_id,
        &c,
        s.readiness_timeout,
        Some(s.oscar.version),
    )
    .await?)
}

/// The architecture of the cluster's nodes (`mixed` when they differ) and whether
/// any node has a GPU label.
pub fn arch_and_gpu(env: &Environment, arches: &BTreeMap<String, String>) -> (String, bool) {
    let mut set: Vec<&String> = arches.values().collect();
    set.sort();
    set.dedup();
    let arch = match set.as_slice() {
        [] => "unknown".to_string(),
        [one] => (*one).clone(),
        _ => "mixed".to_string(),
    };
    let gpu = env.hosts.values().any(|h| {
        h.labels
            .get("nvidia.com/gpu.present")
            .is_some_and(|v| v == "true")
    }) || env
        .cluster
        .node_labels
        .get("nvidia.com/gpu.present")
        .is_some_and(|v| v == "true");
    (arch, gpu)
}

/// The oscar-cli config file for this layer.
pub fn oscar_cli_path(s: &Serverless) -> PathBuf {
    s.oscar_cli
        .path
        .clone()
        .unwrap_or_else(oscar_cli::default_path)
}

/// Record the endpoint in the catalog and the oscar-cli config. Returns whether
/// either changed.
pub fn register(
    state_dir: &Path,
    env: &Environment,
    s: &Serverless,
    creds: &Credentials,
    info: &SystemInfo,
    arch: &str,
    gpu: bool,
) -> Result<bool, LayerError> {
    let cli = oscar_cli_path(s);
    let e = Endpoint {
        name: s.cluster_id.clone(),
        env: env.name.clone(),
        oscar_url: s.endpoint.clone(),
        minio_url: s.minio_url(),
        kube_context: env.kubeconfig.context.clone(),
        tier: s.tier,
        arch: arch.to_string(),
        gpu: s.gpu.unwrap_or(gpu),
        oscar_version: info.version.clone(),
        ssl_verify: s.oscar_cli.ssl_verify,
        oscar_cli_config: cli.clone(),
    };
    // A renamed cluster or moved oscar-cli file: drop the old registration first.
    for old in endpoints::list(state_dir)? {
        if old.env == env.name && (old.name != e.name || old.oscar_cli_config != cli) {
            endpoints::remove(state_dir, &old.name)?;
        }
    }
    let mut changed = endpoints::upsert(state_dir, e)?;
    changed |= oscar_cli::upsert(
        &cli,
        &s.cluster_id,
        &oscar_cli::Entry {
            endpoint: s.endpoint.clone(),
            auth_user: creds.oscar_user.clone(),
            auth_password: creds.oscar_password.clone(),
            ssl_verify: s.oscar_cli.ssl_verify,
        },
        s.oscar_cli.set_default,
    )?;
    Ok(changed)
}

/// Remove every endpoint of the environment (catalog and oscar-cli entries).
pub fn unregister(state_dir: &Path, env: &str) -> Result<Vec<String>, LayerError> {
    Ok(endpoints::remove_env(state_dir, env)?)
}

/// One registered endpoint as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointStatus {
    pub name: String,
    pub oscar_url: String,
    pub tier: crate::recipe::serverless::Tier,
    /// `ok`, the error of `GET /health`, or `None` when offline.
    pub health: Option<String>,
}

/// The environment's registered endpoints; with `live`, each one's `/health`.
pub async fn endpoint_status(state_dir: &Path, env: &str, live: bool) -> Vec<EndpointStatus> {
    let mut out = Vec::new();
    for e in endpoints::list(state_dir)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.env == env)
    {
        let health = if live {
            let c = Oscar::new(
                &e.name,
                &e.oscar_url,
                "",
                crate::state::Secret::default(),
                e.ssl_verify,
                Duration::from_secs(5),
            );
            Some(match c {
                Ok(c) => c
                    .health()
                    .await
                    .map_or_else(|err| err.to_string(), |()| "ok".into()),
                Err(err) => err.to_string(),
            })
        } else {
            None
        };
        out.push(EndpointStatus {
            name: e.name,
            oscar_url: e.oscar_url,
            tier: e.tier,
            health,
        });
    }
    out
}

#[cfg(test)]
mod tests;
