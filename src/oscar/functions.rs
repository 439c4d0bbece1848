//! Redeploying OSCAR functions between clusters (docs/oscar.md, "Writes"): list,
//! copy, move, apply (FDL) and federate.
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
//! must be given again. A copy is never federated (`fn federate` does that).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Value, json};

use super::client::{Api, ClientError, Oscar};
use super::fdl::{FdlError, FdlService};
use super::service::{self, REFRESH_TOKEN};
use crate::recipe::serverless::{MAX_SERVICE_NAME, is_service_name};
use crate::state::Secret;

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

async fn fetch(from: &Oscar, service: &str) -> Result<Value, FnError> {
    from.get_service(service)
        .await?
        .ok_or_else(|| FnError::Missing {
            service: service.to_string(),
            cluster: from.cluster().to_string(),
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
/// every member and, when one fails, DELETE the copies on all of them
/// (`RollbackFederationCreate` in grycap/oscar v4.1.2 `pkg/utils/federation.go`): a
/// member that already has a service of that name would lose it. Refuse that before
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

/// Delegation policies (`static`, `random`, `load-based`, `topsis`: all from 3.6,
/// docs/oscar.md, "Federation").
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
/// upstream pushes an update as a PUT); before 4.1 every member gets `replicas` +
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
    // (pkg/utils/federation.go): check now that each member accepts ours for it.
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
    // Upstream pushes an update to the members as a PUT, which a member without the
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
