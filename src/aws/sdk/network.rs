//! The SDK calls about the network: the default VPC and its subnets, creating the VPC,
//! subnet, internet gateway, route table and route, security group and its rules, the
//! key pair, and undoing the attachments teardown has to undo first; the network
//! interfaces that keep a subnet or VPC from being deleted.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};

use super::convert::{self, filter, tag_spec};
use super::{err, missing};
use crate::aws::{Ec2Error, NetKind, Rule, Subnet};

pub(super) async fn default_vpc(c: &Client) -> Result<Option<String>, Ec2Error> {
    let out = c
        .describe_vpcs()
        .filters(filter("isDefault", &["true".to_string()]))
        .send()
        .await
        .map_err(|e| err("DescribeVpcs", e))?;
    Ok(out
        .vpcs()
        .first()
        .and_then(|v| v.vpc_id())
        .map(str::to_string))
}

pub(super) async fn default_subnets(c: &Client, vpc: &str) -> Result<Vec<Subnet>, Ec2Error> {
    let out = c
        .describe_subnets()
        .filters(filter("vpc-id", &[vpc.to_string()]))
        .filters(filter("default-for-az", &["true".to_string()]))
        .send()
        .await
        .map_err(|e| err("DescribeSubnets", e))?;
    let mut subnets: Vec<Subnet> = out.subnets().iter().filter_map(convert::subnet).collect();
    subnets.sort_by(|a, b| a.zone.cmp(&b.zone));
    Ok(subnets)
}

pub(super) async fn describe_subnet(c: &Client, id: &str) -> Result<Subnet, Ec2Error> {
    let out = c
        .describe_subnets()
        .subnet_ids(id)
        .send()
        .await
        .map_err(|e| err("DescribeSubnets", e))?;
    out.subnets()
        .iter()
        .find_map(convert::subnet)
        .ok_or_else(|| missing("DescribeSubnets", "subnet"))
}

pub(super) async fn create_vpc(
    c: &Client,
    cidr: &str,
    tags: &BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
    let out = c
        .create_vpc()
        .cidr_block(cidr)
        .tag_specifications(tag_spec(ResourceType::Vpc, tags))
        .send()
        .await
        .map_err(|e| err("CreateVpc", e))?;
    out.vpc()
        .and_then(|v| v.vpc_id())
        .map(str::to_string)
        .ok_or_else(|| missing("CreateVpc", "VPC id"))
}

pub(super) async fn create_subnet(
    c: &Client,
    vpc: &str,
    cidr: &str,
    az: Option<&str>,
    tags: &BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
    let out = c
        .create_subnet()
        .vpc_id(vpc)
        .cidr_block(cidr)
        .set_availability_zone(az.map(str::to_string))
        .tag_specifications(tag_spec(ResourceType::Subnet, tags))
        .send()
        .await
        .map_err(|e| err("CreateSubnet", e))?;
    out.subnet()
        .and_then(|s| s.subnet_id())
        .map(str::to_string)
        .ok_or_else(|| missing("CreateSubnet", "subnet id"))
}

pub(super) async fn map_public_ip_on_launch(c: &Client, subnet: &str) -> Result<(), Ec2Error> {
    c.modify_subnet_attribute()
        .subnet_id(subnet)
        .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
        .send()
        .await
        .map_err(|e| err("ModifySubnetAttribute", e))?;
    Ok(())
}

pub(super) async fn create_internet_gateway(
    c: &Client,
    tags: &BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
    let out = c
        .create_internet_gateway()
        .tag_specifications(tag_spec(ResourceType::InternetGateway, tags))
        .send()
        .await
        .map_err(|e| err("CreateInternetGateway", e))?;
    out.internet_gateway()
        .and_then(|g| g.internet_gateway_id())
        .map(str::to_string)
        .ok_or_else(|| missing("CreateInternetGateway", "gateway id"))
}

pub(super) async fn attach_internet_gateway(
    c: &Client,
    igw: &str,
    vpc: &str,
) -> Result<(), Ec2Error> {
    c.attach_internet_gateway()
        .internet_gateway_id(igw)
        .vpc_id(vpc)
        .send()
        .await
        .map_err(|e| err("AttachInternetGateway", e))?;
    Ok(())
}

pub(super) async fn create_route_table(
    c: &Client,
    vpc: &str,
    tags: &BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
    let out = c
        .create_route_table()
        .vpc_id(vpc)
        .tag_specifications(tag_spec(ResourceType::RouteTable, tags))
        .send()
        .await
        .map_err(|e| err("CreateRouteTable", e))?;
    out.route_table()
        .and_then(|r| r.route_table_id())
        .map(str::to_string)
        .ok_or_else(|| missing("CreateRouteTable", "route table id"))
}

pub(super) async fn create_default_route(
    c: &Client,
    route_table: &str,
    igw: &str,
) -> Result<(), Ec2Error> {
    c.create_route()
        .route_table_id(route_table)
        .destination_cidr_block("0.0.0.0/0")
        .gateway_id(igw)
        .send()
        .await
        .map_err(|e| err("CreateRoute", e))?;
    Ok(())
}

pub(super) async fn associate_route_table(
    c: &Client,
    route_table: &str,
    subnet: &str,
) -> Result<String, Ec2Error> {
    let out = c
        .associate_route_table()
        .route_table_id(route_table)
        .subnet_id(subnet)
        .send()
        .await
        .map_err(|e| err("AssociateRouteTable", e))?;
    out.association_id()
        .map(str::to_string)
        .ok_or_else(|| missing("AssociateRouteTable", "association id"))
}

pub(super) async fn create_security_group(
    c: &Client,
    name: &str,
    description: &str,
    vpc: &str,
    tags: &BTreeMap<String, String>,
) -> Result<String, Ec2Error> {
    let out = c
        .create_security_group()
        .group_name(name)
        .description(description)
        .vpc_id(vpc)
        .tag_specifications(tag_spec(ResourceType::SecurityGroup, tags))
        .send()
        .await
        .map_err(|e| err("CreateSecurityGroup", e))?;
    out.group_id()
        .map(str::to_string)
        .ok_or_else(|| missing("CreateSecurityGroup", "group id"))
}

/// The EC2 form of `rules` on security group `group`.
fn permissions(group: &str, rules: &[Rule]) -> Vec<aws_sdk_ec2::types::IpPermission> {
    rules
        .iter()
        .map(|r| convert::permission(group, r))
        .collect()
}

pub(super) async fn authorize_ingress(
    c: &Client,
    group: &str,
    rules: &[Rule],
) -> Result<(), Ec2Error> {
    c.authorize_security_group_ingress()
        .group_id(group)
        .set_ip_permissions(Some(permissions(group, rules)))
        .send()
        .await
        .map_err(|e| err("AuthorizeSecurityGroupIngress", e))?;
    Ok(())
}

pub(super) async fn revoke_ingress(
    c: &Client,
    group: &str,
    rules: &[Rule],
) -> Result<(), Ec2Error> {
    c.revoke_security_group_ingress()
        .group_id(group)
        .set_ip_permissions(Some(permissions(group, rules)))
        .send()
        .await
        .map_err(|e| err("RevokeSecurityGroupIngress", e))?;
    Ok(())
}

pub(super) async fn import_key_pair(
    c: &Client,
    name: &str,
    public_key: &str,
    tags: &BTreeMap<String, String>,
) -> Result<(), Ec2Error> {
    c.import_key_pair()
        .key_name(name)
        .public_key_material(Blob::new(public_key.as_bytes()))
        .tag_specifications(tag_spec(ResourceType::KeyPair, tags))
        .send()
        .await
        .map_err(|e| err("ImportKeyPair", e))?;
    Ok(())
}

pub(super) async fn network_interfaces(
    c: &Client,
    kind: NetKind,
    id: &str,
) -> Result<Vec<String>, Ec2Error> {
    let by = match kind {
        NetKind::Subnet => "subnet-id",
        NetKind::Vpc => "vpc-id",
        _ => return Ok(Vec::new()),
    };
    let out = c
        .describe_network_interfaces()
        .filters(filter(by, &[id.to_string()]))
        .send()
        .await
        .map_err(|e| err("DescribeNetworkInterfaces", e))?;
    Ok(out
        .network_interfaces()
        .iter()
        .map(|n| {
            let mut what = vec![n.description().unwrap_or_default().to_string()];
            if let Some(t) = n.interface_type() {
                what.push(format!("type {}", t.as_str()));
            }
            if let Some(i) = n.attachment().and_then(|a| a.instance_id()) {
                what.push(format!("attached to {i}"));
            }
            if let Some(r) = n.requester_id() {
                what.push(format!("requester {r}"));
            }
            what.retain(|w| !w.is_empty());
            format!(
                "{} ({})",
                n.network_interface_id().unwrap_or_default(),
                what.join(", ")
            )
        })
        .collect())
}

pub(super) async fn detach_internet_gateway(
    c: &Client,
    igw: &str,
    vpc: &str,
) -> Result<(), Ec2Error> {
    c.detach_internet_gateway()
        .internet_gateway_id(igw)
        .vpc_id(vpc)
        .send()
        .await
        .map_err(|e| err("DetachInternetGateway", e))?;
    Ok(())
}

pub(super) async fn disassociate_route_table(
    c: &Client,
    association: &str,
) -> Result<(), Ec2Error> {
    c.disassociate_route_table()
        .association_id(association)
        .send()
        .await
        .map_err(|e| err("DisassociateRouteTable", e))?;
    Ok(())
}
