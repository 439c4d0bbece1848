//! What the state file records of the AWS site: the ids continuum created or adopted,
//! the firewall rules it authorised, the instances and Elastic IPs of each group, and
//! when each id was created (EC2 may not know a fresh id yet; docs/aws.md).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A VPC or subnet: its id and whether continuum created it (only those are deleted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudId {
    pub id: String,
    pub created: bool,
    /// Subnets: the availability zone, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
}

/// What the state file records of the AWS site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CloudState {
    pub region: String,
    pub vpc: Option<CloudId>,
    pub subnet: Option<CloudId>,
    pub internet_gateway: Option<String>,
    /// Whether the gateway is attached to the VPC.
    #[serde(default)]
    pub gateway_attached: bool,
    pub route_table: Option<String>,
    pub route_association: Option<String>,
    pub security_group: Option<String>,
    /// Ingress rules authorised so far (the diff: missing ones are authorised,
    /// recorded ones the recipe dropped are revoked; rules added by hand are left).
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
    /// Key pair name.
    pub key_pair: Option<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
    /// When continuum created each id (Unix seconds): EC2 may not know an id for a
    /// while after its creation, so NotFound for a young one is retried, not believed.
    #[serde(default)]
    pub created_at: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRecord {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    /// CIDR (IPv4 or IPv6), or `self`.
    pub source: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GroupState {
    /// Client token written before a RunInstances call whose result is not yet recorded.
    pub pending_token: Option<String>,
    /// Hash of that call's parameters (EC2 refuses the token with other parameters).
    #[serde(default)]
    pub pending_params: Option<String>,
    /// Instances by host name (`GROUP-INDEX`).
    pub instances: BTreeMap<String, InstanceRecord>,
    /// Elastic IPs by host name (groups with `elastic_ip: true`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<String, AddressRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
}

/// An Elastic IP allocated for one host.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AddressRecord {
    pub allocation_id: String,
    pub public_ip: String,
}

impl CloudState {
    /// The recorded instance behind a host, if any.
    pub fn instance(&self, host: &str) -> Option<&InstanceRecord> {
        self.groups.values().find_map(|g| g.instances.get(host))
    }

    /// Whether anything recorded still exists in AWS (as far as state knows).
    pub fn is_empty(&self) -> bool {
        self.vpc.as_ref().is_none_or(|v| !v.created)
            && self.subnet.as_ref().is_none_or(|s| !s.created)
            && self.internet_gateway.is_none()
            && self.route_table.is_none()
            && self.security_group.is_none()
            && self.key_pair.is_none()
            && self
                .groups
                .values()
                .all(|g| g.instances.is_empty() && g.addresses.is_empty())
    }

    /// How much longer EC2 may not know `id` (zero for ids continuum did not create
    /// or created longer ago than `consistency`).
    pub fn unseen_window(&self, id: &str, consistency: Duration) -> Duration {
        self.created_at.get(id).map_or(Duration::ZERO, |t| {
            let age = Duration::from_secs(now_secs().saturating_sub(*t));
            consistency.saturating_sub(age)
        })
    }
}

/// Unix time in seconds.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Set the region; `true` when `c` changed (and must be saved).
pub fn init_cloud(c: &mut CloudState, region: &str) -> bool {
    if c.region == region {
        return false;
    }
    c.region = region.to_string();
    true
}
