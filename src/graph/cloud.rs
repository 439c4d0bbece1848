//! The AWS site's part of the resource graph: network, firewall, key pair and one node
//! per instance group. Edges: VPC -> subnet, gateway, security group; gateway and
//! subnet -> route; subnet, route, security group, key pair -> every instance group;
//! every instance group -> every k3s node (added by `build`, since a node's config
//! names the servers' addresses).

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Value, json};

use super::{Dep, Kind, Resource, hash_of};
use crate::aws::provision::{self, GATEWAY, KEY_PAIR, ROUTE, SECURITY_GROUP, SUBNET, VPC};
use crate::recipe::{Environment, ImageRef, VpcChoice};

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
        vec![("rules", json!(provision::rules(env)))],
    );
    g.add_edge(vpc, sg, Dep::Needs);
    before_instances.push(sg);
    let key = add(
        g,
        KEY_PAIR,
        Kind::AwsKeyPair,
        vec![
            ("name", json!(provision::key_name(&env.name))),
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
            &provision::group_id(&grp.name),
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
