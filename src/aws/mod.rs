//! The EC2 provider: what continuum needs from EC2, behind the `Ec2Api` trait.
//!
//! `Ec2Api` is deliberately coarse (one method per EC2 call continuum makes) and uses
//! plain types, so the provisioning logic (`provision`) runs the same against the real
//! SDK (`sdk`, behind the default-on `aws` cargo feature), the moto emulator, and the
//! fault-injecting wrapper the tests use (`fault`).
//!
//! Invariants: every resource continuum creates carries the tags `continuum:env` and
//! `continuum:resource` at creation (so a sweep finds it even when state lost it); every
//! call goes through `retry` (throttling and 5xx are retried with backoff); credentials
//! are never formatted into an error or a log line.

pub mod fault;
pub mod provision;
#[cfg(feature = "aws")]
pub mod sdk;

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;

/// Tag naming the environment a resource belongs to.
pub const TAG_ENV: &str = "continuum:env";
/// Tag naming the graph resource (`aws-vpc`, `aws-instances/cp`, ...).
pub const TAG_RESOURCE: &str = "continuum:resource";
/// Tag carrying the client token of the RunInstances call that made an instance.
pub const TAG_TOKEN: &str = "continuum:token";

/// An EC2 call that failed, classified for retry and for the user.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Ec2Error {
    #[error("EC2 {op}: throttled ({code})")]
    Throttled { op: String, code: String },
    #[error("EC2 {op}: server error {status}: {message}")]
    Server {
        op: String,
        status: u16,
        message: String,
    },
    #[error("EC2 {op}: {id} still has dependent resources ({message})")]
    DependencyViolation {
        op: String,
        id: String,
        message: String,
    },
    #[error("EC2 {op}: not found ({code}): {message}")]
    NotFound {
        op: String,
        code: String,
        message: String,
    },
    #[error("EC2 {op}: {code}: {message}")]
    Api {
        op: String,
        code: String,
        message: String,
    },
    #[error("EC2 {op}: cannot reach the endpoint: {detail}")]
    Transport { op: String, detail: String },
    #[error("AWS credentials or region: {0}")]
    Config(String),
}

impl Ec2Error {
    /// Worth retrying with backoff: throttling, 5xx and transport failures.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Ec2Error::Throttled { .. } | Ec2Error::Server { .. } | Ec2Error::Transport { .. }
        )
    }

    /// Build from an AWS error code (`RequestLimitExceeded`, `DependencyViolation`, ...).
    pub fn from_code(op: &str, status: Option<u16>, code: &str, message: &str) -> Self {
        let op = op.to_string();
        let message = message.to_string();
        match code {
            "Throttling"
            | "ThrottlingException"
            | "RequestLimitExceeded"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "SlowDown" => Ec2Error::Throttled {
                op,
                code: code.to_string(),
            },
            "DependencyViolation" => Ec2Error::DependencyViolation {
                op,
                id: String::new(),
                message,
            },
            c if c.contains("NotFound") => Ec2Error::NotFound {
                op,
                code: c.to_string(),
                message,
            },
            _ => match status {
                Some(s) if s >= 500 => Ec2Error::Server {
                    op,
                    status: s,
                    message: if code.is_empty() {
                        message
                    } else {
                        format!("{code}: {message}")
                    },
                },
                _ => Ec2Error::Api {
                    op,
                    code: code.to_string(),
                    message,
                },
            },
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Ec2Error::NotFound { .. })
    }
}

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

/// One security group ingress rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Rule {
    /// `tcp`, `udp` or `-1` (all).
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    pub source: RuleSource,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub enum RuleSource {
    Cidr(String),
    /// Members of the group itself (node-to-node traffic).
    SelfGroup,
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

/// The EC2 calls continuum makes. One method per call; implementations must not retry
/// on their own beyond what the SDK's retry policy does (`retry` is the policy here).
#[async_trait]
pub trait Ec2Api: Send + Sync {
    /// The region calls go to (for messages).
    fn region(&self) -> &str;
    async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error>;
    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error>;
    /// The default VPC of the region, if it has one.
    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error>;
    /// A default subnet of `vpc` (in `az` when given).
    async fn default_subnet(&self, vpc: &str, az: Option<&str>)
    -> Result<Option<String>, Ec2Error>;
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
    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error>;
    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error>;
    /// All instances with `tag:continuum:env = env`, every page (one logical poll).
    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error>;
    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error>;
    /// Network resources of one kind tagged with `continuum:env = env`.
    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error>;
    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error>;
    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error>;
    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error>;
}

/// Retry policy for EC2 calls: transient errors (throttling, 5xx, transport) are
/// retried with exponential backoff and full jitter, up to `attempts` tries.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(20),
        }
    }
}

impl RetryPolicy {
    /// Backoff before attempt `n` (1-based retry number), with jitter.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self
            .base
            .saturating_mul(2u32.saturating_pow(n.saturating_sub(1)));
        let cap = exp.min(self.max);
        let mut b = [0u8; 2];
        let jitter = if getrandom::fill(&mut b).is_ok() {
            f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX)
        } else {
            0.5
        };
        // Half fixed, half jitter: never zero, never above the cap.
        cap.mul_f64(0.5 + jitter / 2.0)
    }
}

/// Run `f` under `policy`, retrying transient failures.
pub async fn retry<T, F, Fut>(policy: RetryPolicy, mut f: F) -> Result<T, Ec2Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Ec2Error>>,
{
    let mut n = 0;
    loop {
        match f().await {
            Err(e) if e.is_transient() && n + 1 < policy.attempts => {
                n += 1;
                tracing::debug!(error = %e, attempt = n, "transient EC2 error; retrying");
                tokio::time::sleep(policy.delay(n)).await;
            }
            other => return other,
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        assert!(
            Ec2Error::from_code("RunInstances", Some(503), "RequestLimitExceeded", "x")
                .is_transient()
        );
        assert!(
            Ec2Error::from_code("RunInstances", Some(500), "InternalError", "x").is_transient()
        );
        assert!(
            Ec2Error::from_code("DescribeImages", Some(400), "InvalidAMIID.NotFound", "x")
                .is_not_found()
        );
        let e = Ec2Error::from_code("DeleteVpc", Some(400), "DependencyViolation", "x");
        assert!(matches!(e, Ec2Error::DependencyViolation { .. }));
        assert!(!e.is_transient());
        assert!(!Ec2Error::from_code("X", Some(400), "InvalidParameterValue", "x").is_transient());
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 5,
            base: Duration::from_millis(100),
            max: Duration::from_millis(500),
        };
        for n in 1..10 {
            let d = p.delay(n);
            assert!(d >= Duration::from_millis(50), "{d:?}");
            assert!(d <= Duration::from_millis(500), "{d:?}");
        }
        assert!(p.delay(1) <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn retry_gives_up_on_permanent_errors_at_once() {
        let mut calls = 0;
        let r: Result<(), _> = retry(RetryPolicy::default(), || {
            calls += 1;
            async {
                Err(Ec2Error::from_code(
                    "X",
                    Some(400),
                    "InvalidParameterValue",
                    "bad",
                ))
            }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls, 1);
    }

    #[tokio::test]
    async fn retry_retries_transient_errors() {
        let p = RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(1),
            max: Duration::from_millis(2),
        };
        let mut calls = 0;
        let r = retry(p, || {
            calls += 1;
            let n = calls;
            async move {
                if n < 3 {
                    Err(Ec2Error::from_code("X", Some(503), "Unavailable", "busy"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(r.ok(), Some(3));
    }
}
