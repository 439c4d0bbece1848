//! The on-disk shape of recipes and inventories, exactly as written by users.
//!
//! Every field a validation rule may point at is `Spanned`, so a later check can name
//! the file, line and column. Unknown keys are rejected by serde (`deny_unknown_fields`).
//! Nothing here is trusted: `super::load` turns it into the validated model.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_saphyr::Spanned;

/// `recipes/*.yaml`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecipeFile {
    pub name: Spanned<String>,
    /// Path of the inventory file, relative to the recipe file.
    pub inventory: Spanned<String>,
    pub k3s: Spanned<K3sSection>,
    #[serde(default)]
    pub kubeconfig: Option<KubeconfigSection>,
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
    /// A pinned host key (`ssh-ed25519 AAAA...`), checked at first contact.
    #[serde(default)]
    pub host_key: Option<Spanned<String>>,
    /// What `continuum inventory probe` learned (issue 5); written by continuum.
    #[serde(default)]
    pub probed: Option<Spanned<serde_json::Value>>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RoleHint {
    Server,
    Agent,
}
