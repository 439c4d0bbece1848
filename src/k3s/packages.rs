//! Packages a node needs beside k3s, installed with the host's own package manager:
//! the SELinux policy on enforcing hosts (docs/k3s.md, "SELinux") and the NFS client
//! wherever the serverless layer runs (docs/oscar.md, "NFS client on the nodes").
//!
//! The facts name the package managers on the host (in the order apk, apt-get, dnf,
//! yum, zypper; the first one is used, the first RPM one for RPM-only packages) and whether `mount.nfs` exists; an install that cannot reach the host's
//! repositories fails, and the caller stops naming the package.

use std::fmt;

/// The facts script's lines for packages (read-only).
pub const FACTS: &str = r#"for m in apk apt-get dnf yum zypper; do
  if command -v "$m" >/dev/null 2>&1; then echo "pkgmgr=$m"; fi
done
if command -v mount.nfs >/dev/null 2>&1 || [ -x /sbin/mount.nfs ] || [ -x /usr/sbin/mount.nfs ]; then echo nfsclient=1; fi
"#;

/// A host's package manager.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Apk,
    Apt,
    Dnf,
    Yum,
    Zypper,
}

impl Manager {
    /// From the facts' `pkgmgr=` value.
    pub fn from_fact(v: &str) -> Option<Manager> {
        Some(match v {
            "apk" => Manager::Apk,
            "apt-get" => Manager::Apt,
            "dnf" => Manager::Dnf,
            "yum" => Manager::Yum,
            "zypper" => Manager::Zypper,
            _ => return None,
        })
    }

    /// Whether it installs RPM packages (where the SELinux policy packages exist).
    pub fn is_rpm(self) -> bool {
        matches!(self, Manager::Dnf | Manager::Yum | Manager::Zypper)
    }

    /// The package that provides `mount.nfs` (the NFS client the kubelet mounts NFS
    /// volumes with): nfs-common on Debian and Ubuntu, nfs-client on SUSE, nfs-utils
    /// on Alpine, Fedora and RHEL (docs/oscar.md, "NFS client on the nodes").
    pub fn nfs_client_package(self) -> &'static str {
        match self {
            Manager::Apt => "nfs-common",
            Manager::Zypper => "nfs-client",
            Manager::Apk | Manager::Dnf | Manager::Yum => "nfs-utils",
        }
    }

    /// A non-interactive install of `packages` (names are fixed words of this crate,
    /// never user input). apt-get refreshes its package lists once when the first
    /// attempt fails (a fresh image often has none). Downloads give up after 30 s.
    pub fn install_script(self, packages: &[&str]) -> String {
        let p = packages.join(" ");
        match self {
            Manager::Apk => format!("apk add --no-cache {p}"),
            Manager::Apt => {
                let install = format!(
                    "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -o Acquire::Retries=0 -o Acquire::http::Timeout=30 {p}"
                );
                format!(
                    "{install} || {{ apt-get update -q -o Acquire::Retries=0 -o Acquire::http::Timeout=30 && {install}; }}"
                )
            }
            Manager::Dnf => format!("dnf -y install {p}"),
            Manager::Yum => format!("yum -y install {p}"),
            Manager::Zypper => format!("zypper --non-interactive install {p}"),
        }
    }
}

impl fmt::Display for Manager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Manager::Apk => "apk",
            Manager::Apt => "apt-get",
            Manager::Dnf => "dnf",
            Manager::Yum => "yum",
            Manager::Zypper => "zypper",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_manager_has_its_nfs_package_and_a_non_interactive_install() {
        for (fact, pkg) in [
            ("apk", "nfs-utils"),
            ("apt-get", "nfs-common"),
            ("dnf", "nfs-utils"),
            ("yum", "nfs-utils"),
            ("zypper", "nfs-client"),
        ] {
            let m = Manager::from_fact(fact).expect(fact);
            assert_eq!(m.to_string(), fact);
            assert_eq!(m.nfs_client_package(), pkg);
            let s = m.install_script(&[pkg]);
            assert!(s.contains(pkg), "{s}");
            assert!(
                s.contains("-y") || s.contains("--non-interactive") || s.contains("--no-cache"),
                "{s}"
            );
        }
        assert_eq!(Manager::from_fact("pacman"), None);
        assert!(Manager::Dnf.is_rpm() && !Manager::Apt.is_rpm());
        let apt = Manager::Apt.install_script(&["nfs-common"]);
        assert!(apt.contains("|| { apt-get update"), "{apt}");
    }
}
