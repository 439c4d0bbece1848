//! Applying FDL services (`fn apply`; docs/oscar.md, "FDL"): each to the cluster its
//! FDL key names, in the request form that cluster's version takes, verified like any
//! write. A new federated service is refused when one of its members already has a
//! service of that name, which OSCAR 4.1 would delete on a failed create
//! (docs/oscar.md, "Federation (4.1)").

use std::collections::BTreeMap;

use serde_json::Value;

use super::{FnError, Written, api_of, check_name, dropped_notes, put_verified};
use crate::oscar::client::{Api, Oscar};
use crate::oscar::fdl::FdlService;
use crate::oscar::service;

/// Apply FDL services; `clusters[i]` is the resolved cluster of `services[i]`.
pub async fn apply(services: &[FdlService], clusters: &[Oscar]) -> Result<Vec<Written>, FnError> {
    for s in services {
        check_name(&s.name)?;
    }
    // Contact every cluster (reachability, credentials, version) before the first write.
    let mut seen: BTreeMap<String, Api> = BTreeMap::new();
    let mut apis = Vec::new();
    for c in clusters {
        let api = match seen.get(c.cluster()) {
            Some(a) => *a,
            None => {
                let a = api_of(c).await?;
                seen.insert(c.cluster().to_string(), a);
                a
            }
        };
        apis.push(api);
    }
    for ((s, c), api) in services.iter().zip(clusters).zip(&apis) {
        if *api == Api::V4_1 {
            check_federated_create(s, c).await?;
        }
    }
    let mut out = Vec::new();
    for ((s, c), api) in services.iter().zip(clusters).zip(apis) {
        let (body, dropped) = service::body_for(&s.definition, api, c.cluster());
        let mut notes = s.notes.clone();
        notes.extend(dropped_notes(&dropped, api, c.cluster()));
        out.push(put_verified(c, api, &body, None, notes).await?);
    }
    Ok(out)
}

/// A new federated service (POST on a 4.1 coordinator) makes OSCAR POST its copy to
/// every member and, when one fails, DELETE the copies on all of them (docs/oscar.md,
/// "Federation (4.1)"): a member that already has a service of that name would lose
/// it. Refuse that before
/// writing, looking as the coordinator will (its credentials, the `clusters` endpoint).
async fn check_federated_create(s: &FdlService, coordinator: &Oscar) -> Result<(), FnError> {
    let def = &s.definition;
    let members = def
        .get("federation")
        .and_then(|f| f.get("members"))
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if members.is_empty() || coordinator.get_service(&s.name).await?.is_some() {
        return Ok(());
    }
    for m in &members {
        let id = m
            .get("cluster_id")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let name = m
            .get("service_name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let is_oscar = m
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t.eq_ignore_ascii_case("oscar"));
        let Some(entry) = def.get("clusters").and_then(|c| c.get(id)) else {
            continue;
        };
        let Some(endpoint) = entry.get("endpoint").and_then(Value::as_str) else {
            continue;
        };
        if !is_oscar || name.is_empty() {
            continue;
        }
        let ssl = entry
            .get("ssl_verify")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let member = coordinator.forwarded_to(id, endpoint, ssl)?;
        // Only a service that is there matters; OSCAR reports a refusal itself.
        if let Ok(Some(_)) = member.get_service(name).await {
            return Err(FnError::Invalid(format!(
                "service `{}` is new on coordinator `{}` but federation member `{id}` already has a service `{name}`: OSCAR 4.1 would fail to create its copy there and then delete that service while rolling back (docs/oscar.md, \"Federation (4.1)\"); remove it from `{id}` or federate with `continuum fn federate`",
                s.name,
                coordinator.cluster()
            )));
        }
    }
    Ok(())
}
