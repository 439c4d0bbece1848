//! Provisioning logic of the AWS site: what state records of it, and the steps
//! (`validate` before spend; `network`, `instances`, `addresses` per graph resource;
//! `teardown`; `resolve` of addresses for the k3s steps). What each step relies on
//! from EC2 is in docs/aws.md.
//!
//! Invariants:
//! - Every id EC2 returns is recorded through the `Journal` (the state file, saved
//!   atomically) before anything else happens, with its creation time, so a crash loses
//!   nothing and NotFound for a fresh id is told apart from a gone one.
//! - Before creating anything, a step looks for what a crashed earlier run may have
//!   made (by tag); instance groups launch only the missing count, with a random client
//!   token written to state before the call. So `up` after `kill -9` adopts, never
//!   duplicates.
//! - Every step converges when run again: a run interrupted half-way through a step is
//!   finished by the next one.
//! - Polls use one DescribeInstances for the whole environment (tag filter, paginated),
//!   never one call per instance; the call count does not grow with group size.
//! - Teardown finds resources by tag as well as by state, so it removes what state lost.

mod addresses;
mod instances;
mod launch;
mod network;
mod resolve;
mod teardown;
mod validate;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Ec2Api, Ec2Error, NetKind, RetryPolicy, Rule, RuleSource, TAG_RESOURCE, retry};
use crate::state::StateError;

pub use instances::{ensure_group, remove_group, user_data};
pub use network::{
    ensure_gateway, ensure_key_pair, ensure_route, ensure_security_group, ensure_subnet,
    ensure_vpc, key_name, private_key, public_key, rules, wants_public_ip,
};
pub use resolve::{address_of, resolve};
pub use teardown::{Teardown, teardown};
pub use validate::{ResolvedImage, Validated, check_subnet_zone, pick_architecture, validate};

pub const VPC: &str = "aws-vpc";
pub const SUBNET: &str = "aws-subnet";
pub const GATEWAY: &str = "aws-internet-gateway";
pub const ROUTE: &str = "aws-route";
pub const SECURITY_GROUP: &str = "aws-security-group";
pub const KEY_PAIR: &str = "aws-key-pair";

/// Graph id of an instance group.
pub fn group_id(group: &str) -> String {
    format!("aws-instances/{group}")
}

/// Tag value (`continuum:resource`) of a host's Elastic IP.
pub fn address_id(host: &str) -> String {
    format!("aws-eip/{host}")
}

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

impl From<&Rule> for RuleRecord {
    fn from(r: &Rule) -> Self {
        RuleRecord {
            protocol: r.protocol.clone(),
            from_port: r.from_port,
            to_port: r.to_port,
            source: match &r.source {
                RuleSource::Cidr(c) => c.clone(),
                RuleSource::SelfGroup => "self".into(),
            },
        }
    }
}

impl RuleRecord {
    /// The rule again (for revoking; EC2 matches a rule without its description).
    pub fn to_rule(&self) -> Rule {
        Rule {
            protocol: self.protocol.clone(),
            from_port: self.from_port,
            to_port: self.to_port,
            source: if self.source == "self" {
                RuleSource::SelfGroup
            } else {
                RuleSource::Cidr(self.source.clone())
            },
            description: String::new(),
        }
    }
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

/// Where provisioning steps read and record cloud state (the state file).
pub trait Journal: Send + Sync {
    fn cloud(&self) -> CloudState;
    /// Apply `f` and save the state atomically before returning.
    fn record(&self, f: &mut dyn FnMut(&mut CloudState)) -> Result<(), StateError>;
}

/// Record a new id with its creation time.
fn record_created(
    journal: &dyn Journal,
    id: &str,
    f: &mut dyn FnMut(&mut CloudState),
) -> Result<(), StateError> {
    journal.record(&mut |c| {
        f(c);
        c.created_at.insert(id.to_string(), now_secs());
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{resource}")]
    Ec2 {
        resource: String,
        #[source]
        source: Ec2Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error(
        "instance {instance} ({host}) is still `{state}` after {waited:?}; check it in the EC2 console (quota, capacity, image)"
    )]
    BootTimeout {
        instance: String,
        host: String,
        state: String,
        waited: Duration,
    },
    #[error(
        "instance {instance} ({host}, {address}) did not answer SSH within {waited:?}: {detail}"
    )]
    SshTimeout {
        instance: String,
        host: String,
        address: String,
        waited: Duration,
        detail: String,
    },
    #[error("instance {instance} ({host}) has no {kind} IP address")]
    NoAddress {
        instance: String,
        host: String,
        kind: &'static str,
    },
    #[error("key pair: {0}")]
    Key(String),
    #[error("could not delete {}", .0.join(", "))]
    Leftovers(Vec<String>),
    #[error("the recipe declares an AWS site but continuum was built without the `aws` feature")]
    NoProvider,
}

fn ec2(resource: &str) -> impl FnOnce(Ec2Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Ec2 {
        resource: resource.to_string(),
        source,
    }
}

fn need<'a>(v: &'a Option<CloudId>, what: &str) -> Result<&'a str, ProvisionError> {
    v.as_ref().map(|c| c.id.as_str()).ok_or_else(|| {
        ProvisionError::Invalid(vec![format!("{what} is not recorded in state yet")])
    })
}

/// Options of a provisioning run (tests shorten the waits; the code is the same).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retry: RetryPolicy,
    pub poll: Duration,
    /// How long teardown retries dependency violations and waits for terminations.
    pub delete_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            poll: Duration::from_secs(3),
            delete_timeout: Duration::from_secs(300),
        }
    }
}

/// Make sure the state has a cloud section for this site (its region).
pub fn init_state(journal: &dyn Journal, site: &crate::recipe::AwsSite) -> Result<(), StateError> {
    let mut cur = journal.cloud();
    if init_cloud(&mut cur, &site.region) {
        journal.record(&mut |c| c.region.clone_from(&cur.region))?;
    }
    Ok(())
}

/// Set the region; `true` when `c` changed (and must be saved).
pub fn init_cloud(c: &mut CloudState, region: &str) -> bool {
    if c.region == region {
        return false;
    }
    c.region = region.to_string();
    true
}

/// One tagged resource of `kind` for graph resource `rid` made by an earlier run.
async fn adopt(
    api: &dyn Ec2Api,
    env: &str,
    kind: NetKind,
    rid: &str,
    opts: &Options,
) -> Result<Option<super::Tagged>, ProvisionError> {
    let found = retry(opts.retry, || api.describe_tagged(kind, env))
        .await
        .map_err(ec2(rid))?;
    Ok(found
        .into_iter()
        .find(|t| t.tags.get(TAG_RESOURCE).map(String::as_str) == Some(rid)))
}

/// The provider for a site: the SDK one (credential chain, resolved now;
/// `AWS_ENDPOINT_URL_EC2`).
#[cfg(feature = "aws")]
pub async fn connect(region: &str) -> Result<Arc<dyn Ec2Api>, ProvisionError> {
    let p = super::sdk::SdkEc2::connect(region)
        .await
        .map_err(ec2("AWS client"))?;
    Ok(Arc::new(p))
}

#[cfg(not(feature = "aws"))]
pub async fn connect(_region: &str) -> Result<Arc<dyn Ec2Api>, ProvisionError> {
    Err(ProvisionError::NoProvider)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_ids_have_an_unseen_window_and_old_or_unknown_ones_none() {
        let mut c = CloudState::default();
        let w = Duration::from_secs(180);
        assert_eq!(c.unseen_window("i-1", w), Duration::ZERO);
        c.created_at.insert("i-1".into(), now_secs());
        assert!(c.unseen_window("i-1", w) > Duration::from_secs(170));
        c.created_at.insert("i-2".into(), now_secs() - 600);
        assert_eq!(c.unseen_window("i-2", w), Duration::ZERO);
    }

    #[test]
    fn rule_records_round_trip_for_revocation() {
        for source in ["203.0.113.0/24", "2001:db8::/32", "self"] {
            let r = RuleRecord {
                protocol: "tcp".into(),
                from_port: 22,
                to_port: 22,
                source: source.into(),
            };
            assert_eq!(RuleRecord::from(&r.to_rule()), r);
        }
    }
}
