//! Raspberry Pi and NVIDIA Jetson preparation (docs/k3s.md, "Devices and sizing"):
//! the device-derived k3s config keys and labels, the idempotent
//! cmdline.txt edit, reboot + reconnect, and the checks that must hold before and
//! after k3s starts. Every remote step reads first and changes only what differs.
//!
//! Invariant: a Pi is only declared ready when the memory controller is VERIFIED on
//! after the reboot (Pi kernel 6.12 ignores `cgroup_memory=1`; the firmware injects
//! `cgroup_disable=memory` and only a later `cgroup_enable=memory` wins); a Jetson only
//! gets k3s when nvidia-container-runtime is already installed (k3s looks for it at
//! start).

use std::time::Duration;

pub use crate::graph::device::{config_keys, label_value, labels};
use crate::recipe::device::{Device, Facts};
use crate::ssh::{Remote, SshError, quote};

/// The tokens continuum makes sure are on the Pi kernel command line.
pub const CMDLINE_TOKENS: [&str; 3] = [
    "cgroup_memory=1",
    "cgroup_enable=memory",
    "cgroup_enable=cpuset",
];
pub const CONTAINERD_CONFIG: &str = "/var/lib/rancher/k3s/agent/etc/containerd/config.toml";
/// How long a rebooting device may take to answer SSH again.
pub const REBOOT_TIMEOUT: Duration = Duration::from_secs(300);
const SHORT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Ssh(#[from] SshError),
    #[error(
        "`{host}` looks like a Raspberry Pi but has neither /boot/firmware/cmdline.txt nor /boot/cmdline.txt; enable the memory cgroup by hand (append `cgroup_memory=1 cgroup_enable=memory` to the kernel command line)"
    )]
    NoCmdline { host: String },
    #[error("{step} failed on `{host}`: {detail}")]
    Step {
        host: String,
        step: String,
        detail: String,
    },
    #[error("`{host}` did not come back within {secs} s after the reboot: {detail}")]
    RebootTimeout {
        host: String,
        secs: u64,
        detail: String,
    },
    #[error(
        "the memory cgroup controller is still OFF on `{host}` after editing {file} and rebooting \
         (kernel command line now: `{cmdline}`; controllers: `{controllers}`). Since Pi kernel 6.12 the \
         firmware adds `cgroup_disable=memory` and ignores `cgroup_memory=1`; only a LATER \
         `cgroup_enable=memory` turns it back on. Make sure the firmware boots with {file} (check for a \
         `cmdline=` line in config.txt next to it) and that the single line it reads ends with \
         `cgroup_enable=memory`; k3s was not installed on this host"
    )]
    MemoryCgroupOff {
        host: String,
        file: String,
        cmdline: String,
        controllers: String,
    },
    #[error(
        "`{host}` is an NVIDIA Jetson ({model}) without the NVIDIA container toolkit: k3s only adds the \
         nvidia runtime when it finds nvidia-container-runtime (in /usr/bin or /usr/local/nvidia/toolkit) \
         at start. Install it first (`sudo apt-get install nvidia-container-toolkit` on JetPack), then run \
         `up` again; k3s was not installed on this host"
    )]
    NoToolkit { host: String, model: String },
    #[error(
        "k3s on `{host}` started without the nvidia runtime: {CONTAINERD_CONFIG} does not list it \
         (was nvidia-container-runtime installed after k3s started? restart k3s-agent)"
    )]
    RuntimeMissing { host: String },
}

/// The edited first line of cmdline.txt, or `None` when it already has every token
/// after the last `cgroup_disable=memory` (which is removed).
pub fn edit_cmdline(text: &str) -> Option<String> {
    let first = text.lines().next().unwrap_or("");
    let mut words: Vec<&str> = first
        .split_whitespace()
        .filter(|w| *w != "cgroup_disable=memory")
        .collect();
    let removed = words.len() != first.split_whitespace().count();
    let mut added = false;
    for t in CMDLINE_TOKENS {
        if !words.contains(&t) {
            words.push(t);
            added = true;
        }
    }
    if !added && !removed {
        return None;
    }
    // cmdline.txt is a single line: anything after the first line is ignored by the
    // firmware and dropped here.
    Some(format!("{}\n", words.join(" ")))
}

async fn root_step<R: Remote>(
    r: &R,
    step: &str,
    script: &str,
    stdin: Option<&[u8]>,
) -> Result<String, DeviceError> {
    let out = r.run(script, stdin, true, SHORT).await?;
    if out.success() {
        Ok(out.stdout)
    } else {
        Err(DeviceError::Step {
            host: r.name().to_string(),
            step: step.to_string(),
            detail: out.tail(),
        })
    }
}

/// Make sure the cmdline.txt the probe found has the cgroup tokens. Returns whether
/// the file changed (a backup `cmdline.txt.continuum-orig` is kept once).
pub async fn enable_memory_cgroup<R: Remote>(r: &R, f: &Facts) -> Result<bool, DeviceError> {
    let file = f
        .cmdline_file
        .clone()
        .ok_or_else(|| DeviceError::NoCmdline {
            host: r.name().to_string(),
        })?;
    let current = root_step(
        r,
        "reading cmdline.txt",
        &format!("cat {}", quote(&file)),
        None,
    )
    .await?;
    let Some(new) = edit_cmdline(&current) else {
        return Ok(false);
    };
    let script = format!(
        "set -e; f={f}; [ -e \"$f.continuum-orig\" ] || cp \"$f\" \"$f.continuum-orig\"; cat > \"$f.continuum-tmp\"; mv -f \"$f.continuum-tmp\" \"$f\"; sync",
        f = quote(&file)
    );
    root_step(r, "editing cmdline.txt", &script, Some(new.as_bytes())).await?;
    Ok(true)
}

/// Ask the host to reboot in a second (so this SSH command returns first).
pub async fn schedule_reboot<R: Remote>(r: &R) -> Result<(), DeviceError> {
    root_step(
        r,
        "rebooting",
        "nohup sh -c 'sleep 1; if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then systemctl reboot; else reboot; fi' >/dev/null 2>&1 </dev/null &",
        None,
    )
    .await?;
    Ok(())
}

/// Wait until `r` stops answering (the reboot took it down); `false` on timeout.
pub async fn wait_down<R: Remote>(r: &R, timeout: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < timeout {
        match r.run("true", None, false, Duration::from_secs(5)).await {
            Ok(o) if o.success() => tokio::time::sleep(Duration::from_millis(500)).await,
            _ => return true,
        }
    }
    false
}

/// The error for a Pi whose memory controller is still off after the reboot.
pub async fn memory_still_off<R: Remote>(r: &R, f: &Facts) -> DeviceError {
    let cmdline = r
        .run("cat /proc/cmdline", None, false, SHORT)
        .await
        .map(|o| o.stdout.trim().to_string())
        .unwrap_or_default();
    DeviceError::MemoryCgroupOff {
        host: r.name().to_string(),
        file: f
            .cmdline_file
            .clone()
            .unwrap_or_else(|| "cmdline.txt".into()),
        cmdline,
        controllers: f.cgroup_controllers.join(" "),
    }
}

/// A Jetson needs the toolkit BEFORE k3s starts.
pub fn check_toolkit(host: &str, f: &Facts) -> Result<(), DeviceError> {
    if f.nvidia_runtime.is_some() {
        return Ok(());
    }
    Err(DeviceError::NoToolkit {
        host: host.to_string(),
        model: f.model(),
    })
}

/// After k3s started: containerd's generated config must list the nvidia runtime.
pub async fn verify_containerd_nvidia<R: Remote>(r: &R) -> Result<(), DeviceError> {
    // On openrc the service start returns before k3s wrote the file: wait for it.
    let wait = crate::k3s::START_WAIT;
    let out = r
        .run(
            &crate::k3s::wait_then_cat(CONTAINERD_CONFIG),
            None,
            true,
            wait + SHORT,
        )
        .await?;
    if out.success() && lists_nvidia_runtime(&out.stdout) {
        Ok(())
    } else {
        Err(DeviceError::RuntimeMissing {
            host: r.name().to_string(),
        })
    }
}

/// Whether a containerd config has a runtime section named `nvidia`: k3s writes
/// `runtimes."nvidia"` (config version 2) or `runtimes.'nvidia'` (version 3, containerd
/// 2.0) when it finds nvidia-container-runtime at start (docs/k3s.md, "NVIDIA
/// runtime"). Any other line mentioning nvidia (a comment, a path) does not count.
pub fn lists_nvidia_runtime(config: &str) -> bool {
    config.lines().map(str::trim).any(|l| {
        l.starts_with('[')
            && (l.ends_with(r#"runtimes."nvidia"]"#) || l.ends_with("runtimes.'nvidia']"))
    })
}

/// The drain a node deletion starts with (for `plan -v`).
pub const DRAIN_DESCRIPTION: &str = "(servers: etcd quorum check) k3s kubectl drain NODE --ignore-daemonsets --delete-emptydir-data --timeout=120s (on the first server)";

/// The remote commands of a device step (for `plan -v`): the GPU runtime check when
/// `gpu_runtime`, else the preparation of `device`.
pub fn describe(gpu_runtime: bool, device: Option<Device>) -> Vec<String> {
    let probe = "probe (read-only): uname -m, /proc/device-tree/model, /sys/fs/cgroup/cgroup.controllers, /etc/nv_tegra_release, nvidia-container-runtime".to_string();
    if gpu_runtime {
        return vec![
            format!("cat {CONTAINERD_CONFIG} (as root): a runtimes.\"nvidia\" section"),
            "k3s kubectl get runtimeclass nvidia; if NotFound: k3s kubectl create -f - (on the first server)".into(),
        ];
    }
    match device {
        Some(Device::RaspberryPi) => vec![
            probe,
            format!(
                "if the memory cgroup is off: append `{}` to the line of /boot/firmware/cmdline.txt or /boot/cmdline.txt (backup .continuum-orig)",
                CMDLINE_TOKENS.join(" ")
            ),
            format!(
                "reboot; reconnect (up to {} s); verify `memory` in the enabled cgroup controllers",
                REBOOT_TIMEOUT.as_secs()
            ),
        ],
        _ => vec![
            probe,
            "require nvidia-container-runtime (NVIDIA container toolkit) before k3s".into(),
        ],
    }
}

const RUNTIME_CLASS: &str = r#"{"apiVersion":"node.k8s.io/v1","kind":"RuntimeClass","metadata":{"name":"nvidia","labels":{"app.kubernetes.io/managed-by":"continuum"}},"handler":"nvidia"}"#;

/// Create RuntimeClass `nvidia` through a server when k3s did not. Returns whether it
/// was created.
pub async fn ensure_runtime_class<R: Remote>(server: &R) -> Result<bool, DeviceError> {
    let get = server
        .run(
            &format!(
                "{} kubectl get runtimeclass nvidia -o json",
                super::BIN_PATH
            ),
            None,
            true,
            SHORT,
        )
        .await?;
    if get.success() {
        return Ok(false);
    }
    if !get.stderr.contains("NotFound") {
        return Err(DeviceError::Step {
            host: server.name().to_string(),
            step: "reading RuntimeClass nvidia".into(),
            detail: get.tail(),
        });
    }
    root_step(
        server,
        "creating RuntimeClass nvidia",
        &format!("{} kubectl create -f -", super::BIN_PATH),
        Some(RUNTIME_CLASS.as_bytes()),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn nvidia_runtime_is_a_section_not_any_mention() {
        let v2 = "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"nvidia\"]\n  runtime_type = \"io.containerd.runc.v2\"\n";
        let v3 = "[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.'nvidia']\n";
        assert!(lists_nvidia_runtime(v2));
        assert!(lists_nvidia_runtime(v3));
        assert!(!lists_nvidia_runtime(
            "# nvidia-container-runtime not found\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n"
        ));
        assert!(!lists_nvidia_runtime(
            "[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.\"nvidia\".options]\n"
        ));
    }
    use crate::probe::parse;

    #[test]
    fn cmdline_edit_is_idempotent_and_single_line() {
        let once = edit_cmdline(
            "console=serial0,115200 root=PARTUUID=1 rootwait cgroup_disable=memory\nsecond line\n",
        )
        .expect("changes");
        assert_eq!(
            once,
            "console=serial0,115200 root=PARTUUID=1 rootwait cgroup_memory=1 cgroup_enable=memory cgroup_enable=cpuset\n"
        );
        assert_eq!(edit_cmdline(&once), None);
    }

    #[test]
    fn jetson_labels_and_runtime() {
        let f = parse(
            "arch=aarch64\nmodel=NVIDIA Jetson Orin Nano Developer Kit\ntegra=# R36 (release), REVISION: 3.0, GCID: 1\nnvidia=/usr/bin/nvidia-container-runtime\n",
        );
        let l = labels(&f);
        assert_eq!(l["nvidia.com/gpu.present"], "true");
        assert_eq!(
            l["continuum.io/model"],
            "NVIDIA-Jetson-Orin-Nano-Developer-Kit"
        );
        assert_eq!(l["continuum.io/l4t-release"], "36.3.0");
        let mut m = BTreeMap::new();
        config_keys(&f, true, &mut m);
        assert_eq!(m["default-runtime"], json!("nvidia"));
        assert!(check_toolkit("j", &f).is_ok());
        let mut nf = f.clone();
        nf.nvidia_runtime = None;
        assert!(
            check_toolkit("j", &nf)
                .expect_err("missing")
                .to_string()
                .contains("nvidia-container-toolkit")
        );
    }

    #[test]
    fn label_values_are_valid() {
        assert_eq!(
            label_value("Raspberry Pi 4 Model B Rev 1.4"),
            "Raspberry-Pi-4-Model-B-Rev-1.4"
        );
        assert_eq!(label_value(" (x) "), "x");
        assert!(label_value(&"a".repeat(80)).len() <= 63);
    }
}
