//! The SDK calls about instances: instance types, their zone offerings and images
//! (validation before spend), launching, listing (every page, one filter) and
//! terminating instances, and Elastic IP addresses.

use std::collections::BTreeMap;

use aws_sdk_ec2::Client;
use aws_sdk_ec2::types::{
    DomainType, Filter, InstanceMarketOptionsRequest, InstanceType, LocationType, MarketType,
    ResourceType,
};
use base64::Engine as _;

use super::convert::{self, env_filter, filter, tag_spec};
use super::{err, missing};
use crate::aws::{
    Address, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceQuery, InstanceTypeInfo, Offering,
    RunSpec, TAG_TOKEN,
};

pub(super) async fn describe_instance_types(
    c: &Client,
    names: &[String],
) -> Result<Vec<InstanceTypeInfo>, Ec2Error> {
    let out = c
        .describe_instance_types()
        .set_instance_types(Some(
            names
                .iter()
                .map(|n| InstanceType::from(n.as_str()))
                .collect(),
        ))
        .send()
        .await
        .map_err(|e| err("DescribeInstanceTypes", e))?;
    Ok(out
        .instance_types()
        .iter()
        .map(|t| InstanceTypeInfo {
            name: t
                .instance_type()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            architectures: t
                .processor_info()
                .map(|p| {
                    p.supported_architectures()
                        .iter()
                        .map(|a| a.as_str().to_string())
                        .collect()
                })
                .unwrap_or_default(),
        })
        .collect())
}

pub(super) async fn instance_type_offerings(
    c: &Client,
    names: &[String],
) -> Result<Vec<Offering>, Ec2Error> {
    let mut pages = c
        .describe_instance_type_offerings()
        .location_type(LocationType::AvailabilityZone)
        .filters(filter("instance-type", names))
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| err("DescribeInstanceTypeOfferings", e))?;
        out.extend(page.instance_type_offerings().iter().filter_map(|o| {
            Some(Offering {
                instance_type: o.instance_type()?.as_str().to_string(),
                zone: o.location()?.to_string(),
            })
        }));
    }
    Ok(out)
}

pub(super) async fn describe_images(
    c: &Client,
    q: &ImageQuery,
) -> Result<Vec<ImageInfo>, Ec2Error> {
    let req = c.describe_images();
    let req = match q {
        ImageQuery::Ids(ids) => req.set_image_ids(Some(ids.clone())),
        ImageQuery::Lookup {
            name,
            owner,
            architecture,
        } => {
            let mut r = req
                .owners(owner)
                .filters(filter("name", std::slice::from_ref(name)))
                .filters(filter("state", &["available".to_string()]));
            if let Some(a) = architecture {
                r = r.filters(filter("architecture", std::slice::from_ref(a)));
            }
            r
        }
    };
    let out = req.send().await.map_err(|e| err("DescribeImages", e))?;
    Ok(out
        .images()
        .iter()
        .map(|i| ImageInfo {
            id: i.image_id().unwrap_or_default().to_string(),
            name: i.name().unwrap_or_default().to_string(),
            architecture: i
                .architecture()
                .map(|a| a.as_str().to_string())
                .unwrap_or_default(),
            owner: i.owner_id().unwrap_or_default().to_string(),
            creation_date: i.creation_date().unwrap_or_default().to_string(),
            root_device: i.root_device_name().map(str::to_string),
            root_volume_gb: convert::root_snapshot_gb(i),
        })
        .collect())
}

pub(super) async fn run_instances(c: &Client, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error> {
    let mut req = c
        .run_instances()
        .image_id(&spec.image_id)
        .instance_type(InstanceType::from(spec.instance_type.as_str()))
        .min_count(spec.count)
        .max_count(spec.count)
        .network_interfaces(convert::network_interface(spec))
        .key_name(&spec.key_name)
        .client_token(&spec.client_token)
        .metadata_options(convert::metadata_options())
        .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
        .tag_specifications(tag_spec(ResourceType::Instance, &spec.tags))
        .tag_specifications(tag_spec(ResourceType::Volume, &spec.tags))
        .set_block_device_mappings(convert::root_volume(spec).map(|m| vec![m]));
    if spec.spot {
        req = req.instance_market_options(
            InstanceMarketOptionsRequest::builder()
                .market_type(MarketType::Spot)
                .build(),
        );
    }
    let out = req.send().await.map_err(|e| err("RunInstances", e))?;
    Ok(out.instances().iter().map(convert::instance).collect())
}

pub(super) async fn describe_instances(c: &Client, env: &str) -> Result<Vec<Instance>, Ec2Error> {
    instances(c, env_filter(env)).await
}

pub(super) async fn find_instances(
    c: &Client,
    q: &InstanceQuery,
) -> Result<Vec<Instance>, Ec2Error> {
    match q {
        InstanceQuery::Ids(ids) => {
            // In chunks, so no request carries an unbounded filter.
            let mut out = Vec::new();
            for chunk in ids.chunks(200) {
                out.extend(instances(c, filter("instance-id", chunk)).await?);
            }
            Ok(out)
        }
        InstanceQuery::Token(t) => {
            instances(
                c,
                filter(&format!("tag:{TAG_TOKEN}"), std::slice::from_ref(t)),
            )
            .await
        }
    }
}

pub(super) async fn terminate_instances(c: &Client, ids: &[String]) -> Result<(), Ec2Error> {
    if ids.is_empty() {
        return Ok(());
    }
    c.terminate_instances()
        .set_instance_ids(Some(ids.to_vec()))
        .send()
        .await
        .map_err(|e| err("TerminateInstances", e))?;
    Ok(())
}

pub(super) async fn allocate_address(
    c: &Client,
    tags: &BTreeMap<String, String>,
) -> Result<Address, Ec2Error> {
    let out = c
        .allocate_address()
        .domain(DomainType::Vpc)
        .tag_specifications(tag_spec(ResourceType::ElasticIp, tags))
        .send()
        .await
        .map_err(|e| err("AllocateAddress", e))?;
    Ok(Address {
        allocation_id: out
            .allocation_id()
            .ok_or_else(|| missing("AllocateAddress", "allocation id"))?
            .to_string(),
        public_ip: out
            .public_ip()
            .ok_or_else(|| missing("AllocateAddress", "public IP"))?
            .to_string(),
        instance_id: None,
        association_id: None,
        tags: tags.clone(),
    })
}

pub(super) async fn associate_address(
    c: &Client,
    allocation: &str,
    instance: &str,
) -> Result<String, Ec2Error> {
    let out = c
        .associate_address()
        .allocation_id(allocation)
        .instance_id(instance)
        .allow_reassociation(true)
        .send()
        .await
        .map_err(|e| err("AssociateAddress", e))?;
    Ok(out.association_id().unwrap_or_default().to_string())
}

pub(super) async fn disassociate_address(c: &Client, association: &str) -> Result<(), Ec2Error> {
    c.disassociate_address()
        .association_id(association)
        .send()
        .await
        .map_err(|e| err("DisassociateAddress", e))?;
    Ok(())
}

pub(super) async fn release_address(c: &Client, allocation: &str) -> Result<(), Ec2Error> {
    c.release_address()
        .allocation_id(allocation)
        .send()
        .await
        .map_err(|e| err("ReleaseAddress", e))?;
    Ok(())
}

pub(super) async fn describe_addresses(c: &Client, env: &str) -> Result<Vec<Address>, Ec2Error> {
    let out = c
        .describe_addresses()
        .filters(env_filter(env))
        .send()
        .await
        .map_err(|e| err("DescribeAddresses", e))?;
    Ok(out
        .addresses()
        .iter()
        .filter_map(convert::address)
        .collect())
}

/// DescribeInstances with one filter, every page.
async fn instances(c: &Client, f: Filter) -> Result<Vec<Instance>, Ec2Error> {
    let mut pages = c
        .describe_instances()
        .filters(f)
        .max_results(1000)
        .into_paginator()
        .send();
    let mut out = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| err("DescribeInstances", e))?;
        for r in page.reservations() {
            out.extend(r.instances().iter().map(convert::instance));
        }
    }
    Ok(out)
}
