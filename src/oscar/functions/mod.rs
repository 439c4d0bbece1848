//! Redeploying OSCAR functions between clusters (docs/oscar.md, "Writes"): list,
//! copy, move, apply (FDL) and federate. This file holds what every write shares (the
//! errors, the name check, the verified write, what is never carried from one
//! cluster to another); `copy` copies and moves, `apply` applies FDL, `federate`
//! federates (docs/oscar.md, "Federation (4.1)" and "Federation before 4.1").
//!
//! Invariants: every cluster is resolved and every name checked before the first
//! request; every cluster is contacted (`/system/info`: reachability, credentials and
//! the request form its version takes) before the first write; server-set fields are
//! never re-posted (a PUT sends back the owner the target stored); a write counts only
//! after a GET on the target shows every field continuum set, as OSCAR normalises it;
//! `move` deletes at the source only after that; a copy whose verification fails
//! removes what it created. No credential is carried from one cluster to another:
//! other clusters' passwords in a definition are dropped (the target's own entry gets
//! its registered credentials) and a service's secrets, which OSCAR returns blank,
//! must be given again (docs/oscar.md, "Credentials in definitions"). A copy is never
//! federated (`fn federate` does that).

mod apply;
mod copy;
mod federate;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use super::client::{Api, ClientError, Oscar};
use super::fdl::FdlError;
use super::service;
use crate::recipe::serverless::{MAX_SERVICE_NAME, is_service_name};
use crate::state::Secret;
pub use apply::apply;
pub use copy::{copy, move_service};
pub use federate::{
    DELEGATIONS, FederateOptions, TOPOLOGIES, coordinator_definition, federate, legacy_definition,
};

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
    #[error(
        "service `{service}` on `{cluster}` has secrets OSCAR returns blank: {names}; give their values again with --secrets FILE (a YAML mapping NAME: VALUE)"
    )]
    SecretsNeeded {
        service: String,
        cluster: String,
        names: String,
    },
    #[error(
        "OSCAR 4.1 requires a `refresh_token` secret on a federated service (coordinator `{coordinator}`): put `refresh_token: <OIDC refresh token>` in the --secrets FILE (docs/oscar.md, \"Federation (4.1)\")"
    )]
    NoRefreshToken { coordinator: String },
    #[error(
        "federation member `{member}` refuses the credentials of coordinator `{coordinator}`: OSCAR 4.1 forwards the caller's Authorization header to every member, so with Basic auth every member needs the coordinator's user and password (docs/oscar.md, \"Federation (4.1)\")"
    )]
    MemberRefuses { member: String, coordinator: String },
    #[error(
        "federation member(s) {members} refused what coordinator `{coordinator}` forwarded (docs/oscar.md, \"Federation (4.1)\"): {detail}"
    )]
    MembersRefused {
        coordinator: String,
        members: String,
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
    if !is_service_name(name) {
        return Err(FnError::Invalid(format!(
            "service name `{}` is not an RFC 1035 label (lowercase letters, digits and `-`, starting with a letter): Kubernetes would refuse the objects OSCAR names after it (docs/oscar.md, \"Service names\")",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// What one write did.
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    pub service: String,
    pub cluster: String,
    /// `created` (POST), `updated` (PUT), or how a federation member got its copy.
    pub action: String,
    /// What the caller should know (fields left out, passwords not carried).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Secret values given again (a GET returns them blank), by name.
pub type Secrets = BTreeMap<String, Secret>;

/// The request form `c` takes, from the version its `/system/info` reports (this
/// also checks reachability and credentials).
async fn api_of(c: &Oscar) -> Result<Api, FnError> {
    Ok(c.system_info().await?.api(c.cluster())?)
}

fn dropped_notes(dropped: &[String], api: Api, cluster: &str) -> Vec<String> {
    dropped
        .iter()
        .map(|f| format!("`{f}` is not a field of OSCAR {api} services: left out on `{cluster}`"))
        .collect()
}

/// The cluster ids of `def`'s `clusters` entries whose endpoint is quoted in `detail`
/// (the coordinator's 401 names members by endpoint).
fn members_named(def: &Value, detail: &str) -> Vec<String> {
    def.get("clusters")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter(|(_, c)| {
                    c.get("endpoint")
                        .and_then(Value::as_str)
                        .is_some_and(|e| !e.is_empty() && detail.contains(&format!("\"{e}\"")))
                })
                .map(|(id, _)| format!("`{id}`"))
                .collect()
        })
        .unwrap_or_default()
}

/// A coordinator's 401 about its members is the members' refusal, not the target's.
fn as_member_refusal(e: ClientError, def: &Value) -> FnError {
    match e {
        ClientError::FederationAuth {
            cluster, detail, ..
        } => {
            let named = members_named(def, &detail);
            FnError::MembersRefused {
                coordinator: cluster,
                members: if named.is_empty() {
                    "(not named by the coordinator)".into()
                } else {
                    named.join(", ")
                },
                detail,
            }
        }
        other => FnError::Client(other),
    }
}

/// POST (or PUT, with the stored owner, when it exists) `body` on `to`, then verify
/// with GET. `stale_token`: the source's token, which must not show up on the target.
/// On a failed verification a created service is deleted again.
pub async fn put_verified(
    to: &Oscar,
    api: Api,
    body: &Value,
    stale_token: Option<&str>,
    notes: Vec<String>,
) -> Result<Written, FnError> {
    let name = body
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    check_name(&name)?;
    let existing = to.get_service(&name).await?;
    let mut send = body.clone();
    let result = if let Some(e) = &existing {
        service::with_owner(&mut send, e);
        to.update_service(&send).await
    } else {
        to.create_service(&send).await
    };
    result.map_err(|e| as_member_refusal(e, &send))?;
    let verdict = match to.get_service(&name).await? {
        None => Some("it is not there".to_string()),
        Some(got) => service::mismatch(&service::expected(&send, api), &got).or_else(|| {
            let token = got.get("token").and_then(Value::as_str);
            (stale_token.is_some_and(|t| !t.is_empty()) && token == stale_token)
                .then(|| "it carries the source cluster's service token".to_string())
        }),
    };
    if let Some(detail) = verdict {
        if existing.is_none() {
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
        action: if existing.is_some() {
            "updated"
        } else {
            "created"
        }
        .into(),
        notes,
    })
}

/// `src` (read from `from`) made fit to write to `to`: its secrets given again (all
/// of them, except `skip`), the passwords of other clusters' `clusters` entries
/// dropped and `to`'s own entry given its registered credentials. Returns the notes
/// to show.
fn without_carried_credentials(
    src: &Value,
    from: &str,
    to: &Oscar,
    secrets: &Secrets,
    skip: &[&str],
) -> Result<(Value, Vec<String>), FnError> {
    let mut def = src.clone();
    let names: Vec<String> = service::secret_names(src)
        .into_iter()
        .filter(|n| !skip.contains(&n.as_str()))
        .collect();
    let missing = service::fill_secrets(&mut def, &names, secrets);
    if !missing.is_empty() {
        return Err(FnError::SecretsNeeded {
            service: src
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            cluster: from.to_string(),
            names: missing.join(", "),
        });
    }
    let own = BTreeMap::from([(to.cluster().to_string(), to.clusters_entry())]);
    let stripped = service::replace_cluster_credentials(&mut def, &own);
    let notes = stripped
        .iter()
        .map(|id| {
            format!(
                "`clusters.{id}`: the password read from `{from}` was not copied to `{}`",
                to.cluster()
            )
        })
        .collect();
    Ok((def, notes))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_coordinators_401_names_the_members() {
        let def = json!({"clusters": {"cloud": {"endpoint": "http://cloud.example"},
                                      "edge": {"endpoint": "http://edge.example"}}});
        let e = as_member_refusal(
            ClientError::FederationAuth {
                cluster: "coord".into(),
                url: "http://coord.example/system/services".into(),
                detail: "[auth rejected by cluster \"http://cloud.example\" (status 401)]".into(),
            },
            &def,
        );
        let t = e.to_string();
        assert!(
            t.contains("member(s) `cloud` refused") && !t.contains("`edge`"),
            "{t}"
        );
    }

    #[test]
    fn long_names_are_refused_before_any_request() {
        let e = check_name(&"n".repeat(40)).expect_err("long");
        assert!(e.to_string().contains("at most 39"));
        assert!(check_name(&"n".repeat(39)).is_ok());
    }
}
