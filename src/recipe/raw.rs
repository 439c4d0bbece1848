//! The on-disk shape of recipes and inventories, exactly as written by users.
//!
//! Every field a validation rule may point at is `Spanned`, so a later check can name
//! the file, line and column. Unknown keys are rejected by serde (`deny_unknown_fields`).
//! Nothing here is trusted: `super::check` turns it into the validated model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// `recipes/*.yaml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    pub name: Spanned<String>,
    /// Path of the inventory file, relative to the recipe file (optional when an
    /// AWS site provides the hosts).
    #[serde(default)]
    pub inventory: Option<Spanned<String>>,
    pub k3s: Spanned<K3sSection>,
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigSection>,
    /// An AWS site whose instance groups become hosts (`GROUP-INDEX`).
    #[serde(default)]
    pub aws: Option<Spanned<AwsSection>>,
    /// The OSCAR serverless layer on the cluster (docs/oscar.md).
    #[serde(default)]
    pub serverless: Option<Spanned<ServerlessSection>>,
    /// Where the environment's state lives when not in the local state directory
    /// (docs/state.md).
    #[serde(default)]
    pub state: Option<Spanned<StateSection>>,
}

/// `state:` of a recipe: an S3 location and how to reach it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateSection {
    pub url: Spanned<String>,
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    #[serde(default)]
    pub path_style: Option<Spanned<bool>>,
    #[serde(default)]
    pub region: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct K3sSection {
    pub version: Spanned<String>,
    #[serde(default)]
    pub install: Option<Spanned<InstallSection>>,
    #[serde(default)]
    pub servers: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub agents: Option<Spanned<Vec<Spanned<String>>>>,
    #[serde(default)]
    pub ha: Option<Spanned<bool>>,
    #[serde(default)]
    pub flannel_backend: Option<Spanned<String>>,
    #[serde(default)]
    pub disable: Vec<Spanned<String>>,
    #[serde(default)]
    pub cluster_cidr: Option<Spanned<String>>,
    #[serde(default)]
    pub service_cidr: Option<Spanned<String>>,
    #[serde(default)]
    pub tls_san: Vec<Spanned<String>>,
    #[serde(default)]
    pub node_labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    pub node_taints: Vec<Spanned<String>>,
    /// Address users and continuum reach the API server by (default: the first
    /// server's inventory address).
    #[serde(default)]
    pub api_endpoint: Option<Spanned<String>>,
    /// Seconds to wait for every node to be Ready.
    #[serde(default)]
    pub readiness_timeout: Option<Spanned<u64>>,
    /// Further k3s config.yaml keys, passed through after validation.
    #[serde(default)]
    pub extra_config: Option<Spanned<BTreeMap<String, Spanned<serde_json::Value>>>>,
    /// Jetson agents run pods with the nvidia runtime by default (`default-runtime`).
    #[serde(default)]
    pub nvidia_default_runtime: Option<Spanned<bool>>,
    /// Agents that may be unreachable while `up` still succeeds: a count or `"N%"`.
    #[serde(default)]
    pub allow_unavailable: Option<Spanned<CountOrPercent>>,
    /// How a version change rolls through the cluster.
    #[serde(default)]
    pub upgrade: Option<UpgradeSection>,
}

/// `k3s.upgrade`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeSection {
    /// Agents upgraded at once: a count or `"N%"` of the agents.
    #[serde(default)]
    pub agent_batch: Option<Spanned<CountOrPercent>>,
    /// Cordon and drain each agent before its upgrade, uncordon after.
    #[serde(default)]
    pub drain: Option<Spanned<bool>>,
}

/// `3` or `"25%"`.
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum CountOrPercent {
    Count(u64),
    Text(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSection {
    pub source: Spanned<InstallSource>,
    /// Bundle directory (air-gapped install), relative to the recipe file.
    #[serde(default)]
    pub bundle: Option<Spanned<String>>,
    /// Install script URL for the online source.
    #[serde(default)]
    pub script_url: Option<Spanned<String>>,
    /// Where system images come from with a bundle: `bundle` (default) or `registry`.
    #[serde(default)]
    pub images: Option<Spanned<ImagesSource>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ImagesSource {
    Bundle,
    Registry,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InstallSource {
    Online,
    Bundle,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeconfigSection {
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    #[serde(default)]
    pub context: Option<Spanned<String>>,
}

/// `inventories/*.yaml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InventoryFile {
    #[serde(default)]
    pub defaults: Option<HostDefaults>,
    pub hosts: Spanned<Vec<HostEntry>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct HostDefaults {
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub port: Option<Spanned<u16>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub bastion: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostEntry {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    #[serde(default)]
    pub port: Option<Spanned<u16>>,
    #[serde(default)]
    pub user: Option<Spanned<String>>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub bastion: Option<Spanned<String>>,
    #[serde(default)]
    pub role: Option<Spanned<RoleHint>>,
    #[serde(default)]
    pub labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    pub taints: Vec<Spanned<String>>,
    /// The node's address for k3s (`node-ip`), when it is not the one k3s would pick.
    #[serde(default)]
    pub node_ip: Option<Spanned<String>>,
    /// The node's external address (`node-external-ip`), e.g. a NAT's public address.
    #[serde(default)]
    pub external_ip: Option<Spanned<String>>,
    /// A pinned host key (`ssh-ed25519 AAAA...`), checked at first contact.
    #[serde(default)]
    pub host_key: Option<Spanned<String>>,
    /// What `continuum inventory probe` learned; written by continuum.
    #[serde(default)]
    pub probed: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleHint {
    Server,
    Agent,
}

// ---- serverless layer (docs/oscar.md) ----

/// `serverless:` in a recipe: the OSCAR layer installed on the cluster.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerlessSection {
    /// `cloud` (full) or `edge` (small requests, Knative optional).
    pub profile: Spanned<String>,
    /// Site tier recorded in the endpoint registry (default: the profile).
    #[serde(default)]
    pub tier: Option<Spanned<String>>,
    /// `nginx` (ingress-nginx, k3s traefik disabled) or `gateway` (Gateway API routes).
    #[serde(default)]
    pub ingress: Option<Spanned<String>>,
    /// URL users reach OSCAR by (default `http://API_ENDPOINT`).
    #[serde(default)]
    pub endpoint: Option<Spanned<String>>,
    /// OSCAR cluster id in the endpoint registry and oscar-cli (default: the env name).
    #[serde(default)]
    pub cluster_id: Option<Spanned<String>>,
    /// Knative Serving on or off (default: on for cloud, off for edge).
    #[serde(default)]
    pub knative: Option<Spanned<bool>>,
    /// Whether the cluster has GPUs (default: any node labelled nvidia.com/gpu.present=true).
    #[serde(default)]
    pub gpu: Option<Spanned<bool>>,
    /// Seconds to wait for /health and /system/info.
    #[serde(default)]
    pub readiness_timeout: Option<Spanned<u64>>,
    #[serde(default)]
    pub credentials: Option<Spanned<CredentialsSection>>,
    /// Chart value overrides per component (minio, nfs, knative, ingress, oscar).
    #[serde(default)]
    pub values: Option<Spanned<BTreeMap<String, Spanned<serde_json::Value>>>>,
    #[serde(default)]
    pub oscar_cli: Option<Spanned<OscarCliSection>>,
    /// OSCAR release to install (default the newest pinned one; docs/oscar.md).
    #[serde(default)]
    pub oscar_version: Option<Spanned<String>>,
    /// OSCAR's resource manager, which delegates jobs to replicas and federation
    /// members (default on).
    #[serde(default)]
    pub resource_manager: Option<Spanned<bool>>,
    /// OSCAR's rescheduler, which delegates jobs pending too long (default off).
    #[serde(default)]
    pub rescheduler: Option<Spanned<bool>>,
    /// Certificate and key (PEM files) the ingress serves (default: its own).
    #[serde(default)]
    pub tls: Option<Spanned<TlsSection>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialsSection {
    #[serde(default)]
    pub oscar_user: Option<Spanned<String>>,
    #[serde(default)]
    pub oscar_password: Option<Spanned<String>>,
    #[serde(default)]
    pub minio_access_key: Option<Spanned<String>>,
    #[serde(default)]
    pub minio_secret_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OscarCliSection {
    /// oscar-cli config file (default ~/.oscar-cli/config.yaml).
    #[serde(default)]
    pub path: Option<Spanned<String>>,
    /// Make this cluster oscar-cli's `default` (never changed otherwise).
    #[serde(default)]
    pub set_default: Option<Spanned<bool>>,
    #[serde(default)]
    pub ssl_verify: Option<Spanned<bool>>,
}

/// `aws:` in a recipe.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSection {
    pub region: Spanned<String>,
    #[serde(default)]
    pub network: Option<Spanned<NetworkSection>>,
    pub ssh: Spanned<AwsSshSection>,
    #[serde(default)]
    pub firewall: Option<Spanned<FirewallSection>>,
    pub instance_groups: Spanned<Vec<Spanned<GroupSection>>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Create a VPC with this CIDR (omit to use the region's default VPC).
    #[serde(default)]
    pub vpc_cidr: Option<Spanned<String>>,
    #[serde(default)]
    pub subnet_cidr: Option<Spanned<String>>,
    #[serde(default)]
    pub availability_zone: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsSshSection {
    pub user: Spanned<String>,
    #[serde(default)]
    pub key: Option<Spanned<String>>,
    #[serde(default)]
    pub address: Option<Spanned<AddressKindRaw>>,
    #[serde(default)]
    pub bastion: Option<Spanned<String>>,
    #[serde(default)]
    pub timeout: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AddressKindRaw {
    Private,
    Public,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirewallSection {
    #[serde(default)]
    pub ssh_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub api_from: Vec<Spanned<String>>,
    #[serde(default)]
    pub http: Option<Spanned<bool>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSection {
    pub name: Spanned<String>,
    pub count: Spanned<u32>,
    pub instance_type: Spanned<String>,
    pub image: Spanned<ImageSection>,
    #[serde(default)]
    pub root_volume_gb: Option<Spanned<u32>>,
    #[serde(default)]
    pub spot: Option<Spanned<bool>>,
    /// One Elastic IP per instance, kept across instance replacements.
    #[serde(default)]
    pub elastic_ip: Option<Spanned<bool>>,
    #[serde(default)]
    pub role: Option<Spanned<RoleHint>>,
    #[serde(default)]
    pub labels: Option<Spanned<BTreeMap<String, Spanned<String>>>>,
    #[serde(default)]
    pub taints: Vec<Spanned<String>>,
}

/// `image: ami-0123...` or `image: {name: PATTERN, owner: ACCOUNT, architecture: arm64}`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum ImageSection {
    Id(String),
    Lookup(ImageLookup),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageLookup {
    pub name: String,
    pub owner: String,
    #[serde(default)]
    pub architecture: Option<String>,
}
