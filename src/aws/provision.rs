//! Provisioning logic of the AWS site: validation before spend, one `ensure_*` step per
//! graph resource, waiting for instances, and the teardown sweep.
//!
//! Invariants:
//! - Every id EC2 returns is recorded through the `Journal` (the state file, saved
//!   atomically) before anything else happens, so a crash loses nothing.
//! - Before creating anything, a step looks for what a crashed earlier run may have
//!   made (by tag); instance groups launch only the missing count, with a client token
//!   written to state before the call. So `up` after `kill -9` adopts, never duplicates.
//! - Polls use one DescribeInstances for the whole environment (tag filter, paginated),
//!   never one call per instance; the call count does not grow with group size.
//! - Teardown finds resources by tag as well as by state, so it removes what state lost.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{
    Ec2Api, Ec2Error, ImageQuery, Instance, NetKind, RetryPolicy, Rule, RuleSource, RunSpec,
    TAG_RESOURCE, TAG_TOKEN, retry, tags,
};
use crate::recipe::{AddressKind, AwsSite, Environment, ImageRef, InstanceGroup, VpcChoice};
use crate::state::StateError;

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

/// A VPC or subnet: its id and whether continuum created it (only those are deleted).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CloudId {
    pub id: String,
    pub created: bool,
}

/// What the state file records of the AWS site.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct CloudState {
    pub region: String,
    /// Random, per environment: client tokens are derived from it.
    pub nonce: String,
    pub vpc: Option<CloudId>,
    pub subnet: Option<CloudId>,
    pub internet_gateway: Option<String>,
    /// Whether the gateway is attached to the VPC.
    #[serde(default)]
    pub gateway_attached: bool,
    pub route_table: Option<String>,
    pub route_association: Option<String>,
    pub security_group: Option<String>,
    /// Ingress rules authorised so far (for diffs).
    #[serde(default)]
    pub rules: Vec<RuleRecord>,
    /// Key pair name.
    pub key_pair: Option<String>,
    #[serde(default)]
    pub groups: BTreeMap<String, GroupState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRecord {
    pub protocol: String,
    pub from_port: i32,
    pub to_port: i32,
    /// CIDR, or `self`.
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

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct GroupState {
    /// Number of RunInstances calls completed (the next token's counter).
    pub launches: u32,
    /// Client token written before a RunInstances call whose result is not yet recorded.
    pub pending_token: Option<String>,
    /// Instances by host name (`GROUP-INDEX`).
    pub instances: BTreeMap<String, InstanceRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InstanceRecord {
    pub id: String,
    pub state: String,
    pub private_ip: Option<String>,
    pub public_ip: Option<String>,
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
            && self.groups.values().all(|g| g.instances.is_empty())
    }
}

/// Where provisioning steps read and record cloud state (the state file).
pub trait Journal: Send + Sync {
    fn cloud(&self) -> CloudState;
    /// Apply `f` and save the state atomically before returning.
    fn record(&self, f: &mut dyn FnMut(&mut CloudState)) -> Result<(), StateError>;
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

/// Options of a provisioning run (tests shorten the waits).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retry: RetryPolicy,
    pub poll: Duration,
    /// How long teardown retries dependency violations.
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

/// The image chosen for each instance group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    pub id: String,
    pub architecture: String,
    pub root_device: Option<String>,
}

/// Check instance types and images against the region before anything is created.
/// Errors are `file:line:col: error: ...` lines naming the recipe position.
pub async fn validate(
    api: &dyn Ec2Api,
    site: &AwsSite,
    opts: &Options,
) -> Result<BTreeMap<String, ResolvedImage>, ProvisionError> {
    let mut errors = Vec::new();
    let region = api.region().to_string();
    // Instance types: one call for all of them (an unknown one fails the whole call,
    // so fall back to one call per type only to name the culprit).
    let names: Vec<String> = site
        .groups
        .iter()
        .map(|g| g.instance_type.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut archs: BTreeMap<String, Vec<String>> = BTreeMap::new();
    match retry(opts.retry, || api.describe_instance_types(&names)).await {
        Ok(types) => {
            for t in types {
                archs.insert(t.name, t.architectures);
            }
        }
        Err(e @ Ec2Error::Api { .. } | e @ Ec2Error::NotFound { .. }) => {
            tracing::debug!(error = %e, "instance type lookup failed; checking one by one");
            for n in &names {
                if let Ok(types) = retry(opts.retry, || {
                    api.describe_instance_types(std::slice::from_ref(n))
                })
                .await
                {
                    for t in types {
                        archs.insert(t.name, t.architectures);
                    }
                }
            }
        }
        Err(e) => return Err(ec2("instance types")(e)),
    }
    for g in &site.groups {
        if !archs.contains_key(&g.instance_type) {
            errors.push(format!(
                "{}: error: instance type `{}` does not exist in region {region}",
                g.at_type, g.instance_type
            ));
        }
    }
    // Images by id: one call.
    let ids: Vec<String> = site
        .groups
        .iter()
        .filter_map(|g| match &g.image {
            ImageRef::Id(id) => Some(id.clone()),
            ImageRef::Lookup { .. } => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut by_id = BTreeMap::new();
    if !ids.is_empty() {
        let q = ImageQuery::Ids(ids.clone());
        match retry(opts.retry, || api.describe_images(&q)).await {
            Ok(images) => {
                for i in images {
                    by_id.insert(i.id.clone(), i);
                }
            }
            Err(e) if e.is_not_found() || matches!(e, Ec2Error::Api { .. }) => {
                for id in &ids {
                    let q = ImageQuery::Ids(vec![id.clone()]);
                    if let Ok(images) = retry(opts.retry, || api.describe_images(&q)).await {
                        for i in images {
                            by_id.insert(i.id.clone(), i);
                        }
                    }
                }
            }
            Err(e) => return Err(ec2("images")(e)),
        }
    }
    let mut out = BTreeMap::new();
    for g in &site.groups {
        let type_archs = archs.get(&g.instance_type);
        let image = match &g.image {
            ImageRef::Id(id) => match by_id.get(id) {
                Some(i) => i.clone(),
                None => {
                    errors.push(format!(
                        "{}: error: image `{id}` does not exist in region {region} (or is not visible to this account)",
                        g.at_image
                    ));
                    continue;
                }
            },
            ImageRef::Lookup {
                name,
                owner,
                architecture,
            } => {
                let arch = architecture
                    .clone()
                    .or_else(|| type_archs.and_then(|a| a.first().cloned()));
                let q = ImageQuery::Lookup {
                    name: name.clone(),
                    owner: owner.clone(),
                    architecture: arch.clone(),
                };
                let mut found = retry(opts.retry, || api.describe_images(&q))
                    .await
                    .map_err(ec2("images"))?;
                // Newest first (ISO 8601 dates sort as text).
                found.sort_by(|a, b| b.creation_date.cmp(&a.creation_date));
                match found.into_iter().next() {
                    Some(i) => i,
                    None => {
                        errors.push(format!(
                            "{}: error: no image named `{name}` from owner `{owner}`{} in region {region}",
                            g.at_image,
                            arch.map(|a| format!(" for {a}")).unwrap_or_default()
                        ));
                        continue;
                    }
                }
            }
        };
        if let Some(ta) = type_archs
            && !ta.contains(&image.architecture)
        {
            errors.push(format!(
                "{}: error: image `{}` is {} but instance type `{}` runs {}",
                g.at_image,
                image.id,
                image.architecture,
                g.instance_type,
                ta.join(", ")
            ));
            continue;
        }
        out.insert(
            g.name.clone(),
            ResolvedImage {
                id: image.id,
                architecture: image.architecture,
                root_device: image.root_device,
            },
        );
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(ProvisionError::Invalid(errors))
    }
}

/// Ingress rules the cluster needs (REFERENCE.md §1 ports), from the recipe.
pub fn rules(env: &Environment) -> Vec<Rule> {
    let Some(site) = &env.aws else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let cidr = |protocol: &str, port: i32, c: &str, why: &str| Rule {
        protocol: protocol.to_string(),
        from_port: port,
        to_port: port,
        source: RuleSource::Cidr(c.to_string()),
        description: why.to_string(),
    };
    for c in &site.firewall.ssh_from {
        out.push(cidr("tcp", 22, c, "SSH from the operator"));
    }
    for c in &site.firewall.api_from {
        out.push(cidr(
            "tcp",
            6443,
            c,
            "Kubernetes API (kubectl, joining agents)",
        ));
        if env.cluster.flannel_backend == "wireguard-native" {
            out.push(cidr(
                "udp",
                51820,
                c,
                "flannel wireguard-native from nodes outside the VPC",
            ));
        }
    }
    // The serverless layer's ingress is exposed when the recipe has one.
    if site.firewall.http || env.serverless.is_some() {
        out.push(cidr("tcp", 80, "0.0.0.0/0", "ingress (serverless layer)"));
        out.push(cidr("tcp", 443, "0.0.0.0/0", "ingress (serverless layer)"));
    }
    out.push(Rule {
        protocol: "-1".into(),
        from_port: -1,
        to_port: -1,
        source: RuleSource::SelfGroup,
        description: "node-to-node (kubelet, flannel, etcd)".into(),
    });
    out.sort();
    out.dedup();
    out
}

/// The key pair's name in EC2.
pub fn key_name(env: &str) -> String {
    format!("continuum-{env}")
}

/// Private key continuum uses for the site's instances.
pub fn private_key(site: &AwsSite, state_dir: &Path, env: &str) -> PathBuf {
    site.ssh
        .key
        .clone()
        .unwrap_or_else(|| state_dir.join(format!("{env}.id_ed25519")))
}

/// The public key to import: `KEY.pub` of the configured key, or of a key generated
/// for the environment (ed25519, 0600, by `ssh-keygen`, created once).
pub fn public_key(site: &AwsSite, state_dir: &Path, env: &str) -> Result<String, ProvisionError> {
    let key = private_key(site, state_dir, env);
    if site.ssh.key.is_none() && !key.exists() {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| ProvisionError::Key(format!("{}: {e}", state_dir.display())))?;
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("continuum:{env}"))
            .arg("-f")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| ProvisionError::Key(format!("cannot run ssh-keygen: {e}")))?;
        if !out.status.success() {
            return Err(ProvisionError::Key(format!(
                "ssh-keygen failed for {}: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let mut pubpath = key.clone().into_os_string();
    pubpath.push(".pub");
    let pubpath = PathBuf::from(pubpath);
    std::fs::read_to_string(&pubpath)
        .map(|s| s.trim().to_string())
        .map_err(|e| ProvisionError::Key(format!("cannot read {}: {e}", pubpath.display())))
}

fn random_nonce() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Not secret, only unique: fall back to the clock.
        let t = crate::state::now().to_le_bytes();
        b[..8].copy_from_slice(&t);
    }
    hex::encode(b)
}

/// Client token of launch number `n` of a group (at most 64 ASCII characters).
pub fn client_token(env: &str, nonce: &str, group: &str, n: u32) -> String {
    let mut h = Sha256::new();
    h.update(env.as_bytes());
    h.update([0]);
    h.update(nonce.as_bytes());
    h.update([0]);
    h.update(group.as_bytes());
    h.update(n.to_le_bytes());
    format!("continuum-{}", &hex::encode(h.finalize())[..40])
}

/// Make sure the state has a cloud section for this site (region, nonce).
pub fn init_state(journal: &dyn Journal, site: &AwsSite) -> Result<(), ProvisionError> {
    let mut cur = journal.cloud();
    if init_cloud(&mut cur, &site.region) {
        journal.record(&mut |c| {
            c.region.clone_from(&cur.region);
            c.nonce.clone_from(&cur.nonce);
        })?;
    }
    Ok(())
}

/// Set the region and, once, the client-token nonce; `true` when `c` changed (and must
/// be saved).
pub fn init_cloud(c: &mut CloudState, region: &str) -> bool {
    if !c.nonce.is_empty() && c.region == region {
        return false;
    }
    c.region = region.to_string();
    if c.nonce.is_empty() {
        c.nonce = random_nonce();
    }
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

/// The VPC: the default one, or one created (or adopted) for the environment.
pub async fn ensure_vpc(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    if journal.cloud().vpc.is_some() {
        return Ok(false);
    }
    let id = match &site.vpc {
        VpcChoice::Default => {
            let id = retry(opts.retry, || api.default_vpc())
                .await
                .map_err(ec2(VPC))?
                .ok_or_else(|| {
                    ProvisionError::Invalid(vec![format!(
                        "region {} has no default VPC: set `aws.network.vpc_cidr` to create one",
                        site.region
                    )])
                })?;
            CloudId { id, created: false }
        }
        VpcChoice::Create { cidr } => {
            let t = tags(&env.name, VPC);
            let id = match adopt(api, &env.name, NetKind::Vpc, VPC, opts).await? {
                Some(t) => t.id,
                None => retry(opts.retry, || api.create_vpc(cidr, &t))
                    .await
                    .map_err(ec2(VPC))?,
            };
            CloudId { id, created: true }
        }
    };
    journal.record(&mut |c| c.vpc = Some(id.clone()))?;
    Ok(true)
}

fn need<'a>(v: &'a Option<CloudId>, what: &str) -> Result<&'a str, ProvisionError> {
    v.as_ref().map(|c| c.id.as_str()).ok_or_else(|| {
        ProvisionError::Invalid(vec![format!("{what} is not recorded in state yet")])
    })
}

pub async fn ensure_subnet(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    let st = journal.cloud();
    if st.subnet.is_some() {
        return Ok(false);
    }
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let az = site.availability_zone.as_deref();
    let subnet = match &site.subnet_cidr {
        None => {
            let id = retry(opts.retry, || api.default_subnet(&vpc, az))
                .await
                .map_err(ec2(SUBNET))?
                .ok_or_else(|| {
                    ProvisionError::Invalid(vec![format!(
                        "VPC {vpc} has no default subnet{}: set `aws.network.subnet_cidr`",
                        az.map(|a| format!(" in {a}")).unwrap_or_default()
                    )])
                })?;
            CloudId { id, created: false }
        }
        Some(cidr) => {
            let t = tags(&env.name, SUBNET);
            let id = match adopt(api, &env.name, NetKind::Subnet, SUBNET, opts).await? {
                Some(t) => t.id,
                None => retry(opts.retry, || api.create_subnet(&vpc, cidr, az, &t))
                    .await
                    .map_err(ec2(SUBNET))?,
            };
            CloudId { id, created: true }
        }
    };
    journal.record(&mut |c| c.subnet = Some(subnet.clone()))?;
    if subnet.created && site.ssh.address == AddressKind::Public {
        retry(opts.retry, || api.map_public_ip_on_launch(&subnet.id))
            .await
            .map_err(ec2(SUBNET))?;
    }
    Ok(true)
}

/// Internet gateway, attached to the created VPC.
pub async fn ensure_gateway(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    if st.internet_gateway.is_some() && st.gateway_attached {
        return Ok(false);
    }
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let mut attached = false;
    let igw = match &st.internet_gateway {
        Some(id) => id.clone(),
        None => {
            let t = tags(&env.name, GATEWAY);
            let id = match adopt(api, &env.name, NetKind::InternetGateway, GATEWAY, opts).await? {
                Some(found) => {
                    attached = found.attachments.contains(&vpc);
                    found.id
                }
                None => retry(opts.retry, || api.create_internet_gateway(&t))
                    .await
                    .map_err(ec2(GATEWAY))?,
            };
            journal.record(&mut |c| c.internet_gateway = Some(id.clone()))?;
            id
        }
    };
    if !attached {
        match retry(opts.retry, || api.attach_internet_gateway(&igw, &vpc)).await {
            Ok(()) => {}
            // Attached by a run that crashed before recording it.
            Err(Ec2Error::Api { code, .. }) if code == "Resource.AlreadyAssociated" => {}
            Err(e) => return Err(ec2(GATEWAY)(e)),
        }
    }
    journal.record(&mut |c| c.gateway_attached = true)?;
    Ok(true)
}

/// Route table with a default route through the gateway, associated with the subnet.
pub async fn ensure_route(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    if st.route_table.is_some() && st.route_association.is_some() {
        return Ok(false);
    }
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let subnet = need(&st.subnet, "the subnet")?.to_string();
    let igw = st.internet_gateway.clone().ok_or_else(|| {
        ProvisionError::Invalid(vec!["the internet gateway is not recorded yet".into()])
    })?;
    let (rt, mut assoc) = match &st.route_table {
        Some(id) => (id.clone(), None),
        None => match adopt(api, &env.name, NetKind::RouteTable, ROUTE, opts).await? {
            Some(t) => (t.id, t.attachments.first().cloned()),
            None => {
                let t = tags(&env.name, ROUTE);
                let id = retry(opts.retry, || api.create_route_table(&vpc, &t))
                    .await
                    .map_err(ec2(ROUTE))?;
                journal.record(&mut |c| c.route_table = Some(id.clone()))?;
                match retry(opts.retry, || api.create_default_route(&id, &igw)).await {
                    Ok(()) => {}
                    Err(Ec2Error::Api { code, .. }) if code == "RouteAlreadyExists" => {}
                    Err(e) => return Err(ec2(ROUTE)(e)),
                }
                (id, None)
            }
        },
    };
    journal.record(&mut |c| c.route_table = Some(rt.clone()))?;
    if assoc.is_none() {
        assoc = Some(
            retry(opts.retry, || api.associate_route_table(&rt, &subnet))
                .await
                .map_err(ec2(ROUTE))?,
        );
    }
    journal.record(&mut |c| c.route_association = assoc.clone())?;
    Ok(true)
}

/// Security group with the rules the cluster needs; authorises what is missing.
pub async fn ensure_security_group(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let mut changed = false;
    let sg = match &st.security_group {
        Some(id) => id.clone(),
        None => {
            let t = tags(&env.name, SECURITY_GROUP);
            let name = format!("continuum-{}", env.name);
            let desc = format!("continuum environment {}: k3s cluster nodes", env.name);
            let id =
                match adopt(api, &env.name, NetKind::SecurityGroup, SECURITY_GROUP, opts).await? {
                    Some(t) => t.id,
                    None => retry(opts.retry, || {
                        api.create_security_group(&name, &desc, &vpc, &t)
                    })
                    .await
                    .map_err(ec2(SECURITY_GROUP))?,
                };
            journal.record(&mut |c| c.security_group = Some(id.clone()))?;
            changed = true;
            id
        }
    };
    let have: BTreeSet<RuleRecord> = st.rules.iter().cloned().collect();
    let missing: Vec<Rule> = rules(env)
        .into_iter()
        .filter(|r| !have.contains(&RuleRecord::from(r)))
        .collect();
    for r in &missing {
        // One rule per call: a duplicate (authorised by a crashed run) fails only itself.
        match retry(opts.retry, || {
            api.authorize_ingress(&sg, std::slice::from_ref(r))
        })
        .await
        {
            Ok(()) => {}
            Err(Ec2Error::Api { code, .. }) if code == "InvalidPermission.Duplicate" => {}
            Err(e) => return Err(ec2(SECURITY_GROUP)(e)),
        }
        let rec = RuleRecord::from(r);
        journal.record(&mut |c| {
            if !c.rules.contains(&rec) {
                c.rules.push(rec.clone());
            }
        })?;
        changed = true;
    }
    Ok(changed)
}

/// Import the environment's public key as the key pair.
pub async fn ensure_key_pair(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    state_dir: &Path,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    if journal.cloud().key_pair.is_some() {
        return Ok(false);
    }
    let name = key_name(&env.name);
    let material = public_key(site, state_dir, &env.name)?;
    let t = tags(&env.name, KEY_PAIR);
    if adopt(api, &env.name, NetKind::KeyPair, KEY_PAIR, opts)
        .await?
        .is_none()
    {
        match retry(opts.retry, || api.import_key_pair(&name, &material, &t)).await {
            Ok(()) => {}
            Err(Ec2Error::Api { code, .. }) if code == "InvalidKeyPair.Duplicate" => {
                return Err(ProvisionError::Key(format!(
                    "a key pair named `{name}` exists in {} but was not made by continuum for this environment; delete it or rename the environment",
                    site.region
                )));
            }
            Err(e) => return Err(ec2(KEY_PAIR)(e)),
        }
    }
    journal.record(&mut |c| c.key_pair = Some(name.clone()))?;
    Ok(true)
}

fn record_of(i: &Instance) -> InstanceRecord {
    InstanceRecord {
        id: i.id.clone(),
        state: i.state.clone(),
        private_ip: i.private_ip.clone(),
        public_ip: i.public_ip.clone(),
    }
}

/// Give every live instance of the group a host name: recorded names stay; new
/// instances take the lowest free indices in launch order.
fn assign_names(
    group: &InstanceGroup,
    recorded: &BTreeMap<String, InstanceRecord>,
    live: &[Instance],
) -> BTreeMap<String, InstanceRecord> {
    let live_ids: BTreeMap<&str, &Instance> = live.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut out: BTreeMap<String, InstanceRecord> = recorded
        .iter()
        .filter_map(|(h, r)| {
            live_ids
                .get(r.id.as_str())
                .map(|i| (h.clone(), record_of(i)))
        })
        .collect();
    let taken: BTreeSet<String> = out.values().map(|r| r.id.clone()).collect();
    let mut fresh: Vec<&Instance> = live.iter().filter(|i| !taken.contains(&i.id)).collect();
    fresh.sort_by(|a, b| {
        (&a.launch_time, a.launch_index, &a.id).cmp(&(&b.launch_time, b.launch_index, &b.id))
    });
    let mut index = 0u32;
    for i in fresh {
        while out.contains_key(&group.host_name(index)) {
            index += 1;
        }
        out.insert(group.host_name(index), record_of(i));
    }
    out
}

/// Render the instances' user data from templates/cloud-init.yaml.tera.
pub fn user_data(env: &str, group: &str) -> Result<String, ProvisionError> {
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("group", group);
    tera::Tera::one_off(
        include_str!("../../templates/cloud-init.yaml.tera"),
        &ctx,
        false,
    )
    .map_err(|e| ProvisionError::Invalid(vec![format!("cloud-init template: {e}")]))
}

/// Launch what is missing of an instance group, terminate what is beyond its count,
/// and wait until every instance runs and answers SSH.
pub async fn ensure_group(
    api: &dyn Ec2Api,
    env: &Environment,
    group: &InstanceGroup,
    image: &ResolvedImage,
    journal: &dyn Journal,
    opts: &Options,
    wait_ssh: bool,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    let rid = group_id(&group.name);
    let mut changed = false;
    let live_of = |all: Vec<Instance>| -> Vec<Instance> {
        all.into_iter()
            .filter(|i| i.tag(TAG_RESOURCE) == Some(rid.as_str()) && !i.is_gone())
            .collect::<Vec<_>>()
    };
    let mut live = live_of(
        retry(opts.retry, || api.describe_instances(&env.name))
            .await
            .map_err(ec2(&rid))?,
    );
    let want = group.count as usize;
    let st = journal.cloud();
    let gs = st.groups.get(&group.name).cloned().unwrap_or_default();
    if live.len() < want {
        let token = gs
            .pending_token
            .clone()
            .unwrap_or_else(|| client_token(&env.name, &st.nonce, &group.name, gs.launches));
        let name = group.name.clone();
        // The token is in state before the call: a retry after a crash reuses it.
        journal.record(&mut |c| {
            c.groups.entry(name.clone()).or_default().pending_token = Some(token.clone());
        })?;
        let st = journal.cloud();
        let mut t = tags(&env.name, &rid);
        t.insert(TAG_TOKEN.into(), token.clone());
        let spec = RunSpec {
            image_id: image.id.clone(),
            instance_type: group.instance_type.clone(),
            count: i32::try_from(want - live.len()).unwrap_or(i32::MAX),
            subnet_id: need(&st.subnet, "the subnet")?.to_string(),
            security_group_id: st.security_group.clone().ok_or_else(|| {
                ProvisionError::Invalid(vec!["the security group is not recorded yet".into()])
            })?,
            key_name: st.key_pair.clone().unwrap_or_else(|| key_name(&env.name)),
            client_token: token,
            user_data: user_data(&env.name, &group.name)?,
            root_volume_gb: group
                .root_volume_gb
                .map(|g| i32::try_from(g).unwrap_or(i32::MAX)),
            root_device: image.root_device.clone(),
            spot: group.spot,
            tags: t,
        };
        let created = retry(opts.retry, || api.run_instances(&spec))
            .await
            .map_err(ec2(&rid))?;
        live.extend(created);
        changed = true;
    }
    let recorded = journal
        .cloud()
        .groups
        .get(&group.name)
        .cloned()
        .unwrap_or_default();
    let names = assign_names(group, &recorded.instances, &live);
    let name = group.name.clone();
    let launched = changed;
    journal.record(&mut |c| {
        let g = c.groups.entry(name.clone()).or_default();
        if launched || g.pending_token.is_some() {
            g.launches += 1;
        }
        g.pending_token = None;
        g.instances = names.clone();
    })?;

    // Beyond the count (the group shrank): terminate; their k3s nodes were removed
    // before this step (graph edges).
    let extra: Vec<(String, String)> = names
        .iter()
        .filter(|(h, _)| !env.hosts.contains_key(*h))
        .map(|(h, r)| (h.clone(), r.id.clone()))
        .collect();
    if !extra.is_empty() {
        let ids: Vec<String> = extra.iter().map(|(_, id)| id.clone()).collect();
        retry(opts.retry, || api.terminate_instances(&ids))
            .await
            .map_err(ec2(&rid))?;
        journal.record(&mut |c| {
            if let Some(g) = c.groups.get_mut(&name) {
                for (h, _) in &extra {
                    g.instances.remove(h);
                }
            }
        })?;
        changed = true;
    }

    // Wait until every instance runs (one DescribeInstances per poll for the env).
    let started = Instant::now();
    let timeout = site.ssh.timeout;
    loop {
        let st = journal.cloud();
        let mine = st.groups.get(&group.name).cloned().unwrap_or_default();
        let pending: Vec<(&String, &InstanceRecord)> = mine
            .instances
            .iter()
            .filter(|(_, r)| r.state != "running")
            .collect();
        if pending.is_empty() {
            break;
        }
        if started.elapsed() >= timeout {
            let (h, r) = pending[0];
            return Err(ProvisionError::BootTimeout {
                instance: r.id.clone(),
                host: h.clone(),
                state: r.state.clone(),
                waited: timeout,
            });
        }
        tokio::time::sleep(opts.poll).await;
        let all = retry(opts.retry, || api.describe_instances(&env.name))
            .await
            .map_err(ec2(&rid))?;
        let by_id: BTreeMap<String, Instance> =
            all.into_iter().map(|i| (i.id.clone(), i)).collect();
        journal.record(&mut |c| {
            if let Some(g) = c.groups.get_mut(&name) {
                for r in g.instances.values_mut() {
                    if let Some(i) = by_id.get(&r.id) {
                        *r = record_of(i);
                    }
                }
            }
        })?;
    }
    if wait_ssh && site.ssh.bastion.is_none() {
        let mine = journal
            .cloud()
            .groups
            .get(&group.name)
            .cloned()
            .unwrap_or_default();
        let remaining = timeout
            .saturating_sub(started.elapsed())
            .max(Duration::from_secs(5));
        let mut waits = tokio::task::JoinSet::new();
        for (host, r) in mine.instances {
            let addr = address_of(site, &host, &r)?;
            waits.spawn(wait_for_ssh(host, r.id.clone(), addr, remaining));
        }
        while let Some(res) = waits.join_next().await {
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => {
                    return Err(ProvisionError::Invalid(vec![format!(
                        "SSH wait task failed: {e}"
                    )]));
                }
            }
        }
    }
    Ok(changed)
}

/// The address continuum connects to for an instance.
pub fn address_of(
    site: &AwsSite,
    host: &str,
    r: &InstanceRecord,
) -> Result<String, ProvisionError> {
    let (ip, kind) = match site.ssh.address {
        AddressKind::Private => (&r.private_ip, "private"),
        AddressKind::Public => (&r.public_ip, "public"),
    };
    ip.clone().ok_or_else(|| ProvisionError::NoAddress {
        instance: r.id.clone(),
        host: host.to_string(),
        kind,
    })
}

/// Wait until `addr:22` answers with an SSH banner.
async fn wait_for_ssh(
    host: String,
    instance: String,
    addr: String,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let target = if addr.contains(':') {
        format!("[{addr}]:22")
    } else {
        format!("{addr}:22")
    };
    let mut last = String::from("no attempt");
    while started.elapsed() < timeout {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(&target).await?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            if &buf == b"SSH-" {
                Ok(())
            } else {
                Err(std::io::Error::other("the port answered, but not with SSH"))
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connection timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProvisionError::SshTimeout {
        instance,
        host,
        address: addr,
        waited: timeout,
        detail: last,
    })
}

/// Fill in what the recipe could not know: the addresses (and key) of AWS hosts, from
/// state; the API endpoint when it defaults to an AWS server.
pub fn resolve<'a>(
    env: &'a Environment,
    cloud: Option<&CloudState>,
    state_dir: &Path,
) -> std::borrow::Cow<'a, Environment> {
    let Some(site) = &env.aws else {
        // Nothing to fill in: no copy (plans of 10,000 hosts stay cheap).
        return std::borrow::Cow::Borrowed(env);
    };
    let mut out = env.clone();
    let key = private_key(site, state_dir, &env.name);
    for h in out.hosts.values_mut() {
        if h.cloud.is_none() {
            continue;
        }
        h.key = Some(key.clone());
        if let Some(r) = cloud.and_then(|c| c.instance(&h.name)) {
            if let Ok(a) = address_of(site, &h.name, r) {
                h.address = a;
            }
            if let Some(c) = h.cloud.as_mut() {
                c.public_ip.clone_from(&r.public_ip);
            }
        }
    }
    if out.cluster.api_endpoint.is_empty()
        && let Some(first) = out.cluster.servers.first()
        && let Some(h) = out.hosts.get(first)
    {
        out.cluster.api_endpoint = h.address.clone();
    }
    // Servers reached from outside the VPC (wireguard-native hybrid) advertise their
    // public address, and it must be in the certificate.
    if env.cluster.flannel_backend == "wireguard-native" {
        for s in &out.cluster.servers {
            if let Some(r) = cloud.and_then(|c| c.instance(s))
                && let Some(ip) = &r.public_ip
                && !out.cluster.tls_san.contains(ip)
            {
                out.cluster.tls_san.push(ip.clone());
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// What teardown did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Teardown {
    pub terminated: Vec<String>,
    pub deleted: Vec<String>,
}

/// Terminate every instance tagged with the environment (and every one state
/// knows), wait until they are gone, then delete security group, key pair, route
/// table, internet gateway, subnet and VPC (state's and tagged ones), retrying
/// dependency violations with backoff. Deleted ids leave state at once; what cannot be
/// deleted stays in state and is reported.
pub async fn teardown(
    api: &dyn Ec2Api,
    env: &str,
    journal: &dyn Journal,
    opts: &Options,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Teardown, ProvisionError> {
    let mut report = Teardown::default();
    let st = journal.cloud();
    let all = retry(opts.retry, || api.describe_instances(env))
        .await
        .map_err(ec2("instances"))?;
    let mut ids: BTreeSet<String> = all
        .iter()
        .filter(|i| i.state != "terminated")
        .map(|i| i.id.clone())
        .collect();
    let known: BTreeSet<&str> = all.iter().map(|i| i.id.as_str()).collect();
    for g in st.groups.values() {
        for r in g.instances.values() {
            // Recorded but not tagged (should not happen): terminate it too.
            if !known.contains(r.id.as_str()) {
                ids.insert(r.id.clone());
            }
        }
    }
    let ids: Vec<String> = ids.into_iter().collect();
    if !ids.is_empty() {
        progress(format!("terminating {} instance(s)", ids.len()));
        for chunk in ids.chunks(1000) {
            match retry(opts.retry, || api.terminate_instances(chunk)).await {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => return Err(ec2("instances")(e)),
            }
        }
        let started = Instant::now();
        loop {
            let all = retry(opts.retry, || api.describe_instances(env))
                .await
                .map_err(ec2("instances"))?;
            let left: Vec<String> = all
                .iter()
                .filter(|i| ids.contains(&i.id) && i.state != "terminated")
                .map(|i| format!("instance {} ({})", i.id, i.state))
                .collect();
            if left.is_empty() {
                break;
            }
            if started.elapsed() > opts.delete_timeout {
                return Err(ProvisionError::Leftovers(left));
            }
            tokio::time::sleep(opts.poll).await;
        }
        report.terminated = ids;
    }
    journal.record(&mut |c| c.groups.clear())?;

    let mut leftovers = Vec::new();
    for kind in NetKind::DELETION_ORDER {
        let st = journal.cloud();
        let mut targets: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let from_state = match kind {
            NetKind::SecurityGroup => st.security_group.clone(),
            NetKind::KeyPair => st.key_pair.clone(),
            NetKind::RouteTable => st.route_table.clone(),
            NetKind::InternetGateway => st.internet_gateway.clone(),
            NetKind::Subnet => st.subnet.clone().filter(|s| s.created).map(|s| s.id),
            NetKind::Vpc => st.vpc.clone().filter(|v| v.created).map(|v| v.id),
        };
        if let Some(id) = from_state {
            let mut att = Vec::new();
            if kind == NetKind::RouteTable
                && let Some(a) = &st.route_association
            {
                att.push(a.clone());
            }
            if kind == NetKind::InternetGateway
                && st.gateway_attached
                && let Some(v) = &st.vpc
            {
                att.push(v.id.clone());
            }
            targets.insert(id, att);
        }
        for t in retry(opts.retry, || api.describe_tagged(kind, env))
            .await
            .map_err(ec2("sweep"))?
        {
            let e = targets.entry(t.id).or_default();
            for a in t.attachments {
                if !e.contains(&a) {
                    e.push(a);
                }
            }
        }
        for (id, attachments) in targets {
            progress(format!("deleting {kind} {id}"));
            match delete_one(api, kind, &id, &attachments, opts).await {
                Ok(()) => {
                    report.deleted.push(format!("{kind} {id}"));
                    journal.record(&mut |c| forget(c, kind, &id))?;
                }
                Err(e) => leftovers.push(format!("{kind} {id}: {e}")),
            }
        }
    }
    if leftovers.is_empty() {
        Ok(report)
    } else {
        Err(ProvisionError::Leftovers(leftovers))
    }
}

fn forget(c: &mut CloudState, kind: NetKind, id: &str) {
    let is = |v: &Option<String>| v.as_deref() == Some(id);
    match kind {
        NetKind::SecurityGroup if is(&c.security_group) => {
            c.security_group = None;
            c.rules.clear();
        }
        NetKind::KeyPair if is(&c.key_pair) => c.key_pair = None,
        NetKind::RouteTable if is(&c.route_table) => {
            c.route_table = None;
            c.route_association = None;
        }
        NetKind::InternetGateway if is(&c.internet_gateway) => {
            c.internet_gateway = None;
            c.gateway_attached = false;
        }
        NetKind::Subnet if c.subnet.as_ref().is_some_and(|s| s.id == id) => c.subnet = None,
        NetKind::Vpc if c.vpc.as_ref().is_some_and(|v| v.id == id) => c.vpc = None,
        _ => {}
    }
}

async fn delete_one(
    api: &dyn Ec2Api,
    kind: NetKind,
    id: &str,
    attachments: &[String],
    opts: &Options,
) -> Result<(), Ec2Error> {
    let tolerate = |r: Result<(), Ec2Error>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        Err(Ec2Error::Api { code, .. })
            if code == "Gateway.NotAttached" || code == "InvalidAssociationID.NotFound" =>
        {
            Ok(())
        }
        other => other,
    };
    for a in attachments {
        match kind {
            NetKind::RouteTable => {
                tolerate(retry(opts.retry, || api.disassociate_route_table(a)).await)?;
            }
            NetKind::InternetGateway => {
                tolerate(retry(opts.retry, || api.detach_internet_gateway(id, a)).await)?;
            }
            _ => {}
        }
    }
    let started = Instant::now();
    let mut n = 0;
    loop {
        match tolerate(retry(opts.retry, || api.delete(kind, id)).await) {
            Err(Ec2Error::DependencyViolation { .. })
                if started.elapsed() < opts.delete_timeout =>
            {
                n += 1;
                tokio::time::sleep(
                    opts.retry
                        .delay(n)
                        .max(opts.poll.min(Duration::from_secs(1))),
                )
                .await;
            }
            other => return other,
        }
    }
}

/// The provider for a site: the SDK one (credential chain, `AWS_ENDPOINT_URL_EC2`).
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

/// Terminate the instances of a group that left the recipe and forget the group.
pub async fn remove_group(
    api: &dyn Ec2Api,
    env: &str,
    group: &str,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<Vec<String>, ProvisionError> {
    let rid = group_id(group);
    let all = retry(opts.retry, || api.describe_instances(env))
        .await
        .map_err(ec2(&rid))?;
    let ids: Vec<String> = all
        .iter()
        .filter(|i| i.tag(TAG_RESOURCE) == Some(rid.as_str()) && i.state != "terminated")
        .map(|i| i.id.clone())
        .collect();
    if !ids.is_empty() {
        retry(opts.retry, || api.terminate_instances(&ids))
            .await
            .map_err(ec2(&rid))?;
    }
    let name = group.to_string();
    journal.record(&mut |c| {
        c.groups.remove(&name);
    })?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(id: &str, t: &str, ix: i32) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            private_ip: Some(format!("10.0.0.{ix}")),
            public_ip: None,
            launch_index: ix,
            launch_time: t.into(),
            tags: BTreeMap::new(),
        }
    }

    fn group(count: u32) -> InstanceGroup {
        InstanceGroup {
            name: "w".into(),
            count,
            instance_type: "t3.small".into(),
            image: ImageRef::Id("ami-1".into()),
            root_volume_gb: None,
            spot: false,
            at_type: "r.yaml:1:1".into(),
            at_image: "r.yaml:1:1".into(),
        }
    }

    #[test]
    fn names_are_stable_and_fill_gaps() {
        let g = group(3);
        let live = vec![
            inst("i-b", "t1", 1),
            inst("i-a", "t1", 0),
            inst("i-c", "t2", 0),
        ];
        let names = assign_names(&g, &BTreeMap::new(), &live);
        assert_eq!(names["w-0"].id, "i-a");
        assert_eq!(names["w-1"].id, "i-b");
        assert_eq!(names["w-2"].id, "i-c");
        // w-1 died; a replacement takes its name, the others keep theirs.
        let live2 = vec![
            inst("i-a", "t1", 0),
            inst("i-c", "t2", 0),
            inst("i-d", "t3", 0),
        ];
        let names2 = assign_names(&g, &names, &live2);
        assert_eq!(names2["w-0"].id, "i-a");
        assert_eq!(names2["w-1"].id, "i-d");
        assert_eq!(names2["w-2"].id, "i-c");
    }

    #[test]
    fn client_tokens_differ_per_launch_and_fit_ec2_limits() {
        let a = client_token("e", "n", "g", 0);
        let b = client_token("e", "n", "g", 1);
        assert_ne!(a, b);
        assert_eq!(a, client_token("e", "n", "g", 0));
        assert!(a.len() <= 64 && a.is_ascii());
    }
}

#[cfg(test)]
mod hybrid_tests {
    use super::*;
    use crate::recipe::Role;

    #[test]
    fn cloud_server_advertises_its_public_ip_in_a_wireguard_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recipe = dir.path().join("r.yaml");
        std::fs::write(
            &recipe,
            "name: hy\nk3s:\n  version: v1.31.4+k3s1\n  servers: [cp]\n  flannel_backend: wireguard-native\naws:\n  region: eu-west-1\n  ssh:\n    user: ubuntu\n    address: public\n  firewall:\n    ssh_from: [203.0.113.7/32]\n  instance_groups:\n    - name: cp\n      count: 1\n      instance_type: t3.medium\n      image: ami-785db401\n    - name: w\n      count: 1\n      instance_type: t3.small\n      image: ami-785db401\n",
        )
        .expect("write");
        let env = crate::recipe::load_recipe(&recipe).expect("recipe").env;
        let mut cloud = CloudState::default();
        for (g, h, ip) in [
            ("cp", "cp-0", "198.51.100.10"),
            ("w", "w-0", "198.51.100.11"),
        ] {
            cloud.groups.entry(g.into()).or_default().instances.insert(
                h.into(),
                InstanceRecord {
                    id: format!("i-{h}"),
                    state: "running".into(),
                    private_ip: Some("10.0.0.5".into()),
                    public_ip: Some(ip.into()),
                },
            );
        }
        let env = resolve(&env, Some(&cloud), dir.path());
        assert_eq!(env.hosts["cp-0"].address, "198.51.100.10");
        assert_eq!(env.cluster.api_endpoint, "198.51.100.10");
        let server = crate::graph::node_config(&env, "cp-0", Role::Server);
        assert_eq!(server["node-external-ip"], "198.51.100.10");
        assert_eq!(server["flannel-external-ip"], true);
        assert!(server["tls-san"].to_string().contains("198.51.100.10"));
        let agent = crate::graph::node_config(&env, "w-0", Role::Agent);
        assert_eq!(agent["server"], "https://198.51.100.10:6443");
        assert!(!agent.contains_key("node-external-ip"));
        // The generated key lives in the state directory.
        assert_eq!(
            env.hosts["cp-0"].key.as_deref(),
            Some(dir.path().join("hy.id_ed25519").as_path())
        );
    }

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = AwsSite {
            region: "eu-west-1".into(),
            vpc: VpcChoice::Default,
            subnet_cidr: None,
            availability_zone: None,
            ssh: crate::recipe::AwsSsh {
                user: "ubuntu".into(),
                key: None,
                address: AddressKind::Private,
                bastion: None,
                timeout: Duration::from_secs(1),
            },
            firewall: crate::recipe::Firewall {
                ssh_from: vec![],
                api_from: vec![],
                http: false,
            },
            groups: vec![],
        };
        let a = public_key(&site, dir.path(), "e").expect("key");
        assert!(a.starts_with("ssh-ed25519 "), "{a}");
        let b = public_key(&site, dir.path(), "e").expect("key again");
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("e.id_ed25519"))
            .expect("private key")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private key is group/world readable: {mode:o}"
        );
    }
}
