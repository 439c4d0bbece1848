//! k3s on a host, following the install contract in docs/k3s.md.
//!
//! Every step checks before it changes: `apply_node` reads the host's facts first and
//! does nothing when config.yaml, the binary version and the service already match.
//! The cluster token reaches the host only inside /etc/rancher/k3s/config.yaml (0600),
//! written from stdin; it is never in a command line, environment variable or log.
//!
//! This file holds what every part shares: the paths on a host, the error type and
//! `run_root`. The parts: host facts in one round trip (`facts`); the local install
//! bundle (`bundle`); install and upgrade with the forced restart, air-gap images and
//! uploads (`install`; config.yaml's text is rendered by `render::k3s`); join tokens
//! and the kubeconfig read back from a server (`credentials`); the node list, live
//! labels and taints, uncordon and node deletion (`nodes`); bootstrap tokens of
//! enrolment pools (`enroll`); cluster readiness
//! (`readiness`); uninstall (`uninstall`); and the host preparation beside k3s
//! (`packages`, `selinux`, `firewall`, `device`).

mod bundle;
mod credentials;
pub mod device;
mod enroll;
mod facts;
pub mod firewall;
mod install;
mod nodes;
pub mod packages;
mod readiness;
pub mod selinux;
mod uninstall;

use std::path::PathBuf;
use std::time::Duration;

use crate::ssh::{Output, Remote, SshError};

pub use crate::render::sha256_hex;
pub use bundle::{bundle_binary, images_file, images_names};
pub use credentials::{read_agent_token, read_join_token, read_kubeconfig};
pub use enroll::{PoolToken, create_token, delete_token, parse_created_token, ttl_arg};
pub use facts::{Facts, ServiceManager, facts};
pub use install::{Applied, NodeSpec, apply_node, describe_apply, install_command, render_config};
pub use nodes::{
    LabelsTaints, NodeInfo, check_quorum, delete_node, drain, label_taint_args, list_nodes,
    parse_nodes, sync_labels_and_taints, uncordon,
};
pub use readiness::wait_ready;
pub use uninstall::{UNINSTALL_DESCRIPTION, leftovers, uninstall};

pub const CONFIG_PATH: &str = "/etc/rancher/k3s/config.yaml";
pub const KUBECONFIG_PATH: &str = "/etc/rancher/k3s/k3s.yaml";
pub const TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/token";
pub const AGENT_TOKEN_PATH: &str = "/var/lib/rancher/k3s/server/agent-token";
/// k3s's default binary directory; install.sh falls back to `OPT_BIN_DIR` when root
/// cannot write it (docs/k3s.md, "Binary directory").
pub const DEFAULT_BIN_DIR: &str = "/usr/local/bin";
pub const OPT_BIN_DIR: &str = "/opt/bin";
/// The k3s binary on a host, wherever install.sh put it: a shell word for commands.
pub const BIN_PATH: &str = r#""$(if [ -x /usr/local/bin/k3s ]; then echo /usr/local/bin/k3s; else echo /opt/bin/k3s; fi)""#;
/// Where k3s imports air-gap image tarballs from at start (docs/k3s.md, "Air-gap images").
pub const IMAGES_DIR: &str = "/var/lib/rancher/k3s/agent/images";
/// Where continuum keeps the install script on a host (removed by `down`).
pub const WORK_DIR: &str = "/var/lib/continuum";
const SHORT: Duration = Duration::from_secs(60);
const INSTALL_TIMEOUT: Duration = Duration::from_secs(600);
/// How long k3s may take, after its service started, to write what continuum reads next
/// (tokens, containerd's config): the start returns early on openrc.
pub(crate) const START_WAIT: Duration = Duration::from_secs(120);

/// A script that waits up to `START_WAIT` for `path` to be non-empty, then prints it
/// (openrc's start returns before k3s wrote it; docs/k3s.md, "Service managers").
pub(crate) fn wait_then_cat(path: &str) -> String {
    format!(
        "i=0; while [ ! -s {path} ] && [ $i -lt {n} ]; do sleep 0.5; i=$((i+1)); done; cat {path}",
        n = START_WAIT.as_secs() * 2
    )
}

#[derive(Debug, thiserror::Error)]
pub enum K3sError {
    #[error(
        "refusing to remove server `{host}`: etcd has {members} member(s), {healthy} of them Ready; \
         without it {left_healthy} of {left} would be Ready, below the quorum of {quorum}. Bring the \
         other servers back (or add one) first"
    )]
    Quorum {
        host: String,
        members: usize,
        healthy: usize,
        left: usize,
        left_healthy: usize,
        quorum: usize,
    },
    #[error("draining `{host}` through `{server}` failed: {detail}")]
    Drain {
        host: String,
        server: String,
        detail: String,
    },
    #[error(transparent)]
    Ssh(#[from] SshError),
    /// A step whose connection broke or timed out: which step it was (the SSH error
    /// alone shows only the start of the command).
    #[error("{step}")]
    During {
        step: String,
        #[source]
        source: Box<SshError>,
    },
    #[error("{step} failed on `{host}` (exit {code}):\n{tail}")]
    Step {
        host: String,
        step: String,
        code: String,
        tail: String,
    },
    #[error("`{host}` is {arch}; k3s has no build for it")]
    UnsupportedArch { host: String, arch: String },
    #[error(
        "`{host}` is a {model} with the memory cgroup off, which k3s needs; nothing was installed there.\n  Run `continuum inventory probe INVENTORY --host {host}`, then `up` again: continuum then enables it in cmdline.txt, reboots the Pi and verifies it (docs/k3s.md, \"Devices and sizing\")"
    )]
    MemoryCgroupOff { host: String, model: String },
    #[error("the bundle {dir} has no k3s binary for {arch} (expected {file}) needed by `{host}`")]
    MissingBinary {
        host: String,
        arch: String,
        dir: PathBuf,
        file: String,
    },
    #[error(
        "the bundle {dir} has no air-gap images for {arch} (expected {expected}) needed by `{host}`: without them an offline host never gets CoreDNS"
    )]
    MissingImages {
        host: String,
        arch: String,
        dir: PathBuf,
        expected: String,
    },
    #[error(
        "`{host}` runs {firewall}, which does not let in what k3s needs; nothing was changed there. Open it with:\n  {}\n(continuum leaves host firewalls to you: docs/k3s.md, \"Host firewalls\")",
        commands.join("\n  ")
    )]
    FirewallClosed {
        host: String,
        firewall: String,
        commands: Vec<String>,
    },
    #[error(
        "`{host}` enforces SELinux and lacks {}; its package repositories could not provide them ({detail}). Install them there (k3s-selinux comes from the rancher-k3s-common RPM repository) and run `up` again",
        missing.join(" and ")
    )]
    SelinuxPackages {
        host: String,
        missing: Vec<String>,
        detail: String,
    },
    #[error(
        "root cannot write /usr/local/bin on `{host}` and /opt/bin does not exist: k3s's install script has nowhere to put its binary; create /opt/bin (it is used then) and run `up` again"
    )]
    NoBinDir { host: String },
    #[error(
        "`{host}` has neither systemd nor openrc, and k3s's install script needs one of them to supervise k3s; nothing was changed there (docs/k3s.md, \"Service managers\")"
    )]
    NoServiceManager { host: String },
    #[error(
        "`{host}` has no NFS client (mount.nfs), which the kubelet needs to mount the serverless layer's volumes, and {}; nothing else was changed there. Install {package} on it and run `up` again (docs/oscar.md, \"NFS client on the nodes\")",
        detail
    )]
    NfsClient {
        host: String,
        package: String,
        detail: String,
    },
    #[error("cannot read {path}")]
    Local {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("k3s on `{host}` reports version {found}, but the recipe pins {wanted}")]
    VersionMismatch {
        host: String,
        found: String,
        wanted: String,
    },
    #[error("`{host}` already runs k3s as {other}; remove it from the cluster first")]
    RoleConflict { host: String, other: String },
    #[error("cannot render the k3s config for `{host}`: {detail}")]
    Render { host: String, detail: String },
    #[error("the cluster is not ready after {secs} s: {detail}")]
    NotReady { secs: u64, detail: String },
    #[error("unexpected answer from k3s on `{host}`: {detail}")]
    Protocol { host: String, detail: String },
}

/// Run `script` as root on `r`; a non-zero exit is a `K3sError::Step` naming host and
/// step, a broken or timed-out connection a `K3sError::During` naming the step.
pub(crate) async fn run_root<R: Remote>(
    r: &R,
    step: &str,
    script: &str,
    stdin: Option<&[u8]>,
    timeout: Duration,
) -> Result<Output, K3sError> {
    let out = r
        .run(script, stdin, true, timeout)
        .await
        .map_err(|source| match source {
            SshError::Disconnected { .. } | SshError::Timeout { .. } => K3sError::During {
                step: step.to_string(),
                source: Box::new(source),
            },
            other => K3sError::Ssh(other),
        })?;
    check(r.name(), step, out)
}

fn check(host: &str, step: &str, out: Output) -> Result<Output, K3sError> {
    if out.success() {
        Ok(out)
    } else {
        Err(K3sError::Step {
            host: host.to_string(),
            step: step.to_string(),
            code: out
                .status
                .map_or_else(|| "signal".to_string(), |c| c.to_string()),
            tail: out.tail(),
        })
    }
}
