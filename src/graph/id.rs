//! Resource identity. Every resource has one `ResourceId`; its text form
//! (`k3s-server/HOST`, `aws-instances/GROUP`, ...) is the key in the state file and in
//! plans, and this module is the only place that writes or reads that form, so code
//! matches on the variant instead of on id prefixes.

use std::fmt;

use crate::recipe::Role;

pub const CLUSTER_READY: &str = "cluster-ready";
pub const KUBECONFIG: &str = "kubeconfig";
pub const SERVERLESS: &str = "serverless";
pub const ENDPOINT: &str = "endpoint";
pub const VPC: &str = "aws-vpc";
pub const SUBNET: &str = "aws-subnet";
pub const GATEWAY: &str = "aws-internet-gateway";
pub const ROUTE: &str = "aws-route";
pub const SECURITY_GROUP: &str = "aws-security-group";
pub const KEY_PAIR: &str = "aws-key-pair";
/// The kinds of the ids that name a host or a group (`KIND/NAME`).
const SERVER: &str = "k3s-server";
const AGENT: &str = "k3s-agent";
const DEVICE_PREP: &str = "device-prep";
const GPU_RUNTIME: &str = "gpu-runtime";
const INSTANCES: &str = "aws-instances";

/// What a resource is, and for which host or group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ResourceId {
    /// k3s on a host, as a server or an agent.
    Node { role: Role, host: String },
    /// Every expected node Ready, API `/readyz` ok.
    ClusterReady,
    /// The cluster's context in the user's kubeconfig.
    Kubeconfig,
    /// Raspberry Pi / Jetson preparation before k3s.
    DevicePrep { host: String },
    /// The nvidia runtime after k3s on a Jetson.
    GpuRuntime { host: String },
    /// The OSCAR layer's manifests.
    Serverless,
    /// The OSCAR endpoint in the catalog and the oscar-cli config.
    Endpoint,
    /// A resource of the AWS site.
    Aws(AwsId),
}

/// The AWS site's resources.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AwsId {
    Vpc,
    Subnet,
    InternetGateway,
    Route,
    SecurityGroup,
    KeyPair,
    Instances { group: String },
}

impl ResourceId {
    /// The id of a text key; `None` for a key no version of continuum writes.
    pub fn parse(s: &str) -> Option<ResourceId> {
        let id = match s {
            CLUSTER_READY => ResourceId::ClusterReady,
            KUBECONFIG => ResourceId::Kubeconfig,
            SERVERLESS => ResourceId::Serverless,
            ENDPOINT => ResourceId::Endpoint,
            VPC => ResourceId::Aws(AwsId::Vpc),
            SUBNET => ResourceId::Aws(AwsId::Subnet),
            GATEWAY => ResourceId::Aws(AwsId::InternetGateway),
            ROUTE => ResourceId::Aws(AwsId::Route),
            SECURITY_GROUP => ResourceId::Aws(AwsId::SecurityGroup),
            KEY_PAIR => ResourceId::Aws(AwsId::KeyPair),
            _ => {
                let (kind, name) = s.split_once('/')?;
                if name.is_empty() {
                    return None;
                }
                let name = name.to_string();
                match kind {
                    SERVER => ResourceId::Node {
                        role: Role::Server,
                        host: name,
                    },
                    AGENT => ResourceId::Node {
                        role: Role::Agent,
                        host: name,
                    },
                    DEVICE_PREP => ResourceId::DevicePrep { host: name },
                    GPU_RUNTIME => ResourceId::GpuRuntime { host: name },
                    INSTANCES => ResourceId::Aws(AwsId::Instances { group: name }),
                    _ => return None,
                }
            }
        };
        Some(id)
    }

    /// The host the resource lives on, if it is one host's.
    pub fn host(&self) -> Option<&str> {
        match self {
            ResourceId::Node { host, .. }
            | ResourceId::DevicePrep { host }
            | ResourceId::GpuRuntime { host } => Some(host),
            _ => None,
        }
    }

    /// Device preparation or GPU runtime: nothing to undo on the host when it goes.
    pub fn is_device(&self) -> bool {
        matches!(
            self,
            ResourceId::DevicePrep { .. } | ResourceId::GpuRuntime { .. }
        )
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (kind, name) = match self {
            ResourceId::Node {
                role: Role::Server,
                host,
            } => (SERVER, host),
            ResourceId::Node {
                role: Role::Agent,
                host,
            } => (AGENT, host),
            ResourceId::DevicePrep { host } => (DEVICE_PREP, host),
            ResourceId::GpuRuntime { host } => (GPU_RUNTIME, host),
            ResourceId::Aws(AwsId::Instances { group }) => (INSTANCES, group),
            ResourceId::ClusterReady => return f.write_str(CLUSTER_READY),
            ResourceId::Kubeconfig => return f.write_str(KUBECONFIG),
            ResourceId::Serverless => return f.write_str(SERVERLESS),
            ResourceId::Endpoint => return f.write_str(ENDPOINT),
            ResourceId::Aws(AwsId::Vpc) => return f.write_str(VPC),
            ResourceId::Aws(AwsId::Subnet) => return f.write_str(SUBNET),
            ResourceId::Aws(AwsId::InternetGateway) => return f.write_str(GATEWAY),
            ResourceId::Aws(AwsId::Route) => return f.write_str(ROUTE),
            ResourceId::Aws(AwsId::SecurityGroup) => return f.write_str(SECURITY_GROUP),
            ResourceId::Aws(AwsId::KeyPair) => return f.write_str(KEY_PAIR),
        };
        write!(f, "{kind}/{name}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_reads_back_from_its_text() {
        let ids = [
            ResourceId::Node {
                role: Role::Server,
                host: "pi-1".into(),
            },
            ResourceId::Node {
                role: Role::Agent,
                host: "jetson".into(),
            },
            ResourceId::ClusterReady,
            ResourceId::Kubeconfig,
            ResourceId::DevicePrep {
                host: "pi-1".into(),
            },
            ResourceId::GpuRuntime {
                host: "jetson".into(),
            },
            ResourceId::Serverless,
            ResourceId::Endpoint,
            ResourceId::Aws(AwsId::Vpc),
            ResourceId::Aws(AwsId::Subnet),
            ResourceId::Aws(AwsId::InternetGateway),
            ResourceId::Aws(AwsId::Route),
            ResourceId::Aws(AwsId::SecurityGroup),
            ResourceId::Aws(AwsId::KeyPair),
            ResourceId::Aws(AwsId::Instances {
                group: "gpu".into(),
            }),
        ];
        for id in ids {
            assert_eq!(ResourceId::parse(&id.to_string()), Some(id.clone()), "{id}");
        }
        for bad in [
            "",
            "k3s-server/",
            "nodes/x",
            "aws-instances",
            "upgrade-batch/1",
        ] {
            assert_eq!(ResourceId::parse(bad), None, "{bad}");
        }
        assert_eq!(
            ResourceId::parse("device-prep/pi-1").and_then(|i| i.host().map(str::to_string)),
            Some("pi-1".to_string())
        );
    }
}
