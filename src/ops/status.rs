//! `continuum status ENV`: what state records for every node, joined with what the
//! API server says now (unless offline or unreachable).

use serde::Serialize;

use super::{OpsError, Settings};
use crate::k3s;
use crate::state::{Status, Store};

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

#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub env: String,
    pub api: Option<String>,
    pub nodes: Vec<NodeStatus>,
    /// Why live data is missing, if it is.
    pub live_error: Option<String>,
    pub kubeconfig_context: Option<String>,
    /// Registered OSCAR endpoints of the environment (issue 4).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<super::serverless::EndpointStatus>,
}

pub async fn status(env: &str, settings: &Settings, live: bool) -> Result<StatusReport, OpsError> {
    let store = Store::new(&settings.state_dir, env);
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
    if live && let Some(init) = state.cluster.init_server.clone() {
        let result = async {
            let pool = settings.pool(env)?;
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
            }
            Err(e) => live_error = Some(e.to_string()),
        }
    }
    let endpoints = super::serverless::endpoint_status(&settings.state_dir, env, live).await;
    Ok(StatusReport {
        endpoints,
        env: env.to_string(),
        api: state.cluster.server_url.clone(),
        nodes,
        live_error,
        kubeconfig_context: state
            .resources
            .get(crate::graph::KUBECONFIG)
            .and_then(|r| r.attrs.get("context"))
            .and_then(|v| v.as_str())
            .map(str::to_string),
    })
}
