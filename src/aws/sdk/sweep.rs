//! The sweep side of the SDK provider: tagged network resources of an environment
//! (one Describe call per kind) and their deletion, named by kind.

use aws_sdk_ec2::Client;

use super::convert::{env_filter, tag_map};
use super::err;
use crate::aws::{Ec2Error, NetKind, Tagged};

/// Network resources of one kind tagged with the environment.
pub(super) async fn describe_tagged(
    c: &Client,
    kind: NetKind,
    env: &str,
) -> Result<Vec<Tagged>, Ec2Error> {
    let f = env_filter(env);
    let t = |id: Option<&str>, attachments: Vec<String>, tags: &[aws_sdk_ec2::types::Tag]| {
        id.map(|id| Tagged {
            kind,
            id: id.to_string(),
            attachments,
            tags: tag_map(tags),
        })
    };
    Ok(match kind {
        NetKind::SecurityGroup => {
            let out = c
                .describe_security_groups()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeSecurityGroups", e))?;
            out.security_groups()
                .iter()
                .filter_map(|g| t(g.group_id(), Vec::new(), g.tags()))
                .collect()
        }
        NetKind::KeyPair => {
            let out = c
                .describe_key_pairs()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeKeyPairs", e))?;
            out.key_pairs()
                .iter()
                .filter_map(|k| t(k.key_name(), Vec::new(), k.tags()))
                .collect()
        }
        NetKind::RouteTable => {
            let out = c
                .describe_route_tables()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeRouteTables", e))?;
            out.route_tables()
                .iter()
                .filter_map(|r| {
                    let assoc = r
                        .associations()
                        .iter()
                        .filter(|a| !a.main().unwrap_or(false))
                        .filter_map(|a| a.route_table_association_id().map(str::to_string))
                        .collect();
                    t(r.route_table_id(), assoc, r.tags())
                })
                .collect()
        }
        NetKind::InternetGateway => {
            let out = c
                .describe_internet_gateways()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeInternetGateways", e))?;
            out.internet_gateways()
                .iter()
                .filter_map(|g| {
                    let vpcs = g
                        .attachments()
                        .iter()
                        .filter_map(|a| a.vpc_id().map(str::to_string))
                        .collect();
                    t(g.internet_gateway_id(), vpcs, g.tags())
                })
                .collect()
        }
        NetKind::Subnet => {
            let out = c
                .describe_subnets()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeSubnets", e))?;
            out.subnets()
                .iter()
                .filter_map(|s| t(s.subnet_id(), Vec::new(), s.tags()))
                .collect()
        }
        NetKind::Vpc => {
            let out = c
                .describe_vpcs()
                .filters(f)
                .send()
                .await
                .map_err(|e| err("DescribeVpcs", e))?;
            out.vpcs()
                .iter()
                .filter_map(|v| t(v.vpc_id(), Vec::new(), v.tags()))
                .collect()
        }
    })
}

/// Delete one resource; a dependency violation names it.
pub(super) async fn delete(c: &Client, kind: NetKind, id: &str) -> Result<(), Ec2Error> {
    let r = match kind {
        NetKind::SecurityGroup => c
            .delete_security_group()
            .group_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteSecurityGroup", e)),
        NetKind::KeyPair => c
            .delete_key_pair()
            .key_name(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteKeyPair", e)),
        NetKind::RouteTable => c
            .delete_route_table()
            .route_table_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteRouteTable", e)),
        NetKind::InternetGateway => c
            .delete_internet_gateway()
            .internet_gateway_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteInternetGateway", e)),
        NetKind::Subnet => c
            .delete_subnet()
            .subnet_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteSubnet", e)),
        NetKind::Vpc => c
            .delete_vpc()
            .vpc_id(id)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| err("DeleteVpc", e)),
    };
    r.map_err(|e| match e {
        Ec2Error::DependencyViolation { op, message, .. } => Ec2Error::DependencyViolation {
            op,
            id: id.to_string(),
            message,
        },
        other => other,
    })
}
