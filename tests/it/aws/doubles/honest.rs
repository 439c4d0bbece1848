//! TEST DOUBLE (test code only, never part of the product): EC2 as it is documented,
//! where the moto emulator behaves otherwise. Tests wrap the SDK pointed at moto in
//! `Honest` (and that, if they count or inject faults, in `fault::Instrumented`).
//!
//! moto applies every change at once, ignores client tokens, lists terminated
//! instances forever, offers every instance type in every zone and never runs out of
//! capacity. Each rule below makes the double do what EC2 does instead; the facts and
//! their sources are in docs/aws.md (the "honest double" column), cited by section.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use continuum::aws::{
    Address, Ec2Api, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceQuery, InstanceTypeInfo,
    NetKind, Offering, Rule, RunSpec, Subnet, TAG_TOKEN, Tagged,
};

/// The rules' parameters (tests shorten EC2's times to keep runs short).
#[derive(Debug, Clone)]
pub struct Rules {
    /// How long an id stays unknown to other calls after the call that created it.
    pub visibility: Duration,
    /// How long a terminated instance stays listed (EC2: about an hour).
    pub forget_after: Duration,
    /// How long a client token is remembered after its instances end (EC2: 24 h at least).
    pub token_memory: Duration,
    /// (availability zone, instance type) pairs the region does not offer.
    pub not_offered: BTreeSet<(String, String)>,
    /// RunInstances of this instance type fails with this error code.
    pub capacity: BTreeMap<String, String>,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            visibility: Duration::from_millis(500),
            forget_after: Duration::from_secs(3),
            token_memory: Duration::from_secs(24 * 3600),
            not_offered: BTreeSet::new(),
            capacity: BTreeMap::new(),
        }
    }
}

struct TokenUse {
    params: String,
    instances: Vec<String>,
    at: Instant,
}

#[derive(Default)]
struct Memory {
    /// Ids (and key pair names) by creation time.
    born: BTreeMap<String, Instant>,
    /// Instances by the time they were first known to be terminated.
    ended: BTreeMap<String, Instant>,
    tokens: BTreeMap<String, TokenUse>,
    /// NotFound answered for a too-young id, per operation.
    hidden: BTreeMap<String, u64>,
    /// Other refusals by a rule (capacity, zone, token mismatch, forgotten id).
    refused: BTreeMap<String, u64>,
}

/// The honest wrapper.
pub struct Honest {
    inner: Arc<dyn Ec2Api>,
    rules: Rules,
    mem: Mutex<Memory>,
}

/// The NotFound code EC2 uses for an id of this kind.
fn not_found_code(id: &str) -> &'static str {
    const BY_PREFIX: [(&str, &str); 9] = [
        ("vpc-", "InvalidVpcID.NotFound"),
        ("subnet-", "InvalidSubnetID.NotFound"),
        ("sg-", "InvalidGroup.NotFound"),
        ("igw-", "InvalidInternetGatewayID.NotFound"),
        ("rtbassoc-", "InvalidAssociationID.NotFound"),
        ("rtb-", "InvalidRouteTableID.NotFound"),
        ("i-", "InvalidInstanceID.NotFound"),
        ("eipalloc-", "InvalidAllocationID.NotFound"),
        ("eipassoc-", "InvalidAssociationID.NotFound"),
    ];
    BY_PREFIX
        .iter()
        .find(|(p, _)| id.starts_with(p))
        .map_or("InvalidKeyPair.NotFound", |(_, c)| c)
}

/// What EC2 compares under a client token: every parameter but the token.
fn params_of(spec: &RunSpec) -> String {
    let mut s = spec.clone();
    s.client_token.clear();
    s.tags.remove(TAG_TOKEN);
    format!("{s:?}")
}

impl Honest {
    pub fn new(inner: Arc<dyn Ec2Api>, rules: Rules) -> Self {
        Honest {
            inner,
            rules,
            mem: Mutex::new(Memory::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.mem
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// NotFound answers given because an id was too young, per operation.
    pub fn hidden(&self) -> BTreeMap<String, u64> {
        self.lock().hidden.clone()
    }

    /// Refusals by the other rules, per operation.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.lock().refused.clone()
    }

    /// Terminate an instance behind continuum's back, as EC2 does when it reclaims a
    /// spot instance; it is forgotten `forget_after` later.
    pub async fn reclaim(&self, id: &str) -> Result<(), Ec2Error> {
        self.inner.terminate_instances(&[id.to_string()]).await?;
        self.lock().ended.insert(id.to_string(), Instant::now());
        Ok(())
    }

    fn born(&self, id: &str) {
        self.lock().born.insert(id.to_string(), Instant::now());
    }

    fn young(m: &Memory, rules: &Rules, id: &str) -> bool {
        m.born
            .get(id)
            .is_some_and(|t| t.elapsed() < rules.visibility)
    }

    fn forgotten(m: &Memory, rules: &Rules, id: &str) -> bool {
        m.ended
            .get(id)
            .is_some_and(|t| t.elapsed() >= rules.forget_after)
    }

    /// Rule "eventual consistency" (docs/aws.md, "Eventual consistency"): an id created
    /// moments ago may not have propagated, and a call naming it fails with the
    /// resource's NotFound code.
    fn check(&self, op: &str, ids: &[&str]) -> Result<(), Ec2Error> {
        let mut m = self.lock();
        if let Some(id) = ids.iter().find(|id| Self::young(&m, &self.rules, id)) {
            *m.hidden.entry(op.to_string()).or_default() += 1;
            return Err(Ec2Error::from_code(
                op,
                Some(400),
                not_found_code(id),
                &format!("The ID '{id}' does not exist"),
            ));
        }
        Ok(())
    }

    fn refuse(&self, op: &str, status: u16, code: &str, message: &str) -> Ec2Error {
        *self.lock().refused.entry(op.to_string()).or_default() += 1;
        Ec2Error::from_code(op, Some(status), code, message)
    }

    /// What a Describe call lists: not ids too young to have propagated (as `check`),
    /// not instances terminated longer ago than `forget_after` (docs/aws.md, "Forgotten
    /// instances": terminated instances stay listed for about an hour).
    fn listed(&self, all: Vec<Instance>) -> Vec<Instance> {
        let mut m = self.lock();
        for i in all.iter().filter(|i| i.state == "terminated") {
            m.ended.entry(i.id.clone()).or_insert_with(Instant::now);
        }
        all.into_iter()
            .filter(|i| {
                !Self::young(&m, &self.rules, &i.id) && !Self::forgotten(&m, &self.rules, &i.id)
            })
            .collect()
    }
}

#[async_trait]
impl Ec2Api for Honest {
    fn region(&self) -> &str {
        self.inner.region()
    }

    /// Rule "architecture order" (docs/aws.md, "Instance types, zones, images"): types
    /// that run 32-bit code (t1, t2, m1, c1, ...) list `i386` before `x86_64`.
    async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error> {
        let mut types = self.inner.describe_instance_types(names).await?;
        for t in &mut types {
            if t.name.starts_with("t2.") && !t.architectures.iter().any(|a| a == "i386") {
                t.architectures.push("i386".into());
            }
            t.architectures.sort_by_key(|a| a != "i386");
        }
        Ok(types)
    }

    /// Rule "offerings per zone" (docs/aws.md, "Instance types, zones, images"): a type
    /// of the region need not be offered in every one of its zones.
    async fn instance_type_offerings(&self, names: &[String]) -> Result<Vec<Offering>, Ec2Error> {
        let all = self.inner.instance_type_offerings(names).await?;
        Ok(all
            .into_iter()
            .filter(|o| {
                !self
                    .rules
                    .not_offered
                    .contains(&(o.zone.clone(), o.instance_type.clone()))
            })
            .collect())
    }

    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error> {
        self.inner.describe_images(q).await
    }

    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error> {
        self.inner.default_vpc().await
    }

    async fn default_subnets(&self, vpc: &str) -> Result<Vec<Subnet>, Ec2Error> {
        self.inner.default_subnets(vpc).await
    }

    async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error> {
        self.check("DescribeSubnets", &[id])?;
        self.inner.describe_subnet(id).await
    }

    async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let id = self.inner.create_vpc(cidr, tags).await?;
        self.born(&id);
        Ok(id)
    }

    async fn create_subnet(
        &self,
        vpc: &str,
        cidr: &str,
        az: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        self.check("CreateSubnet", &[vpc])?;
        let id = self.inner.create_subnet(vpc, cidr, az, tags).await?;
        self.born(&id);
        Ok(id)
    }

    async fn map_public_ip_on_launch(&self, subnet: &str) -> Result<(), Ec2Error> {
        self.check("ModifySubnetAttribute", &[subnet])?;
        self.inner.map_public_ip_on_launch(subnet).await
    }

    async fn create_internet_gateway(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let id = self.inner.create_internet_gateway(tags).await?;
        self.born(&id);
        Ok(id)
    }

    async fn attach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        self.check("AttachInternetGateway", &[igw, vpc])?;
        self.inner.attach_internet_gateway(igw, vpc).await
    }

    async fn create_route_table(
        &self,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        self.check("CreateRouteTable", &[vpc])?;
        let id = self.inner.create_route_table(vpc, tags).await?;
        self.born(&id);
        Ok(id)
    }

    async fn create_default_route(&self, route_table: &str, igw: &str) -> Result<(), Ec2Error> {
        self.check("CreateRoute", &[route_table, igw])?;
        self.inner.create_default_route(route_table, igw).await
    }

    async fn associate_route_table(
        &self,
        route_table: &str,
        subnet: &str,
    ) -> Result<String, Ec2Error> {
        self.check("AssociateRouteTable", &[route_table, subnet])?;
        self.inner.associate_route_table(route_table, subnet).await
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        self.check("CreateSecurityGroup", &[vpc])?;
        let id = self
            .inner
            .create_security_group(name, description, vpc, tags)
            .await?;
        self.born(&id);
        Ok(id)
    }

    async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        self.check("AuthorizeSecurityGroupIngress", &[group])?;
        self.inner.authorize_ingress(group, rules).await
    }

    async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        self.check("RevokeSecurityGroupIngress", &[group])?;
        self.inner.revoke_ingress(group, rules).await
    }

    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        self.inner.import_key_pair(name, public_key, tags).await?;
        self.born(name);
        Ok(())
    }

    /// Rules "client tokens" (docs/aws.md, "Client tokens"): a token is remembered at
    /// least 24 h after its instances end; the same request under it returns the same
    /// reservation (only instance states differ), another request fails with
    /// `IdempotentParameterMismatch`. "offerings per zone": a type the subnet's zone
    /// does not offer is refused with `Unsupported`. "capacity" (docs/aws.md,
    /// "Capacity, quota, permissions"): `InsufficientInstanceCapacity` comes as HTTP
    /// 500.
    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error> {
        const OP: &str = "RunInstances";
        self.check(
            OP,
            &[&spec.subnet_id, &spec.security_group_id, &spec.key_name],
        )?;
        let params = params_of(spec);
        let earlier = {
            let m = self.lock();
            m.tokens.get(&spec.client_token).and_then(|u| {
                let last_end = u
                    .instances
                    .iter()
                    .filter_map(|i| m.ended.get(i))
                    .max()
                    .copied()
                    .unwrap_or(u.at)
                    .max(u.at);
                (last_end.elapsed() < self.rules.token_memory)
                    .then(|| (u.params == params, u.instances.clone()))
            })
        };
        match earlier {
            Some((true, ids)) => {
                return self.inner.find_instances(&InstanceQuery::Ids(ids)).await;
            }
            Some((false, _)) => {
                return Err(self.refuse(
                    OP,
                    400,
                    "IdempotentParameterMismatch",
                    "The client token you have provided is associated with a resource that is already deleted or with a different request",
                ));
            }
            None => {}
        }
        let zone = self.inner.describe_subnet(&spec.subnet_id).await?.zone;
        if self
            .rules
            .not_offered
            .contains(&(zone.clone(), spec.instance_type.clone()))
        {
            return Err(self.refuse(
                OP,
                400,
                "Unsupported",
                &format!(
                    "Your requested instance type ({}) is not supported in your requested Availability Zone ({zone}).",
                    spec.instance_type
                ),
            ));
        }
        if let Some(code) = self.rules.capacity.get(&spec.instance_type) {
            let status = if code.starts_with("Insufficient") {
                500
            } else {
                400
            };
            return Err(self.refuse(
                OP,
                status,
                code,
                &format!(
                    "We currently do not have sufficient {} capacity in the Availability Zone you requested ({zone}).",
                    spec.instance_type
                ),
            ));
        }
        let out = self.inner.run_instances(spec).await?;
        let mut m = self.lock();
        for i in &out {
            m.born.insert(i.id.clone(), Instant::now());
        }
        m.tokens.insert(
            spec.client_token.clone(),
            TokenUse {
                params,
                instances: out.iter().map(|i| i.id.clone()).collect(),
                at: Instant::now(),
            },
        );
        Ok(out)
    }

    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error> {
        let all = self.inner.describe_instances(env).await?;
        Ok(self.listed(all))
    }

    async fn find_instances(&self, q: &InstanceQuery) -> Result<Vec<Instance>, Ec2Error> {
        let all = self.inner.find_instances(q).await?;
        Ok(self.listed(all))
    }

    /// Rule "forgotten instances" (docs/aws.md, "Forgotten instances"): when one id of
    /// the request is unknown the request fails and no instance is terminated; a young
    /// id is unknown too (docs/aws.md, "Eventual consistency": NotFound after
    /// TerminateInstances does not mean the instance is gone).
    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error> {
        const OP: &str = "TerminateInstances";
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        self.check(OP, &refs)?;
        let forgotten = {
            let m = self.lock();
            ids.iter()
                .find(|id| Self::forgotten(&m, &self.rules, id))
                .cloned()
        };
        if let Some(id) = forgotten {
            return Err(self.refuse(
                OP,
                400,
                "InvalidInstanceID.NotFound",
                &format!("The instance ID '{id}' does not exist"),
            ));
        }
        self.inner.terminate_instances(ids).await?;
        let mut m = self.lock();
        for id in ids {
            m.ended.entry(id.clone()).or_insert_with(Instant::now);
        }
        Ok(())
    }

    async fn allocate_address(&self, tags: &BTreeMap<String, String>) -> Result<Address, Ec2Error> {
        let a = self.inner.allocate_address(tags).await?;
        self.born(&a.allocation_id);
        Ok(a)
    }

    async fn associate_address(
        &self,
        allocation: &str,
        instance: &str,
    ) -> Result<String, Ec2Error> {
        self.check("AssociateAddress", &[allocation, instance])?;
        self.inner.associate_address(allocation, instance).await
    }

    async fn disassociate_address(&self, association: &str) -> Result<(), Ec2Error> {
        self.inner.disassociate_address(association).await
    }

    async fn release_address(&self, allocation: &str) -> Result<(), Ec2Error> {
        self.check("ReleaseAddress", &[allocation])?;
        self.inner.release_address(allocation).await
    }

    async fn describe_addresses(&self, env: &str) -> Result<Vec<Address>, Ec2Error> {
        let all = self.inner.describe_addresses(env).await?;
        let m = self.lock();
        Ok(all
            .into_iter()
            .filter(|a| !Self::young(&m, &self.rules, &a.allocation_id))
            .collect())
    }

    async fn network_interfaces(&self, kind: NetKind, id: &str) -> Result<Vec<String>, Ec2Error> {
        self.inner.network_interfaces(kind, id).await
    }

    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error> {
        let all = self.inner.describe_tagged(kind, env).await?;
        let m = self.lock();
        Ok(all
            .into_iter()
            .filter(|t| !Self::young(&m, &self.rules, &t.id))
            .collect())
    }

    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        self.check("DetachInternetGateway", &[igw, vpc])?;
        self.inner.detach_internet_gateway(igw, vpc).await
    }

    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error> {
        self.inner.disassociate_route_table(association).await
    }

    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error> {
        self.check(&format!("Delete {kind}"), &[id])?;
        self.inner.delete(kind, id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_found_codes_follow_the_id_kind() {
        assert_eq!(not_found_code("sg-0abc"), "InvalidGroup.NotFound");
        assert_eq!(not_found_code("rtb-1"), "InvalidRouteTableID.NotFound");
        assert_eq!(
            not_found_code("rtbassoc-1"),
            "InvalidAssociationID.NotFound"
        );
        assert_eq!(not_found_code("continuum-e"), "InvalidKeyPair.NotFound");
    }
}
