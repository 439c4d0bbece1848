//! The validated model: what the rest of continuum works from. Every value here has
//! passed the checks in `super::check`; no field carries source positions any more.

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
    /// The AWS site, when the recipe declares one.
    pub aws: Option<AwsSite>,
    /// The OSCAR serverless layer, when the recipe asks for one (docs/oscar.md).
    pub serverless: Option<crate::recipe::serverless::Serverless>,
    /// The recipe's `state:` location (S3), when it names one (docs/state.md).
    pub state: Option<StateSite>,
}

/// A recipe's `state:` section, validated: `s3://BUCKET/PREFIX` and how to reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSite {
    pub url: String,
    pub bucket: String,
    pub prefix: String,
    pub endpoint: Option<String>,
    pub path_style: Option<bool>,
    pub region: Option<String>,
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
    /// IP address rendered as the node's `node-ip` (inventory hosts only).
    pub node_ip: Option<String>,
    /// IP address rendered as the node's `node-external-ip` (inventory hosts only; an
    /// AWS instance's comes from the instance, docs/k3s-config.md).
    pub external_ip: Option<String>,
    /// Pinned host key (`TYPE BASE64`), from the inventory.
    pub host_key: Option<String>,
    /// Set for AWS instances: their address is known only once the instance exists.
    pub cloud: Option<CloudHost>,
    /// Facts from `continuum inventory probe` (device, arch, cgroups), if probed.
    pub probed: Option<Box<crate::recipe::device::Facts>>,
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
    /// `default-runtime: nvidia` on probed Jetsons.
    pub nvidia_default_runtime: bool,
    /// How many agents may be unreachable while `up` still succeeds; none
    /// when not set.
    pub allow_unavailable: Option<Share>,
    /// How a version change rolls through the cluster.
    pub upgrade: Upgrade,
}

/// A number of nodes, or a percentage of them (`3`, `"25%"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Count(usize),
    /// Percent of the nodes it applies to, rounded down.
    Percent(u8),
}

impl Share {
    /// How many of `n` nodes.
    pub fn of(self, n: usize) -> usize {
        match self {
            Share::Count(c) => c,
            Share::Percent(p) => n * usize::from(p) / 100,
        }
    }
}

/// `k3s.upgrade`: servers go one at a time; agents in batches of `agent_batch`
/// (default 10 % of the agents, at least 1), drained first with `drain: true`
/// (docs/k3s.md, "Upgrades").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Upgrade {
    pub agent_batch: Share,
    pub drain: bool,
}

impl Default for Upgrade {
    fn default() -> Self {
        Upgrade {
            agent_batch: Share::Percent(10),
            drain: false,
        }
    }
}

impl Upgrade {
    /// Agents upgraded at once, out of `agents`: at least 1.
    pub fn batch_size(&self, agents: usize) -> usize {
        self.agent_batch.of(agents).max(1)
    }
}

impl Cluster {
    /// Agents that may be offline at the end of `up`.
    pub fn unavailable_allowed(&self) -> usize {
        self.allow_unavailable
            .map_or(0, |s| s.of(self.agents.len()))
    }
}

impl std::fmt::Display for Share {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Share::Count(n) => write!(f, "{n}"),
            Share::Percent(p) => write!(f, "{p}%"),
        }
    }
}

/// Where k3s comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Install {
    /// `curl -sfL URL | INSTALL_K3S_VERSION=... sh -s -` on each host.
    Online { script_url: String },
    /// Air-gapped: upload `install.sh`, the per-arch binary and (with
    /// `images: bundle`) the per-arch air-gap images tarball from this directory.
    Bundle { dir: PathBuf, images: Images },
}

/// Where the nodes of a bundle install get k3s's system images (CoreDNS, pause, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Images {
    /// `k3s-airgap-images-<arch>.tar.zst` (or `.tar.gz`, `.tar`) from the bundle,
    /// placed in the node's `agent/images/` before k3s starts (the default).
    #[default]
    Bundle,
    /// The hosts pull them from a registry they can reach.
    Registry,
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

/// Where a host comes from: the inventory, or an instance group of the AWS site.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CloudHost {
    /// Instance group name (hosts are named `GROUP-INDEX`).
    pub group: String,
    pub index: u32,
    /// Public IPv4 address once the instance has one (filled from state).
    #[serde(default)]
    pub public_ip: Option<String>,
}

/// An AWS site: network, firewall, key pair and instance groups in one region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSite {
    pub region: String,
    pub vpc: VpcChoice,
    /// Subnet to create (in the created or default VPC); `None`: the default subnet.
    pub subnet_cidr: Option<String>,
    pub availability_zone: Option<String>,
    pub ssh: AwsSsh,
    pub firewall: Firewall,
    pub groups: Vec<InstanceGroup>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VpcChoice {
    /// The region's default VPC (not created, never deleted).
    Default,
    Create {
        cidr: String,
    },
}

/// How continuum reaches instances over SSH.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsSsh {
    pub user: String,
    /// Private key whose `.pub` is imported as the key pair; `None`: an ed25519 key
    /// generated for the environment in the state directory.
    pub key: Option<PathBuf>,
    pub address: AddressKind,
    /// `[user@]host[:port]` ProxyJump (for private addresses from outside the VPC).
    pub bastion: Option<String>,
    /// How long to wait for an instance to run and answer SSH.
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AddressKind {
    Private,
    Public,
}

/// Who may reach the instances (the rules the cluster needs are derived from these
/// and from the cluster: node-to-node, wireguard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firewall {
    pub ssh_from: Vec<String>,
    pub api_from: Vec<String>,
    /// Open 80/443 (the serverless layer's ingress).
    pub http: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceGroup {
    pub name: String,
    pub count: u32,
    pub instance_type: String,
    pub image: ImageRef,
    pub root_volume_gb: Option<u32>,
    pub spot: bool,
    /// An Elastic IP per instance (servers of hybrid clusters keep their address).
    pub elastic_ip: bool,
    /// `file:line:col` of `instance_type`, `image` and `root_volume_gb` (or the group),
    /// for errors found against the API.
    pub at_type: String,
    pub at_image: String,
    pub at_root_volume: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageRef {
    Id(String),
    /// Newest image whose name matches, from this owner (account id or alias).
    Lookup {
        name: String,
        owner: String,
        architecture: Option<String>,
    },
}

impl InstanceGroup {
    pub fn host_name(&self, index: u32) -> String {
        format!("{}-{index}", self.name)
    }
}

/// A secret string: serialised into the 0600 state file, never shown by `Debug`.
#[derive(Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq, Default)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}
