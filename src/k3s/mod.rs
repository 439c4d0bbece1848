//! k3s on a host, following the install contract in docs/k3s.md.
//!
//! Every step checks before it changes: `apply_node` reads the host's facts first and
//! does nothing when config.yaml, the binary version and the service already match.
//! The cluster token reaches the host only inside /etc/rancher/k3s/config.yaml (0600),
//! written from stdin; it is never in a command line, environment variable or log.

pub mod device;
pub mod firewall;
pub mod packages;
pub mod selinux;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::recipe::{Images, Install, Role};
use crate::ssh::{Output, Remote, SshError, quote};

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
const CONFIG_TEMPLATE: &str = include_str!("../../templates/k3s-config.yaml.tera");
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

/// The service manager k3s's install script uses on a host, decided as the script does:
/// openrc when `/sbin/openrc-run` is executable, else systemd when `systemctl` exists
/// (docs/k3s.md, "Service managers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceManager {
    Systemd,
    Openrc,
}

/// What a host looks like now, as far as k3s is concerned.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// k3s architecture name (amd64, arm64, arm).
    pub arch: String,
    pub config_sha: Option<String>,
    pub version: Option<String>,
    pub binary_sha: Option<String>,
    pub script_sha: Option<String>,
    /// The package managers on the host, in the order apk, apt-get, dnf, yum, zypper.
    pub pkg_managers: Vec<packages::Manager>,
    /// `mount.nfs` exists (the NFS client the serverless layer's volumes need).
    pub nfs_client: bool,
    /// systemd or openrc; `None` when the host has neither.
    pub service_manager: Option<ServiceManager>,
    /// Installed k3s services (k3s, k3s-agent) of that manager and whether they run.
    pub units: BTreeMap<String, bool>,
    /// Device-tree model (`Raspberry Pi 5 Model B Rev 1.0`), when the host has one.
    pub model: Option<String>,
    /// Whether the memory cgroup controller is enabled (None: could not tell).
    pub memory_cgroup: Option<bool>,
    /// Air-gap image tarballs in `IMAGES_DIR`: file name -> sha256.
    pub images: BTreeMap<String, String>,
    /// An active ufw or firewalld and what it lets in.
    pub firewall: firewall::Firewall,
    /// SELinux mode and packages.
    pub selinux: selinux::Selinux,
    /// Where the k3s binary is (`/usr/local/bin`, `/opt/bin`), if installed.
    pub bin_dir: Option<String>,
    /// Root cannot write `/usr/local/bin` (a read-only /usr: Flatcar, Fedora CoreOS...).
    pub bin_dir_read_only: bool,
    /// `/opt/bin` exists.
    pub opt_bin: bool,
}

impl Facts {
    /// The host's service manager, or the error that stops before any change.
    pub fn service_manager(&self, host: &str) -> Result<ServiceManager, K3sError> {
        self.service_manager
            .ok_or_else(|| K3sError::NoServiceManager {
                host: host.to_string(),
            })
    }

    /// The directory install.sh uses on this host (docs/k3s.md, "Binary directory"):
    /// where k3s already is, else `/usr/local/bin` when root can write it, else
    /// `/opt/bin` when it exists.
    pub fn bin_dir(&self, host: &str) -> Result<String, K3sError> {
        if let Some(d) = &self.bin_dir {
            return Ok(d.clone());
        }
        if !self.bin_dir_read_only {
            Ok(DEFAULT_BIN_DIR.to_string())
        } else if self.opt_bin {
            Ok(OPT_BIN_DIR.to_string())
        } else {
            Err(K3sError::NoBinDir {
                host: host.to_string(),
            })
        }
    }
}

impl Facts {
    /// A Raspberry Pi (docs/k3s.md, "Devices and sizing": detected by its device-tree model).
    /// An NVIDIA Jetson (device-tree model; docs/k3s.md, "Devices and sizing").
    pub fn is_jetson(&self) -> bool {
        self.model.as_deref().is_some_and(|m| m.contains("Jetson"))
    }

    pub fn is_raspberry_pi(&self) -> bool {
        self.model
            .as_deref()
            .is_some_and(|m| m.starts_with("Raspberry Pi"))
    }
}

const FACTS_SCRIPT: &str = r#"echo "arch=$(uname -m)"
[ -f /etc/rancher/k3s/config.yaml ] && echo "config=$(sha256sum /etc/rancher/k3s/config.yaml | cut -d' ' -f1)"
for d in /usr/local/bin /opt/bin; do
  if [ -x "$d/k3s" ]; then
    echo "bindir=$d"
    echo "version=$("$d/k3s" --version 2>/dev/null | head -n1 | cut -d' ' -f3)"
    echo "binary=$(sha256sum "$d/k3s" | cut -d' ' -f1)"
    break
  fi
done
[ -w /usr/local/bin ] || echo bindir_ro=1
[ -d /opt/bin ] && echo optbin=1
[ -f /var/lib/continuum/install.sh ] && echo "script=$(sha256sum /var/lib/continuum/install.sh | cut -d' ' -f1)"
for m in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
  [ -r "$m" ] && { echo "model=$(tr -d '\0' <"$m")"; break; }
done
if [ -r /sys/fs/cgroup/cgroup.controllers ]; then
  if grep -qw memory /sys/fs/cgroup/cgroup.controllers; then echo memcg=on; else echo memcg=off; fi
elif [ -r /proc/cgroups ]; then
  if awk '$1=="memory" && $4=="1" {f=1} END {exit !f}' /proc/cgroups; then echo memcg=on; else echo memcg=off; fi
fi
for f in /var/lib/rancher/k3s/agent/images/k3s-airgap-images-*; do
  [ -f "$f" ] && echo "images=$(basename "$f"):$(sha256sum "$f" | cut -d' ' -f1)"
done
if [ -x /sbin/openrc-run ]; then
  echo init=openrc
  for u in k3s k3s-agent; do
    if [ -f /etc/init.d/$u ]; then
      if rc-service $u status >/dev/null 2>&1; then echo "unit=$u:active"; else echo "unit=$u:inactive"; fi
    fi
  done
elif [ -x /bin/systemctl ] || command -v systemctl >/dev/null 2>&1; then
  echo init=systemd
  for u in k3s k3s-agent; do
    if [ -f /etc/systemd/system/$u.service ]; then
      if systemctl is-active --quiet $u 2>/dev/null; then echo "unit=$u:active"; else echo "unit=$u:inactive"; fi
    fi
  done
fi
true"#;

fn k3s_arch(uname: &str) -> Option<&'static str> {
    match uname {
        "x86_64" | "amd64" => Some("amd64"),
        "aarch64" | "arm64" => Some("arm64"),
        "armv7l" | "armv7" | "armhf" => Some("arm"),
        _ => None,
    }
}

/// Air-gap image tarball names of an architecture, in order of preference (as k3s
/// releases name them; docs/k3s.md, "Air-gap images").
pub fn images_names(arch: &str) -> [String; 3] {
    let a = match arch {
        "arm" => "arm",
        "arm64" => "arm64",
        _ => "amd64",
    };
    [".tar.zst", ".tar.gz", ".tar"].map(|ext| format!("k3s-airgap-images-{a}{ext}"))
}

/// The bundle's air-gap image tarball for `arch`, if it has one.
pub fn images_file(dir: &Path, arch: &str) -> Option<PathBuf> {
    images_names(arch)
        .into_iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// Bundle file name of the k3s binary for an architecture (as k3s releases name them).
pub fn bundle_binary(arch: &str) -> &'static str {
    match arch {
        "arm64" => "k3s-arm64",
        "arm" => "k3s-armhf",
        _ => "k3s",
    }
}

/// Run `script` as root on `r`; a non-zero exit is a `K3sError::Step` named `step`.
/// Run `script` as root; a non-zero exit is a `Step` error naming host and step.
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

/// Read the host's k3s facts (one round trip, read-only).
pub async fn facts<R: Remote>(r: &R) -> Result<Facts, K3sError> {
    let script = format!(
        "{}\n{}\n{}\n{FACTS_SCRIPT}",
        firewall::FACTS,
        selinux::FACTS,
        packages::FACTS
    );
    let out = run_root(r, "reading host facts", &script, None, SHORT).await?;
    let mut f = Facts::default();
    for line in out.stdout.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().to_string();
        match k {
            "arch" => {
                f.arch = k3s_arch(&v)
                    .ok_or_else(|| K3sError::UnsupportedArch {
                        host: r.name().to_string(),
                        arch: v.clone(),
                    })?
                    .to_string();
            }
            "config" => f.config_sha = Some(v),
            "version" if !v.is_empty() => f.version = Some(v),
            "binary" => f.binary_sha = Some(v),
            "script" => f.script_sha = Some(v),
            "model" if !v.is_empty() => f.model = Some(v),
            "memcg" => f.memory_cgroup = Some(v == "on"),
            "bindir" => f.bin_dir = Some(v),
            "bindir_ro" => f.bin_dir_read_only = true,
            "optbin" => f.opt_bin = true,
            "pkgmgr" => f.pkg_managers.extend(packages::Manager::from_fact(&v)),
            "nfsclient" => f.nfs_client = true,
            "init" => {
                f.service_manager = match v.as_str() {
                    "openrc" => Some(ServiceManager::Openrc),
                    "systemd" => Some(ServiceManager::Systemd),
                    _ => None,
                }
            }
            k if f.firewall.read(k, &v) || f.selinux.read(k, &v) => {}
            "images" => {
                if let Some((name, sha)) = v.split_once(':') {
                    f.images.insert(name.to_string(), sha.to_string());
                }
            }
            "unit" => {
                if let Some((u, s)) = v.split_once(':') {
                    f.units.insert(u.to_string(), s == "active");
                }
            }
            _ => {}
        }
    }
    Ok(f)
}

/// Render config.yaml for a node; `secrets` (`token`, and on servers `agent-token`)
/// are the only secrets in it.
pub fn render_config(
    env: &str,
    node: &str,
    role: Role,
    attrs: &BTreeMap<String, Value>,
    secrets: &[(&str, &str)],
) -> Result<String, K3sError> {
    let mut config = attrs.clone();
    for (k, v) in secrets {
        config.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("node", node);
    ctx.insert("role", &role.to_string());
    ctx.insert("config", &config);
    tera::Tera::one_off(CONFIG_TEMPLATE, &ctx, false).map_err(|e| K3sError::Render {
        host: node.to_string(),
        detail: e.to_string(),
    })
}

pub use crate::render::sha256_hex;

/// Everything needed to converge k3s on one node.
#[derive(Debug, Clone)]
pub struct NodeSpec<'a> {
    pub role: Role,
    pub version: &'a str,
    pub install: &'a Install,
    /// Full config.yaml text (with the token).
    pub config: String,
    /// Only `node-label`/`node-taint` changed on an applied node: k3s would not apply
    /// them on a restart, so config.yaml is written without one.
    pub live_keys_only: bool,
}

/// What `apply_node` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The node already matched; nothing was written.
    Unchanged,
    Changed,
}

fn unit_of(role: Role) -> &'static str {
    match role {
        Role::Server => "k3s",
        Role::Agent => "k3s-agent",
    }
}

/// Write `data` to `path` on the host atomically with `mode`, data on stdin.
///
/// The temporary file has a name of its own per run (`mktemp`): a writer left behind by
/// an earlier run whose connection broke may still hold its file open, and renaming
/// that file into place would leave an executable that cannot run ("Text file busy")
/// or is cut short. Stale temporary files of earlier runs are unlinked first.
fn write_file_script(path: &str, mode: &str) -> String {
    let tmp = format!("{path}.continuum-tmp");
    format!(
        "set -e; umask 077; mkdir -p {dir}; rm -f {tmp} {tmp}.*; t=$(mktemp {tmp}.XXXXXX); cat > \"$t\"; chmod {mode} \"$t\"; mv -f \"$t\" {path}",
        dir = quote(
            Path::new(path)
                .parent()
                .map_or("/", |p| p.to_str().unwrap_or("/"))
        ),
        tmp = quote(&tmp),
        path = quote(path),
    )
}

/// The install command line (no secrets in it).
pub fn install_command(spec: &NodeSpec<'_>, bin_dir: &str, force_restart: bool) -> String {
    let mut env = vec![
        format!("INSTALL_K3S_VERSION={}", quote(spec.version)),
        format!("INSTALL_K3S_EXEC={}", role_word(spec.role)),
    ];
    if bin_dir != DEFAULT_BIN_DIR {
        env.push(format!("INSTALL_K3S_BIN_DIR={}", quote(bin_dir)));
    }
    if matches!(spec.install, Install::Bundle { .. }) {
        env.push("INSTALL_K3S_SKIP_DOWNLOAD=true".into());
    }
    if force_restart {
        env.push("INSTALL_K3S_FORCE_RESTART=true".into());
    }
    format!("env {} sh {WORK_DIR}/install.sh", env.join(" "))
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Server => "server",
        Role::Agent => "agent",
    }
}

/// The remote commands `apply_node` may run, for `plan --verbose`.
pub fn describe_apply(spec: &NodeSpec<'_>) -> Vec<String> {
    let mut v = vec!["read facts: uname -m; sha256sum /etc/rancher/k3s/config.yaml; k3s --version; systemctl is-active (rc-service status on openrc)".to_string()];
    match spec.install {
        Install::Bundle { dir, images } => {
            if *images == Images::Bundle {
                v.push(format!(
                    "upload {}/k3s-airgap-images-{{amd64|arm64}}.tar.zst -> {IMAGES_DIR}/ (0644) if its sha256 differs",
                    dir.display()
                ));
            }
            v.push(format!(
                "upload {}/{{k3s|k3s-arm64}} -> {DEFAULT_BIN_DIR}/k3s (0755; {OPT_BIN_DIR}/k3s when /usr/local/bin is read-only) if its sha256 differs",
                dir.display()
            ));
            v.push(format!(
                "upload {}/install.sh -> {WORK_DIR}/install.sh (0700) if it differs",
                dir.display()
            ));
        }
        Install::Online { script_url } => {
            v.push(format!("curl -sfL {script_url} -o {WORK_DIR}/install.sh"));
        }
    }
    v.push(format!(
        "write {CONFIG_PATH} (0600, from stdin; holds the token)"
    ));
    v.push(install_command(spec, DEFAULT_BIN_DIR, false));
    v
}

/// Converge k3s on a node: upload what differs, write config.yaml, run the install
/// script. Returns `Unchanged` without writing anything when the node already matches.
pub async fn apply_node<R: Remote>(
    r: &R,
    spec: &NodeSpec<'_>,
    facts: &Facts,
) -> Result<Applied, K3sError> {
    let host = r.name().to_string();
    let unit = unit_of(spec.role);
    facts.service_manager(&host)?;
    let bin_dir = facts.bin_dir(&host)?;
    let other = unit_of(match spec.role {
        Role::Server => Role::Agent,
        Role::Agent => Role::Server,
    });
    if facts.units.contains_key(other) {
        return Err(K3sError::RoleConflict {
            host,
            other: other.to_string(),
        });
    }
    let config_sha = sha256_hex(spec.config.as_bytes());
    // Local artifacts for a bundle install, checked before anything changes.
    let bundle = match spec.install {
        Install::Bundle { dir, images } => {
            let file = bundle_binary(&facts.arch);
            let bin_path = dir.join(file);
            if !bin_path.is_file() {
                return Err(K3sError::MissingBinary {
                    host,
                    arch: facts.arch.clone(),
                    dir: dir.clone(),
                    file: file.to_string(),
                });
            }
            let read = |p: &Path| {
                std::fs::read(p).map_err(|source| K3sError::Local {
                    path: p.to_path_buf(),
                    source,
                })
            };
            let bin = read(&bin_path)?;
            let script = read(&dir.join("install.sh"))?;
            let tarball = match images {
                Images::Registry => None,
                Images::Bundle => {
                    let p =
                        images_file(dir, &facts.arch).ok_or_else(|| K3sError::MissingImages {
                            host: host.clone(),
                            arch: facts.arch.clone(),
                            dir: dir.clone(),
                            expected: images_names(&facts.arch).join(" or "),
                        })?;
                    let name = p
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    Some((name, read(&p)?))
                }
            };
            Some((bin, script, tarball))
        }
        Install::Online { .. } => None,
    };
    let binary_matches = match &bundle {
        Some((bin, _, _)) => facts.binary_sha.as_deref() == Some(sha256_hex(bin).as_str()),
        None => true,
    };
    let images_match = match &bundle {
        Some((_, _, Some((name, data)))) => {
            facts.images.get(name).map(String::as_str) == Some(sha256_hex(data).as_str())
        }
        _ => true,
    };
    let converged = facts.config_sha.as_deref() == Some(config_sha.as_str())
        && facts.version.as_deref() == Some(spec.version)
        && facts.units.get(unit) == Some(&true)
        && binary_matches
        && images_match;
    if converged {
        return Ok(Applied::Unchanged);
    }
    // Only live-changeable keys (labels, taints) differ on a running node: write the
    // config for future registrations, no restart (the caller syncs them live).
    if spec.live_keys_only
        && facts.version.as_deref() == Some(spec.version)
        && facts.units.get(unit) == Some(&true)
        && binary_matches
        && images_match
    {
        run_root(
            r,
            &format!("writing {CONFIG_PATH}"),
            &write_file_script(CONFIG_PATH, "0600"),
            Some(spec.config.as_bytes()),
            SHORT,
        )
        .await?;
        return Ok(Applied::Changed);
    }

    run_root(
        r,
        "preparing directories",
        &format!("mkdir -p /etc/rancher/k3s {WORK_DIR} && chmod 700 {WORK_DIR}"),
        None,
        SHORT,
    )
    .await?;
    if let Some((bin, script, tarball)) = &bundle {
        if let (Some((name, data)), false) = (tarball, images_match) {
            // Before k3s (re)starts: it imports what is in IMAGES_DIR at start.
            run_root(
                r,
                &format!("uploading the air-gap images to {IMAGES_DIR}/{name}"),
                &write_file_script(&format!("{IMAGES_DIR}/{name}"), "0644"),
                Some(data),
                INSTALL_TIMEOUT,
            )
            .await?;
        }
        if !binary_matches {
            run_root(
                r,
                &format!("uploading the k3s binary to {bin_dir}/k3s"),
                &write_file_script(&format!("{bin_dir}/k3s"), "0755"),
                Some(bin),
                INSTALL_TIMEOUT,
            )
            .await?;
        }
        if facts.script_sha.as_deref() != Some(sha256_hex(script).as_str()) {
            run_root(
                r,
                &format!("uploading install.sh to {WORK_DIR}/install.sh"),
                &write_file_script(&format!("{WORK_DIR}/install.sh"), "0700"),
                Some(script),
                SHORT,
            )
            .await?;
        }
        let out = run_root(
            r,
            "k3s --version",
            &format!("{bin_dir}/k3s --version"),
            None,
            SHORT,
        )
        .await?;
        let found = out
            .stdout
            .lines()
            .next()
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap_or("")
            .to_string();
        if found != spec.version {
            return Err(K3sError::VersionMismatch {
                host,
                found,
                wanted: spec.version.to_string(),
            });
        }
    } else if let Install::Online { script_url } = spec.install {
        // A temporary name of this run's own, as in `write_file_script`.
        let tmp = format!("{WORK_DIR}/install.sh.continuum-tmp");
        run_root(
            r,
            "downloading the k3s install script",
            &format!(
                "set -e; rm -f {tmp} {tmp}.*; t=$(mktemp {tmp}.XXXXXX); curl -sfL {} -o \"$t\"; chmod 0700 \"$t\"; mv -f \"$t\" {WORK_DIR}/install.sh",
                quote(script_url)
            ),
            None,
            INSTALL_TIMEOUT,
        )
        .await?;
    }
    let config_changed = facts.config_sha.as_deref() != Some(config_sha.as_str());
    if config_changed {
        run_root(
            r,
            &format!("writing {CONFIG_PATH}"),
            &write_file_script(CONFIG_PATH, "0600"),
            Some(spec.config.as_bytes()),
            SHORT,
        )
        .await?;
    }
    // install.sh (re)starts k3s only for changes made during its own run (docs/k3s.md,
    // "Restart rule"): the binary continuum put in place before it, a config.yaml
    // change or a stopped unit would all be left as they are. An existing unit that is
    // not converged is therefore always restarted.
    let force = facts.units.contains_key(unit);
    run_root(
        r,
        "the k3s install script",
        &install_command(spec, &bin_dir, force),
        None,
        INSTALL_TIMEOUT,
    )
    .await?;
    Ok(Applied::Changed)
}

/// Read the secure join token (`K10...::server:...`) from the first server.
pub async fn read_join_token<R: Remote>(r: &R) -> Result<String, K3sError> {
    read_secure_token(r, TOKEN_PATH, "server").await
}

/// Read the agents' secure token (`K10...::node:...`) from a server that runs with
/// `agent-token` (docs/k3s.md, "Tokens").
pub async fn read_agent_token<R: Remote>(r: &R) -> Result<String, K3sError> {
    read_secure_token(r, AGENT_TOKEN_PATH, "node").await
}

async fn read_secure_token<R: Remote>(r: &R, path: &str, kind: &str) -> Result<String, K3sError> {
    // openrc's start returns once k3s is spawned, before it wrote its tokens (systemd's
    // Type=notify returns after).
    let out = run_root(
        r,
        "reading the join token",
        &wait_then_cat(path),
        None,
        START_WAIT + SHORT,
    )
    .await?;
    let token = out.stdout.trim().to_string();
    if !token.starts_with("K10") || !token.contains(&format!("::{kind}:")) {
        return Err(K3sError::Protocol {
            host: r.name().to_string(),
            detail: format!(
                "{path} is not a secure `{kind}` token (K10<CA hash>::{kind}:<secret>)"
            ),
        });
    }
    Ok(token)
}

/// One node as the API server reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub ready: String,
    pub version: String,
    pub arch: String,
    pub roles: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `k3s kubectl get nodes -o json`, parsed.
pub async fn list_nodes<R: Remote>(r: &R) -> Result<Vec<NodeInfo>, K3sError> {
    let out = run_root(
        r,
        "listing nodes",
        &format!("{BIN_PATH} kubectl get nodes -o json"),
        None,
        SHORT,
    )
    .await?;
    parse_nodes(r.name(), &out.stdout)
}

/// A Node object's `metadata.labels`.
fn labels_of(node: &Value) -> BTreeMap<String, String> {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_nodes(host: &str, json: &str) -> Result<Vec<NodeInfo>, K3sError> {
    let v: Value = serde_json::from_str(json).map_err(|e| K3sError::Protocol {
        host: host.to_string(),
        detail: format!("node list is not JSON: {e}"),
    })?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| K3sError::Protocol {
            host: host.to_string(),
            detail: "node list has no items".into(),
        })?;
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(items
        .iter()
        .map(|n| {
            let labels = labels_of(n);
            let ready = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                .unwrap_or("Unknown")
                .to_string();
            let mut roles: Vec<String> = labels
                .keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect();
            roles.sort();
            NodeInfo {
                name: s(n, "/metadata/name"),
                ready,
                version: s(n, "/status/nodeInfo/kubeletVersion"),
                arch: s(n, "/status/nodeInfo/architecture"),
                roles,
                labels,
            }
        })
        .collect())
}

/// Wait until the API answers `/readyz`, CoreDNS is available (unless disabled) and
/// every expected node is Ready at `version` (`kubeletVersion`); errors of a restarting
/// API are retried until `timeout`, then the error names the nodes that are not.
pub async fn wait_ready<R: Remote>(
    r: &R,
    expected: &[String],
    version: &str,
    coredns: bool,
    timeout: Duration,
) -> Result<Vec<NodeInfo>, K3sError> {
    let start = Instant::now();
    loop {
        // A server that is restarting (an upgrade, a forced restart) answers with
        // errors for a while: those are retried until the timeout, never fatal.
        let last = match ready_once(r, expected, version, coredns).await {
            Ok(Ok(nodes)) => return Ok(nodes),
            Ok(Err(not_yet)) => not_yet,
            Err(e) => format!("the API did not answer: {}", first_line(&e.to_string())),
        };
        if start.elapsed() >= timeout {
            return Err(K3sError::NotReady {
                secs: timeout.as_secs(),
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// One readiness check: `Ok(Ok(nodes))` when ready, `Ok(Err(why))` when not yet,
/// `Err` when the check itself failed (connection, API restarting).
async fn ready_once<R: Remote>(
    r: &R,
    expected: &[String],
    version: &str,
    coredns: bool,
) -> Result<Result<Vec<NodeInfo>, String>, K3sError> {
    let readyz = r
        .run(
            &format!("{BIN_PATH} kubectl get --raw /readyz"),
            None,
            true,
            SHORT,
        )
        .await?;
    if !(readyz.success() && readyz.stdout.trim() == "ok") {
        return Ok(Err(format!("/readyz answered: {}", readyz.tail())));
    }
    let nodes = list_nodes(r).await?;
    let missing: Vec<&str> = expected
        .iter()
        .filter(|e| !nodes.iter().any(|n| &n.name == *e))
        .map(String::as_str)
        .collect();
    let of_interest = || nodes.iter().filter(|n| expected.contains(&n.name));
    let not_ready: Vec<String> = of_interest()
        .filter(|n| n.ready != "True")
        .map(|n| format!("{} (Ready={})", n.name, n.ready))
        .collect();
    // After an upgrade every node must run the pinned version (`kubeletVersion`).
    let other_version: Vec<String> = of_interest()
        .filter(|n| n.version != version)
        .map(|n| format!("{} ({})", n.name, n.version))
        .collect();
    let dns_ok = !coredns || {
        let d = r
            .run(
                &format!("{BIN_PATH} kubectl -n kube-system get deployment coredns -o json"),
                None,
                true,
                SHORT,
            )
            .await?;
        d.success()
            && serde_json::from_str::<Value>(&d.stdout)
                .ok()
                .and_then(|v| {
                    v.pointer("/status/availableReplicas")
                        .and_then(Value::as_u64)
                })
                .unwrap_or(0)
                > 0
    };
    if missing.is_empty() && not_ready.is_empty() && other_version.is_empty() && dns_ok {
        return Ok(Ok(nodes));
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("not registered: {}", missing.join(", ")));
    }
    if !not_ready.is_empty() {
        parts.push(format!("not Ready: {}", not_ready.join(", ")));
    }
    if !other_version.is_empty() {
        parts.push(format!("not at {version}: {}", other_version.join(", ")));
    }
    if !dns_ok {
        parts.push("CoreDNS is not available".to_string());
    }
    Ok(Err(parts.join("; ")))
}

/// The admin kubeconfig of a server (read with root rights; it is 0600 there).
pub async fn read_kubeconfig<R: Remote>(r: &R) -> Result<String, K3sError> {
    let out = run_root(
        r,
        "reading the kubeconfig",
        &format!("cat {KUBECONFIG_PATH}"),
        None,
        SHORT,
    )
    .await?;
    Ok(out.stdout)
}

/// Delete a Node object through a server; absent nodes are fine.
pub async fn delete_node<R: Remote>(server: &R, node: &str) -> Result<(), K3sError> {
    let out = server
        .run(
            &format!("{BIN_PATH} kubectl delete node {}", quote(node)),
            None,
            true,
            SHORT,
        )
        .await?;
    if out.success() || out.stderr.contains("NotFound") || out.stderr.contains("not found") {
        Ok(())
    } else {
        check(server.name(), "deleting the node object", out).map(|_| ())
    }
}

/// A node's labels (`key=value`) and taints (`key[=value]:Effect`), as config.yaml's
/// `node-label` / `node-taint` lists carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsTaints {
    pub labels: Vec<String>,
    pub taints: Vec<String>,
}

impl LabelsTaints {
    /// From a node's config attributes.
    pub fn of(attrs: &BTreeMap<String, Value>) -> Self {
        let list = |k: &str| -> Vec<String> {
            attrs
                .get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        LabelsTaints {
            labels: list("node-label"),
            taints: list("node-taint"),
        }
    }
}

/// `key[=value]:Effect` -> (key, value, effect).
fn split_taint(t: &str) -> Option<(&str, &str, &str)> {
    let (kv, effect) = t.rsplit_once(':')?;
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    Some((k, v, effect))
}

/// The `kubectl label` and `kubectl taint` arguments that bring a live node from `live`
/// to `want`, removing only what continuum set before (`before`) and no longer wants;
/// labels and taints others set are left alone. Pure.
pub fn label_taint_args(
    live_labels: &BTreeMap<String, String>,
    live_taints: &[(String, String, String)],
    want: &LabelsTaints,
    before: &LabelsTaints,
) -> (Vec<String>, Vec<String>) {
    let mut labels = Vec::new();
    let want_keys: Vec<&str> = want
        .labels
        .iter()
        .map(|l| l.split_once('=').map_or(l.as_str(), |(k, _)| k))
        .collect();
    for l in &want.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if live_labels.get(k).map(String::as_str) != Some(v) {
            labels.push(format!("{k}={v}"));
        }
    }
    for l in &before.labels {
        let k = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
        if !want_keys.contains(&k) && live_labels.contains_key(k) {
            labels.push(format!("{k}-"));
        }
    }
    let mut taints = Vec::new();
    let has = |k: &str, v: &str, e: &str| {
        live_taints
            .iter()
            .any(|(lk, lv, le)| lk == k && lv == v && le == e)
    };
    let want_t: Vec<(&str, &str, &str)> =
        want.taints.iter().filter_map(|t| split_taint(t)).collect();
    for (k, v, e) in &want_t {
        if !has(k, v, e) {
            taints.push(if v.is_empty() {
                format!("{k}:{e}")
            } else {
                format!("{k}={v}:{e}")
            });
        }
    }
    for t in &before.taints {
        if let Some((k, _, e)) = split_taint(t)
            && !want_t.iter().any(|(wk, _, we)| *wk == k && *we == e)
            && live_taints.iter().any(|(lk, _, le)| lk == k && le == e)
        {
            taints.push(format!("{k}:{e}-"));
        }
    }
    (labels, taints)
}

/// Bring a live node's labels and taints to the recipe's through a server: k3s applies
/// `node-label`/`node-taint` only when a node registers (docs/k3s.md, "Labels and
/// taints"). Returns whether anything changed.
pub async fn sync_labels_and_taints<R: Remote>(
    server: &R,
    node: &str,
    want: &LabelsTaints,
    before: &LabelsTaints,
) -> Result<bool, K3sError> {
    let out = run_root(
        server,
        "reading the node",
        &format!("{BIN_PATH} kubectl get node {} -o json", quote(node)),
        None,
        SHORT,
    )
    .await?;
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| K3sError::Protocol {
        host: server.name().to_string(),
        detail: format!("node {node} is not JSON: {e}"),
    })?;
    let live_labels = labels_of(&v);
    let s = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let live_taints: Vec<(String, String, String)> = v
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| (s(t, "key"), s(t, "value"), s(t, "effect")))
                .collect()
        })
        .unwrap_or_default();
    let (labels, taints) = label_taint_args(&live_labels, &live_taints, want, before);
    let q = |args: &[String]| args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    if !labels.is_empty() {
        run_root(
            server,
            "labelling the node",
            &format!(
                "{BIN_PATH} kubectl label node {} --overwrite {}",
                quote(node),
                q(&labels)
            ),
            None,
            SHORT,
        )
        .await?;
    }
    if !taints.is_empty() {
        run_root(
            server,
            "tainting the node",
            &format!(
                "{BIN_PATH} kubectl taint node {} --overwrite {}",
                quote(node),
                q(&taints)
            ),
            None,
            SHORT,
        )
        .await?;
    }
    Ok(!labels.is_empty() || !taints.is_empty())
}

/// Make a node schedulable again (after an upgrade with drain).
pub async fn uncordon<R: Remote>(server: &R, node: &str) -> Result<(), K3sError> {
    run_root(
        server,
        "uncordoning the node",
        &format!("{BIN_PATH} kubectl uncordon {}", quote(node)),
        None,
        SHORT,
    )
    .await
    .map(|_| ())
}

/// Uninstall k3s (either role) and continuum's work files. Idempotent.
pub async fn uninstall<R: Remote>(r: &R) -> Result<(), K3sError> {
    let script = format!(
        "set -e\nfor d in {DEFAULT_BIN_DIR} {OPT_BIN_DIR}; do for s in \"$d/k3s-agent-uninstall.sh\" \"$d/k3s-uninstall.sh\"; do if [ -x \"$s\" ]; then \"$s\"; fi; done; done\nrm -rf {WORK_DIR}"
    );
    run_root(r, "uninstalling k3s", &script, None, INSTALL_TIMEOUT).await?;
    Ok(())
}

/// What may remain on a host continuum forgot without contacting it (`--forget`,
/// issue 9): what the k3s install script and continuum put there (docs/k3s.md,
/// "Files on a node"), and how to wipe it once the device is back.
pub fn leftovers(role: Option<crate::recipe::Role>) -> String {
    let (unit, script) = match role {
        Some(crate::recipe::Role::Server) => ("k3s", "k3s-uninstall.sh"),
        _ => ("k3s-agent", "k3s-agent-uninstall.sh"),
    };
    format!(
        "the k3s binary and scripts in /usr/local/bin or /opt/bin (k3s, kubectl/crictl/ctr links, \
         k3s-killall.sh, {script}); the {unit} service (/etc/systemd/system/{unit}.service \
         and {unit}.service.env, or on openrc /etc/init.d/{unit}, /var/log/{unit}.log and \
         /etc/logrotate.d/{unit}); /etc/rancher/k3s, \
         /etc/rancher/node, /var/lib/rancher/k3s, /var/lib/kubelet, /var/lib/cni, /run/k3s; \
         {WORK_DIR}; running containers, CNI interfaces (cni0, flannel.1) and KUBE-/CNI- \
         iptables rules. If the device comes back with k3s still running it tries to join \
         again under its old name: wipe it first, with \
         `sudo /usr/local/bin/{script}` (or /opt/bin/{script}), then `sudo rm -rf {WORK_DIR} /etc/rancher/node`"
    )
}

pub const UNINSTALL_DESCRIPTION: &str =
    "k3s-agent-uninstall.sh / k3s-uninstall.sh, rm -rf /var/lib/continuum";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_as_yaml_with_token() {
        let mut attrs = BTreeMap::new();
        attrs.insert("node-label".into(), serde_json::json!(["a=b", "gpu=true"]));
        attrs.insert("cluster-init".into(), serde_json::json!(true));
        attrs.insert("server".into(), serde_json::json!("https://10.0.0.1:6443"));
        let text = render_config(
            "farm",
            "pi-01",
            Role::Server,
            &attrs,
            &[("token", "s3cr\"et")],
        )
        .expect("render");
        let back: BTreeMap<String, Value> = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(back["token"], serde_json::json!("s3cr\"et"));
        assert_eq!(back["node-label"], serde_json::json!(["a=b", "gpu=true"]));
        assert_eq!(back["cluster-init"], serde_json::json!(true));
        assert!(text.starts_with("# Managed by continuum"));
    }

    /// A host that records every command and its stdin, and answers `k3s --version`
    /// (a scripted stand-in for SSH; nothing runs).
    struct Recorder {
        runs: std::sync::Mutex<Vec<(String, Option<Vec<u8>>)>>,
    }

    impl Remote for Recorder {
        async fn run(
            &self,
            script: &str,
            stdin: Option<&[u8]>,
            _root: bool,
            _timeout: Duration,
        ) -> Result<Output, SshError> {
            self.runs
                .lock()
                .expect("runs")
                .push((script.to_string(), stdin.map(<[u8]>::to_vec)));
            Ok(Output {
                status: Some(0),
                stdout: if script.ends_with("k3s --version") {
                    "k3s version v1.31.4+k3s1 (recorder)\n".into()
                } else {
                    String::new()
                },
                stderr: String::new(),
            })
        }
        fn name(&self) -> &str {
            "rec"
        }
    }

    #[tokio::test]
    async fn the_token_travels_only_on_stdin_into_a_0600_config() {
        // Issue 14: the old check looked at `install_command` alone, which never sees
        // the config. Here every command of a whole install is recorded.
        const MARKER: &str = "K10feedface::server:marker-secret-4711";
        let dir = tempfile::tempdir().expect("bundle");
        for (f, body) in [
            ("k3s", "binary"),
            ("install.sh", "#!/bin/sh\n"),
            ("k3s-airgap-images-amd64.tar.zst", "images"),
        ] {
            std::fs::write(dir.path().join(f), body).expect("bundle file");
        }
        let install = Install::Bundle {
            dir: dir.path().to_path_buf(),
            images: Images::Bundle,
        };
        let spec = NodeSpec {
            role: Role::Agent,
            version: "v1.31.4+k3s1",
            install: &install,
            config: format!("server: https://10.0.0.1:6443\ntoken: {MARKER}\n"),
            live_keys_only: false,
        };
        let facts = Facts {
            arch: "amd64".into(),
            service_manager: Some(ServiceManager::Systemd),
            ..Facts::default()
        };
        let r = Recorder {
            runs: std::sync::Mutex::new(Vec::new()),
        };
        assert_eq!(
            apply_node(&r, &spec, &facts).await.expect("applied"),
            Applied::Changed
        );
        let runs = r.runs.lock().expect("runs");
        assert!(runs.len() >= 5, "{runs:?}");
        for (script, _) in runs.iter() {
            assert!(!script.contains("marker-secret"), "in a command: {script}");
        }
        let carrying: Vec<&String> = runs
            .iter()
            .filter(|(_, stdin)| {
                stdin
                    .as_deref()
                    .is_some_and(|b| String::from_utf8_lossy(b).contains("marker-secret"))
            })
            .map(|(script, _)| script)
            .collect();
        assert_eq!(carrying.len(), 1, "{carrying:?}");
        assert!(
            carrying[0].contains("umask 077")
                && carrying[0].contains("chmod 0600")
                && carrying[0].contains(CONFIG_PATH),
            "{}",
            carrying[0]
        );
        let install_cmd = runs.last().map(|(s, _)| s.clone()).unwrap_or_default();
        assert!(install_cmd.contains("INSTALL_K3S_SKIP_DOWNLOAD=true"));
        assert!(install_cmd.contains("INSTALL_K3S_EXEC=agent"));
    }

    #[test]
    fn node_list_parses_real_shape() {
        let json = r#"{"kind":"NodeList","items":[{"metadata":{"name":"a","labels":{"node-role.kubernetes.io/control-plane":"true","zone":"x"}},
            "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.31.4+k3s1","architecture":"amd64"}}}]}"#;
        let nodes = parse_nodes("h", json).expect("parse");
        assert_eq!(nodes[0].name, "a");
        assert_eq!(nodes[0].ready, "True");
        assert_eq!(nodes[0].roles, vec!["control-plane".to_string()]);
        assert!(parse_nodes("h", "nope").is_err());
    }

    #[test]
    fn label_and_taint_changes_touch_only_what_continuum_set() {
        let lt = |l: &[&str], t: &[&str]| LabelsTaints {
            labels: l.iter().map(|s| (*s).to_string()).collect(),
            taints: t.iter().map(|s| (*s).to_string()).collect(),
        };
        let live: BTreeMap<String, String> = [("a", "1"), ("b", "1"), ("manual", "yes")]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let live_taints = vec![
            (
                "gpu".to_string(),
                "true".to_string(),
                "NoSchedule".to_string(),
            ),
            ("other".to_string(), String::new(), "NoExecute".to_string()),
        ];
        let before = lt(&["a=1", "b=1"], &["gpu=true:NoSchedule"]);
        let want = lt(&["a=2", "c=3"], &["edge:PreferNoSchedule"]);
        let (labels, taints) = label_taint_args(&live, &live_taints, &want, &before);
        assert_eq!(labels, ["a=2", "c=3", "b-"]);
        assert_eq!(taints, ["edge:PreferNoSchedule", "gpu:NoSchedule-"]);
        // Converged: nothing to run.
        let (labels, taints) = label_taint_args(&live, &live_taints, &before, &before);
        assert!(labels.is_empty() && taints.is_empty());
    }
}
