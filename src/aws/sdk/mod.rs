//! `Ec2Api` on the real AWS SDK (aws-sdk-ec2), compiled with the `aws` feature, and
//! `Sdk`, the `Connect` the product uses.
//!
//! Credentials and region come from the standard AWS chain (environment, shared
//! profile, SSO, process credentials, IMDS); the recipe's region wins over the
//! profile's. `connect` resolves the credentials at once, so missing or expired ones
//! fail before anything is created. `AWS_ENDPOINT_URL_EC2` (or `AWS_ENDPOINT_URL`) is
//! honoured by aws-config and logged, which is how tests point the binary at the moto
//! emulator. Every client is built by one `loader`, in production and tests alike, with
//! the SDK's retries off: `super::retry` is the one retry layer (docs/aws.md,
//! "Retries"). The calls themselves are in `instances` and `network` (and `sweep`, for
//! teardown's tagged resources); `convert` maps SDK types to the provider's.

mod convert;
mod instances;
mod network;
mod sweep;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_ec2::Client;
use aws_sdk_ec2::config::ProvideCredentials;
use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use super::provision::ProvisionError;
use super::{
    Address, Connect, Ec2Api, Ec2Error, ImageInfo, ImageQuery, Instance, InstanceQuery,
    InstanceTypeInfo, NetKind, Offering, Rule, RunSpec, Subnet, Tagged,
};

/// The SDK-backed provider for one region.
pub struct SdkEc2 {
    client: Client,
    region: String,
}

/// The product's `Connect`: `SdkEc2::connect` (standard credential chain, resolved at
/// once; endpoint overrides logged).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sdk;

#[async_trait]
impl Connect for Sdk {
    async fn connect(&self, region: &str) -> Result<Arc<dyn Ec2Api>, ProvisionError> {
        let p = SdkEc2::connect(region)
            .await
            .map_err(|source| ProvisionError::Ec2 {
                resource: "AWS client".to_string(),
                source,
            })?;
        Ok(Arc::new(p))
    }
}

/// How every client is configured: the region, no SDK retries (one retry layer), and
/// bounded connect and per-attempt times so a dead endpoint becomes a transport error.
/// `connect` and `for_endpoint` both start here; only the endpoint and the credentials
/// they add differ.
pub(crate) fn loader(region: &str) -> aws_config::ConfigLoader {
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
        Ok(Self::new(region, &conf))
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
        Self::new(region, &conf)
    }

    fn new(region: &str, conf: &aws_config::SdkConfig) -> Self {
        SdkEc2 {
            client: Client::new(conf),
            region: region.to_string(),
        }
    }

    /// The SDK client itself (configured by `loader`), for EC2 calls `Ec2Api` does not
    /// make, such as looking at what a run left behind.
    pub fn client(&self) -> &Client {
        &self.client
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
        instances::describe_instance_types(&self.client, names).await
    }

    async fn instance_type_offerings(&self, names: &[String]) -> Result<Vec<Offering>, Ec2Error> {
        instances::instance_type_offerings(&self.client, names).await
    }

    async fn describe_images(&self, q: &ImageQuery) -> Result<Vec<ImageInfo>, Ec2Error> {
        instances::describe_images(&self.client, q).await
    }

    async fn default_vpc(&self) -> Result<Option<String>, Ec2Error> {
        network::default_vpc(&self.client).await
    }

    async fn default_subnets(&self, vpc: &str) -> Result<Vec<Subnet>, Ec2Error> {
        network::default_subnets(&self.client, vpc).await
    }

    async fn describe_subnet(&self, id: &str) -> Result<Subnet, Ec2Error> {
        network::describe_subnet(&self.client, id).await
    }

    async fn create_vpc(
        &self,
        cidr: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        network::create_vpc(&self.client, cidr, tags).await
    }

    async fn create_subnet(
        &self,
        vpc: &str,
        cidr: &str,
        az: Option<&str>,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        network::create_subnet(&self.client, vpc, cidr, az, tags).await
    }

    async fn map_public_ip_on_launch(&self, subnet: &str) -> Result<(), Ec2Error> {
        network::map_public_ip_on_launch(&self.client, subnet).await
    }

    async fn create_internet_gateway(
        &self,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        network::create_internet_gateway(&self.client, tags).await
    }

    async fn attach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        network::attach_internet_gateway(&self.client, igw, vpc).await
    }

    async fn create_route_table(
        &self,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        network::create_route_table(&self.client, vpc, tags).await
    }

    async fn create_default_route(&self, route_table: &str, igw: &str) -> Result<(), Ec2Error> {
        network::create_default_route(&self.client, route_table, igw).await
    }

    async fn associate_route_table(
        &self,
        route_table: &str,
        subnet: &str,
    ) -> Result<String, Ec2Error> {
        network::associate_route_table(&self.client, route_table, subnet).await
    }

    async fn create_security_group(
        &self,
        name: &str,
        description: &str,
        vpc: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<String, Ec2Error> {
        network::create_security_group(&self.client, name, description, vpc, tags).await
    }

    async fn authorize_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        network::authorize_ingress(&self.client, group, rules).await
    }

    async fn revoke_ingress(&self, group: &str, rules: &[Rule]) -> Result<(), Ec2Error> {
        network::revoke_ingress(&self.client, group, rules).await
    }

    async fn import_key_pair(
        &self,
        name: &str,
        public_key: &str,
        tags: &BTreeMap<String, String>,
    ) -> Result<(), Ec2Error> {
        network::import_key_pair(&self.client, name, public_key, tags).await
    }

    async fn run_instances(&self, spec: &RunSpec) -> Result<Vec<Instance>, Ec2Error> {
        instances::run_instances(&self.client, spec).await
    }

    async fn describe_instances(&self, env: &str) -> Result<Vec<Instance>, Ec2Error> {
        instances::describe_instances(&self.client, env).await
    }

    async fn find_instances(&self, q: &InstanceQuery) -> Result<Vec<Instance>, Ec2Error> {
        instances::find_instances(&self.client, q).await
    }

    async fn terminate_instances(&self, ids: &[String]) -> Result<(), Ec2Error> {
        instances::terminate_instances(&self.client, ids).await
    }

    async fn allocate_address(&self, tags: &BTreeMap<String, String>) -> Result<Address, Ec2Error> {
        instances::allocate_address(&self.client, tags).await
    }

    async fn associate_address(
        &self,
        allocation: &str,
        instance: &str,
    ) -> Result<String, Ec2Error> {
        instances::associate_address(&self.client, allocation, instance).await
    }

    async fn disassociate_address(&self, association: &str) -> Result<(), Ec2Error> {
        instances::disassociate_address(&self.client, association).await
    }

    async fn release_address(&self, allocation: &str) -> Result<(), Ec2Error> {
        instances::release_address(&self.client, allocation).await
    }

    async fn describe_addresses(&self, env: &str) -> Result<Vec<Address>, Ec2Error> {
        instances::describe_addresses(&self.client, env).await
    }

    async fn network_interfaces(&self, kind: NetKind, id: &str) -> Result<Vec<String>, Ec2Error> {
        network::network_interfaces(&self.client, kind, id).await
    }

    async fn describe_tagged(&self, kind: NetKind, env: &str) -> Result<Vec<Tagged>, Ec2Error> {
        sweep::describe_tagged(&self.client, kind, env).await
    }

    async fn detach_internet_gateway(&self, igw: &str, vpc: &str) -> Result<(), Ec2Error> {
        network::detach_internet_gateway(&self.client, igw, vpc).await
    }

    async fn disassociate_route_table(&self, association: &str) -> Result<(), Ec2Error> {
        network::disassociate_route_table(&self.client, association).await
    }

    async fn delete(&self, kind: NetKind, id: &str) -> Result<(), Ec2Error> {
        sweep::delete(&self.client, kind, id).await
    }
}

#[cfg(test)]
mod tests;
