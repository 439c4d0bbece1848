//! `Ec2Api` on the real AWS SDK (aws-sdk-ec2), compiled with the `aws` feature.
//!
//! Credentials and region come from the standard AWS chain (environment, shared
//! profile, SSO, process credentials, IMDS); the recipe's region wins over the
//! profile's. `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`) is honoured by aws-config,
//! which is how tests point this at the moto emulator (REFERENCE.md §3). The SDK's own
//! retry is adaptive (client-side rate limiting on throttling); `super::retry` adds
//! longer backoff on top for what still fails.

use std::collections::BTreeMap;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, BlockDeviceMapping, EbsBlockDevice, Filter,
    InstanceMarketOptionsRequest, InstanceType, IpPermission, IpRange, MarketType, ResourceType,
    Tag, TagSpecification, UserIdGroupPair, VolumeType,
};
use base64::Engine as _;

use super::{
    Ec2Api, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceTypeInfo, NetKind, Rule, RuleSource,
    RunSpec, TAG_ENV, Tagged,
};

/// The SDK-backed provider for one region.
pub struct SdkEc2 {
    client: Client,
    region: String,
}

impl SdkEc2 {
    /// Load the standard credential chain and build a client for `region`.
    pub async fn connect(region: &str) -> Result<Self, Ec2Error> {
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .retry_config(aws_config::retry::RetryConfig::adaptive().with_max_attempts(3))
            .load()
            .await;
        if conf.credentials_provider().is_none() {
            return Err(Ec2Error::Config(
                "no AWS credentials provider is configured (set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or log in with `aws sso login`)".into(),
            ));
        }
        Ok(SdkEc2 {
            client: Client::new(&conf),
            region: region.to_string(),
        })
    }
}

impl SdkEc2 {
    /// A client for an explicit endpoint with static credentials (the moto emulator in
    /// tests; the credential chain and `AWS_ENDPOINT_URL_EC2` are not consulted).
    pub async fn for_endpoint(region: &str, endpoint: &str, key: &str, secret: &str) -> Self {
        let creds = aws_sdk_ec2::config::Credentials::new(key, secret, None, None, "static");
        let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(region.to_string()))
            .endpoint_url(endpoint)
            .credentials_provider(creds)
            .retry_config(aws_config::retry::RetryConfig::disabled())
            .load()
            .await;
        SdkEc2 {
            client: Client::new(&conf),
            region: region.to_string(),
        }
    }
}

fn err<E>(op: &str, e: SdkError<E, HttpResponse>) -> Ec2Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match &e {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            Ec2Error::from_code(
                op,
                Some(status),
                se.err().code().unwrap_or_default(),
                se.err().message().unwrap_or_default(),
            )
        }
        SdkError::ConstructionFailure(_) => {
            Ec2Error::Config(format!("{op}: {}", DisplayErrorContext(&e)))
        }
        _ => {
            let detail = DisplayErrorContext(&e).to_string();
            if detail.contains("credentials") || detail.contains("identity") {
                Ec2Error::Config(format!("{op}: {detail}"))
            } else {
                Ec2Error::Transport {
                    op: op.to_string(),
                    detail,
                }
            }
        }
    }
}

fn tag_spec(kind: ResourceType, tags: &BTreeMap<String, String>) -> TagSpecification {
    TagSpecification::builder()
        .resource_type(kind)
        .set_tags(Some(
            tags.iter()
                .map(|(k, v)| Tag::builder().key(k).value(v).build())
                .collect(),
        ))
        .build()
}

fn env_filter(env: &str) -> Filter {
    Filter::builder()
        .name(format!("tag:{TAG_ENV}"))
        .values(env)
        .build()
}

fn tag_map(tags: &[Tag]) -> BTreeMap<String, String> {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn missing(op: &str, what: &str) -> Ec2Error {
    Ec2Error::Api {
        op: op.to_string(),
        code: "MalformedResponse".into(),
        message: format!("the response has no {what}"),
    }
}

#[async_trait]
impl Ec2Api for SdkEc2 {
    fn region(&self) -> &str {
        &self.region
    }

    async fn describe_instance_types(
        &self,
        names: &[String],
    ) -> Result<Vec<InstanceTypeInfo>, Ec2Error> {
        let out = self
            .client
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

    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error> {
        let req = self.client.describe_images();
        let req = match q {
            ImageQuery::Ids(ids) => req.set_image_ids(Some(ids.clone())),
            ImageQuery::Lookup {
                name,
                owner,
                architecture,
            } => {
                let mut r = req
                    .owners(owner)
                    .filters(Filter::builder().name("name").values(name).build())
                    .filters(Filter::builder().name("state").values("available").build());
                if let Some(a) = architecture {
                    r = r.filters(Filter::builder().name("architecture").values(a).build());
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
            })
            .collect())
    }

    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error> {
        let out = self
            .client
            .describe_vpcs()
            .filters(Filter::builder().name("isDefault").values("true").build())
            .send()
            .await
            .map_err(|e| err("DescribeVpcs", e))?;
        Ok(out
            .vpcs()
            .first()
            .and_then(|v| v.vpc_id())
            .map(str::to_string))
    }

    async fn default_subnet(
        &self,
        vpc: &str,
        az: Option<&str>,
    ) -> Result<Option<String>, Ec2Error> {
        let mut req = self
            .client
            .describe_subnets()
            .filters(Filter::builder().name("vpc-id").values(vpc).build())
            .filters(
                Filter::builder()
                    .name("default-for-az")
                    .values("true")
                    .build(),
            );
        if let Some(az) = az {
            req = req.filters(
                Filter::builder()
                    .name("availability-zone")
                    .values(az)
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| err("DescribeSubnets", e))?;
        let mut subnets: Vec<(String, String)> = out
            .subnets()
            .iter()
            .filter_map(|s| {
                Some((
                    s.availability_zone().unwrap_or_default().to_string(),
                    s.subnet_id()?.to_string(),
                ))
            })
            .collect();
        subnets.sort();
        Ok(subnets.into_iter().next().map(|(_, id)| id))
    }

    async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn create_subnet(
        &self,
        vpc: &str,
        cidr: &str,
        az: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn map_public_ip_on_launch(&self, subnet: &str) -> Result<(), Ec2Error> {
        self.client
            .modify_subnet_attribute()
            .subnet_id(subnet)
            .map_public_ip_on_launch(AttributeBooleanValue::builder().value(true).build())
            .send()
            .await
            .map_err(|e| err("ModifySubnetAttribute", e))?;
        Ok(())
    }

    async fn create_internet_gateway(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn attach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        self.client
            .attach_internet_gateway()
            .internet_gateway_id(igw)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| err("AttachInternetGateway", e))?;
        Ok(())
    }

    async fn create_route_table(
        &self,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn create_default_route(&self, route_table: &str, igw: &str) -> Result<(), Ec2Error> {
        self.client
            .create_route()
            .route_table_id(route_table)
            .destination_cidr_block("0.0.0.0/0")
            .gateway_id(igw)
            .send()
            .await
            .map_err(|e| err("CreateRoute", e))?;
        Ok(())
    }

    async fn associate_route_table(
        &self,
        route_table: &str,
        subnet: &str,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
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

    async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        let perms = rules
            .iter()
            .map(|r| {
                let b = IpPermission::builder()
                    .ip_protocol(&r.protocol)
                    .from_port(r.from_port)
                    .to_port(r.to_port);
                match &r.source {
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
                }
                .build()
            })
            .collect();
        self.client
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(perms))
            .send()
            .await
            .map_err(|e| err("AuthorizeSecurityGroupIngress", e))?;
        Ok(())
    }

    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        self.client
            .import_key_pair()
            .key_name(name)
            .public_key_material(Blob::new(public_key.as_bytes()))
            .tag_specifications(tag_spec(ResourceType::KeyPair, tags))
            .send()
            .await
            .map_err(|e| err("ImportKeyPair", e))?;
        Ok(())
    }

    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error> {
        let mut req = self
            .client
            .run_instances()
            .image_id(&spec.image_id)
            .instance_type(InstanceType::from(spec.instance_type.as_str()))
            .min_count(spec.count)
            .max_count(spec.count)
            .subnet_id(&spec.subnet_id)
            .security_group_ids(&spec.security_group_id)
            .key_name(&spec.key_name)
            .client_token(&spec.client_token)
            .user_data(base64::engine::general_purpose::STANDARD.encode(&spec.user_data))
            .tag_specifications(tag_spec(ResourceType::Instance, &spec.tags))
            .tag_specifications(tag_spec(ResourceType::Volume, &spec.tags));
        if let (Some(gb), Some(dev)) = (spec.root_volume_gb, &spec.root_device) {
            req = req.block_device_mappings(
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
            );
        }
        if spec.spot {
            req = req.instance_market_options(
                InstanceMarketOptionsRequest::builder()
                    .market_type(MarketType::Spot)
                    .build(),
            );
        }
        let out = req.send().await.map_err(|e| err("RunInstances", e))?;
        Ok(out.instances().iter().map(convert_instance).collect())
    }

    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error> {
        let mut pages = self
            .client
            .describe_instances()
            .filters(env_filter(env))
            .max_results(1000)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| err("DescribeInstances", e))?;
            for r in page.reservations() {
                out.extend(r.instances().iter().map(convert_instance));
            }
        }
        Ok(out)
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error> {
        if ids.is_empty() {
            return Ok(());
        }
        self.client
            .terminate_instances()
            .set_instance_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| err("TerminateInstances", e))?;
        Ok(())
    }

    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error> {
        let f = env_filter(env);
        let t = |id: Option<&str>, attachments: Vec<String>, tags: &[Tag]| {
            id.map(|id| Tagged {
                kind,
                id: id.to_string(),
                attachments,
                tags: tag_map(tags),
            })
        };
        Ok(match kind {
            NetKind::SecurityGroup => {
                let out = self
                    .client
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
                let out = self
                    .client
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
                let out = self
                    .client
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
                let out = self
                    .client
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
                let out = self
                    .client
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
                let out = self
                    .client
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

    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        self.client
            .detach_internet_gateway()
            .internet_gateway_id(igw)
            .vpc_id(vpc)
            .send()
            .await
            .map_err(|e| err("DetachInternetGateway", e))?;
        Ok(())
    }

    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error> {
        self.client
            .disassociate_route_table()
            .association_id(association)
            .send()
            .await
            .map_err(|e| err("DisassociateRouteTable", e))?;
        Ok(())
    }

    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error> {
        let c = &self.client;
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
}

fn convert_instance(i: &aws_sdk_ec2::types::Instance) -> Instance {
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
