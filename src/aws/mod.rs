//! The EC2 provider: what continuum needs from EC2, behind the `Ec2Api` trait.
//!
//! `Ec2Api` is deliberately coarse (one method per EC2 call continuum makes) and uses
//! plain types, so the provisioning logic (`provision`) runs the same against the real
//! SDK (`sdk`, behind the default-on `aws` cargo feature), the moto emulator, and test
//! doubles (ARCHITECTURE.md, "Tests"). A `Connect` makes the `Ec2Api` of a site's
//! region: `sdk::Sdk` is the one the product uses. What continuum relies on from EC2 is
//! in docs/aws.md.
//!
//! Invariants: every resource continuum creates carries the tags `continuum:env` and
//! `continuum:resource` at creation (so a sweep finds it even when state lost it); every
//! call goes through the one retry layer (`retry`); credentials are never formatted
//! into an error or a log line.

mod error;
pub mod provision;
mod retry;
#[cfg(feature = "aws")]
pub mod sdk;

/// Built without the `aws` feature: no SDK, so a site's provider cannot be connected.
#[cfg(not(feature = "aws"))]
pub mod sdk {
    use std::sync::Arc;

    use async_trait::async_trait;

    use super::provision::ProvisionError;
    use super::{Connect, Ec2Api};

    /// Stands in for the SDK connector of the `aws` feature: refuses every region.
    #[derive(Debug, Clone, Copy, Default)]
    pub struct Sdk;

    #[async_trait]
    impl Connect for Sdk {
        async fn connect(&self, _region: &str) -> Result<Arc<dyn Ec2Api>, ProvisionError> {
            Err(ProvisionError::NoProvider)
        }
    }
}

pub use crate::graph::cloud::{Rule, RuleSource};
pub use error::Ec2Error;
pub use retry::{RetryPolicy, retry, retry_new, retry_unseen};

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

/// Tag naming the environment a resource belongs to.
pub const TAG_ENV: &str = "continuum:env";
/// Tag naming the graph resource (`aws-vpc`, `aws-instances/cp`, ...).
pub const TAG_RESOURCE: &str = "continuum:resource";
/// Tag carrying the client token of the RunInstances call that made an instance.
pub const TAG_TOKEN: &str = "continuum:token";

/// An instance type as EC2 describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceTypeInfo {
    pub name: String,
    /// `x86_64`, `arm64`, ...
    pub architectures: Vec<String>,
}

/// An image (AMI).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub name: String,
    pub architecture: String,
    pub owner: String,
    pub creation_date: String,
    /// Device name of the root volume (`/dev/sda1`, `/dev/xvda`).
    pub root_device: Option<String>,
    /// Size of the root volume's snapshot (GiB): the smallest root volume it allows.
    pub root_volume_gb: Option<i32>,
}

/// An instance type offered in an availability zone (DescribeInstanceTypeOfferings).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Offering {
    pub instance_type: String,
    pub zone: String,
}

/// A subnet as continuum needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub zone: String,
    pub vpc: String,
    pub map_public_ip: bool,
}

/// Instances by what identifies them (DescribeInstances with a filter: ids EC2 does
/// not know are simply absent, the call does not fail).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceQuery {
    /// `instance-id` filter.
    Ids(Vec<String>),
    /// What one RunInstances call launched, by the `continuum:token` tag it set.
    Token(String),
}

/// An Elastic IP address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub allocation_id: String,
    pub public_ip: String,
    pub instance_id: Option<String>,
    pub association_id: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// How to find images.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageQuery {
    Ids(Vec<String>),
    /// Name pattern (`*` wildcards), owner account or alias, architecture.
    Lookup {
        name: String,
        owner: String,
        architecture: Option<String>,
    },
}

/// An instance as continuum needs to know it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Instance {
    pub id: String,
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
    pub launch_index: i32,
    pub launch_time: String,
    pub tags: BTreeMap<String, String>,
}

impl Instance {
    pub fn is_gone(&self) -> bool {
        matches!(self.state.as_str(), "terminated" | "shutting-down")
    }
    pub fn tag(&self, k: &str) -> Option<&str> {
        self.tags.get(k).map(String::as_str)
    }
}

/// Everything `RunInstances` needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSpec {
    pub image_id: String,
    pub instance_type: String,
    pub count: i32,
    pub subnet_id: String,
    pub security_group_id: String,
    pub key_name: String,
    pub client_token: String,
    pub user_data: String,
    pub root_volume_gb: Option<i32>,
    /// Root device name of the image (needed to resize the root volume).
    pub root_device: Option<String>,
    pub spot: bool,
    /// Ask for a public IPv4 address on the launch's network interface.
    pub public_ip: bool,
    pub tags: BTreeMap<String, String>,
}

/// The kinds of tagged network resources a sweep looks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetKind {
    SecurityGroup,
    KeyPair,
    RouteTable,
    InternetGateway,
    Subnet,
    Vpc,
}

impl NetKind {
    /// Dependants first: the order in which teardown deletes (and sweeps look).
    pub const DELETION_ORDER: [NetKind; 6] = [
        NetKind::SecurityGroup,
        NetKind::KeyPair,
        NetKind::RouteTable,
        NetKind::InternetGateway,
        NetKind::Subnet,
        NetKind::Vpc,
    ];
}

impl std::fmt::Display for NetKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NetKind::SecurityGroup => "security group",
            NetKind::KeyPair => "key pair",
            NetKind::RouteTable => "route table",
            NetKind::InternetGateway => "internet gateway",
            NetKind::Subnet => "subnet",
            NetKind::Vpc => "VPC",
        })
    }
}

/// A tagged network resource found by a sweep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub kind: NetKind,
    /// Resource id (for key pairs: the key name).
    pub id: String,
    /// Route tables: association ids; internet gateways: attached VPC ids.
    pub attachments: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// The EC2 calls continuum makes. One method per call; implementations never retry
/// (the SDK client is built with retries off): `retry` is the one retry layer.
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// The region calls go to (for messages).
    fn region(&self) -> &str;
    async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error>;
    /// Where these instance types are offered, per availability zone (every page).
    async fn instance_type_offerings(&self, names: &[String]) -> Result<Vec<Offering>, Ec2Error>;
    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error>;
    /// The default VPC of the region, if it has one.
    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error>;
    /// The default subnets of `vpc` (one per availability zone).
    async fn default_subnets(&self, vpc: &str) -> Result<Vec<Subnet>, Ec2Error>;
    async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error>;
    async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error>;
    async fn create_subnet(
        &self,
        vpc: &str,
        cidr: &str,
        az: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error>;
    async fn map_public_ip_on_launch(&self, subnet: &str) -> Result<(), Ec2Error>;
    async fn create_internet_gateway(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error>;
    async fn attach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error>;
    async fn create_route_table(
        &self,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error>;
    async fn create_default_route(&self, route_table: &str, igw: &str) -> Result<(), Ec2Error>;
    /// Returns the association id.
    async fn associate_route_table(
        &self,
        route_table: &str,
        subnet: &str,
    ) -> Result<String, Ec2Error>;
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error>;
    async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error>;
    async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error>;
    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error>;
    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error>;
    /// All instances with `tag:continuum:env = env`, every page (one logical poll).
    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error>;
    /// Instances by id or by launch token, every page.
    async fn find_instances(&self, q: &InstanceQuery) -> Result<Vec<Instance>, Ec2Error>;
    /// Fails whole (nothing terminated) when one id is unknown to EC2.
    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error>;
    async fn allocate_address(&self, tags: &BTreeMap<String, String>) -> Result<Address, Ec2Error>;
    /// Returns the association id (an address already elsewhere is moved).
    async fn associate_address(&self, allocation: &str, instance: &str)
    -> Result<String, Ec2Error>;
    async fn disassociate_address(&self, association: &str) -> Result<(), Ec2Error>;
    async fn release_address(&self, allocation: &str) -> Result<(), Ec2Error>;
    /// Elastic IP addresses tagged with `continuum:env = env`.
    async fn describe_addresses(&self, env: &str) -> Result<Vec<Address>, Ec2Error>;
    /// The network interfaces in a subnet or VPC, described for a person (`eni-... (what)`).
    async fn network_interfaces(&self, kind: NetKind, id: &str) -> Result<Vec<String>, Ec2Error>;
    /// Network resources of one kind tagged with `continuum:env = env`.
    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error>;
    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error>;
    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error>;
    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error>;
}

/// Makes the EC2 provider of a site: the operations hold one (`sdk::Sdk` unless told
/// otherwise) and ask it for the site's region when an AWS step is to run.
#[async_trait]
pub trait Connect: Send + Sync {
    /// The provider for `region`, ready for calls (credentials resolved).
    async fn connect(&self, region: &str) -> Result<Arc<dyn Ec2Api>, provision::ProvisionError>;
}

impl std::fmt::Debug for dyn Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Connect")
    }
}

/// Tags every continuum resource carries.
pub fn tags(env: &str, resource: &str) -> BTreeMap<String, String> {
    [
        (TAG_ENV.to_string(), env.to_string()),
        (TAG_RESOURCE.to_string(), resource.to_string()),
        ("Name".to_string(), format!("{env}/{resource}")),
    ]
    .into()
}
