//! `continuum inventory probe`: what a host is, read over SSH in one round trip.
//!
//! The script only reads the real paths of docs/k3s.md ("Devices and sizing") (`/proc/device-tree/model`
//! or `/sys/firmware/devicetree/base/model`, `/etc/nv_tegra_release`,
//! `/sys/fs/cgroup/cgroup.controllers` or `/proc/cgroups`, `/boot/firmware/cmdline.txt`
//! or `/boot/cmdline.txt`, the nvidia-container-runtime locations k3s looks at); it
//! changes nothing. Parsing and the problem rules are pure and unit-tested, in
//! `recipe::device`.

use std::time::Duration;

pub use crate::recipe::device::{Device, Facts, parse};
use crate::ssh::{Remote, SshError};

pub const SCRIPT: &str = r#"echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "bits=$(getconf LONG_BIT 2>/dev/null)"
if [ -r /etc/os-release ]; then (. /etc/os-release; echo "os=${PRETTY_NAME:-$NAME}"); fi
echo "mem_kib=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
echo "disk_kib=$(df -Pk / 2>/dev/null | awk 'NR==2{print $4}')"
if [ -x /sbin/openrc-run ]; then echo init=openrc
elif [ -d /run/systemd/system ] || command -v systemctl >/dev/null 2>&1; then echo init=systemd
else echo init=none; fi
for p in "$(command -v iptables 2>/dev/null)" /usr/sbin/iptables /sbin/iptables; do
  if [ -n "$p" ] && [ -x "$p" ]; then echo "iptables=$("$p" --version 2>/dev/null | head -n1)"; break; fi
done
if [ -r /sys/fs/cgroup/cgroup.controllers ]; then echo "cgroup2=$(cat /sys/fs/cgroup/cgroup.controllers)"
elif [ -r /proc/cgroups ]; then echo "cgroup1=$(awk '!/^#/ && $4 == 1 {printf "%s ", $1}' /proc/cgroups)"; fi
for f in /proc/device-tree/model /sys/firmware/devicetree/base/model; do
  if [ -r "$f" ]; then echo "model=$(tr -d '\000' < "$f")"; break; fi
done
[ -r /etc/nv_tegra_release ] && echo "tegra=$(head -n1 /etc/nv_tegra_release)"
for p in /usr/bin/nvidia-container-runtime /usr/local/nvidia/toolkit/nvidia-container-runtime; do
  if [ -x "$p" ]; then echo "nvidia=$p"; break; fi
done
for f in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
  if [ -f "$f" ]; then echo "cmdline=$f"; break; fi
done
true"#;

/// Run the probe script (read-only, no root needed).
pub async fn probe<R: Remote>(r: &R) -> Result<Facts, SshError> {
    let out = r.run(SCRIPT, None, false, Duration::from_secs(60)).await?;
    Ok(parse(&out.stdout))
}
