//! `Ec2Api` on the real AWS SDK (aws-sdk-ec2), compiled with the `aws` feature.
//!
//! Credentials and region come from the standard AWS chain (environment, shared
//! profile, SSO, process credentials, IMDS); the recipe's region wins over the
//! profile's. `connect` resolves the credentials at once, so missing or expired ones
//! fail before anything is created. `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`) is
//! honoured by aws-config and logged, which is how tests point this at the moto
//! emulator. The client is built by one `loader`, in production and tests alike, with
//! the SDK's retries off: `super::retry` is the one retry layer (docs/aws.md, "Retries").

mod convert;
mod sweep;

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::primitives::Blob;
use aws_sdk_ec2::types::{
    AttributeBooleanValue, DomainType, Filter, InstanceMarketOptionsRequest, InstanceType,
    LocationType, MarketType, ResourceType,
};
use base64::Engine as _;
use std::collections::BTreeMap;

use super::{
    Address, Ec2Api, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceQuery, InstanceTypeInfo,
    NetKind, Offering, Rule, RunSpec, Subnet, TAG_TOKEN, Tagged,
};
use convert::{env_filter, filter, tag_spec};

/// The SDK-backed provider for one region.
pub struct SdkEc2 {
    client: Client,
    region: String,
}

/// How every client is configured: the region, no SDK retries (one retry layer), and
/// bounded connect and per-attempt times so a dead endpoint becomes a transport error.
fn loader(region: &str) -> aws_config::ConfigLoader {
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(region.to_string()))
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10))
                .operation_attempt_timeout(Duration::from_secs(120))
                .build(),
        )
}

const CREDENTIALS_HINT: &str = "set AWS_PROFILE (or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY), or log in again with `aws sso login`; check with `aws sts get-caller-identity`";

impl SdkEc2 {
    /// Load the standard credential chain, resolve the credentials now (so a missing or
    /// expired login fails before anything), and build a client for `region`.
    pub async fn connect(region: &str) -> Result<Self, Ec2Error> {
        let conf = loader(region).load().await;
        let from_env = ["AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"]
            .into_iter()
            .find_map(|var| Some((var, std::env::var(var).ok().filter(|v| !v.is_empty())?)));
        match (from_env, conf.endpoint_url()) {
            (Some((var, url)), _) => tracing::warn!("EC2 endpoint overridden by {var}: {url}"),
            (None, Some(url)) => {
                tracing::warn!("EC2 endpoint overridden by the AWS configuration: {url}");
            }
            (None, None) => {}
        }
        let provider = conf.credentials_provider().ok_or_else(|| {
            Ec2Error::Config(format!(
                "no AWS credentials provider is configured: {CREDENTIALS_HINT}"
            ))
        })?;
        provider.provide_credentials().await.map_err(|e| {
            Ec2Error::Config(format!(
                "cannot load AWS credentials: {}; {CREDENTIALS_HINT}",
                DisplayErrorContext(&e)
            ))
        })?;
        Ok(SdkEc2 {
            client: Client::new(&conf),
            region: region.to_string(),
        })
    }

    /// A client for an explicit endpoint with static credentials (the moto emulator in
    /// tests; the credential chain and `AWS_ENDPOINT_URL_EC2` are not consulted). Same
    /// `loader` as `connect`: same (absent) SDK retries, same timeouts.
    pub async fn for_endpoint(region: &str, endpoint: &str, key: &str, secret: &str) -> Self {
        let creds = aws_sdk_ec2::config::Credentials::new(key, secret, None, None, "static");
        let conf = loader(region)
            .endpoint_url(endpoint)
            .credentials_provider(creds)
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
                Ec2Error::Config(format!("{op}: {detail}; {CREDENTIALS_HINT}"))
            } else {
                Ec2Error::Transport {
                    op: op.to_string(),
                    detail,
                }
            }
        }
    }
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

    async fn instance_type_offerings(&self, names: &[String]) -> Result<Vec<Offering>, Ec2Error> {
        let mut pages = self
            .client
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

    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error> {
        let out = self
            .client
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

    async fn default_subnets(&self, vpc: &str) -> Result<Vec<Subnet>, Ec2Error> {
        let out = self
            .client
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

    async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error> {
        let out = self
            .client
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
        self.client
            .authorize_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(
                rules
                    .iter()
                    .map(|r| convert::permission(group, r))
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| err("AuthorizeSecurityGroupIngress", e))?;
        Ok(())
    }

    async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        self.client
            .revoke_security_group_ingress()
            .group_id(group)
            .set_ip_permissions(Some(
                rules
                    .iter()
                    .map(|r| convert::permission(group, r))
                    .collect(),
            ))
            .send()
            .await
            .map_err(|e| err("RevokeSecurityGroupIngress", e))?;
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

    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error> {
        self.instances(env_filter(env)).await
    }

    async fn find_instances(&self, q: &InstanceQuery) -> Result<Vec<Instance>, Ec2Error> {
        match q {
            InstanceQuery::Ids(ids) => {
                // In chunks, so no request carries an unbounded filter.
                let mut out = Vec::new();
                for chunk in ids.chunks(200) {
                    out.extend(self.instances(filter("instance-id", chunk)).await?);
                }
                Ok(out)
            }
            InstanceQuery::Token(t) => {
                self.instances(filter(&format!("tag:{TAG_TOKEN}"), std::slice::from_ref(t)))
                    .await
            }
        }
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

    async fn allocate_address(&self, tags: &BTreeMap<String, String>) -> Result<Address, Ec2Error> {
        let out = self
            .client
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

    async fn associate_address(
        &self,
        allocation: &str,
        instance: &str,
    ) -> Result<String, Ec2Error> {
        let out = self
            .client
            .associate_address()
            .allocation_id(allocation)
            .instance_id(instance)
            .allow_reassociation(true)
            .send()
            .await
            .map_err(|e| err("AssociateAddress", e))?;
        Ok(out.association_id().unwrap_or_default().to_string())
    }

    async fn disassociate_address(&self, association: &str) -> Result<(), Ec2Error> {
        self.client
            .disassociate_address()
            .association_id(association)
            .send()
            .await
            .map_err(|e| err("DisassociateAddress", e))?;
        Ok(())
    }

    async fn release_address(&self, allocation: &str) -> Result<(), Ec2Error> {
        self.client
            .release_address()
            .allocation_id(allocation)
            .send()
            .await
            .map_err(|e| err("ReleaseAddress", e))?;
        Ok(())
    }

    async fn describe_addresses(&self, env: &str) -> Result<Vec<Address>, Ec2Error> {
        let out = self
            .client
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

    async fn network_interfaces(&self, kind: NetKind, id: &str) -> Result<Vec<String>, Ec2Error> {
        let by = match kind {
            NetKind::Subnet => "subnet-id",
            NetKind::Vpc => "vpc-id",
            _ => return Ok(Vec::new()),
        };
        let out = self
            .client
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

    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error> {
        sweep::describe_tagged(&self.client, kind, env).await
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
        sweep::delete(&self.client, kind, id).await
    }
}

impl SdkEc2 {
    /// DescribeInstances with one filter, every page.
    async fn instances(&self, f: Filter) -> Result<Vec<Instance>, Ec2Error> {
        let mut pages = self
            .client
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
}

#[cfg(test)]
mod tests;
