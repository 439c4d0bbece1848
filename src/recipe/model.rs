//! The validated model: what the rest of continuum works from. Every value here has
//! passed the checks in `super::load`; no field carries source positions any more.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// One environment: a k3s cluster over a set of inventory hosts.
#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub recipe_path: PathBuf,
    pub inventory_path: PathBuf,
    /// Inventory hosts that take part in the cluster, by name.
    pub hosts: BTreeMap<String, Host>,
    pub cluster: Cluster,
    pub kubeconfig: KubeconfigTarget,
}

/// An SSH-reachable machine from the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: Option<String>,
    pub key: Option<PathBuf>,
    /// `[user@]host[:port]`, passed to ssh as a ProxyJump.
    pub bastion: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
    /// Pinned host key (`TYPE BASE64`), from the inventory.
    pub host_key: Option<String>,
    /// Facts from `continuum inventory probe` (device, arch, cgroups), if probed.
    pub probed: Option<crate::inventory::probe::Facts>,
}

/// Desired k3s cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Cluster {
    pub version: String,
    pub install: Install,
    /// Server host names; the first one initialises the cluster.
    pub servers: Vec<String>,
    pub agents: Vec<String>,
    /// Embedded etcd (`cluster-init` on the first server).
    pub ha: bool,
    pub flannel_backend: String,
    pub disable: Vec<String>,
    pub cluster_cidr: Option<String>,
    pub service_cidr: Option<String>,
    pub tls_san: Vec<String>,
    pub node_labels: BTreeMap<String, String>,
    pub node_taints: Vec<String>,
    /// Host name or address the API server is reached by from the controller.
    pub api_endpoint: String,
    pub readiness_timeout: Duration,
    pub extra_config: BTreeMap<String, serde_json::Value>,
    /// `default-runtime: nvidia` on probed Jetsons (issue 5).
    pub nvidia_default_runtime: bool,
}

/// Where k3s comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// `curl -sfL URL | INSTALL_K3S_VERSION=... sh -s -` on each host.
    Online { script_url: String },
    /// Air-gapped: upload `install.sh` and the per-arch binary from this directory.
    Bundle { dir: PathBuf },
}

/// Which kubeconfig file and context the cluster is registered under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigTarget {
    /// `None`: the user's default (`$KUBECONFIG`'s first entry, else ~/.kube/config).
    pub path: Option<PathBuf>,
    pub context: String,
}

/// A node's role in the cluster.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Server,
    Agent,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Server => "server",
            Role::Agent => "agent",
        })
    }
}

impl Cluster {
    /// The host that runs `cluster-init` (or the only server).
    pub fn init_server(&self) -> &str {
        &self.servers[0]
    }

    pub fn role_of(&self, host: &str) -> Option<Role> {
        if self.servers.iter().any(|s| s == host) {
            Some(Role::Server)
        } else if self.agents.iter().any(|a| a == host) {
            Some(Role::Agent)
        } else {
            None
        }
    }
}
