//! What a host is (its probed facts: architecture, memory, cgroups, Raspberry Pi or
//! Jetson firmware, iptables, init system), parsed from the probe script's output
//! (`inventory::probe`), and the problems those facts show. Pure.

use serde::{Deserialize, Serialize};

/// What a probe learned about one host (stored in the inventory as `probed:`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Facts {
    /// `uname -m` (x86_64, aarch64, armv7l).
    pub arch: String,
    /// `getconf LONG_BIT` of the userland (32 on a 32-bit OS over a 64-bit kernel).
    #[serde(default)]
    pub userland_bits: u32,
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub kernel: String,
    #[serde(default)]
    pub memory_mib: u64,
    /// Free space on `/`.
    #[serde(default)]
    pub disk_free_mib: u64,
    /// systemd, openrc or none (as the k3s install script decides).
    #[serde(default)]
    pub init: String,
    /// `iptables --version` number (`1.8.9`), when iptables is installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iptables: Option<String>,
    /// Enabled cgroup controllers.
    #[serde(default)]
    pub cgroup_controllers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pi_model: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jetson_model: Option<String>,
    /// L4T release from /etc/nv_tegra_release (`35.4.1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l4t: Option<String>,
    /// Path of nvidia-container-runtime where k3s looks for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nvidia_runtime: Option<String>,
    /// The cmdline.txt the Pi firmware reads (first of /boot/firmware, /boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmdline_file: Option<String>,
}

/// Which preparation a host needs before k3s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Device {
    RaspberryPi,
    Jetson,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Device::RaspberryPi => "raspberry-pi",
            Device::Jetson => "jetson",
        })
    }
}

/// Parse the script's `key=value` lines.
pub fn parse(text: &str) -> Facts {
    let mut f = Facts::default();
    let mut model = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let num = |s: &str| s.parse::<u64>().unwrap_or(0);
        match k {
            "arch" => f.arch = v.to_string(),
            "kernel" => f.kernel = v.to_string(),
            "bits" => f.userland_bits = u32::try_from(num(v)).unwrap_or(0),
            "os" => f.os = v.to_string(),
            "mem_kib" => f.memory_mib = num(v) / 1024,
            "disk_kib" => f.disk_free_mib = num(v) / 1024,
            "init" => f.init = v.to_string(),
            "iptables" => f.iptables = iptables_version(v),
            "cgroup2" | "cgroup1" => {
                f.cgroup_controllers = v.split_whitespace().map(str::to_string).collect();
            }
            "model" if !v.is_empty() => model = Some(v.to_string()),
            "tegra" => f.l4t = l4t_release(v),
            "nvidia" => f.nvidia_runtime = Some(v.to_string()),
            "cmdline" => f.cmdline_file = Some(v.to_string()),
            _ => {}
        }
    }
    if let Some(m) = model {
        if m.starts_with("Raspberry Pi") {
            f.pi_model = Some(m);
        } else if f.l4t.is_some() || m.contains("Jetson") || m.contains("NVIDIA") {
            f.jetson_model = Some(m);
        }
    }
    f
}

/// `iptables v1.8.7 (nf_tables)` -> `1.8.7`.
fn iptables_version(line: &str) -> Option<String> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix('v'))
        .filter(|v| v.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(str::to_string)
}

/// `# R35 (release), REVISION: 4.1, GCID: ...` -> `35.4.1`.
fn l4t_release(line: &str) -> Option<String> {
    let major = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix('R'))
        .filter(|m| m.chars().all(|c| c.is_ascii_digit()) && !m.is_empty())?;
    let rev = line
        .split(',')
        .find_map(|p| p.trim().strip_prefix("REVISION:"))
        .map(str::trim)?;
    Some(format!("{major}.{rev}"))
}

impl Facts {
    pub fn device(&self) -> Option<Device> {
        if self.pi_model.is_some() {
            Some(Device::RaspberryPi)
        } else if self.jetson_model.is_some() || self.l4t.is_some() {
            Some(Device::Jetson)
        } else {
            None
        }
    }

    pub fn memory_cgroup(&self) -> bool {
        self.cgroup_controllers.iter().any(|c| c == "memory")
    }

    /// k3s's name for the architecture (amd64, arm64, arm), if it has a build.
    pub fn k3s_arch(&self) -> Option<&'static str> {
        match self.arch.as_str() {
            "x86_64" | "amd64" => Some("amd64"),
            "aarch64" | "arm64" => Some("arm64"),
            "armv7l" | "armv7" | "armhf" => Some("arm"),
            _ => None,
        }
    }

    /// iptables 1.8.0 to 1.8.4 is buggy under k3s: use its bundled copy (docs/k3s.md, "Devices and sizing").
    pub fn needs_bundled_iptables(&self) -> bool {
        let Some(v) = &self.iptables else {
            return false;
        };
        let parts: Vec<u32> = v.split('.').filter_map(|p| p.parse().ok()).collect();
        matches!(parts.as_slice(), [1, 8, p, ..] if *p <= 4)
    }

    /// Problems that stop or endanger k3s (and OSCAR) on this host.
    pub fn problems(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.userland_bits == 32 || self.k3s_arch() == Some("arm") {
            v.push("32-bit OS: the OSCAR images are arm64/amd64 only; install a 64-bit OS".into());
        }
        if self.k3s_arch().is_none() {
            v.push(format!("architecture {} has no k3s build", self.arch));
        }
        if !self.memory_cgroup() {
            v.push(if self.device() == Some(Device::RaspberryPi) {
                "memory cgroup off: `up` will add cgroup_enable=memory to cmdline.txt and reboot"
                    .into()
            } else {
                "memory cgroup off: enable it on the kernel command line".into()
            });
        }
        if self.init != "systemd" && self.init != "openrc" {
            v.push("no init system k3s supports (systemd or openrc)".into());
        }
        if self.device() == Some(Device::Jetson) && self.nvidia_runtime.is_none() {
            v.push("NVIDIA container toolkit missing (nvidia-container-runtime)".into());
        }
        if self.needs_bundled_iptables() {
            v.push(format!(
                "iptables {} is in the buggy 1.8.0-1.8.4 range: `up` sets prefer-bundled-bin",
                self.iptables.as_deref().unwrap_or("?")
            ));
        }
        v
    }

    /// Short description of the model, for tables.
    pub fn model(&self) -> String {
        match (&self.pi_model, &self.jetson_model, &self.l4t) {
            (Some(m), _, _) => m.clone(),
            (None, Some(m), Some(l)) => format!("{m} (L4T {l})"),
            (None, Some(m), None) => m.clone(),
            (None, None, Some(l)) => format!("Jetson (L4T {l})"),
            _ => String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PI: &str = "arch=aarch64\nkernel=6.12.20+rpt-rpi-2712\nbits=64\nos=Debian GNU/Linux 12 (bookworm)\nmem_kib=8245000\ndisk_kib=20480000\ninit=systemd\niptables=iptables v1.8.2 (nf_tables)\ncgroup2=cpuset cpu io pids\nmodel=Raspberry Pi 5 Model B Rev 1.0\ncmdline=/boot/firmware/cmdline.txt\n";

    #[test]
    fn pi_with_memory_cgroup_off() {
        let f = parse(PI);
        assert_eq!(f.device(), Some(Device::RaspberryPi));
        assert_eq!(f.k3s_arch(), Some("arm64"));
        assert!(!f.memory_cgroup());
        assert!(f.needs_bundled_iptables());
        assert_eq!(f.memory_mib, 8051);
        let p = f.problems();
        assert!(p.iter().any(|p| p.contains("memory cgroup off")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("prefer-bundled-bin")), "{p:?}");
        assert_eq!(
            f.cmdline_file.as_deref(),
            Some("/boot/firmware/cmdline.txt")
        );
    }

    #[test]
    fn jetson_release_and_toolkit() {
        let f = parse(
            "arch=aarch64\nbits=64\ninit=systemd\ncgroup2=cpu memory pids\nmodel=NVIDIA Jetson Orin Nano Developer Kit\ntegra=# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64\n",
        );
        assert_eq!(f.device(), Some(Device::Jetson));
        assert_eq!(f.l4t.as_deref(), Some("35.4.1"));
        assert!(f.problems().iter().any(|p| p.contains("toolkit missing")));
        assert_eq!(
            f.model(),
            "NVIDIA Jetson Orin Nano Developer Kit (L4T 35.4.1)"
        );
    }

    #[test]
    fn plain_host_and_32_bit() {
        let f = parse("arch=x86_64\nbits=64\ninit=systemd\ncgroup1=cpu memory \n");
        assert_eq!(f.device(), None);
        assert!(f.problems().is_empty(), "{:?}", f.problems());
        let f = parse("arch=aarch64\nbits=32\ninit=none\ncgroup1=cpu\n");
        let p = f.problems();
        assert!(p.iter().any(|p| p.starts_with("32-bit OS")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("no init system")), "{p:?}");
        assert!(!parse("iptables=iptables v1.8.9 (nf_tables)\n").needs_bundled_iptables());
    }
}
