//! The kinds of step, one per kind of resource. Each kind knows how it is applied,
//! deleted (both in `ops::up::steps`) and described: what it runs on a host or calls
//! in EC2, for `plan -v`. The CLI asks here; it knows no remote command itself.

use crate::graph::{Action, AwsId, Change, ResourceId};
use crate::recipe::{Environment, Role};

/// What a step is, by the resource it converges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    /// k3s on a host.
    Node(Role),
    ClusterReady,
    Kubeconfig,
    DevicePrep,
    GpuRuntime,
    Serverless,
    Endpoint,
    Cloud(AwsId),
}

impl StepKind {
    /// The kind of resource `id`; `None` for an id no resource has (an execution
    /// graph's gate).
    pub fn of(id: &str) -> Option<StepKind> {
        Some(match ResourceId::parse(id)? {
            ResourceId::Node { role, .. } => StepKind::Node(role),
            ResourceId::ClusterReady => StepKind::ClusterReady,
            ResourceId::Kubeconfig => StepKind::Kubeconfig,
            ResourceId::DevicePrep { .. } => StepKind::DevicePrep,
            ResourceId::GpuRuntime { .. } => StepKind::GpuRuntime,
            ResourceId::Serverless => StepKind::Serverless,
            ResourceId::Endpoint => StepKind::Endpoint,
            ResourceId::Aws(a) => StepKind::Cloud(a),
        })
    }

    /// What the step runs remotely for change `c` (empty when nothing runs there).
    pub fn describe(&self, env: &Environment, c: &Change) -> Vec<String> {
        let deleting = c.action == Action::Delete;
        match self {
            StepKind::Node(_) if deleting => vec![
                crate::k3s::device::DRAIN_DESCRIPTION.to_string(),
                format!(
                    "k3s kubectl delete node {} (on the first server)",
                    c.host.as_deref().unwrap_or("?")
                ),
                crate::k3s::UNINSTALL_DESCRIPTION.to_string(),
            ],
            StepKind::Node(role) => crate::k3s::describe_apply(&crate::k3s::NodeSpec {
                role: *role,
                version: &env.cluster.version,
                install: &env.cluster.install,
                config: String::new(),
                live_keys_only: false,
            }),
            StepKind::ClusterReady => vec![
                "k3s kubectl get --raw /readyz".into(),
                "k3s kubectl get nodes -o json (until every node is Ready)".into(),
                "k3s kubectl -n kube-system get deployment coredns -o json".into(),
            ],
            // A device step that goes leaves nothing to undo on the host.
            StepKind::DevicePrep | StepKind::GpuRuntime if deleting => Vec::new(),
            StepKind::DevicePrep | StepKind::GpuRuntime => {
                let device = c
                    .host
                    .as_ref()
                    .and_then(|h| env.hosts.get(h))
                    .and_then(|h| h.probed.as_deref())
                    .and_then(crate::recipe::device::Facts::device);
                crate::k3s::device::describe(*self == StepKind::GpuRuntime, device)
            }
            StepKind::Kubeconfig => vec![format!(
                "cat {} (as root), merged locally",
                crate::k3s::KUBECONFIG_PATH
            )],
            StepKind::Serverless if deleting => vec![format!(
                "hide, empty stage by stage and remove {}/{}*.yaml (as root, on the first server)",
                crate::render::oscar::MANIFESTS_DIR,
                crate::render::oscar::FILE_PREFIX
            )],
            StepKind::Serverless => vec![
                format!(
                    "write {}/{}*.yaml (as root, 0600, from stdin; only files that differ)",
                    crate::render::oscar::MANIFESTS_DIR,
                    crate::render::oscar::FILE_PREFIX
                ),
                "GET /health, GET /system/info at the OSCAR endpoint (until ready)".into(),
            ],
            StepKind::Endpoint => {
                vec!["update the endpoint catalog and the oscar-cli config (0600), locally".into()]
            }
            StepKind::Cloud(a) => cloud_calls(a, deleting),
        }
    }
}

/// The EC2 calls of an AWS step (docs/aws.md): every create is preceded by a lookup of
/// a tagged leftover of an earlier run.
fn cloud_calls(a: &AwsId, deleting: bool) -> Vec<String> {
    let adopt = |create: &str| {
        vec![format!(
            "EC2: look up a tagged leftover, else {create} (tagged continuum:env/resource)"
        )]
    };
    match a {
        AwsId::Instances { .. } if deleting => vec![
            "EC2: TerminateInstances (the group's instances), then wait until terminated".into(),
        ],
        _ if deleting => {
            vec!["EC2: none (network resources are deleted by `continuum down`)".into()]
        }
        AwsId::Vpc => adopt("CreateVpc"),
        AwsId::Subnet => adopt("CreateSubnet (in a zone offering the instance types)"),
        AwsId::InternetGateway => adopt("CreateInternetGateway, AttachInternetGateway"),
        AwsId::Route => adopt("CreateRouteTable, CreateRoute 0.0.0.0/0, AssociateRouteTable"),
        AwsId::SecurityGroup => {
            adopt("CreateSecurityGroup; AuthorizeSecurityGroupIngress / Revoke for the rule diff")
        }
        AwsId::KeyPair => adopt("ImportKeyPair"),
        AwsId::Instances { .. } => vec![
            "EC2: DescribeInstances (tag filter), RunInstances for the missing count with a client token recorded first".into(),
            "wait until running and answering SSH".into(),
        ],
    }
}

/// The remote commands behind change `c`, for `plan -v`.
pub fn describe(env: &Environment, c: &Change) -> Vec<String> {
    StepKind::of(&c.id).map_or_else(Vec::new, |k| k.describe(env, c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_resource_id_has_a_step_kind() {
        for (id, kind) in [
            ("k3s-server/a", StepKind::Node(Role::Server)),
            ("k3s-agent/b", StepKind::Node(Role::Agent)),
            ("cluster-ready", StepKind::ClusterReady),
            ("kubeconfig", StepKind::Kubeconfig),
            ("device-prep/a", StepKind::DevicePrep),
            ("gpu-runtime/b", StepKind::GpuRuntime),
            ("serverless", StepKind::Serverless),
            ("endpoint", StepKind::Endpoint),
            ("aws-vpc", StepKind::Cloud(AwsId::Vpc)),
            (
                "aws-instances/g",
                StepKind::Cloud(AwsId::Instances { group: "g".into() }),
            ),
        ] {
            assert_eq!(StepKind::of(id), Some(kind), "{id}");
        }
        assert_eq!(StepKind::of("upgrade-batch/1"), None);
    }

    #[test]
    fn device_steps_describe_their_own_commands() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::files::load_recipe(&dir.join("farm-edge.yaml"))
            .expect("example")
            .env;
        let gpu = Change {
            id: "gpu-runtime/jetson".into(),
            action: Action::Create,
            reason: String::new(),
            host: Some("jetson".into()),
            role: None,
        };
        let lines = describe(&env, &gpu);
        assert!(lines[0].contains(r#"runtimes."nvidia""#), "{lines:?}");
        // Leaving undoes nothing on the host.
        let gone = Change {
            action: Action::Delete,
            ..gpu.clone()
        };
        assert!(describe(&env, &gone).is_empty());
        let prep = Change {
            id: "device-prep/jetson".into(),
            ..gpu
        };
        assert!(
            !describe(&env, &prep).iter().any(|l| l.contains("runtimes")),
            "a preparation is not the GPU check"
        );
    }
}
