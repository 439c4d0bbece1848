//! Refresh before planning: one read-only round trip per applied k3s node,
//! in parallel, as Terraform refreshes before it plans. What a host shows that the
//! state does not know becomes drift in the plan: a stopped or missing service, a
//! config.yaml edited by hand, a binary replaced or at another version. `--refresh=false`
//! plans from the state alone.
//!
//! Nothing here changes a host. A host that cannot be reached is reported, and planned
//! from the state; a host (or bastion) whose key changed stops the plan.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::{OpsError, Settings};
use crate::graph::{Kind, ResourceGraph};
use crate::k3s;
use crate::recipe::{Environment, Images, Install, Role};
use crate::ssh::Pool;
use crate::state::{State, Status};

/// What the refresh found.
#[derive(Debug, Default, Clone)]
pub struct Refreshed {
    /// Resource id -> what differs on the host.
    pub drift: BTreeMap<String, String>,
    /// Host -> why it could not be read.
    pub unreachable: BTreeMap<String, String>,
}

/// One node to read: its resource id, host, role, and what its config.yaml is made of
/// (rendered once the facts are known: some keys depend on the host).
struct Probe {
    id: String,
    host: crate::recipe::Host,
    role: Role,
    attrs: BTreeMap<String, serde_json::Value>,
    secrets: Vec<(&'static str, String)>,
}

/// Read every applied k3s node of `rg` once (at most `settings.concurrency` at a time).
pub async fn refresh(
    env: &Environment,
    rg: &ResourceGraph,
    state: &State,
    settings: &Settings,
    pool: &Arc<Pool>,
) -> Result<Refreshed, OpsError> {
    let mut probes = Vec::new();
    for r in rg.graph.node_weights() {
        let (Some(role), Some(h)) = (r.role(), r.host.as_ref()) else {
            continue;
        };
        if !matches!(r.kind, Kind::K3sServer { .. } | Kind::K3sAgent)
            || state.resources.get(&r.id).map(|s| s.status) != Some(Status::Applied)
        {
            continue;
        }
        let Some(host) = env.hosts.get(h).filter(|h| !h.address.is_empty()) else {
            continue;
        };
        let is_init = role == Role::Server && env.cluster.init_server() == h;
        let secrets = super::context::node_secrets(state, is_init, role)
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_string()))
            .collect();
        probes.push(Probe {
            id: r.id.clone(),
            host: host.clone(),
            role,
            attrs: r.attrs.clone(),
            secrets,
        });
    }
    let mut out = Refreshed::default();
    if probes.is_empty() {
        return Ok(out);
    }
    // The bundle's binaries, hashed once per architecture.
    let bundle_sha = |arch: &str| -> Option<String> {
        match &env.cluster.install {
            Install::Bundle { dir, .. } => std::fs::read(dir.join(k3s::bundle_binary(arch)))
                .ok()
                .map(|b| k3s::sha256_hex(&b)),
            Install::Online { .. } => None,
        }
    };
    let mut shas: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut images_sha: BTreeMap<String, Option<(String, String)>> = BTreeMap::new();
    let limit = Arc::new(tokio::sync::Semaphore::new(settings.concurrency.max(1)));
    let mut tasks = JoinSet::new();
    for p in probes {
        let limit = limit.clone();
        let pool = pool.clone();
        tasks.spawn(async move {
            let _slot = limit.acquire().await.ok();
            let facts = async {
                let conn = pool.get(&p.host).await?;
                Ok::<_, OpsError>(k3s::facts(conn.as_ref()).await?)
            }
            .await;
            (p, facts)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let Ok((p, facts)) = joined else { continue };
        match facts {
            Ok(f) => {
                let pairs: Vec<(&str, &str)> =
                    p.secrets.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let config = k3s::render_config(
                    &env.name,
                    &p.host.name,
                    p.role,
                    &f.selinux.config(&p.attrs),
                    &pairs,
                )?;
                let config_sha = k3s::sha256_hex(config.as_bytes());
                let sha = shas
                    .entry(f.arch.clone())
                    .or_insert_with(|| bundle_sha(&f.arch))
                    .clone();
                let mut why = drift_of(
                    &f,
                    p.role,
                    &config_sha,
                    &env.cluster.version,
                    sha.as_deref(),
                );
                if let Install::Bundle {
                    dir,
                    images: Images::Bundle,
                } = &env.cluster.install
                {
                    let want = images_sha
                        .entry(f.arch.clone())
                        .or_insert_with(|| {
                            k3s::images_file(dir, &f.arch).and_then(|p| {
                                let name = p.file_name()?.to_string_lossy().into_owned();
                                let data = std::fs::read(&p).ok()?;
                                Some((name, k3s::sha256_hex(&data)))
                            })
                        })
                        .clone();
                    if let Some((name, sha)) = want
                        && f.images.get(&name) != Some(&sha)
                    {
                        why.push(format!("air-gap images {name} missing or different"));
                    }
                }
                if env.serverless.is_some() && !f.nfs_client {
                    why.push(
                        "no NFS client (mount.nfs) for the serverless layer's volumes".to_string(),
                    );
                }
                if !why.is_empty() {
                    out.drift.insert(p.id, why.join("; "));
                }
            }
            // A changed host key is a refusal, not an absence: the plan stops on it
            // (exit 5), as every other contact with the host would.
            Err(e) if e.is_host_key() => return Err(e),
            Err(e) => {
                out.unreachable
                    .insert(p.host.name.clone(), crate::error_chain(&e));
            }
        }
    }
    Ok(out)
}

/// What differs between a node's facts and what continuum applied (pure).
pub fn drift_of(
    f: &k3s::Facts,
    role: Role,
    config_sha: &str,
    version: &str,
    bundle_sha: Option<&str>,
) -> Vec<String> {
    let unit = match role {
        Role::Server => "k3s",
        Role::Agent => "k3s-agent",
    };
    let mut why = Vec::new();
    match f.units.get(unit) {
        None => why.push(format!("k3s is not installed (no {unit} service)")),
        Some(false) => why.push("service inactive".to_string()),
        Some(true) => {}
    }
    if f.config_sha.as_deref() != Some(config_sha) {
        why.push("config.yaml differs from what continuum wrote".to_string());
    }
    match f.version.as_deref() {
        Some(v) if v != version => why.push(format!("k3s reports {v}, not {version}")),
        None if f.units.contains_key(unit) => why.push("the k3s binary is missing".to_string()),
        _ => {}
    }
    if let (Some(want), Some(have)) = (bundle_sha, f.binary_sha.as_deref())
        && want != have
        && f.version.as_deref() == Some(version)
    {
        why.push("the k3s binary differs from the bundle's".to_string());
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drift_names_what_differs() {
        let mut f = k3s::Facts {
            arch: "amd64".into(),
            config_sha: Some("c".into()),
            version: Some("v1".into()),
            binary_sha: Some("b".into()),
            ..k3s::Facts::default()
        };
        f.units.insert("k3s-agent".into(), true);
        assert!(drift_of(&f, Role::Agent, "c", "v1", Some("b")).is_empty());
        f.units.insert("k3s-agent".into(), false);
        assert_eq!(
            drift_of(&f, Role::Agent, "c", "v1", Some("b")),
            ["service inactive"]
        );
        f.units.insert("k3s-agent".into(), true);
        let d = drift_of(&f, Role::Agent, "other", "v1", Some("x"));
        assert_eq!(
            d,
            [
                "config.yaml differs from what continuum wrote",
                "the k3s binary differs from the bundle's"
            ]
        );
        assert_eq!(
            drift_of(&f, Role::Agent, "c", "v2", None),
            ["k3s reports v1, not v2"]
        );
        assert_eq!(
            drift_of(&f, Role::Server, "c", "v1", None),
            ["k3s is not installed (no k3s service)"]
        );
    }
}
