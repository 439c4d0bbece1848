//! SELinux on k3s nodes. install.sh sets up the SELinux policy only when it
//! downloads k3s: with `INSTALL_K3S_SKIP_DOWNLOAD=true` (every bundle install) its
//! SELinux step is skipped too. On an enforcing host k3s then needs
//! `container-selinux` and `k3s-selinux` installed, and `selinux: true` in its config
//! (docs/k3s.md, "SELinux"). continuum installs the packages when the host reaches its
//! package repositories, and otherwise stops before any change, naming them.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

/// The packages an enforcing host needs.
pub const PACKAGES: [&str; 2] = ["container-selinux", "k3s-selinux"];

/// The facts script's lines for SELinux (read-only).
pub const FACTS: &str = r#"if command -v getenforce >/dev/null 2>&1; then echo "selinux=$(getenforce 2>/dev/null)"; fi
if command -v rpm >/dev/null 2>&1; then
  for p in container-selinux k3s-selinux; do rpm -q "$p" >/dev/null 2>&1 && echo "selinuxpkg=$p"; done
fi
"#;

/// What the facts say about SELinux.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selinux {
    /// `getenforce`'s answer (`Enforcing`, `Permissive`, `Disabled`), when it exists.
    pub mode: Option<String>,
    /// Which of `PACKAGES` are installed.
    pub packages: BTreeSet<String>,
}

impl Selinux {
    /// Take one facts line (`selinux=`, `selinuxpkg=`); whether it was one.
    pub fn read(&mut self, key: &str, value: &str) -> bool {
        match key {
            "selinux" => self.mode = Some(value.to_string()),
            "selinuxpkg" => {
                self.packages.insert(value.to_string());
            }
            _ => return false,
        }
        true
    }

    pub fn enforcing(&self) -> bool {
        self.mode.as_deref() == Some("Enforcing")
    }

    /// The packages an enforcing host still lacks (none when not enforcing).
    pub fn missing(&self) -> Vec<&'static str> {
        if !self.enforcing() {
            return Vec::new();
        }
        PACKAGES
            .into_iter()
            .filter(|p| !self.packages.contains(*p))
            .collect()
    }

    /// The node's config keys with what this host needs added (`selinux: true` on an
    /// enforcing host). Used for rendering and for the refresh's comparison alike.
    pub fn config(&self, attrs: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
        let mut out = attrs.clone();
        if self.enforcing() {
            out.insert("selinux".into(), Value::Bool(true));
        }
        out
    }
}

/// Install `packages` with the host's package manager; the script fails when it cannot
/// reach its repositories, or when the host has none of dnf, yum, zypper (the policy
/// packages are RPMs).
pub fn install_script(managers: &[super::packages::Manager], packages: &[&str]) -> String {
    match managers.iter().find(|m| m.is_rpm()) {
        Some(m) => m.install_script(packages),
        None => "echo 'no dnf, yum or zypper on this host' >&2; exit 3".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enforcing_hosts_need_both_packages_and_the_config_key() {
        let mut s = Selinux::default();
        assert!(s.missing().is_empty(), "no SELinux: nothing needed");
        assert!(s.read("selinux", "Enforcing"));
        assert!(s.read("selinuxpkg", "container-selinux"));
        assert!(!s.read("arch", "x86_64"));
        assert_eq!(s.missing(), ["k3s-selinux"]);
        let c = s.config(&BTreeMap::new());
        assert_eq!(c.get("selinux"), Some(&Value::Bool(true)));
        s.mode = Some("Permissive".into());
        assert!(s.missing().is_empty());
        assert!(s.config(&BTreeMap::new()).is_empty());
    }
}
