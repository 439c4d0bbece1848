//! Federating one service over several clusters (`fn federate`): from OSCAR 4.1 the
//! `federation` block goes to the coordinator only, which pushes the members' copies
//! itself (docs/oscar.md, "Federation (4.1)"); before 4.1 every member gets its own
//! definition with `replicas` and `delegation` (docs/oscar.md, "Federation before
//! 4.1"). The members' registered credentials go where OSCAR needs them, the refresh
//! token 4.1 requires only from `--secrets`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{
    FnError, Secrets, Written, api_of, check_name, dropped_notes, put_verified,
    without_carried_credentials,
};
use crate::oscar::client::{Api, ClientError, Oscar};
use crate::oscar::service::{self, REFRESH_TOKEN};
use crate::state::Secret;

/// Delegation policies (`static`, `random`, `load-based`, `topsis`: all from 3.6,
/// docs/oscar.md, "Federation before 4.1").
pub const DELEGATIONS: &[&str] = &["static", "random", "load-based", "topsis"];
/// Federation topologies (4.1).
pub const TOPOLOGIES: &[&str] = &["none", "star", "mesh"];

/// How to federate.
pub struct FederateOptions<'a> {
    pub delegation: &'a str,
    pub topology: &'a str,
    pub secrets: &'a Secrets,
}

/// One `federation.members` / `replicas` entry naming `o`.
fn replica(o: &Oscar, service: &str, priority: usize) -> Value {
    json!({"type": "oscar", "cluster_id": o.cluster(), "service_name": service,
           "priority": priority, "ssl_verify": o.ssl_verify()})
}

/// `def` without any cross-cluster block, with `clusters` entries for `with`
/// (credentials from the registry).
fn base_with_clusters(def: &Value, with: &[&Oscar]) -> Value {
    let mut d = def.clone();
    if let Some(m) = d.as_object_mut() {
        for k in [
            "federation",
            "replicas",
            "delegation",
            "rescheduler_threshold",
        ] {
            m.remove(k);
        }
        if !with.is_empty() {
            let mut clusters = m
                .get("clusters")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for o in with {
                clusters.insert(o.cluster().to_string(), o.clusters_entry());
            }
            m.insert("clusters".into(), Value::Object(clusters));
        }
    }
    d
}

/// The 4.1 definition for the coordinator: the `federation` block naming every
/// member, `clusters` entries for them and for the coordinator itself (a mesh worker
/// checks its origin through it), the refresh token among the secrets.
pub fn coordinator_definition(
    base: &Value,
    service: &str,
    coordinator: &Oscar,
    members: &[&Oscar],
    delegation: &str,
    topology: &str,
    refresh_token: &Secret,
) -> Value {
    let mut with: Vec<&Oscar> = vec![coordinator];
    with.extend(members);
    let mut d = base_with_clusters(base, &with);
    let list: Vec<Value> = members
        .iter()
        .enumerate()
        .map(|(i, o)| replica(o, service, i))
        .collect();
    d["federation"] = json!({"group_id": service, "topology": topology,
                             "delegation": delegation, "members": list});
    let given = BTreeMap::from([(REFRESH_TOKEN.to_string(), refresh_token.clone())]);
    service::fill_secrets(&mut d, &[REFRESH_TOKEN.to_string()], &given);
    d
}

/// The definition of `service` on `member` in the per-cluster form before 4.1:
/// `replicas` naming the others, `delegation`, `clusters` entries for the others.
pub fn legacy_definition(
    base: &Value,
    service: &str,
    others: &[&Oscar],
    delegation: &str,
) -> Value {
    let mut d = base_with_clusters(base, others);
    d["replicas"] = Value::Array(
        others
            .iter()
            .enumerate()
            .map(|(i, o)| replica(o, service, i))
            .collect(),
    );
    d["delegation"] = json!(delegation);
    d
}

/// Federate `service` over `members`. The first member coordinates. From 4.1 the
/// `federation` block is written to the coordinator only and OSCAR pushes the
/// members' copies itself (a member without a copy first gets a plain one, since
/// OSCAR pushes an update as a PUT); before 4.1 every member gets `replicas` +
/// `delegation`. The definition comes from the first member that has the service.
pub async fn federate(
    members: &[Oscar],
    service: &str,
    opts: &FederateOptions<'_>,
) -> Result<Vec<Written>, FnError> {
    check_name(service)?;
    if members.len() < 2 {
        return Err(FnError::Invalid(
            "a federation needs at least two members".into(),
        ));
    }
    if !DELEGATIONS.contains(&opts.delegation) {
        return Err(FnError::Invalid(format!(
            "unknown delegation `{}` (expected one of: {})",
            opts.delegation,
            DELEGATIONS.join(", ")
        )));
    }
    if !TOPOLOGIES.contains(&opts.topology) {
        return Err(FnError::Invalid(format!(
            "unknown topology `{}` (expected one of: {})",
            opts.topology,
            TOPOLOGIES.join(", ")
        )));
    }
    let mut apis = Vec::new();
    for m in members {
        apis.push(api_of(m).await?);
    }
    let mut found = None;
    let mut present = Vec::new();
    for m in members {
        let def = m.get_service(service).await?;
        if found.is_none()
            && let Some(d) = &def
        {
            found = Some((m.cluster().to_string(), d.clone()));
        }
        present.push(def.is_some());
    }
    let (origin, src) = found.ok_or_else(|| FnError::Missing {
        service: service.to_string(),
        cluster: members
            .iter()
            .map(Oscar::cluster)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    let coordinator = &members[0];
    if apis.first() == Some(&Api::V4_1) {
        federate_41(members, &apis, &present, &origin, &src, service, opts).await
    } else {
        if let Some((m, _)) = members.iter().zip(&apis).find(|(_, a)| **a == Api::V4_1) {
            return Err(FnError::Invalid(format!(
                "`{}` runs OSCAR 4.1, which has no per-cluster `replicas`, and coordinator `{}` runs an older OSCAR: list `{}` first to coordinate the federation",
                m.cluster(),
                coordinator.cluster(),
                m.cluster()
            )));
        }
        let token = src.get("token").and_then(Value::as_str).map(str::to_string);
        // Build every definition first, so a refusal writes nothing.
        let mut bodies = Vec::new();
        for (m, api) in members.iter().zip(&apis) {
            let (base, notes) = without_carried_credentials(&src, &origin, m, opts.secrets, &[])?;
            let others: Vec<&Oscar> = members
                .iter()
                .filter(|o| o.cluster() != m.cluster())
                .collect();
            let def = legacy_definition(&base, service, &others, opts.delegation);
            let (body, dropped) = service::body_for(&def, *api, m.cluster());
            let mut n = notes.clone();
            n.extend(dropped_notes(&dropped, *api, m.cluster()));
            bodies.push((body, n));
        }
        let mut out = Vec::new();
        for ((m, api), (body, n)) in members.iter().zip(&apis).zip(bodies) {
            let stale = token.as_deref().filter(|_| m.cluster() != origin);
            out.push(put_verified(m, *api, &body, stale, n).await?);
        }
        Ok(out)
    }
}

async fn federate_41(
    members: &[Oscar],
    apis: &[Api],
    present: &[bool],
    origin: &str,
    src: &Value,
    service: &str,
    opts: &FederateOptions<'_>,
) -> Result<Vec<Written>, FnError> {
    let coordinator = &members[0];
    let refresh = opts
        .secrets
        .get(REFRESH_TOKEN)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| FnError::NoRefreshToken {
            coordinator: coordinator.cluster().to_string(),
        })?;
    let (base, notes) =
        without_carried_credentials(src, origin, coordinator, opts.secrets, &[REFRESH_TOKEN])?;
    // The coordinator forwards its caller's Authorization to every member
    // (docs/oscar.md, "Federation (4.1)"): check now that each member accepts ours.
    for m in &members[1..] {
        match m.with_credentials_of(coordinator)?.system_info().await {
            Ok(_) => {}
            Err(ClientError::Unauthorized { .. }) => {
                return Err(FnError::MemberRefuses {
                    member: m.cluster().to_string(),
                    coordinator: coordinator.cluster().to_string(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    let others: Vec<&Oscar> = members[1..].iter().collect();
    let def = coordinator_definition(
        &base,
        service,
        coordinator,
        &others,
        opts.delegation,
        opts.topology,
        refresh,
    );
    let (body, dropped) = service::body_for(&def, Api::V4_1, coordinator.cluster());
    let mut out = Vec::new();
    // OSCAR pushes an update to the members as a PUT, which a member without the
    // service answers 404: give those a plain copy first (coordinator first).
    let mut plain = base_with_clusters(&base, &[]);
    if let Some(s) = plain
        .get_mut("environment")
        .and_then(|e| e.get_mut("secrets"))
        .and_then(Value::as_object_mut)
    {
        s.remove(REFRESH_TOKEN);
    }
    for ((m, api), has) in members.iter().zip(apis).zip(present) {
        if !has {
            let (b, d) = service::body_for(&plain, *api, m.cluster());
            let mut w =
                put_verified(m, *api, &b, None, dropped_notes(&d, *api, m.cluster())).await?;
            w.action = "created (plain copy before federating)".into();
            out.push(w);
        }
    }
    let mut n = notes;
    n.extend(dropped_notes(&dropped, Api::V4_1, coordinator.cluster()));
    let mut w = put_verified(coordinator, Api::V4_1, &body, None, n).await?;
    w.action = format!("{} (federation coordinator)", w.action);
    out.push(w);
    // The result as OSCAR reports it, then each member's copy.
    let fed = coordinator
        .get_federation(service)
        .await?
        .ok_or_else(|| FnError::Verify {
            service: service.to_string(),
            cluster: coordinator.cluster().to_string(),
            detail: "GET /system/federation answers 404".into(),
        })?;
    let listed = fed.members.unwrap_or_default();
    for m in &others {
        if !listed
            .iter()
            .any(|r| r.cluster_id == m.cluster() && r.service_name == service)
        {
            return Err(FnError::Verify {
                service: service.to_string(),
                cluster: coordinator.cluster().to_string(),
                detail: format!("its federation does not list member `{}`", m.cluster()),
            });
        }
    }
    if fed.topology != opts.topology {
        return Err(FnError::Verify {
            service: service.to_string(),
            cluster: coordinator.cluster().to_string(),
            detail: format!(
                "its federation topology is `{}`, expected `{}`",
                fed.topology, opts.topology
            ),
        });
    }
    let image = base.get("image").cloned().unwrap_or(Value::Null);
    for m in &others {
        let got = m.get_service(service).await?;
        let ok = got
            .as_ref()
            .is_some_and(|g| g.get("image").cloned().unwrap_or(Value::Null) == image);
        if !ok {
            return Err(FnError::Verify {
                service: service.to_string(),
                cluster: m.cluster().to_string(),
                detail: format!(
                    "coordinator `{}` did not push its copy",
                    coordinator.cluster()
                ),
            });
        }
        out.push(Written {
            service: service.to_string(),
            cluster: m.cluster().to_string(),
            action: format!("pushed by `{}`", coordinator.cluster()),
            notes: Vec::new(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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
    fn coordinator_block_or_legacy_replicas() {
        let base = json!({"name": "s", "image": "i", "script": "x", "replicas": [], "delegation": "static"});
        let (c, a, b) = (oscar("coord"), oscar("edge"), oscar("cloud"));
        let new = coordinator_definition(
            &base,
            "s",
            &c,
            &[&a, &b],
            "topsis",
            "mesh",
            &Secret::new("rt"),
        );
        assert_eq!(new["federation"]["delegation"], "topsis");
        assert_eq!(new["federation"]["members"][1]["cluster_id"], "cloud");
        assert!(new.get("replicas").is_none() && new.get("delegation").is_none());
        assert_eq!(new["clusters"]["coord"]["endpoint"], "http://coord.example");
        assert_eq!(new["environment"]["secrets"]["refresh_token"], "rt");
        let old = legacy_definition(&base, "s", &[&b], "topsis");
        assert!(old.get("federation").is_none());
        assert_eq!(old["replicas"][0]["service_name"], "s");
        assert_eq!(old["delegation"], "topsis");
        assert_eq!(old["clusters"]["cloud"]["auth_password"], "pw");
    }
}
