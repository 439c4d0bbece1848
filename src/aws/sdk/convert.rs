//! Conversions between continuum's plain EC2 types and aws-sdk-ec2's: tags and
//! filters, security group permissions (IPv4 and IPv6 sources), the launch's network
//! interface and metadata options, and the instance / address / subnet shapes read
//! back. Pure functions, unit-tested here.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, Filter, HttpTokensState, InstanceMetadataEndpointState,
    InstanceMetadataOptionsRequest, InstanceNetworkInterfaceSpecification, IpPermission, IpRange,
    Ipv6Range, ResourceType, Tag, TagSpecification, UserIdGroupPair, VolumeType,
};

use super::super::{Address, Instance, Rule, RuleSource, RunSpec, Subnet, TAG_ENV};

pub(super) fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

pub(super) fn filter(name: &str, values: &[String]) -> Filter {
    Filter::builder()
        .name(name)
        .set_values(Some(values.to_vec()))
        .build()
}

pub(super) fn env_filter(env: &str) -> Filter {
    filter(&format!("tag:{TAG_ENV}"), &[env.to_string()])
}

pub(super) fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

/// One ingress permission. An IPv6 source goes to `Ipv6Ranges` (EC2 refuses it as
/// `CidrIp`; docs/aws.md, "Security group rules").
pub(super) fn permission(group: &str, r: &Rule) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol(&r.protocol)
        .from_port(r.from_port)
        .to_port(r.to_port);
    let b = match &r.source {
        RuleSource::Cidr(c) if c.contains(':') => b.ipv6_ranges(
            Ipv6Range::builder()
                .cidr_ipv6(c)
                .description(&r.description)
                .build(),
        ),
        RuleSource::Cidr(c) => b.ip_ranges(
            IpRange::builder()
                .cidr_ip(c)
                .description(&r.description)
                .build(),
        ),
        RuleSource::SelfGroup => b.user_id_group_pairs(
            UserIdGroupPair::builder()
                .group_id(group)
                .description(&r.description)
                .build(),
        ),
    };
    b.build()
}

/// The launch's primary network interface: subnet, security group and, when public
/// addresses are wanted, a public IPv4 address requested for this launch (the subnet's
/// own setting is not relied on; otherwise the subnet's default applies).
pub(super) fn network_interface(spec: &RunSpec) -> InstanceNetworkInterfaceSpecification {
    InstanceNetworkInterfaceSpecification::builder()
        .device_index(0)
        .subnet_id(&spec.subnet_id)
        .groups(&spec.security_group_id)
        .set_associate_public_ip_address(spec.public_ip.then_some(true))
        .delete_on_termination(true)
        .build()
}

/// IMDSv2 only: session tokens required on the metadata service.
pub(super) fn metadata_options() -> InstanceMetadataOptionsRequest {
    InstanceMetadataOptionsRequest::builder()
        .http_tokens(HttpTokensState::Required)
        .http_endpoint(InstanceMetadataEndpointState::Enabled)
        .build()
}

pub(super) fn root_volume(spec: &RunSpec) -> Option<BlockDeviceMapping> {
    let (gb, dev) = (spec.root_volume_gb?, spec.root_device.as_ref()?);
    Some(
        BlockDeviceMapping::builder()
            .device_name(dev)
            .ebs(
                EbsBlockDevice::builder()
                    .volume_size(gb)
                    .volume_type(VolumeType::Gp3)
                    .delete_on_termination(true)
                    .build(),
            )
            .build(),
    )
}

pub(super) fn instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().to_string(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        private_ip: i.private_ip_address().map(str::to_string),
        public_ip: i.public_ip_address().map(str::to_string),
        launch_index: i.ami_launch_index().unwrap_or(0),
        launch_time: i.launch_time().map(|t| t.to_string()).unwrap_or_default(),
        tags: tag_map(i.tags()),
    }
}

pub(super) fn address(a: &aws_sdk_ec2::types::Address) -> Option<Address> {
    Some(Address {
        allocation_id: a.allocation_id()?.to_string(),
        public_ip: a.public_ip().unwrap_or_default().to_string(),
        instance_id: a
            .instance_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        association_id: a
            .association_id()
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        tags: tag_map(a.tags()),
    })
}

pub(super) fn subnet(s: &aws_sdk_ec2::types::Subnet) -> Option<Subnet> {
    Some(Subnet {
        id: s.subnet_id()?.to_string(),
        zone: s.availability_zone().unwrap_or_default().to_string(),
        vpc: s.vpc_id().unwrap_or_default().to_string(),
        map_public_ip: s.map_public_ip_on_launch().unwrap_or(false),
    })
}

/// The root volume's snapshot size of an image, from its block device mappings.
pub(super) fn root_snapshot_gb(i: &aws_sdk_ec2::types::Image) -> Option<i32> {
    let root = i.root_device_name()?;
    i.block_device_mappings()
        .iter()
        .find(|m| m.device_name() == Some(root))
        .and_then(|m| m.ebs())
        .and_then(|e| e.volume_size())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(c: &str) -> Rule {
        Rule {
            protocol: "tcp".into(),
            from_port: 22,
            to_port: 22,
            source: RuleSource::Cidr(c.into()),
            description: "ssh".into(),
        }
    }

    #[test]
    fn ipv6_sources_go_to_ipv6_ranges() {
        let p = permission("sg-1", &rule("2001:db8::/32"));
        assert!(p.ip_ranges().is_empty(), "{p:?}");
        assert_eq!(p.ipv6_ranges()[0].cidr_ipv6(), Some("2001:db8::/32"));
        let p = permission("sg-1", &rule("203.0.113.0/24"));
        assert!(p.ipv6_ranges().is_empty(), "{p:?}");
        assert_eq!(p.ip_ranges()[0].cidr_ip(), Some("203.0.113.0/24"));
    }

    #[test]
    fn launches_ask_for_a_public_ip_on_the_interface_and_imdsv2() {
        let spec = RunSpec {
            image_id: "ami-1".into(),
            instance_type: "t3.small".into(),
            count: 2,
            subnet_id: "subnet-1".into(),
            security_group_id: "sg-1".into(),
            key_name: "k".into(),
            client_token: "t".into(),
            user_data: String::new(),
            root_volume_gb: None,
            root_device: None,
            spot: false,
            public_ip: true,
            tags: BTreeMap::new(),
        };
        let nic = network_interface(&spec);
        assert_eq!(nic.associate_public_ip_address(), Some(true));
        assert_eq!(nic.subnet_id(), Some("subnet-1"));
        assert_eq!(nic.groups(), ["sg-1"]);
        assert_eq!(nic.device_index(), Some(0));
        assert_eq!(
            metadata_options().http_tokens(),
            Some(&HttpTokensState::Required)
        );
        assert!(root_volume(&spec).is_none());
        let private = RunSpec {
            public_ip: false,
            ..spec
        };
        assert_eq!(
            network_interface(&private).associate_public_ip_address(),
            None
        );
    }
}
