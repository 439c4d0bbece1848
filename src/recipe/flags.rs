//! k3s configuration keys (flags without dashes), REFERENCE.md §1. Used to validate
//! `extra_config` and to refuse keys continuum manages itself.

/// Keys valid for both `k3s server` and `k3s agent`.
pub const AGENT_KEYS: &[&str] = &[
    "token", "token-file", "server", "data-dir", "node-name", "with-node-id", "node-label",
    "node-taint", "image-credential-provider-bin-dir", "image-credential-provider-config",
    "docker", "container-runtime-endpoint", "default-runtime", "image-service-endpoint",
    "disable-default-registry-endpoint", "nonroot-devices", "pause-image", "snapshotter",
    "private-registry", "system-default-registry", "node-ip", "node-external-ip",
    "node-internal-dns", "node-external-dns", "resolv-conf", "flannel-iface",
    "flannel-conf", "flannel-cni-conf-dir", "flannel-cni-conf-file", "kubelet-arg",
    "kube-proxy-arg", "protect-kernel-defaults", "selinux", "lb-server-port",
    "prefer-bundled-bin", "airgap-extra-registry", "vpn-auth", "vpn-auth-file", "debug",
    "v", "vmodule", "log", "alsologtostderr", "rootless", "enable-pprof",
];

/// Keys valid only for `k3s server`.
pub const SERVER_ONLY_KEYS: &[&str] = &[
    "config", "bind-address", "advertise-address", "advertise-port", "tls-san",
    "tls-san-security", "https-listen-port", "supervisor-port", "apiserver-port",
    "apiserver-bind-address", "cluster-cidr", "service-cidr", "service-node-port-range",
    "cluster-dns", "cluster-domain", "flannel-backend", "flannel-ipv6-masq",
    "flannel-external-ip", "egress-selector-mode", "servicelb-namespace",
    "write-kubeconfig", "write-kubeconfig-mode", "write-kubeconfig-group", "helm-job-image",
    "agent-token", "agent-token-file", "cluster-init", "cluster-reset",
    "cluster-reset-restore-path", "kube-apiserver-arg", "etcd-arg", "kube-controller-manager-arg",
    "kube-scheduler-arg", "kube-cloud-controller-manager-arg", "datastore-endpoint",
    "datastore-cafile", "datastore-certfile", "datastore-keyfile", "etcd-expose-metrics",
    "etcd-disable-snapshots", "etcd-snapshot-name", "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention", "etcd-snapshot-dir", "etcd-snapshot-compress",
    "etcd-s3", "default-local-storage-path", "disable", "disable-scheduler",
    "disable-cloud-controller", "disable-kube-proxy", "disable-network-policy",
    "disable-helm-controller", "embedded-registry", "supervisor-metrics",
    "node-name-from-cloud-provider-metadata", "secrets-encryption",
    "secrets-encryption-provider", "enable-pprof", "disable-apiserver", "disable-etcd",
    "disable-controller-manager", "kine-tls", "cluster-dns",
];

/// Keys continuum writes itself; `extra_config` may not set them.
pub const MANAGED_KEYS: &[(&str, &str)] = &[
    ("token", "the cluster token is generated and kept in state"),
    ("token-file", "the cluster token is generated and kept in state"),
    ("agent-token", "the cluster token is generated and kept in state"),
    ("server", "the join address is derived from the first server"),
    ("cluster-init", "set `k3s.ha: true` instead"),
    ("node-label", "use `k3s.node_labels` or the inventory host's `labels`"),
    ("node-taint", "use `k3s.node_taints` or the inventory host's `taints`"),
    ("flannel-backend", "use `k3s.flannel_backend`"),
    ("disable", "use `k3s.disable`"),
    ("tls-san", "use `k3s.tls_san`"),
    ("cluster-cidr", "use `k3s.cluster_cidr`"),
    ("service-cidr", "use `k3s.service_cidr`"),
    ("write-kubeconfig-mode", "the kubeconfig stays readable by root only (REFERENCE.md §1)"),
];

/// Whether `key` is a k3s server flag (servers accept agent flags too).
pub fn is_known(key: &str) -> bool {
    AGENT_KEYS.contains(&key) || SERVER_ONLY_KEYS.contains(&key)
}

pub fn all_keys() -> impl Iterator<Item = &'static str> {
    AGENT_KEYS.iter().chain(SERVER_ONLY_KEYS.iter()).copied()
}
