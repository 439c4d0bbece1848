//! Pull-based enrolment (issue 15, docs/enrolment.md): `enroll bundle` creates a pool's
//! time-limited bootstrap token on the first server, records the pool in state (the
//! token's id, never its secret) and writes the first-boot files (`render::enroll`)
//! plus, in bundle mode, the k3s artifacts into a private directory; `enroll revoke`
//! deletes the pool's token; `enroll list` reports the pools. Devices that join this
//! way are not in the recipe: `up`/`plan` never see them and `down` does not contact
//! them (they lose their cluster with its servers). `request` checks what a user
//! asks for (pool name, labels, TTL).

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::{OpsError, Settings};
use crate::k3s;
use crate::recipe::{Images, Install};
use crate::render::enroll::{self as render, PoolInstall, PoolSpec};
use crate::state::{PoolState, State};

mod request;
pub use request::{POOL_LABEL, parse_ttl, pool_labels, utc_text};

/// The install script of online pools when the recipe installs from a bundle.
pub const DEFAULT_SCRIPT_URL: &str = "https://get.k3s.io";

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "pool name `{0}` is not valid: use at most 63 characters of [a-z0-9-], starting and ending with a letter or digit"
    )]
    PoolName(String),
    #[error("label `{label}` of pool `{pool}` is not valid: {why}")]
    Label {
        pool: String,
        label: String,
        why: String,
    },
    #[error(
        "--ttl `{0}` is not a duration above zero and at most 106751d (what k3s can hold), such as 30m, 24h or 7d (a pool's token must expire)"
    )]
    Ttl(String),
    #[error("`{env}` has no running cluster in its state (run `continuum up` first)")]
    NoCluster { env: String },
    #[error(
        "pool `{pool}` of `{env}` already has a live token ({token_id}, expires {expires}); revoke it first (`continuum enroll revoke {env} --pool {pool}`) or use another pool name"
    )]
    PoolExists {
        env: String,
        pool: String,
        token_id: String,
        expires: String,
    },
    #[error("`{env}` has no pool `{pool}` (pools: {known})")]
    NoPool {
        env: String,
        pool: String,
        known: String,
    },
    #[error("{dir} exists and is not empty; enrolment bundles go into a new or empty directory")]
    OutNotEmpty { dir: PathBuf },
    #[error("cannot write the enrolment bundle {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "pool `{pool}` installs k3s from a bundle, but the recipe of `{env}` installs online and names no bundle directory; use --online"
    )]
    NoBundleDir { env: String, pool: String },
    #[error("`{arch}` is not an architecture k3s ships (amd64, arm64, arm)")]
    Arch { arch: String },
}

/// How `enroll bundle` was asked to install k3s on the devices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstallChoice {
    /// As the recipe installs (a bundle recipe gives air-gap pools).
    Recipe,
    Airgap,
    Online,
}

/// What `enroll bundle` is asked for.
#[derive(Debug, Clone)]
pub struct PoolRequest {
    pub pool: String,
    /// `key=value` as given (repeatable `--label`).
    pub labels: Vec<String>,
    pub ttl: Duration,
    pub arch: Option<String>,
    pub install: InstallChoice,
    pub out: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct BundleReport {
    pub env: String,
    pub pool: String,
    pub dir: PathBuf,
    pub token_id: String,
    pub expires: u64,
    pub expires_text: String,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub install: String,
    pub files: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RevokeReport {
    pub env: String,
    pub pool: String,
    pub token_id: String,
    /// False when the token was already gone (revoked before, or expired and cleaned).
    pub deleted: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct PoolRow {
    pub pool: String,
    pub token_id: String,
    /// `active`, `expired` or `revoked`.
    pub condition: String,
    pub labels: BTreeMap<String, String>,
    pub arch: String,
    pub install: String,
    pub expires: Option<u64>,
    pub expires_text: String,
}

fn check_arch(arch: &str) -> Result<(), EnrollError> {
    match arch {
        "amd64" | "arm64" | "arm" => Ok(()),
        _ => Err(EnrollError::Arch {
            arch: arch.to_string(),
        }),
    }
}

/// A connection to the environment's first server, pinned as every command pins it.
async fn with_first_server<T, F>(
    env: &str,
    state: &State,
    settings: &Settings,
    f: F,
) -> Result<T, OpsError>
where
    F: AsyncFnOnce(&crate::ssh::HostConn) -> Result<T, k3s::K3sError>,
{
    let init = state
        .cluster
        .init_server
        .clone()
        .ok_or_else(|| EnrollError::NoCluster {
            env: env.to_string(),
        })?;
    let host = state
        .hosts
        .get(&init)
        .map(|h| h.to_host(&init))
        .ok_or_else(|| EnrollError::NoCluster {
            env: env.to_string(),
        })?;
    let pool = settings.pool(env, Some(state))?;
    let result = async {
        let conn = pool.get(&host).await?;
        Ok::<_, OpsError>(f(conn.as_ref()).await?)
    }
    .await;
    pool.close().await;
    result
}

/// Create the output directory (0700), refusing one that has files in it.
fn make_out_dir(dir: &Path) -> Result<(), EnrollError> {
    let err = |source| EnrollError::Write {
        path: dir.to_path_buf(),
        source,
    };
    if dir.exists() {
        let mut entries = std::fs::read_dir(dir).map_err(err)?;
        if entries.next().is_some() {
            return Err(EnrollError::OutNotEmpty {
                dir: dir.to_path_buf(),
            });
        }
    }
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)
}

/// Copy a bundle artifact into the output directory, 0600.
fn copy_private(from: &Path, dir: &Path, name: &str) -> Result<(), OpsError> {
    let to = dir.join(name);
    let err = |source| EnrollError::Write {
        path: to.clone(),
        source,
    };
    std::fs::copy(from, &to).map_err(|source| k3s::K3sError::Local {
        path: from.to_path_buf(),
        source,
    })?;
    std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(())
}

/// What the pool's devices install, and the artifacts to copy (source, name).
type Artifacts = Vec<(PathBuf, String)>;

fn install_plan(
    env: &str,
    req: &PoolRequest,
    recipe_install: &Install,
    arch: &str,
) -> Result<(PoolInstall, Artifacts), OpsError> {
    let online = |url: &str| {
        Ok((
            PoolInstall::Online {
                script_url: url.to_string(),
            },
            Vec::new(),
        ))
    };
    match (req.install, recipe_install) {
        (InstallChoice::Online, Install::Online { script_url })
        | (InstallChoice::Recipe, Install::Online { script_url }) => online(script_url),
        (InstallChoice::Online, Install::Bundle { .. }) => online(DEFAULT_SCRIPT_URL),
        (InstallChoice::Airgap, Install::Online { .. }) => Err(EnrollError::NoBundleDir {
            env: env.to_string(),
            pool: req.pool.clone(),
        }
        .into()),
        (InstallChoice::Airgap | InstallChoice::Recipe, Install::Bundle { dir, images }) => {
            let who = format!("pool {}", req.pool);
            let file = k3s::bundle_binary(arch);
            let bin = dir.join(file);
            if !bin.is_file() {
                return Err(k3s::K3sError::MissingBinary {
                    host: who,
                    arch: arch.to_string(),
                    dir: dir.clone(),
                    file: file.to_string(),
                }
                .into());
            }
            let mut artifacts = vec![
                (bin, file.to_string()),
                (dir.join("install.sh"), "install.sh".to_string()),
            ];
            let mut image_name = None;
            if *images == Images::Bundle {
                let p =
                    k3s::images_file(dir, arch).ok_or_else(|| k3s::K3sError::MissingImages {
                        host: who.clone(),
                        arch: arch.to_string(),
                        dir: dir.clone(),
                        expected: k3s::images_names(arch).join(" or "),
                    })?;
                let name = p
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                image_name = Some(name.clone());
                artifacts.push((p, name));
            }
            Ok((
                PoolInstall::Bundle {
                    arch: arch.to_string(),
                    images: image_name,
                },
                artifacts,
            ))
        }
    }
}

/// `continuum enroll bundle ENV --pool NAME --out DIR`.
pub async fn bundle(
    env: &str,
    req: &PoolRequest,
    settings: &Settings,
) -> Result<BundleReport, OpsError> {
    let labels = pool_labels(&req.pool, &req.labels)?;
    if req.ttl.is_zero() {
        return Err(EnrollError::Ttl("0".into()).into());
    }
    let store = settings.store(env)?;
    let _lock = store.lock()?;
    let mut state = store.load_existing()?;
    let now = crate::state::now();
    if let Some(p) = state.pools.get(&req.pool)
        && p.condition(now) == "active"
    {
        return Err(EnrollError::PoolExists {
            env: env.to_string(),
            pool: req.pool.clone(),
            token_id: p.token_id.clone(),
            expires: p.expires.map_or_else(|| "never".into(), utc_text),
        }
        .into());
    }
    let server_url = match (&state.cluster.server_url, &state.cluster.init_server) {
        (Some(u), Some(_)) => u.clone(),
        _ => {
            return Err(EnrollError::NoCluster {
                env: env.to_string(),
            }
            .into());
        }
    };
    let recipe_path = state.recipe.clone().ok_or_else(|| EnrollError::NoCluster {
        env: env.to_string(),
    })?;
    let recipe = crate::files::load_recipe(&recipe_path)?.env;
    let arch = match &req.arch {
        Some(a) => a.clone(),
        None => state
            .cluster
            .init_server
            .as_ref()
            .and_then(|i| state.hosts.get(i))
            .and_then(|h| h.arch.clone())
            .unwrap_or_else(|| "amd64".into()),
    };
    check_arch(&arch)?;
    let (install, artifacts) = install_plan(env, req, &recipe.cluster.install, &arch)?;
    make_out_dir(&req.out)?;

    let description = format!("continuum pool {}", req.pool);
    let token = with_first_server(env, &state, settings, async |r| {
        k3s::create_token(r, req.ttl, &description).await
    })
    .await?;
    let expires = now + req.ttl.as_secs();
    let install_word = match install {
        PoolInstall::Bundle { .. } => "bundle",
        PoolInstall::Online { .. } => "online",
    };
    // Recorded before any file holds the token, so a failure below leaves a token that
    // `enroll revoke` can delete.
    state.pools.insert(
        req.pool.clone(),
        PoolState {
            token_id: token.id.clone(),
            labels: labels.clone(),
            arch: arch.clone(),
            install: install_word.to_string(),
            created: now,
            expires: Some(expires),
            revoked: None,
        },
    );
    store.save(&mut state)?;

    let expires_text = utc_text(expires);
    let spec = PoolSpec {
        env,
        pool: &req.pool,
        server_url: &server_url,
        token: token.token.expose(),
        labels: &labels,
        version: &recipe.cluster.version,
        install,
        expires: &expires_text,
    };
    let mut files = Vec::new();
    for f in render::files(&spec) {
        let path = req.out.join(f.name);
        crate::files::write_atomic(&path, f.text.as_bytes(), 0o600)
            .map_err(|source| EnrollError::Write { path, source })?;
        files.push(f.name.to_string());
    }
    for (from, name) in &artifacts {
        copy_private(from, &req.out, name)?;
        files.push(name.clone());
    }
    Ok(BundleReport {
        env: env.to_string(),
        pool: req.pool.clone(),
        dir: crate::files::absolute(&req.out),
        token_id: token.id,
        expires,
        expires_text,
        labels,
        arch,
        install: install_word.to_string(),
        files,
    })
}

/// `continuum enroll revoke ENV --pool NAME`: delete the pool's token on the first
/// server and mark the pool revoked. Revoking twice, or a token already gone, is fine.
/// Nodes that joined stay (k3s: they authenticate as themselves once joined).
pub async fn revoke(env: &str, pool: &str, settings: &Settings) -> Result<RevokeReport, OpsError> {
    let store = settings.store(env)?;
    let _lock = store.lock()?;
    let mut state = store.load_existing()?;
    let Some(p) = state.pools.get(pool).cloned() else {
        return Err(EnrollError::NoPool {
            env: env.to_string(),
            pool: pool.to_string(),
            known: known_pools(&state),
        }
        .into());
    };
    let deleted = with_first_server(env, &state, settings, async |r| {
        k3s::delete_token(r, &p.token_id).await
    })
    .await?;
    if let Some(p) = state.pools.get_mut(pool)
        && p.revoked.is_none()
    {
        p.revoked = Some(crate::state::now());
        store.save(&mut state)?;
    }
    Ok(RevokeReport {
        env: env.to_string(),
        pool: pool.to_string(),
        token_id: p.token_id,
        deleted,
    })
}

fn known_pools(state: &State) -> String {
    if state.pools.is_empty() {
        "none".into()
    } else {
        state.pools.keys().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// `continuum enroll list ENV`: the pools state records, with their condition now.
/// Reads the state without its secrets, so a teammate without the age identity of an
/// S3-backed state can list the pools too.
pub fn list(env: &str, settings: &Settings) -> Result<Vec<PoolRow>, OpsError> {
    let store = settings.store(env)?;
    let state = store
        .load_public()?
        .ok_or_else(|| crate::files::StateError::NotFoundAt {
            env: env.to_string(),
            url: store.location(),
        })?;
    let now = crate::state::now();
    Ok(state
        .pools
        .iter()
        .map(|(name, p)| PoolRow {
            pool: name.clone(),
            token_id: p.token_id.clone(),
            condition: p.condition(now).to_string(),
            labels: p.labels.clone(),
            arch: p.arch.clone(),
            install: p.install.clone(),
            expires: p.expires,
            expires_text: p.expires.map_or_else(|| "never".into(), utc_text),
        })
        .collect())
}
