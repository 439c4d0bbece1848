//! Redeploying OSCAR functions between clusters (REFERENCE.md §2: "Redeploying a
//! function to another cluster = POST (or PUT if it exists) the same definition
//! there"): list, copy, move, apply (FDL) and federate.
//!
//! Invariants: every cluster is resolved and every name checked before the first
//! request; every cluster written to is contacted (info + auth) before the first
//! write; read-only fields (`token`, `owner`) are never re-posted; a copy counts only
//! after a GET on the target shows the same image, script and resources; `move`
//! deletes at the source only after that; a copy whose verification fails removes
//! what it created.

use serde::Serialize;
use serde_json::{Value, json};

use super::MAX_SERVICE_NAME;
use super::client::{ClientError, Oscar};
use super::fdl::{FdlError, FdlService};

/// Service fields set by the server; stripped before re-posting elsewhere.
pub const READ_ONLY: &[&str] = &["token", "owner"];
/// Fields that must match after a copy ("same image, script and resources").
pub const VERIFIED: &[&str] = &["name", "image", "script", "cpu", "memory", "enable_gpu"];

#[derive(Debug, thiserror::Error)]
pub enum FnError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Fdl(#[from] FdlError),
    #[error("{0}")]
    Resolve(String),
    #[error("service name `{name}` has {len} characters; OSCAR allows at most {MAX_SERVICE_NAME}")]
    NameTooLong { name: String, len: usize },
    #[error("service `{service}` does not exist on cluster `{cluster}`")]
    Missing { service: String, cluster: String },
    #[error("source and target are the same cluster `{0}`")]
    SameCluster(String),
    #[error("service `{service}` on `{cluster}` does not match after the write: {detail}")]
    Verify {
        service: String,
        cluster: String,
        detail: String,
    },
    #[error("{0}")]
    Invalid(String),
}

/// Refuse names OSCAR would refuse, before any request.
pub fn check_name(name: &str) -> Result<(), FnError> {
    if name.len() > MAX_SERVICE_NAME {
        return Err(FnError::NameTooLong {
            name: name.to_string(),
            len: name.len(),
        });
    }
    if name.is_empty() {
        return Err(FnError::Invalid("the service name is empty".into()));
    }
    Ok(())
}

/// The definition as it can be posted to `cluster`: read-only fields dropped,
/// `cluster_id` set to the target.
pub fn portable(def: &Value, cluster: &str) -> Value {
    let mut d = def.clone();
    if let Some(m) = d.as_object_mut() {
        for k in READ_ONLY {
            m.remove(*k);
        }
        m.insert("cluster_id".into(), json!(cluster));
    }
    d
}

/// What one write did.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub service: String,
    pub cluster: String,
    /// `created` (POST) or `updated` (PUT).
    pub action: &'static str,
}

/// Cross-cluster fields verified when the written definition has them.
const VERIFIED_WHEN_SET: &[&str] = &["federation", "replicas", "delegation"];

fn mismatch(want: &Value, got: &Value) -> Option<String> {
    let set = VERIFIED_WHEN_SET.iter().filter(|k| want.get(**k).is_some());
    for k in VERIFIED.iter().chain(set) {
        if want.get(*k) != got.get(*k) {
            return Some(format!(
                "`{k}` is {} there, expected {}",
                short(got.get(*k)),
                short(want.get(*k))
            ));
        }
    }
    None
}

fn short(v: Option<&Value>) -> String {
    let s = v.map_or_else(|| "absent".to_string(), Value::to_string);
    if s.len() > 60 {
        format!("{}...", &s[..57])
    } else {
        s
    }
}

/// POST (or PUT when it exists) `def` on `to`, then verify with GET. `stale_token`:
/// the source's token, which must not show up on the target. On a failed
/// verification a created service is deleted again.
pub async fn put_verified(
    to: &Oscar,
    def: &Value,
    stale_token: Option<&str>,
) -> Result<Written, FnError> {
    let name = def
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    check_name(&name)?;
    let exists = to.get_service(&name).await?.is_some();
    if exists {
        to.update_service(def).await?;
    } else {
        to.create_service(def).await?;
    }
    let verdict = match to.get_service(&name).await? {
        None => Some("it is not there".to_string()),
        Some(got) => mismatch(def, &got).or_else(|| {
            let token = got.get("token").and_then(Value::as_str);
            (stale_token.is_some() && token == stale_token)
                .then(|| "it carries the source cluster's service token".to_string())
        }),
    };
    if let Some(detail) = verdict {
        if !exists {
            let _ = to.delete_service(&name).await;
        }
        return Err(FnError::Verify {
            service: name,
            cluster: to.cluster().to_string(),
            detail,
        });
    }
    Ok(Written {
        service: name,
        cluster: to.cluster().to_string(),
        action: if exists { "updated" } else { "created" },
    })
}

async fn fetch(from: &Oscar, service: &str) -> Result<Value, FnError> {
    from.get_service(service)
        .await?
        .ok_or_else(|| FnError::Missing {
            service: service.to_string(),
            cluster: from.cluster().to_string(),
        })
}

/// Copy `service` from one cluster to another.
pub async fn copy(from: &Oscar, to: &Oscar, service: &str) -> Result<Written, FnError> {
    check_name(service)?;
    if from.cluster() == to.cluster() {
        return Err(FnError::SameCluster(from.cluster().to_string()));
    }
    to.system_info().await?;
    let src = fetch(from, service).await?;
    let token = src.get("token").and_then(Value::as_str).map(str::to_string);
    put_verified(to, &portable(&src, to.cluster()), token.as_deref()).await
}

/// Copy, then delete at the source (only after the target is verified).
pub async fn move_service(from: &Oscar, to: &Oscar, service: &str) -> Result<Written, FnError> {
    let w = copy(from, to, service).await?;
    from.delete_service(service).await?;
    if from.get_service(service).await?.is_some() {
        return Err(FnError::Verify {
            service: service.to_string(),
            cluster: from.cluster().to_string(),
            detail: "it is still there after DELETE (the copy on the target is complete)".into(),
        });
    }
    Ok(w)
}

/// Apply FDL services; `clusters[i]` is the resolved cluster of `services[i]`.
pub async fn apply(services: &[FdlService], clusters: &[Oscar]) -> Result<Vec<Written>, FnError> {
    for s in services {
        check_name(&s.name)?;
    }
    // Contact every cluster (reachability and credentials) before the first write.
    let mut seen = std::collections::BTreeSet::new();
    for c in clusters {
        if seen.insert(c.cluster().to_string()) {
            c.system_info().await?;
        }
    }
    let mut out = Vec::new();
    for (s, c) in services.iter().zip(clusters) {
        out.push(put_verified(c, &portable(&s.definition, c.cluster()), None).await?);
    }
    Ok(out)
}

/// Delegation policies (REFERENCE.md §2); `topsis` exists from v4.1 only.
pub const DELEGATIONS: &[&str] = &["static", "random", "load-based", "topsis"];
pub const TOPOLOGIES: &[&str] = &["none", "star", "mesh"];

/// The definition of `service` on `member`, federated with `others`: the v4.1
/// `federation` block, or the legacy `replicas` + `delegation` form before 4.1.
pub fn federated(
    base: &Value,
    service: &str,
    member: &Oscar,
    others: &[&Oscar],
    new_api: bool,
    delegation: &str,
    topology: &str,
) -> Result<Value, FnError> {
    let mut d = portable(base, member.cluster());
    let Some(m) = d.as_object_mut() else {
        return Err(FnError::Invalid(format!(
            "service `{service}` is not a JSON object"
        )));
    };
    m.remove("federation");
    m.remove("replicas");
    m.remove("delegation");
    let mut clusters = m
        .get("clusters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for o in others {
        clusters.insert(o.cluster().to_string(), o.clusters_entry());
    }
    m.insert("clusters".into(), Value::Object(clusters));
    let list: Vec<Value> = others
        .iter()
        .enumerate()
        .map(|(i, o)| {
            json!({"type": "oscar", "cluster_id": o.cluster(), "service_name": service,
                   "priority": i, "ssl_verify": true})
        })
        .collect();
    if new_api {
        m.insert(
            "federation".into(),
            json!({"group_id": service, "topology": topology, "delegation": delegation, "members": list}),
        );
    } else {
        if delegation == "topsis" {
            return Err(FnError::Invalid(format!(
                "cluster `{}` runs OSCAR before 4.1: its legacy `replicas` form has no `topsis` delegation",
                member.cluster()
            )));
        }
        m.insert("replicas".into(), Value::Array(list));
        m.insert("delegation".into(), json!(delegation));
    }
    Ok(d)
}

/// Federate `service` over `members`: the definition comes from the first member
/// that has it; every member gets it with the others as federation members.
pub async fn federate(
    members: &[Oscar],
    service: &str,
    delegation: &str,
    topology: &str,
) -> Result<Vec<Written>, FnError> {
    check_name(service)?;
    if members.len() < 2 {
        return Err(FnError::Invalid(
            "a federation needs at least two members".into(),
        ));
    }
    if !DELEGATIONS.contains(&delegation) {
        return Err(FnError::Invalid(format!(
            "unknown delegation `{delegation}` (expected one of: {})",
            DELEGATIONS.join(", ")
        )));
    }
    if !TOPOLOGIES.contains(&topology) {
        return Err(FnError::Invalid(format!(
            "unknown topology `{topology}` (expected one of: {})",
            TOPOLOGIES.join(", ")
        )));
    }
    let mut infos = Vec::new();
    for m in members {
        infos.push(m.system_info().await?);
    }
    let mut base = None;
    for m in members {
        if let Some(def) = m.get_service(service).await? {
            base = Some((m.cluster().to_string(), def));
            break;
        }
    }
    let (origin, base) = base.ok_or_else(|| FnError::Missing {
        service: service.to_string(),
        cluster: members
            .iter()
            .map(Oscar::cluster)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let token = base
        .get("token")
        .and_then(Value::as_str)
        .map(str::to_string);
    // Build every definition first, so a refusal (topsis on a legacy member) writes nothing.
    let mut defs = Vec::new();
    for (i, m) in members.iter().enumerate() {
        let others: Vec<&Oscar> = members
            .iter()
            .filter(|o| o.cluster() != m.cluster())
            .collect();
        defs.push(federated(
            &base,
            service,
            m,
            &others,
            infos[i].at_least(4, 1),
            delegation,
            topology,
        )?);
    }
    let mut out = Vec::new();
    for (m, d) in members.iter().zip(&defs) {
        let stale = token.as_deref().filter(|_| m.cluster() != origin);
        out.push(put_verified(m, d, stale).await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Secret;
    use std::time::Duration;

    fn oscar(name: &str) -> Oscar {
        Oscar::new(
            name,
            &format!("http://{name}.example"),
            "oscar",
            Secret::new("pw"),
            true,
            Duration::from_secs(1),
        )
        .expect("client")
    }

    #[test]
    fn portable_drops_read_only_fields() {
        let d = json!({"name": "s", "image": "i", "script": "x", "token": "t", "owner": "o", "cluster_id": "a"});
        let p = portable(&d, "b");
        assert!(p.get("token").is_none() && p.get("owner").is_none());
        assert_eq!(p["cluster_id"], "b");
    }

    #[test]
    fn federation_block_or_legacy_replicas() {
        let base = json!({"name": "s", "image": "i", "script": "x", "token": "t", "replicas": []});
        let (a, b) = (oscar("edge"), oscar("cloud"));
        let new = federated(&base, "s", &a, &[&b], true, "load-based", "mesh").expect("new");
        assert_eq!(new["federation"]["delegation"], "load-based");
        assert_eq!(new["federation"]["members"][0]["cluster_id"], "cloud");
        assert!(new.get("replicas").is_none());
        assert_eq!(new["clusters"]["cloud"]["endpoint"], "http://cloud.example");
        let old = federated(&base, "s", &a, &[&b], false, "load-based", "mesh").expect("old");
        assert!(old.get("federation").is_none());
        assert_eq!(old["replicas"][0]["service_name"], "s");
        assert_eq!(old["delegation"], "load-based");
        assert!(federated(&base, "s", &a, &[&b], false, "topsis", "mesh").is_err());
    }

    #[test]
    fn long_names_are_refused_before_any_request() {
        let e = check_name(&"n".repeat(40)).expect_err("long");
        assert!(e.to_string().contains("at most 39"));
        assert!(check_name(&"n".repeat(39)).is_ok());
    }
}
