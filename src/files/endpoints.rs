//! continuum's own endpoint catalog: one `endpoints.json` (0600) in the state
//! directory, one entry per registered OSCAR cluster (URL, MinIO URL, kube context,
//! tier, architecture, GPU). Credentials are not in the catalog: they stay in the
//! environment's state file, and `resolve` joins the two (or falls back to the
//! oscar-cli config for clusters continuum did not install).
//!
//! Invariants: writes are atomic and serialised by a lock file; a cluster id is
//! registered once; nothing here prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::oscar_cli::{self, OscarCliError};
use crate::files::{StateError, Store};
use crate::recipe::serverless::Tier;
use crate::state::Secret;

const FILE: &str = "endpoints.json";
/// Lock name: not a DNS label, so no environment can share it.
const LOCK_NAME: &str = "_endpoints";

#[derive(Debug, thiserror::Error)]
pub enum EndpointsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    OscarCli(#[from] OscarCliError),
    #[error("endpoint catalog {path} is corrupt: {detail}")]
    Corrupt { path: PathBuf, detail: String },
    #[error("cannot write endpoint catalog {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "unknown cluster `{name}`: not in continuum's endpoints ({registered}) nor in {oscar_cli}"
    )]
    Unknown {
        name: String,
        registered: String,
        oscar_cli: PathBuf,
    },
    #[error(
        "cluster `{name}` is registered by environment `{env}` but that environment's state has no OSCAR credentials"
    )]
    NoCredentials { name: String, env: String },
    #[error("cluster `{name}` is already registered by environment `{env}`")]
    Taken { name: String, env: String },
    #[error(
        "cluster `{name}` in {oscar_cli} authenticates with OIDC (oidc_account_name / oidc_refresh_token); continuum speaks Basic auth only: add `auth_user` and `auth_password` to that entry"
    )]
    OidcOnly { name: String, oscar_cli: PathBuf },
}

/// One registered OSCAR cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// OSCAR cluster id (also the oscar-cli entry name).
    pub name: String,
    /// Environment that installed it.
    pub env: String,
    pub oscar_url: String,
    pub minio_url: String,
    pub kube_context: String,
    pub tier: Tier,
    /// Node architecture (`amd64`, `arm64`; `mixed` when the pool is mixed).
    pub arch: String,
    pub gpu: bool,
    /// OSCAR version reported by /system/info at registration.
    #[serde(default)]
    pub oscar_version: String,
    pub ssl_verify: bool,
    /// The oscar-cli config that holds its entry.
    pub oscar_cli_config: PathBuf,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Catalog {
    #[serde(default)]
    endpoints: BTreeMap<String, Endpoint>,
}

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

fn read(dir: &Path) -> Result<Catalog, EndpointsError> {
    let p = path(dir);
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| EndpointsError::Corrupt {
            path: p,
            detail: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Catalog::default()),
        Err(e) => Err(EndpointsError::Corrupt {
            path: p,
            detail: e.to_string(),
        }),
    }
}

fn write(dir: &Path, c: &Catalog) -> Result<(), EndpointsError> {
    let p = path(dir);
    let err = |source| EndpointsError::Write {
        path: p.clone(),
        source,
    };
    let bytes =
        serde_json::to_vec_pretty(c).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    crate::files::write_atomic(&p, &bytes, 0o600).map_err(err)
}

/// Every registered endpoint, by name.
pub fn list(dir: &Path) -> Result<Vec<Endpoint>, EndpointsError> {
    Ok(read(dir)?.endpoints.into_values().collect())
}

pub fn get(dir: &Path, name: &str) -> Result<Option<Endpoint>, EndpointsError> {
    Ok(read(dir)?.endpoints.remove(name))
}

/// Register (or update) an endpoint. Refuses a name another environment holds.
pub fn upsert(dir: &Path, e: Endpoint) -> Result<bool, EndpointsError> {
    let _lock = Store::new(dir, LOCK_NAME).lock()?;
    let mut c = read(dir)?;
    if let Some(old) = c.endpoints.get(&e.name) {
        if old.env != e.env {
            return Err(EndpointsError::Taken {
                name: e.name.clone(),
                env: old.env.clone(),
            });
        }
        if *old == e {
            return Ok(false);
        }
    }
    c.endpoints.insert(e.name.clone(), e);
    write(dir, &c)?;
    Ok(true)
}

/// Remove an endpoint and its oscar-cli entry. Returns the removed entry.
pub fn remove(dir: &Path, name: &str) -> Result<Option<Endpoint>, EndpointsError> {
    let _lock = Store::new(dir, LOCK_NAME).lock()?;
    let mut c = read(dir)?;
    let Some(e) = c.endpoints.remove(name) else {
        return Ok(None);
    };
    oscar_cli::remove(&e.oscar_cli_config, &e.name)?;
    write(dir, &c)?;
    Ok(Some(e))
}

/// Remove every endpoint of environment `env` (used by `down`).
pub fn remove_env(dir: &Path, env: &str) -> Result<Vec<String>, EndpointsError> {
    let names: Vec<String> = list(dir)?
        .into_iter()
        .filter(|e| e.env == env)
        .map(|e| e.name)
        .collect();
    for n in &names {
        remove(dir, n)?;
    }
    Ok(names)
}

/// How to talk to one OSCAR cluster.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub user: String,
    pub password: Secret,
    pub ssl_verify: bool,
}

/// Find cluster `name`: continuum's catalog (credentials from the environment's
/// state), else the oscar-cli config at `oscar_cli_path`.
pub fn resolve(dir: &Path, oscar_cli_path: &Path, name: &str) -> Result<Target, EndpointsError> {
    resolve_with(dir, oscar_cli_path, name, &|env| {
        Store::new(dir, env).load()
    })
}

/// `resolve`, with the environment's state loaded by `load` (the state may live
/// elsewhere than `dir`, which holds the catalog: in S3, docs/state.md).
pub fn resolve_with(
    dir: &Path,
    oscar_cli_path: &Path,
    name: &str,
    load: &dyn Fn(&str) -> Result<Option<crate::state::State>, StateError>,
) -> Result<Target, EndpointsError> {
    let catalog = read(dir)?;
    if let Some(e) = catalog.endpoints.get(name) {
        let st = load(&e.env)?;
        let creds = st
            .and_then(|s| s.serverless)
            .ok_or_else(|| EndpointsError::NoCredentials {
                name: name.to_string(),
                env: e.env.clone(),
            })?;
        return Ok(Target {
            name: name.to_string(),
            url: e.oscar_url.clone(),
            user: creds.oscar_user,
            password: creds.oscar_password,
            ssl_verify: e.ssl_verify,
        });
    }
    let entries = oscar_cli::entries(oscar_cli_path)?;
    if let Some(e) = entries.get(name)
        && !e.endpoint.is_empty()
    {
        if e.auth_user.is_empty() && e.oidc {
            return Err(EndpointsError::OidcOnly {
                name: name.to_string(),
                oscar_cli: oscar_cli_path.to_path_buf(),
            });
        }
        return Ok(Target {
            name: name.to_string(),
            url: e.endpoint.clone(),
            user: e.auth_user.clone(),
            password: e.auth_password.clone(),
            ssl_verify: e.ssl_verify,
        });
    }
    let mut known: Vec<&str> = catalog.endpoints.keys().map(String::as_str).collect();
    known.extend(entries.keys().map(String::as_str));
    known.sort_unstable();
    known.dedup();
    Err(EndpointsError::Unknown {
        name: name.to_string(),
        registered: if known.is_empty() {
            "none registered".to_string()
        } else {
            format!("known: {}", known.join(", "))
        },
        oscar_cli: oscar_cli_path.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(name: &str, env: &str, cli: &Path) -> Endpoint {
        Endpoint {
            name: name.into(),
            env: env.into(),
            oscar_url: "http://10.0.0.1".into(),
            minio_url: "http://10.0.0.1:30300".into(),
            kube_context: env.into(),
            tier: Tier::Edge,
            arch: "arm64".into(),
            gpu: false,
            oscar_version: "v4.1.0".into(),
            ssl_verify: true,
            oscar_cli_config: cli.to_path_buf(),
        }
    }

    #[test]
    fn catalog_round_trip_and_ownership() {
        let dir = tempfile::tempdir().expect("tmp");
        let cli = dir.path().join("oscar-cli.yaml");
        assert!(upsert(dir.path(), ep("a", "env1", &cli)).expect("upsert"));
        assert!(!upsert(dir.path(), ep("a", "env1", &cli)).expect("again"));
        assert!(matches!(
            upsert(dir.path(), ep("a", "env2", &cli)),
            Err(EndpointsError::Taken { .. })
        ));
        assert_eq!(list(dir.path()).expect("list").len(), 1);
        let e = resolve(dir.path(), &cli, "a").expect_err("no state");
        assert!(e.to_string().contains("no OSCAR credentials"), "{e}");
        let e = resolve(dir.path(), &cli, "zzz").expect_err("unknown");
        assert!(e.to_string().contains("unknown cluster `zzz`"), "{e}");
        assert_eq!(
            remove_env(dir.path(), "env1").expect("rm"),
            vec!["a".to_string()]
        );
        assert!(list(dir.path()).expect("list").is_empty());
    }
}
