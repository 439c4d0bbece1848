//! A host's k3s facts, read in one read-only round trip (docs/k3s.md, "Refresh and
//! drift"): architecture, config.yaml's sha256, the k3s version, binary and its
//! directory, continuum's install script, device model and memory cgroup, air-gap
//! images, the service manager and its k3s units (docs/k3s.md, "Service managers"),
//! and the firewall, SELinux and package lines of `firewall`, `selinux`, `packages`.

use std::collections::BTreeMap;

use super::{DEFAULT_BIN_DIR, K3sError, OPT_BIN_DIR, SHORT, run_root};
use super::{firewall, packages, selinux};
use crate::ssh::Remote;

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
    /// An NVIDIA Jetson (device-tree model; docs/k3s.md, "Devices and sizing").
    pub fn is_jetson(&self) -> bool {
        self.model.as_deref().is_some_and(|m| m.contains("Jetson"))
    }

    /// A Raspberry Pi (docs/k3s.md, "Devices and sizing": detected by its device-tree model).
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::ssh::scripted::{Scripted, ok};

    /// What the facts script prints on an enforcing, firewalled Pi with k3s in /opt/bin.
    const PI: &str = "fw=firewalld
fwport=6443/tcp
fwport=8472/udp
fwsource=10.42.0.0/16
selinux=Enforcing
selinuxpkg=container-selinux
pkgmgr=dnf
pkgmgr=yum
nfsclient=1
arch=aarch64
config=c0ffee
bindir=/opt/bin
version=v1.31.4+k3s1
binary=b1a5
bindir_ro=1
optbin=1
script=5c41
model=Raspberry Pi 5 Model B Rev 1.0
memcg=off
images=k3s-airgap-images-arm64.tar.zst:1a9e
init=systemd
unit=k3s:active
unit=k3s-agent:inactive
some-line-of-a-newer-script=ignored
";

    #[tokio::test]
    async fn one_read_only_round_trip_reads_every_fact() {
        let host = Scripted::new("pi-01").on("arch=$(uname -m)", ok(PI));
        let f = facts(&host).await.expect("facts");
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_string()).collect::<BTreeSet<_>>();
        let want = Facts {
            arch: "arm64".into(),
            config_sha: Some("c0ffee".into()),
            version: Some("v1.31.4+k3s1".into()),
            binary_sha: Some("b1a5".into()),
            script_sha: Some("5c41".into()),
            pkg_managers: vec![packages::Manager::Dnf, packages::Manager::Yum],
            nfs_client: true,
            service_manager: Some(ServiceManager::Systemd),
            units: [("k3s".to_string(), true), ("k3s-agent".to_string(), false)].into(),
            model: Some("Raspberry Pi 5 Model B Rev 1.0".into()),
            memory_cgroup: Some(false),
            images: [(
                "k3s-airgap-images-arm64.tar.zst".to_string(),
                "1a9e".to_string(),
            )]
            .into(),
            firewall: firewall::Firewall {
                kind: "firewalld".into(),
                ports: set(&["6443/tcp", "8472/udp"]),
                sources: set(&["10.42.0.0/16"]),
            },
            selinux: selinux::Selinux {
                mode: Some("Enforcing".into()),
                packages: set(&["container-selinux"]),
            },
            bin_dir: Some("/opt/bin".into()),
            bin_dir_read_only: true,
            opt_bin: true,
        };
        assert_eq!(f, want);
        assert!(f.is_raspberry_pi() && !f.is_jetson());
        assert_eq!(f.bin_dir("pi-01").expect("bin dir"), "/opt/bin");
        // One call, as root, carrying the firewall, SELinux and package lines too.
        let calls = host.calls();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].root && calls[0].stdin.is_none());
        for part in [firewall::FACTS, selinux::FACTS, packages::FACTS] {
            assert!(calls[0].script.contains(part.trim()));
        }
    }

    #[tokio::test]
    async fn a_fresh_host_has_no_k3s_facts_and_its_limits_are_errors() {
        let fresh = Scripted::new("alpine").on("uname", ok("arch=x86_64\nversion=\ninit=openrc\n"));
        let f = facts(&fresh).await.expect("facts");
        assert_eq!(f.arch, "amd64");
        assert_eq!(f.version, None);
        assert_eq!(
            f.service_manager("alpine").ok(),
            Some(ServiceManager::Openrc)
        );
        assert!(f.units.is_empty() && f.images.is_empty() && f.firewall.kind.is_empty());
        assert_eq!(f.bin_dir("alpine").expect("bin dir"), DEFAULT_BIN_DIR);

        let ro = Facts {
            bin_dir_read_only: true,
            ..Facts::default()
        };
        assert!(
            matches!(ro.bin_dir("coreos"), Err(K3sError::NoBinDir { host }) if host == "coreos")
        );
        assert!(matches!(
            Facts::default().service_manager("bare"),
            Err(K3sError::NoServiceManager { .. })
        ));

        let mips = Scripted::new("router").on("uname", ok("arch=mips\n"));
        match facts(&mips).await {
            Err(K3sError::UnsupportedArch { host, arch }) => {
                assert_eq!((host.as_str(), arch.as_str()), ("router", "mips"));
            }
            other => panic!("{other:?}"),
        }
    }
}
