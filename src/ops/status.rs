//! `continuum status ENV`: what state records for every node, joined with what the
//! API server says now (unless offline or unreachable), and the nodes that joined
//! through an enrolment pool (found by their `continuum.io/pool` label).

use serde::Serialize;

use super::{OpsError, Settings};
use crate::k3s;
use crate::state::Status;

#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub host: String,
    pub role: String,
    pub address: String,
    pub arch: Option<String>,
    pub version: Option<String>,
    pub ready: Option<String>,
    pub state: Status,
    pub last_error: Option<String>,
}

/// A node that joined by itself through an enrolment pool (issue 15): not in the
/// recipe, known from the API server's node list.
#[derive(Debug, Clone, Serialize)]
pub struct EnrolledNode {
    pub name: String,
    pub pool: String,
    pub ready: String,
    pub version: String,
    pub arch: String,
    pub labels: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub env: String,
    pub api: Option<String>,
    pub nodes: Vec<NodeStatus>,
    /// Why live data is missing, if it is.
    pub live_error: Option<String>,
    /// Nodes that joined through an enrolment pool (live data only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub enrolled: Vec<EnrolledNode>,
    pub kubeconfig_context: Option<String>,
    /// Registered OSCAR endpoints of the environment.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<super::serverless::EndpointStatus>,
    /// The AWS site: recorded ids, and instances (live state when reachable).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AwsStatus {
    pub region: String,
    /// `(resource, id)`: vpc, subnet, internet gateway, route table, security group,
    /// key pair, as recorded.
    pub resources: Vec<(String, String)>,
    pub instances: Vec<InstanceStatus>,
    /// Why live instance data is missing, if it is.
    pub live_error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct InstanceStatus {
    pub host: String,
    pub group: String,
    pub id: String,
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

/// The AWS part of `status`: what state records, refreshed by one DescribeInstances.
async fn aws_status(
    env: &str,
    settings: &Settings,
    c: &crate::aws::provision::CloudState,
    live: bool,
) -> AwsStatus {
    let mut resources = Vec::new();
    let mut push = |what: &str, id: Option<String>| {
        if let Some(id) = id {
            resources.push((what.to_string(), id));
        }
    };
    push("vpc", c.vpc.as_ref().map(|v| v.id.clone()));
    push("subnet", c.subnet.as_ref().map(|v| v.id.clone()));
    push("internet-gateway", c.internet_gateway.clone());
    push("route-table", c.route_table.clone());
    push("security-group", c.security_group.clone());
    push("key-pair", c.key_pair.clone());
    let mut instances: Vec<InstanceStatus> = c
        .groups
        .iter()
        .flat_map(|(g, gs)| {
            gs.instances.iter().map(move |(h, r)| InstanceStatus {
                host: h.clone(),
                group: g.clone(),
                id: r.id.clone(),
                state: r.state.clone(),
                private_ip: r.private_ip.clone(),
                public_ip: r.public_ip.clone(),
            })
        })
        .collect();
    let mut live_error = None;
    if live && !instances.is_empty() {
        let listed = match super::cloud::provider(settings, &c.region).await {
            Ok(api) => crate::aws::retry(settings.cloud.retry, || api.describe_instances(env))
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok(list) => {
                for i in &mut instances {
                    match list.iter().find(|l| l.id == i.id) {
                        Some(l) => {
                            i.state.clone_from(&l.state);
                            i.public_ip.clone_from(&l.public_ip);
                        }
                        None => i.state = "not-found".into(),
                    }
                }
            }
            Err(e) => live_error = Some(e),
        }
    }
    AwsStatus {
        region: c.region.clone(),
        resources,
        instances,
        live_error,
    }
}

pub async fn status(env: &str, settings: &Settings, live: bool) -> Result<StatusReport, OpsError> {
    let store = settings.store(env)?;
    let state = store.load_existing()?;
    let mut nodes: Vec<NodeStatus> = state
        .resources
        .values()
        .filter_map(|r| {
            let host = r.host.clone()?;
            let role = r.role?;
            let hs = state.hosts.get(&host);
            Some(NodeStatus {
                address: hs.map(|h| h.address.clone()).unwrap_or_default(),
                arch: hs.and_then(|h| h.arch.clone()),
                host,
                role: role.to_string(),
                version: None,
                ready: None,
                state: r.status,
                last_error: r.last_error.clone(),
            })
        })
        .collect();
    nodes.sort_by(|a, b| (&b.role, &a.host).cmp(&(&a.role, &b.host)));
    let mut live_error = None;
    let mut enrolled = Vec::new();
    if live && let Some(init) = state.cluster.init_server.clone() {
        let result = async {
            let pool = settings.pool(env, Some(&state))?;
            let host = state
                .hosts
                .get(&init)
                .map(|h| h.to_host(&init))
                .ok_or_else(|| {
                    OpsError::K3s(k3s::K3sError::Protocol {
                        host: init.clone(),
                        detail: "no connection details in state".into(),
                    })
                })?;
            let conn = pool.get(&host).await?;
            let listed = k3s::list_nodes(conn.as_ref()).await;
            pool.close().await;
            Ok::<_, OpsError>(listed?)
        }
        .await;
        match result {
            Ok(listed) => {
                for n in &mut nodes {
                    if let Some(l) = listed.iter().find(|l| l.name == n.host) {
                        n.ready = Some(l.ready.clone());
                        n.version = Some(l.version.clone());
                        if n.arch.is_none() && !l.arch.is_empty() {
                            n.arch = Some(l.arch.clone());
                        }
                    } else {
                        n.ready = Some("NotRegistered".into());
                    }
                }
                enrolled = listed
                    .iter()
                    .filter(|l| !nodes.iter().any(|n| n.host == l.name))
                    .filter_map(|l| {
                        Some(EnrolledNode {
                            pool: l.labels.get(super::enroll::POOL_LABEL)?.clone(),
                            name: l.name.clone(),
                            ready: l.ready.clone(),
                            version: l.version.clone(),
                            arch: l.arch.clone(),
                            labels: l.labels.clone(),
                        })
                    })
                    .collect();
            }
            Err(e) => live_error = Some(e.to_string()),
        }
    }
    let endpoints = super::serverless::endpoint_status(&settings.state_dir, env, live).await;
    let aws = match &state.aws {
        Some(c) if !c.region.is_empty() => Some(aws_status(env, settings, c, live).await),
        _ => None,
    };
    Ok(StatusReport {
        aws,
        endpoints,
        env: env.to_string(),
        api: state.cluster.server_url.clone(),
        nodes,
        live_error,
        enrolled,
        kubeconfig_context: state
            .resources
            .get(crate::graph::KUBECONFIG)
            .and_then(|r| r.attrs.get("context"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}
