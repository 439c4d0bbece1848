//! Copying and moving one service between clusters (`fn copy`, `fn move`;
//! docs/oscar.md, "Federation (4.1)" and "Credentials in definitions"): the copy is a
//! plain service, never federated, carrying no other cluster's password and its
//! secrets only when given again; a move deletes at the source only after the copy
//! on the target is verified.

use serde_json::Value;

use super::{
    FnError, Secrets, Written, api_of, check_name, dropped_notes, put_verified,
    without_carried_credentials,
};
use crate::oscar::client::Oscar;
use crate::oscar::service::{self, REFRESH_TOKEN};

/// `service` as `from` stores it; a missing one is an error naming the cluster.
async fn fetch(from: &Oscar, service: &str) -> Result<Value, FnError> {
    from.get_service(service)
        .await?
        .ok_or_else(|| FnError::Missing {
            service: service.to_string(),
            cluster: from.cluster().to_string(),
        })
}

/// A copy is a plain service: a `federation` block would make the target a second
/// coordinator pushing copies to the members (and, on a failed create, deleting
/// theirs), and `replicas` name clusters from the source's point of view. Both are
/// left out, with the refresh token that only a federation uses; `fn federate` sets
/// them up again.
fn without_federation(src: &Value, to: &str) -> (Value, Vec<String>) {
    let mut d = src.clone();
    let mut notes = Vec::new();
    if let Some(m) = d.as_object_mut() {
        let blocks: Vec<&str> = ["federation", "replicas", "delegation"]
            .into_iter()
            .filter(|k| m.get(*k).is_some_and(|v| !service::is_zero(v)))
            .collect();
        if !blocks.is_empty() {
            notes.push(format!(
                "the copy on `{to}` is not federated (`{}` left out): run `continuum fn federate` to federate it",
                blocks.join("`, `")
            ));
        }
        for k in [
            "federation",
            "replicas",
            "delegation",
            "rescheduler_threshold",
        ] {
            m.remove(k);
        }
        if let Some(s) = m
            .get_mut("environment")
            .and_then(|e| e.get_mut("secrets"))
            .and_then(Value::as_object_mut)
        {
            s.remove(REFRESH_TOKEN);
        }
    }
    (d, notes)
}

/// Copy `service` from one cluster to another.
pub async fn copy(
    from: &Oscar,
    to: &Oscar,
    service: &str,
    secrets: &Secrets,
) -> Result<Written, FnError> {
    check_name(service)?;
    if from.cluster() == to.cluster() {
        return Err(FnError::SameCluster(from.cluster().to_string()));
    }
    api_of(from).await?;
    let api = api_of(to).await?;
    let src = fetch(from, service).await?;
    let (plain, mut notes) = without_federation(&src, to.cluster());
    let (def, more) = without_carried_credentials(&plain, from.cluster(), to, secrets, &[])?;
    notes.extend(more);
    let (body, dropped) = service::body_for(&def, api, to.cluster());
    notes.extend(dropped_notes(&dropped, api, to.cluster()));
    let token = src.get("token").and_then(Value::as_str).map(str::to_string);
    put_verified(to, api, &body, token.as_deref(), notes).await
}

/// Copy, then delete at the source (only after the target is verified).
pub async fn move_service(
    from: &Oscar,
    to: &Oscar,
    service: &str,
    secrets: &Secrets,
) -> Result<Written, FnError> {
    let w = copy(from, to, service, secrets).await?;
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
