//! Resource identity. Every resource has one `ResourceId`; its text form
//! (`k3s-server/HOST`, `aws-instances/GROUP`, ...) is the key in the state file and in
//! plans, and this module is the only place that writes or reads that form, so code
//! matches on the variant instead of on id prefixes.

use std::fmt;

use crate::recipe::Role;

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
            "cluster-ready" => ResourceId::ClusterReady,
            "kubeconfig" => ResourceId::Kubeconfig,
            "serverless" => ResourceId::Serverless,
            "endpoint" => ResourceId::Endpoint,
            "aws-vpc" => ResourceId::Aws(AwsId::Vpc),
            "aws-subnet" => ResourceId::Aws(AwsId::Subnet),
            "aws-internet-gateway" => ResourceId::Aws(AwsId::InternetGateway),
            "aws-route" => ResourceId::Aws(AwsId::Route),
            "aws-security-group" => ResourceId::Aws(AwsId::SecurityGroup),
            "aws-key-pair" => ResourceId::Aws(AwsId::KeyPair),
            _ => {
                let (kind, name) = s.split_once('/')?;
                if name.is_empty() {
                    return None;
                }
                let name = name.to_string();
                match kind {
                    "k3s-server" => ResourceId::Node {
                        role: Role::Server,
                        host: name,
                    },
                    "k3s-agent" => ResourceId::Node {
                        role: Role::Agent,
                        host: name,
                    },
                    "device-prep" => ResourceId::DevicePrep { host: name },
                    "gpu-runtime" => ResourceId::GpuRuntime { host: name },
                    "aws-instances" => ResourceId::Aws(AwsId::Instances { group: name }),
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
        match self {
            ResourceId::Node {
                role: Role::Server,
                host,
            } => write!(f, "k3s-server/{host}"),
            ResourceId::Node {
                role: Role::Agent,
                host,
            } => write!(f, "k3s-agent/{host}"),
            ResourceId::ClusterReady => f.write_str("cluster-ready"),
            ResourceId::Kubeconfig => f.write_str("kubeconfig"),
            ResourceId::DevicePrep { host } => write!(f, "device-prep/{host}"),
            ResourceId::GpuRuntime { host } => write!(f, "gpu-runtime/{host}"),
            ResourceId::Serverless => f.write_str("serverless"),
            ResourceId::Endpoint => f.write_str("endpoint"),
            ResourceId::Aws(a) => match a {
                AwsId::Vpc => f.write_str("aws-vpc"),
                AwsId::Subnet => f.write_str("aws-subnet"),
                AwsId::InternetGateway => f.write_str("aws-internet-gateway"),
                AwsId::Route => f.write_str("aws-route"),
                AwsId::SecurityGroup => f.write_str("aws-security-group"),
                AwsId::KeyPair => f.write_str("aws-key-pair"),
                AwsId::Instances { group } => write!(f, "aws-instances/{group}"),
            },
        }
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
