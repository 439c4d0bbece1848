//! Removing k3s from a host (docs/k3s.md, "Files on a node"): the uninstall script of
//! either role and continuum's work directory, and what remains on a host continuum
//! forgot without contacting it.

use super::{DEFAULT_BIN_DIR, INSTALL_TIMEOUT, K3sError, OPT_BIN_DIR, WORK_DIR, run_root};
use crate::recipe::Role;
use crate::ssh::Remote;

/// Uninstall k3s (either role) and continuum's work files. Idempotent.
pub async fn uninstall<R: Remote>(r: &R) -> Result<(), K3sError> {
    let script = format!(
        "set -e\nfor d in {DEFAULT_BIN_DIR} {OPT_BIN_DIR}; do for s in \"$d/k3s-agent-uninstall.sh\" \"$d/k3s-uninstall.sh\"; do if [ -x \"$s\" ]; then \"$s\"; fi; done; done\nrm -rf {WORK_DIR}"
    );
    run_root(r, "uninstalling k3s", &script, None, INSTALL_TIMEOUT).await?;
    Ok(())
}

/// What may remain on a host continuum forgot without contacting it (`--forget`):
/// what the k3s install script and continuum put there (docs/k3s.md,
/// "Files on a node"), and how to wipe it once the device is back.
pub fn leftovers(role: Option<Role>) -> String {
    let (unit, script) = match role {
        Some(Role::Server) => ("k3s", "k3s-uninstall.sh"),
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
    use std::path::Path;

    use super::*;
    use crate::ssh::scripted::{Scripted, exit, ok};

    /// Run the uninstall script `uninstall` sends, with the host's directories moved
    /// under `root`, on a host that has `scripts` (file names under `root/usr/local/bin`
    /// or `root/opt/bin`); returns which ran, in order.
    fn run_on(root: &Path, scripts: &[&str], sent: &str) -> Vec<String> {
        let log = root.join("ran");
        for s in scripts {
            let p = root.join(s.trim_start_matches('/'));
            std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
            std::fs::write(&p, format!("#!/bin/sh\necho {s} >> {}\n", log.display()))
                .expect("script");
            std::process::Command::new("chmod")
                .arg("+x")
                .arg(&p)
                .status()
                .expect("chmod");
        }
        std::fs::create_dir_all(root.join("var/lib/continuum")).expect("work dir");
        let at = |d: &str| root.join(d.trim_start_matches('/')).display().to_string();
        let script = sent
            .replace(DEFAULT_BIN_DIR, &at(DEFAULT_BIN_DIR))
            .replace(OPT_BIN_DIR, &at(OPT_BIN_DIR))
            .replace(WORK_DIR, &at(WORK_DIR));
        let st = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .status()
            .expect("sh");
        assert!(st.success(), "{script}");
        assert!(!root.join("var/lib/continuum").exists());
        let ran = std::fs::read_to_string(&log).unwrap_or_default();
        ran.lines().map(str::to_string).collect()
    }

    #[tokio::test]
    async fn an_agent_and_a_server_are_uninstalled_by_their_own_script() {
        let host = Scripted::new("n").on("uninstall.sh", ok(""));
        uninstall(&host).await.expect("uninstall");
        let calls = host.calls();
        assert_eq!(calls.len(), 1);
        assert!(calls[0].root && calls[0].stdin.is_none());
        let sent = &calls[0].script;
        let agent = tempfile::tempdir().expect("agent");
        let ran = run_on(agent.path(), &["/opt/bin/k3s-agent-uninstall.sh"], sent);
        assert_eq!(ran, ["/opt/bin/k3s-agent-uninstall.sh"]);
        let server = tempfile::tempdir().expect("server");
        let ran = run_on(server.path(), &["/usr/local/bin/k3s-uninstall.sh"], sent);
        assert_eq!(ran, ["/usr/local/bin/k3s-uninstall.sh"]);
        // Nothing installed (again): still a success.
        let none = tempfile::tempdir().expect("none");
        assert!(run_on(none.path(), &[], sent).is_empty());
    }

    #[tokio::test]
    async fn a_failed_uninstall_names_the_host() {
        let host = Scripted::new("pi-7").on("uninstall.sh", exit(1, "umount: target is busy"));
        match uninstall(&host).await {
            Err(K3sError::Step {
                host, step, tail, ..
            }) => {
                assert_eq!((host.as_str(), step.as_str()), ("pi-7", "uninstalling k3s"));
                assert!(tail.contains("busy"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn leftovers_name_the_role_s_unit_and_script() {
        let server = leftovers(Some(Role::Server));
        assert!(
            server.contains("/etc/systemd/system/k3s.service"),
            "{server}"
        );
        assert!(
            server.contains("sudo /usr/local/bin/k3s-uninstall.sh"),
            "{server}"
        );
        for agent in [leftovers(Some(Role::Agent)), leftovers(None)] {
            assert!(
                agent.contains("/etc/systemd/system/k3s-agent.service"),
                "{agent}"
            );
            assert!(
                agent.contains("sudo /usr/local/bin/k3s-agent-uninstall.sh"),
                "{agent}"
            );
            assert!(agent.contains(WORK_DIR) && agent.contains("/etc/rancher/node"));
        }
    }
}
