//! TEST DOUBLE (test code only, never part of the product): an `Ec2Api` wrapper that
//! counts calls and injects EC2's failures.
//!
//! moto simulates neither a pending period nor throttling. This wraps a real provider
//! (the SDK pointed at moto, possibly behind `honest::Honest`) and, per its `Faults`,
//! makes calls fail with throttling or 5xx errors (docs/aws.md, "Retries"), stops a run
//! at an exact call (a final error, as if the process had been interrupted there),
//! reports fresh instances as `pending` for a while (slow boot), makes deletions fail
//! with `DependencyViolation` (docs/aws.md, "Launch settings and credentials"), and
//! runs a hook after a chosen call returns (used to `kill -9` a process at an exact
//! point). With no faults it only counts, which is how `scripts/bench ec2` measures
//! `up`. EC2's documented behaviour that moto lacks is in `honest`, not here
//! (docs/aws.md, "Where moto differs").
//!
//! Used by the tests of tests/it/aws and by examples/aws_crash_child.rs, which includes
//! this file by path.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use continuum::aws::{
    Address, Ec2Api, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceQuery, InstanceTypeInfo,
    NetKind, Offering, Rule, RunSpec, Subnet, Tagged,
};

type Hook = Arc<dyn Fn(&str) + Send + Sync>;

/// What to inject.
#[derive(Clone, Default)]
pub struct Faults {
    /// Every Nth call (counting all calls) fails once with `RequestLimitExceeded`.
    pub throttle_every: Option<u64>,
    /// The first N calls of an operation fail with HTTP 503.
    pub server_errors: BTreeMap<String, u32>,
    /// The first N calls of an operation fail with a final error (not retried): a run
    /// stopped exactly there, everything before it recorded.
    pub interrupt: BTreeMap<String, u32>,
    /// Instances look `pending` for this long after RunInstances returns.
    pub boot_delay: Option<Duration>,
    /// The first N deletions of a kind fail with DependencyViolation.
    pub dependency_violations: BTreeMap<NetKind, u32>,
    /// Called with the operation name after that operation returned successfully.
    pub after: Option<(String, Hook)>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("throttle_every", &self.throttle_every)
            .field("server_errors", &self.server_errors)
            .field("interrupt", &self.interrupt)
            .field("boot_delay", &self.boot_delay)
            .field("dependency_violations", &self.dependency_violations)
            .field("after", &self.after.as_ref().map(|(op, _)| op))
            .finish()
    }
}

#[derive(Default)]
struct Counters {
    total: u64,
    calls: BTreeMap<String, u64>,
    injected: BTreeMap<String, u64>,
    server_left: BTreeMap<String, u32>,
    interrupt_left: BTreeMap<String, u32>,
    dependency_left: BTreeMap<NetKind, u32>,
    booted_at: BTreeMap<String, Instant>,
}

/// The counting, fault-injecting wrapper.
pub struct Instrumented {
    inner: Arc<dyn Ec2Api>,
    faults: Faults,
    counters: Mutex<Counters>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Ec2Api>, faults: Faults) -> Self {
        let counters = Counters {
            server_left: faults.server_errors.clone(),
            interrupt_left: faults.interrupt.clone(),
            dependency_left: faults.dependency_violations.clone(),
            ..Counters::default()
        };
        Instrumented {
            inner,
            faults,
            counters: Mutex::new(counters),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counters> {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Calls that reached the wrapper, by operation (injected failures included).
    pub fn calls(&self) -> BTreeMap<String, u64> {
        self.lock().calls.clone()
    }

    /// Failures injected, by operation.
    pub fn injected(&self) -> BTreeMap<String, u64> {
        self.lock().injected.clone()
    }

    fn before(&self, op: &str) -> Result<(), Ec2Error> {
        let mut c = self.lock();
        c.total += 1;
        *c.calls.entry(op.to_string()).or_default() += 1;
        let total = c.total;
        if let Some(left) = c.server_left.get_mut(op)
            && *left > 0
        {
            *left -= 1;
            *c.injected.entry(op.to_string()).or_default() += 1;
            return Err(Ec2Error::from_code(
                op,
                Some(503),
                "Unavailable",
                "injected: service unavailable",
            ));
        }
        if let Some(left) = c.interrupt_left.get_mut(op)
            && *left > 0
        {
            *left -= 1;
            *c.injected.entry(op.to_string()).or_default() += 1;
            return Err(Ec2Error::from_code(
                op,
                Some(400),
                "Injected.Interrupted",
                "injected: the run stops here",
            ));
        }
        if let Some(n) = self.faults.throttle_every
            && n > 0
            && total.is_multiple_of(n)
        {
            *c.injected.entry(op.to_string()).or_default() += 1;
            return Err(Ec2Error::from_code(
                op,
                Some(503),
                "RequestLimitExceeded",
                "injected: request limit exceeded",
            ));
        }
        Ok(())
    }

    /// Instances launched less than `boot_delay` ago look `pending`.
    fn slow_boot(&self, mut r: Vec<Instance>) -> Vec<Instance> {
        if let Some(delay) = self.faults.boot_delay {
            let c = self.lock();
            for i in &mut r {
                if i.state == "running"
                    && c.booted_at.get(&i.id).is_some_and(|t| t.elapsed() < delay)
                {
                    i.state = "pending".into();
                }
            }
        }
        r
    }

    fn after<T>(&self, op: &str, r: &Result<T, Ec2Error>) {
        if r.is_ok()
            && let Some((at, hook)) = &self.faults.after
            && at == op
        {
            hook(op);
        }
    }
}

macro_rules! wrap {
    ($self:ident, $op:literal, $call:expr) => {{
        $self.before($op)?;
        let r = $call.await;
        $self.after($op, &r);
        r
    }};
}

#[async_trait]
impl Ec2Api for Instrumented {
    fn region(&self) -> &str {
        self.inner.region()
    }
    async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error> {
        wrap!(
            self,
            "DescribeInstanceTypes",
            self.inner.describe_instance_types(names)
        )
    }
    async fn instance_type_offerings(&self, names: &[String]) -> Result<Vec<Offering>, Ec2Error> {
        wrap!(
            self,
            "DescribeInstanceTypeOfferings",
            self.inner.instance_type_offerings(names)
        )
    }
    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error> {
        wrap!(self, "DescribeImages", self.inner.describe_images(q))
    }
    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error> {
        wrap!(self, "DescribeVpcs", self.inner.default_vpc())
    }
    async fn default_subnets(&self, vpc: &str) -> Result<Vec<Subnet>, Ec2Error> {
        wrap!(self, "DescribeSubnets", self.inner.default_subnets(vpc))
    }
    async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error> {
        wrap!(self, "DescribeSubnets", self.inner.describe_subnet(id))
    }
    async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        wrap!(self, "CreateVpc", self.inner.create_vpc(cidr, tags))
    }
    async fn create_subnet(
        &self,
        vpc: &str,
        cidr: &str,
        az: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "CreateSubnet",
            self.inner.create_subnet(vpc, cidr, az, tags)
        )
    }
    async fn map_public_ip_on_launch(&self, subnet: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "ModifySubnetAttribute",
            self.inner.map_public_ip_on_launch(subnet)
        )
    }
    async fn create_internet_gateway(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "CreateInternetGateway",
            self.inner.create_internet_gateway(tags)
        )
    }
    async fn attach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "AttachInternetGateway",
            self.inner.attach_internet_gateway(igw, vpc)
        )
    }
    async fn create_route_table(
        &self,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "CreateRouteTable",
            self.inner.create_route_table(vpc, tags)
        )
    }
    async fn create_default_route(&self, route_table: &str, igw: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "CreateRoute",
            self.inner.create_default_route(route_table, igw)
        )
    }
    async fn associate_route_table(
        &self,
        route_table: &str,
        subnet: &str,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "AssociateRouteTable",
            self.inner.associate_route_table(route_table, subnet)
        )
    }
    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "CreateSecurityGroup",
            self.inner
                .create_security_group(name, description, vpc, tags)
        )
    }
    async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "AuthorizeSecurityGroupIngress",
            self.inner.authorize_ingress(group, rules)
        )
    }
    async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "RevokeSecurityGroupIngress",
            self.inner.revoke_ingress(group, rules)
        )
    }
    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "ImportKeyPair",
            self.inner.import_key_pair(name, public_key, tags)
        )
    }
    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error> {
        let r = wrap!(self, "RunInstances", self.inner.run_instances(spec))?;
        let now = Instant::now();
        let mut c = self.lock();
        for i in &r {
            c.booted_at.insert(i.id.clone(), now);
        }
        drop(c);
        Ok(r)
    }
    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error> {
        let r = wrap!(
            self,
            "DescribeInstances",
            self.inner.describe_instances(env)
        )?;
        Ok(self.slow_boot(r))
    }
    async fn find_instances(&self, q: &InstanceQuery) -> Result<Vec<Instance>, Ec2Error> {
        let r = wrap!(self, "DescribeInstances", self.inner.find_instances(q))?;
        Ok(self.slow_boot(r))
    }
    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "TerminateInstances",
            self.inner.terminate_instances(ids)
        )
    }
    async fn allocate_address(&self, tags: &BTreeMap<String, String>) -> Result<Address, Ec2Error> {
        wrap!(self, "AllocateAddress", self.inner.allocate_address(tags))
    }
    async fn associate_address(
        &self,
        allocation: &str,
        instance: &str,
    ) -> Result<String, Ec2Error> {
        wrap!(
            self,
            "AssociateAddress",
            self.inner.associate_address(allocation, instance)
        )
    }
    async fn disassociate_address(&self, association: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "DisassociateAddress",
            self.inner.disassociate_address(association)
        )
    }
    async fn release_address(&self, allocation: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "ReleaseAddress",
            self.inner.release_address(allocation)
        )
    }
    async fn describe_addresses(&self, env: &str) -> Result<Vec<Address>, Ec2Error> {
        wrap!(
            self,
            "DescribeAddresses",
            self.inner.describe_addresses(env)
        )
    }
    async fn network_interfaces(&self, kind: NetKind, id: &str) -> Result<Vec<String>, Ec2Error> {
        wrap!(
            self,
            "DescribeNetworkInterfaces",
            self.inner.network_interfaces(kind, id)
        )
    }
    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error> {
        wrap!(
            self,
            "DescribeTagged",
            self.inner.describe_tagged(kind, env)
        )
    }
    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "DetachInternetGateway",
            self.inner.detach_internet_gateway(igw, vpc)
        )
    }
    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error> {
        wrap!(
            self,
            "DisassociateRouteTable",
            self.inner.disassociate_route_table(association)
        )
    }
    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error> {
        {
            let mut c = self.lock();
            if let Some(left) = c.dependency_left.get_mut(&kind)
                && *left > 0
            {
                *left -= 1;
                c.total += 1;
                *c.calls.entry(format!("Delete {kind}")).or_default() += 1;
                *c.injected.entry(format!("Delete {kind}")).or_default() += 1;
                return Err(Ec2Error::DependencyViolation {
                    op: format!("Delete {kind}"),
                    id: id.to_string(),
                    message: "injected: resource has a dependent object".into(),
                });
            }
        }
        wrap!(self, "Delete", self.inner.delete(kind, id))
    }
}
