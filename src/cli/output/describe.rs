//! What each step of a plan runs on its host, for `plan -v`: told from the change's
//! action, role and resource id, with the k3s provider's descriptions of its scripts.

use crate::graph::Action;
use crate::recipe::Environment;

/// The remote commands behind change `c` (none for a step that runs nothing remotely).
pub(super) fn remote_commands(env: &Environment, c: &crate::graph::Change) -> Vec<String> {
    use crate::recipe::Role;
    match (c.action, c.role) {
        (Action::Delete, Some(Role::Agent | Role::Server)) => vec![
            crate::k3s::device::DRAIN_DESCRIPTION.to_string(),
            format!(
                "k3s kubectl delete node {} (on the first server)",
                c.host.as_deref().unwrap_or("?")
            ),
            crate::k3s::UNINSTALL_DESCRIPTION.to_string(),
        ],
        (_, Some(role)) => crate::k3s::describe_apply(&crate::k3s::NodeSpec {
            role,
            version: &env.cluster.version,
            install: &env.cluster.install,
            config: String::new(),
            live_keys_only: false,
        }),
        _ if c.id == crate::graph::CLUSTER_READY => vec![
            "k3s kubectl get --raw /readyz".into(),
            "k3s kubectl get nodes -o json (until every node is Ready)".into(),
            "k3s kubectl -n kube-system get deployment coredns -o json".into(),
        ],
        _ if c.id.starts_with("device-prep/") || c.id.starts_with("gpu-runtime/") => {
            let device = c
                .host
                .as_ref()
                .and_then(|h| env.hosts.get(h))
                .and_then(|h| h.probed.as_deref())
                .and_then(crate::inventory::probe::Facts::device);
            crate::k3s::device::describe(&c.id, device)
        }
        _ if c.id == crate::graph::KUBECONFIG => vec![format!(
            "cat {} (as root), merged locally",
            crate::k3s::KUBECONFIG_PATH
        )],
        _ if c.id == crate::graph::SERVERLESS => vec![
            format!(
                "write {}/{}*.yaml (as root, 0600, from stdin; only files that differ)",
                crate::render::oscar::MANIFESTS_DIR,
                crate::render::oscar::FILE_PREFIX
            ),
            "GET /health, GET /system/info at the OSCAR endpoint (until ready)".into(),
        ],
        _ if c.id == crate::graph::ENDPOINT => {
            vec!["update the endpoint catalog and the oscar-cli config (0600), locally".into()]
        }
        _ => Vec::new(),
    }
}
