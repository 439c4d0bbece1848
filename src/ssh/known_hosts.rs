//! Host trust on the SSH side (docs/reliability.md, "Host trust"): the environment's
//! known_hosts file (pins from the inventory, deliberate re-keys), the ssh_config a
//! connection through a bastion uses so that the jump pins and verifies its key too,
//! and the read-only checks that tell a changed key from an unreachable host.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use super::SshError;
use crate::recipe::Host;

/// How known_hosts names `host` (`address`, or `[address]:port` off port 22).
pub(super) fn name(host: &Host) -> String {
    entry_name(&host.address, host.port)
}

/// How known_hosts names a host at `address` and `port`.
pub fn entry_name(address: &str, port: u16) -> String {
    if port == 22 {
        address.to_string()
    } else {
        format!("[{address}]:{port}")
    }
}

/// Make the known_hosts file ready for a connection to `host`: its directory exists,
/// the old key is dropped when `replace` (a deliberate re-key), and a key pinned in
/// the inventory is present.
pub(super) async fn prepare(path: &Path, host: &Host, replace: bool) -> Result<(), SshError> {
    let kh_err = |detail: String| SshError::KnownHosts {
        path: path.to_path_buf(),
        detail,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| kh_err(e.to_string()))?;
    }
    let name = name(host);
    if replace && path.exists() {
        forget(path, host).await?;
    }
    if let Some(pin) = &host.host_key {
        // Re-checked here too: a pin is written into a file every later connection
        // trusts, so it must be one parsed key (docs/reliability.md, "Input validation").
        let pin = crate::recipe::validators::normalize_host_key(pin)
            .map_err(|why| kh_err(format!("the host_key pinned for `{}`: {why}", host.name)))?;
        let line = format!("{name} {pin}\n");
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if !current.lines().any(|l| l.trim() == line.trim()) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| kh_err(e.to_string()))?;
            use std::io::Write;
            f.write_all(line.as_bytes())
                .map_err(|e| kh_err(e.to_string()))?;
        }
    }
    Ok(())
}

/// Drop every key known_hosts at `path` holds for `host` (`ssh-keygen -R`).
pub(super) async fn forget(path: &Path, host: &Host) -> Result<(), SshError> {
    let kh_err = |detail: String| SshError::KnownHosts {
        path: path.to_path_buf(),
        detail,
    };
    let out = tokio::process::Command::new("ssh-keygen")
        .arg("-R")
        .arg(name(host))
        .arg("-f")
        .arg(path)
        .output()
        .await
        .map_err(|e| kh_err(format!("ssh-keygen -R: {e}")))?;
    if !out.status.success() {
        return Err(kh_err(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    let _ = std::fs::remove_file(path.with_extension("known_hosts.old"));
    Ok(())
}

/// The ssh_config for a connection through a bastion (one per host and run, in the
/// run's private control directory `dir`): every ssh started for it, the jump included,
/// pins host keys in the environment's `known_hosts` (`accept-new`) and refuses a
/// changed one; the jump authenticates with the host's key file; the user's
/// ~/.ssh/config follows for everything else. The system-wide /etc/ssh/ssh_config
/// is not read (`-F` replaces it).
pub(super) fn jump_config(
    dir: &Path,
    known_hosts: &Path,
    host: &Host,
    bastion: &str,
) -> Result<PathBuf, SshError> {
    let path = dir.join(format!("{}.ssh_config", host.name));
    let err = |detail: String| SshError::KnownHosts {
        path: path.clone(),
        detail,
    };
    // ssh_config values: double-quoted, %-tokens expanded (so `%` doubled).
    let word = |p: &Path| {
        p.to_str()
            .filter(|t| !t.contains(['"', '\n', '\r']))
            .map(|t| format!("\"{}\"", t.replace('%', "%%")))
            .ok_or_else(|| {
                err(format!(
                    "{} cannot be written into an ssh_config",
                    p.display()
                ))
            })
    };
    let mut text = String::from(
        "# Written by continuum: ssh through a bastion checks every host key, the bastion's\n\
         # included, against the environment's known_hosts (docs/reliability.md, \"Host trust\").\n",
    );
    if let Some(k) = &host.key {
        // The bastion's address as validated at load (`[user@]host[:port]`).
        let (name, _) = jump_host_port(bastion);
        text.push_str(&format!("Host {name}\n  IdentityFile {}\n", word(k)?));
    }
    text.push_str(&format!(
        "Host *\n  UserKnownHostsFile {}\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  Include ~/.ssh/config\n",
        word(known_hosts)?
    ));
    std::fs::write(&path, text).map_err(|e| err(e.to_string()))?;
    Ok(path)
}

/// Whether the bastion now offers keys none of which is the one pinned for it
/// (`ssh-keyscan`, read-only, straight to the bastion as the jump reaches it).
/// Returns its known_hosts name when it changed; `None` when nothing is pinned yet,
/// the bastion does not answer, or a pinned key is still offered.
pub(super) async fn bastion_key_changed(known_hosts: &Path, bastion: &str) -> Option<String> {
    let name = jump_known_hosts_name(bastion);
    let keys = |text: &str| -> BTreeSet<(String, String)> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut w = l.split_whitespace().skip(1);
                Some((w.next()?.to_string(), w.next()?.to_string()))
            })
            .collect()
    };
    let pinned = tokio::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(&name)
        .arg("-f")
        .arg(known_hosts)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let pinned = keys(&String::from_utf8_lossy(&pinned.stdout));
    if pinned.is_empty() {
        return None;
    }
    let (h, port) = jump_host_port(bastion);
    let scan = tokio::process::Command::new("ssh-keyscan")
        .args(["-T", "5", "-p", port.unwrap_or("22"), "--", h])
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    let offered = keys(&String::from_utf8_lossy(&scan.stdout));
    let same_type = offered
        .iter()
        .any(|(t, _)| pinned.iter().any(|(p, _)| p == t));
    (same_type && offered.is_disjoint(&pinned)).then_some(name)
}

/// The SHA256 fingerprint of the key pinned for `host`, if any.
pub(super) async fn pinned_fingerprint(known_hosts: &Path, host: &Host) -> Option<String> {
    let out = tokio::process::Command::new("ssh-keygen")
        .arg("-l")
        .arg("-F")
        .arg(name(host))
        .arg("-f")
        .arg(known_hosts)
        .stderr(Stdio::null())
        .output()
        .await
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .map(str::to_string)
}

/// The host and port of a bastion given as `[user@]host[:port]` (validated at load;
/// an IPv6 host in brackets).
fn jump_host_port(spec: &str) -> (&str, Option<&str>) {
    let hp = spec.rsplit_once('@').map_or(spec, |(_, h)| h);
    if let Some(rest) = hp.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => (rest, None),
        }
    } else {
        match hp.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hp, None),
        }
    }
}

/// How known_hosts names a bastion given as `[user@]host[:port]`.
fn jump_known_hosts_name(spec: &str) -> String {
    let (h, port) = jump_host_port(spec);
    match port {
        Some(p) if p != "22" => format!("[{h}]:{p}"),
        _ => h.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bastions_are_named_as_known_hosts_names_them() {
        assert_eq!(
            jump_known_hosts_name("ops@10.250.0.71:2222"),
            "[10.250.0.71]:2222"
        );
        assert_eq!(jump_known_hosts_name("gw.example.org"), "gw.example.org");
        assert_eq!(jump_known_hosts_name("root@10.0.0.1:22"), "10.0.0.1");
        assert_eq!(jump_known_hosts_name("[fd00::1]:2200"), "[fd00::1]:2200");
    }
}
