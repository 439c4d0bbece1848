//! k3s configuration keys: the long names (without dashes) of the `k3s server` and
//! `k3s agent` flags of the pinned minor, which of them k3s hides, and which continuum
//! writes itself. `extra_config` is checked against these tables (`super::extra`) and
//! each node's config.yaml takes only the keys its role accepts
//! (`crate::graph::node_config`).
//!
//! Where the tables come from, and why each hidden or managed key is refused:
//! docs/k3s-config.md.

use super::model::Role;

/// The upstream release the tables were checked against (docs/k3s-config.md, "Flag
/// table", names the files read).
pub const CHECKED_AGAINST: &str = "k3s v1.31.4+k3s1";

/// The k3s commit whose command-line definitions were read (docs/k3s-config.md says
/// which, and how it matches the release lines).
pub const CHECKED_AT_COMMIT: &str = "e143e0fa12033fe2331558ea8e4ca86e813fdbb5";

/// Visible flags of both `k3s server` and `k3s agent` (a server also runs an agent).
pub const SHARED_KEYS: &[&str] = &[
    // global flags: config, logging, data directory
    "config",
    "debug",
    "v",
    "vmodule",
    "log",
    "alsologtostderr",
    // cluster
    "token",
    "token-file",
    "server",
    "data-dir",
    // listener
    "bind-address",
    // node
    "node-name",
    "with-node-id",
    "node-label",
    "node-taint",
    "image-credential-provider-bin-dir",
    "image-credential-provider-config",
    "selinux",
    "lb-server-port",
    "protect-kernel-defaults",
    // runtime and containerd
    "docker",
    "container-runtime-endpoint",
    "default-runtime",
    "image-service-endpoint",
    "pause-image",
    "snapshotter",
    "private-registry",
    "disable-default-registry-endpoint",
    "nonroot-devices",
    // networking
    "node-ip",
    "node-external-ip",
    "node-internal-dns",
    "node-external-dns",
    "resolv-conf",
    "flannel-iface",
    "flannel-conf",
    "flannel-cni-conf",
    "vpn-auth",
    "vpn-auth-file",
    // component flags
    "kubelet-arg",
    "kube-proxy-arg",
    // experimental, still visible in `--help`
    "enable-pprof",
    "rootless",
    "prefer-bundled-bin",
];

/// Visible flags only `k3s server` has.
pub const SERVER_ONLY_KEYS: &[&str] = &[
    // listener
    "https-listen-port",
    "advertise-address",
    "advertise-port",
    "tls-san",
    "tls-san-security",
    // networking
    "cluster-cidr",
    "service-cidr",
    "service-node-port-range",
    "cluster-dns",
    "cluster-domain",
    "flannel-backend",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "egress-selector-mode",
    "servicelb-namespace",
    // client
    "write-kubeconfig",
    "write-kubeconfig-mode",
    "write-kubeconfig-group",
    "helm-job-image",
    // cluster
    "agent-token",
    "agent-token-file",
    "cluster-init",
    "cluster-reset",
    "cluster-reset-restore-path",
    // component flags
    "kube-apiserver-arg",
    "etcd-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kube-cloud-controller-manager-arg",
    // datastore and etcd snapshots
    "datastore-endpoint",
    "datastore-cafile",
    "datastore-certfile",
    "datastore-keyfile",
    "etcd-expose-metrics",
    "etcd-disable-snapshots",
    "etcd-snapshot-name",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
    "etcd-snapshot-dir",
    "etcd-snapshot-compress",
    "etcd-s3",
    "etcd-s3-endpoint",
    "etcd-s3-endpoint-ca",
    "etcd-s3-skip-ssl-verify",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-bucket",
    "etcd-s3-region",
    "etcd-s3-folder",
    "etcd-s3-proxy",
    "etcd-s3-config-secret",
    "etcd-s3-insecure",
    "etcd-s3-timeout",
    // storage and packaged components
    "default-local-storage-path",
    "disable",
    "disable-scheduler",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "embedded-registry",
    "supervisor-metrics",
    // agent/runtime, but bound to the server's configuration only
    "system-default-registry",
    "secrets-encryption",
];

/// Visible flags only `k3s agent` has.
pub const AGENT_ONLY_KEYS: &[&str] = &["disable-apiserver-lb"];

/// Flags k3s has but hides from `--help` (experimental, internal or deprecated
/// aliases): never passed through, each with the reason shown to the user.
pub const HIDDEN_KEYS: &[(&str, &str)] = &[
    (
        "supervisor-port",
        "experimental listener override; continuum reaches the supervisor and the API on port 6443",
    ),
    (
        "apiserver-port",
        "experimental listener override; continuum reaches the supervisor and the API on port 6443",
    ),
    (
        "apiserver-bind-address",
        "experimental listener override; continuum reaches the supervisor and the API on port 6443",
    ),
    (
        "disable-apiserver",
        "split control-plane roles are not modelled: every continuum server runs the whole control plane",
    ),
    (
        "disable-controller-manager",
        "split control-plane roles are not modelled: every continuum server runs the whole control plane",
    ),
    (
        "disable-etcd",
        "split control-plane roles are not modelled: every continuum server runs the whole control plane",
    ),
    (
        "disable-agent",
        "every continuum server is also a node of the cluster",
    ),
    ("kine-tls", "experimental datastore option"),
    (
        "airgap-extra-registry",
        "internal image-import option; configure registries in `private-registry`",
    ),
    (
        "kube-controller-arg",
        "deprecated alias: use `kube-controller-manager-arg`",
    ),
    (
        "kube-cloud-controller-arg",
        "deprecated alias: use `kube-cloud-controller-manager-arg`",
    ),
];

const TOKEN: &str = "the cluster token is generated by continuum and kept in its state";
const NODE_NAME: &str = "the node name is the inventory host's `name`";
const PATHS: &str = "continuum reads the token, the kubeconfig and its manifests at k3s's default \
     paths (/var/lib/rancher/k3s, /etc/rancher/k3s), so another data-dir is refused \
     (docs/k3s-config.md)";
const PORT: &str = "continuum joins nodes and reaches the API at the default port 6443, so \
     another port is refused (docs/k3s-config.md)";

/// Keys continuum writes itself: `extra_config` may not set them. The text names the
/// recipe or inventory field to use instead, or why there is none.
pub const MANAGED_KEYS: &[(&str, &str)] = &[
    (
        "config",
        "continuum writes /etc/rancher/k3s/config.yaml itself; put keys under `extra_config`",
    ),
    ("token", TOKEN),
    ("token-file", TOKEN),
    ("agent-token", TOKEN),
    ("agent-token-file", TOKEN),
    (
        "server",
        "the join address is the first server of `k3s.servers` (its inventory `address`)",
    ),
    ("cluster-init", "set `k3s.ha: true` instead"),
    ("node-name", NODE_NAME),
    ("with-node-id", NODE_NAME),
    (
        "node-ip",
        "set `node_ip` on the host in the inventory instead",
    ),
    (
        "node-external-ip",
        "set `external_ip` on the host in the inventory instead",
    ),
    (
        "node-label",
        "use `k3s.node_labels` or the inventory host's `labels`",
    ),
    (
        "node-taint",
        "use `k3s.node_taints` or the inventory host's `taints`",
    ),
    (
        "default-runtime",
        "set `k3s.nvidia_default_runtime: true` instead (probed Jetsons)",
    ),
    ("flannel-backend", "use `k3s.flannel_backend`"),
    (
        "flannel-external-ip",
        "continuum sets it for AWS-site servers under `k3s.flannel_backend: wireguard-native`; give other hosts an inventory `external_ip`",
    ),
    ("disable", "use `k3s.disable`"),
    ("tls-san", "use `k3s.tls_san`"),
    ("cluster-cidr", "use `k3s.cluster_cidr`"),
    ("service-cidr", "use `k3s.service_cidr`"),
    ("data-dir", PATHS),
    ("https-listen-port", PORT),
    (
        "write-kubeconfig",
        "continuum reads /etc/rancher/k3s/k3s.yaml; set `kubeconfig.path` for your copy",
    ),
    (
        "write-kubeconfig-mode",
        "the kubeconfig on the server stays readable by root only; continuum merges it into `kubeconfig.path`",
    ),
];

/// Whether a `k3s ROLE` accepts `key` (a visible flag of that subcommand).
pub fn accepts(role: Role, key: &str) -> bool {
    SHARED_KEYS.contains(&key)
        || match role {
            Role::Server => SERVER_ONLY_KEYS.contains(&key),
            Role::Agent => AGENT_ONLY_KEYS.contains(&key),
        }
}

/// Whether `key` is a visible flag of `k3s server` or `k3s agent`.
pub fn is_known(key: &str) -> bool {
    accepts(Role::Server, key) || accepts(Role::Agent, key)
}

/// Every visible key, for "did you mean" hints.
pub fn all_keys() -> impl Iterator<Item = &'static str> {
    SHARED_KEYS
        .iter()
        .chain(SERVER_ONLY_KEYS)
        .chain(AGENT_ONLY_KEYS)
        .copied()
}

/// What to use instead of a key continuum manages.
pub fn managed(key: &str) -> Option<&'static str> {
    lookup(MANAGED_KEYS, key)
}

/// Why a hidden k3s flag is not passed through.
pub fn hidden(key: &str) -> Option<&'static str> {
    lookup(HIDDEN_KEYS, key)
}

fn lookup(table: &[(&'static str, &'static str)], key: &str) -> Option<&'static str> {
    table.iter().find(|(k, _)| *k == key).map(|(_, why)| *why)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn every_key() -> Vec<&'static str> {
        all_keys()
            .chain(HIDDEN_KEYS.iter().map(|(k, _)| *k))
            .collect()
    }

    /// The tables were checked against k3s v1.31.4+k3s1 (its command-line definitions at commit
    /// e143e0fa, docs/k3s-config.md): 119 server flags of which 11 hidden, 46 agent
    /// flags of which 1 hidden. A new pin means reading upstream again.
    #[test]
    fn checked_against_the_pinned_release() {
        assert_eq!(CHECKED_AGAINST, "k3s v1.31.4+k3s1");
        assert!(CHECKED_AT_COMMIT.starts_with("e143e0fa"));
        let server = all_keys().filter(|k| accepts(Role::Server, k)).count();
        let agent = all_keys().filter(|k| accepts(Role::Agent, k)).count();
        let hidden_server = HIDDEN_KEYS.len();
        let hidden_agent = 1; // airgap-extra-registry
        assert_eq!(server + hidden_server, 119);
        assert_eq!(agent + hidden_agent, 46);
    }

    #[test]
    fn no_key_is_listed_twice() {
        let keys = every_key();
        let unique: BTreeSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "duplicates in the flag tables");
        let managed: BTreeSet<_> = MANAGED_KEYS.iter().map(|(k, _)| k).collect();
        assert_eq!(managed.len(), MANAGED_KEYS.len(), "duplicate managed key");
    }

    #[test]
    fn managed_keys_are_real_flags() {
        for (k, why) in MANAGED_KEYS {
            assert!(is_known(k), "managed key `{k}` is not a visible k3s flag");
            assert!(!why.is_empty());
        }
    }

    #[test]
    fn server_agent_split() {
        for k in [
            "system-default-registry",
            "secrets-encryption",
            "etcd-s3-bucket",
            "tls-san",
        ] {
            assert!(accepts(Role::Server, k), "{k}");
            assert!(!accepts(Role::Agent, k), "{k} is server-only");
        }
        for k in [
            "bind-address",
            "flannel-cni-conf",
            "nonroot-devices",
            "node-ip",
            "debug",
        ] {
            assert!(accepts(Role::Server, k) && accepts(Role::Agent, k), "{k}");
        }
        assert!(accepts(Role::Agent, "disable-apiserver-lb"));
        assert!(!accepts(Role::Server, "disable-apiserver-lb"));
    }

    /// Flags older tables named that k3s v1.31 does not have (or only hides).
    #[test]
    fn dropped_flags_stay_out() {
        for k in [
            "flannel-cni-conf-dir",
            "flannel-cni-conf-file",
            "node-name-from-cloud-provider-metadata",
            "secrets-encryption-provider",
            "etcd-s3-retention",
            "etcd-s3-session-token",
            "etcd-s3-bucket-lookup-type",
        ] {
            assert!(!every_key().contains(&k), "{k} is not a k3s v1.31 flag");
        }
        for k in [
            "supervisor-port",
            "apiserver-port",
            "apiserver-bind-address",
        ] {
            assert!(
                !is_known(k) && hidden(k).is_some(),
                "{k} is hidden upstream"
            );
        }
    }
}
