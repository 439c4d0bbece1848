//! The AWS site's part of the resource graph: network, firewall, key pair and one node
//! per instance group. Edges: VPC -> subnet, gateway, security group; gateway and
//! subnet -> route; subnet, route, security group, key pair -> every instance group;
//! every instance group -> every k3s node (added by `build`, since a node's config
//! names the servers' addresses). Also the site's pure derivations: resource ids,
//! the firewall rules the cluster needs, whether instances need a public address.

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Value, json};

use super::{Dep, Kind, Resource, hash_of};
use crate::recipe::{AddressKind, Environment, ImageRef, VpcChoice};
use crate::state::cloud::RuleRecord;

/// Add the site's resources; returns the instance group nodes.
pub(super) fn build(
    env: &Environment,
    g: &mut DiGraph<Resource, Dep>,
    index: &mut HashMap<String, NodeIndex>,
) -> Vec<NodeIndex> {
    let Some(site) = &env.aws else {
        return Vec::new();
    };
    let mut add =
        |g: &mut DiGraph<Resource, Dep>, id: &str, kind: Kind, attrs: Vec<(&str, Value)>| {
            let attrs: BTreeMap<String, Value> =
                attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            let hash = hash_of(&[&json!(attrs)]);
            let ix = g.add_node(Resource {
                id: id.to_string(),
                kind,
                host: None,
                attrs,
                hash,
            });
            index.insert(id.to_string(), ix);
            ix
        };
    let region = json!(site.region);
    let (vpc_attrs, created) = match &site.vpc {
        VpcChoice::Default => (
            vec![("region", region.clone()), ("vpc", json!("default"))],
            false,
        ),
        VpcChoice::Create { cidr } => (
            vec![("region", region.clone()), ("cidr", json!(cidr))],
            true,
        ),
    };
    let vpc = add(g, VPC, Kind::AwsVpc, vpc_attrs);
    let subnet = add(
        g,
        SUBNET,
        Kind::AwsSubnet,
        vec![
            (
                "cidr",
                json!(site.subnet_cidr.as_deref().unwrap_or("default")),
            ),
            ("availability_zone", json!(site.availability_zone)),
        ],
    );
    g.add_edge(vpc, subnet, Dep::Needs);
    let mut before_instances = vec![subnet];
    if created {
        let igw = add(g, GATEWAY, Kind::AwsInternetGateway, vec![]);
        g.add_edge(vpc, igw, Dep::Needs);
        let route = add(
            g,
            ROUTE,
            Kind::AwsRoute,
            vec![("destination", json!("0.0.0.0/0"))],
        );
        g.add_edge(igw, route, Dep::Needs);
        g.add_edge(subnet, route, Dep::Needs);
        before_instances.push(route);
    }
    let sg = add(
        g,
        SECURITY_GROUP,
        Kind::AwsSecurityGroup,
        vec![("rules", json!(rules(env)))],
    );
    g.add_edge(vpc, sg, Dep::Needs);
    before_instances.push(sg);
    let key = add(
        g,
        KEY_PAIR,
        Kind::AwsKeyPair,
        vec![
            ("name", json!(key_name(&env.name))),
            (
                "key",
                json!(
                    site.ssh
                        .key
                        .as_ref()
                        .map_or_else(|| "generated".to_string(), |k| k.display().to_string())
                ),
            ),
        ],
    );
    before_instances.push(key);
    let mut groups = Vec::new();
    for grp in &site.groups {
        let image = match &grp.image {
            ImageRef::Id(id) => json!(id),
            ImageRef::Lookup {
                name,
                owner,
                architecture,
            } => json!({"name": name, "owner": owner, "architecture": architecture}),
        };
        let mut attrs = vec![
            ("count", json!(grp.count)),
            ("instance_type", json!(grp.instance_type)),
            ("image", image),
            ("root_volume_gb", json!(grp.root_volume_gb)),
            ("spot", json!(grp.spot)),
        ];
        // Only when set: groups without it keep the attributes (and hash) they had.
        if grp.elastic_ip {
            attrs.push(("elastic_ip", json!(true)));
        }
        let ix = add(
            g,
            &group_id(&grp.name),
            Kind::AwsInstances {
                group: grp.name.clone(),
            },
            attrs,
        );
        for b in &before_instances {
            g.add_edge(*b, ix, Dep::Needs);
        }
        groups.push(ix);
    }
    groups
}

/// Graph ids of the site's network resources.
pub use super::id::{GATEWAY, KEY_PAIR, ROUTE, SECURITY_GROUP, SUBNET, VPC};

/// Graph id of an instance group.
pub fn group_id(group: &str) -> String {
    super::ResourceId::Aws(super::AwsId::Instances {
        group: group.to_string(),
    })
    .to_string()
}

/// Tag value (`continuum:resource`) of a host's Elastic IP.
pub fn address_id(host: &str) -> String {
    format!("aws-eip/{host}")
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

/// Whether instances need a public IPv4 address: SSH to public addresses, or a hybrid
/// cluster (wireguard-native) whose outside nodes reach the servers' public IPs.
pub fn wants_public_ip(env: &Environment) -> bool {
    env.aws
        .as_ref()
        .is_some_and(|s| s.ssh.address == AddressKind::Public)
        || (env.aws.is_some() && env.cluster.flannel_backend == "wireguard-native")
}

/// Ingress rules the cluster needs (k3s: API 6443/tcp, wireguard-native 51820/udp,
/// everything between nodes; docs/aws.md, "Security group rules"), from the recipe.
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
