//! Install and upgrade of k3s on a node (docs/k3s.md, "Install script", "Restart
//! rule", "Air-gap images", "Binary directory"): uploads of what differs (air-gap
//! images before the binary, the binary, install.sh), config.yaml from stdin, and the
//! install script, with a forced restart of an existing unit that is not converged.
//!
//! The cluster token reaches the host only inside config.yaml (0600), written from
//! stdin; it is never in a command line, environment variable or log.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::bundle::{self, Bundle};
use super::facts::Facts;
use super::{
    CONFIG_PATH, DEFAULT_BIN_DIR, IMAGES_DIR, INSTALL_TIMEOUT, K3sError, OPT_BIN_DIR, SHORT,
    WORK_DIR, run_root, sha256_hex,
};
use crate::recipe::{Images, Install, Role};
use crate::ssh::{Remote, quote};

/// Render config.yaml for a node (`render::k3s::config`); `secrets` (`token`, and on
/// servers `agent-token`) are the only secrets in it.
pub fn render_config(
    env: &str,
    node: &str,
    role: Role,
    attrs: &BTreeMap<String, Value>,
    secrets: &[(&str, &str)],
) -> Result<String, K3sError> {
    crate::render::k3s::config(env, node, role, attrs, secrets).map_err(|e| K3sError::Render {
        host: e.node,
        detail: e.detail,
    })
}

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

/// Write config.yaml (0600, from stdin: it holds the token).
async fn write_config<R: Remote>(r: &R, config: &str) -> Result<(), K3sError> {
    run_root(
        r,
        &format!("writing {CONFIG_PATH}"),
        &write_file_script(CONFIG_PATH, "0600"),
        Some(config.as_bytes()),
        SHORT,
    )
    .await?;
    Ok(())
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
        Install::Bundle { dir, images } => Some(bundle::read(&host, dir, *images, &facts.arch)?),
        Install::Online { .. } => None,
    };
    let binary_matches = match &bundle {
        Some(b) => facts.binary_sha.as_deref() == Some(sha256_hex(&b.binary).as_str()),
        None => true,
    };
    let images_match = match &bundle {
        Some(Bundle {
            images: Some((name, data)),
            ..
        }) => facts.images.get(name).map(String::as_str) == Some(sha256_hex(data).as_str()),
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
        write_config(r, &spec.config).await?;
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
    if let Some(Bundle {
        binary,
        script,
        images,
    }) = &bundle
    {
        if let (Some((name, data)), false) = (images, images_match) {
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
                Some(binary),
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
        write_config(r, &spec.config).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s::ServiceManager;
    use crate::ssh::scripted::{Scripted, exit, ok};

    const MARKER: &str = "K10feedface::server:marker-secret-4711";
    const VERSION: &str = "v1.31.4+k3s1";

    /// A bundle directory with an amd64 binary, install.sh and air-gap images.
    fn bundle_dir() -> (tempfile::TempDir, Install) {
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
        (dir, install)
    }

    fn spec<'a>(install: &'a Install, role: Role) -> NodeSpec<'a> {
        NodeSpec {
            role,
            version: VERSION,
            install,
            config: format!("server: https://10.0.0.1:6443\ntoken: {MARKER}\n"),
            live_keys_only: false,
        }
    }

    /// An agent on which everything of `spec` is in place.
    fn converged(spec: &NodeSpec<'_>) -> Facts {
        Facts {
            arch: "amd64".into(),
            service_manager: Some(ServiceManager::Systemd),
            config_sha: Some(sha256_hex(spec.config.as_bytes())),
            version: Some(VERSION.into()),
            binary_sha: Some(sha256_hex(b"binary")),
            script_sha: Some(sha256_hex(b"#!/bin/sh\n")),
            images: [(
                "k3s-airgap-images-amd64.tar.zst".to_string(),
                sha256_hex(b"images"),
            )]
            .into(),
            units: [(unit_of(spec.role).to_string(), true)].into(),
            bin_dir: Some(DEFAULT_BIN_DIR.into()),
            ..Facts::default()
        }
    }

    /// Whether `scripts` contain each of `parts` in this order, one per script.
    fn in_order(scripts: &[String], parts: &[&str]) {
        assert_eq!(scripts.len(), parts.len(), "{scripts:#?}");
        for (s, p) in scripts.iter().zip(parts) {
            assert!(s.contains(p), "expected `{p}` in `{s}`");
        }
    }

    #[tokio::test]
    async fn the_token_travels_only_on_stdin_into_a_0600_config() {
        // Every command of a whole fresh install is recorded, not `install_command`
        // alone (which never sees the config).
        let (_dir, install) = bundle_dir();
        let spec = spec(&install, Role::Agent);
        let facts = Facts {
            arch: "amd64".into(),
            service_manager: Some(ServiceManager::Systemd),
            ..Facts::default()
        };
        let host = Scripted::new("rec")
            .on("k3s --version", ok("k3s version v1.31.4+k3s1 (scripted)\n"))
            .on_fn(|_| true, ok(""));
        let applied = apply_node(&host, &spec, &facts).await.expect("applied");
        assert_eq!(applied, Applied::Changed);
        in_order(
            &host.scripts(),
            &[
                "mkdir -p /etc/rancher/k3s",
                "/var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst",
                "/usr/local/bin/k3s.continuum-tmp",
                "/var/lib/continuum/install.sh.continuum-tmp",
                "/usr/local/bin/k3s --version",
                CONFIG_PATH,
                "sh /var/lib/continuum/install.sh",
            ],
        );
        assert!(host.calls().iter().all(|c| c.root));
        assert!(host.scripts().iter().all(|s| !s.contains("marker-secret")));
        let carrying = host.sent_stdin_containing("marker-secret");
        assert_eq!(carrying.len(), 1, "{carrying:?}");
        let s = &carrying[0].script;
        assert!(
            s.contains("umask 077") && s.contains("chmod 0600") && s.contains(CONFIG_PATH),
            "{s}"
        );
        let install_cmd = host.scripts().pop().unwrap_or_default();
        assert!(install_cmd.contains("INSTALL_K3S_SKIP_DOWNLOAD=true"));
        assert!(install_cmd.contains("INSTALL_K3S_EXEC=agent"));
        assert!(
            !install_cmd.contains("INSTALL_K3S_FORCE_RESTART"),
            "{install_cmd}"
        );
    }

    #[tokio::test]
    async fn a_converged_node_is_left_alone() {
        let (_dir, install) = bundle_dir();
        for role in [Role::Agent, Role::Server] {
            let spec = spec(&install, role);
            // No rule: any command at all would be an error.
            let host = Scripted::new("n");
            let applied = apply_node(&host, &spec, &converged(&spec)).await;
            assert_eq!(applied.expect("applied"), Applied::Unchanged);
            assert!(host.calls().is_empty(), "{:?}", host.scripts());
        }
    }

    #[tokio::test]
    async fn an_upgrade_uploads_the_binary_and_forces_the_restart() {
        let (_dir, install) = bundle_dir();
        let spec = spec(&install, Role::Server);
        let facts = Facts {
            version: Some("v1.30.2+k3s1".into()),
            binary_sha: Some(sha256_hex(b"old binary")),
            ..converged(&spec)
        };
        let host = Scripted::new("srv-1")
            .on("mkdir -p /etc/rancher/k3s", ok(""))
            .on("/usr/local/bin/k3s.continuum-tmp", ok(""))
            .on(
                "/usr/local/bin/k3s --version",
                ok("k3s version v1.31.4+k3s1 (1)\n"),
            )
            .on("sh /var/lib/continuum/install.sh", ok(""));
        let applied = apply_node(&host, &spec, &facts).await.expect("applied");
        assert_eq!(applied, Applied::Changed);
        // install.sh, the images and config.yaml are as they were: not sent again.
        in_order(
            &host.scripts(),
            &[
                "mkdir -p",
                "mv -f \"$t\" /usr/local/bin/k3s",
                "k3s --version",
                "INSTALL_K3S_FORCE_RESTART=true",
            ],
        );
        let calls = host.calls();
        assert_eq!(calls[1].stdin.as_deref(), Some(&b"binary"[..]));
        assert!(calls[3].script.contains("INSTALL_K3S_VERSION=v1.31.4+k3s1"));
        assert!(calls[3].script.contains("INSTALL_K3S_EXEC=server"));
        assert!(host.sent_stdin_containing("marker-secret").is_empty());
        assert!(host.scripts().iter().all(|s| !s.contains("marker-secret")));
    }

    #[tokio::test]
    async fn a_binary_at_another_version_stops_before_the_install_script() {
        let (_dir, install) = bundle_dir();
        let spec = spec(&install, Role::Agent);
        let facts = Facts {
            binary_sha: None,
            ..converged(&spec)
        };
        let host = Scripted::new("agent-1")
            .on("k3s --version", ok("k3s version v1.29.0+k3s1 (x)\n"))
            .on("install.sh", exit(99, "must not run"))
            .on_fn(|_| true, ok(""));
        match apply_node(&host, &spec, &facts).await {
            Err(K3sError::VersionMismatch {
                host,
                found,
                wanted,
            }) => {
                assert_eq!(host, "agent-1");
                assert_eq!((found.as_str(), wanted.as_str()), ("v1.29.0+k3s1", VERSION));
            }
            other => panic!("{other:?}"),
        }
        assert!(
            host.scripts()
                .iter()
                .all(|s| !s.contains("sh /var/lib/continuum/install.sh"))
        );
    }

    #[tokio::test]
    async fn only_labels_changed_writes_the_config_without_a_restart() {
        let (_dir, install) = bundle_dir();
        let mut spec = spec(&install, Role::Agent);
        let facts = converged(&spec);
        spec.config.push_str("node-label: [\"zone=b\"]\n");
        spec.live_keys_only = true;
        let host = Scripted::new("agent-1").on(CONFIG_PATH, ok(""));
        assert_eq!(
            apply_node(&host, &spec, &facts).await.expect("applied"),
            Applied::Changed
        );
        let calls = host.calls();
        assert_eq!(calls.len(), 1, "{:?}", host.scripts());
        assert_eq!(calls[0].stdin_text(), spec.config);
        assert!(!calls[0].script.contains("marker-secret"));
    }

    #[tokio::test]
    async fn a_host_of_the_other_role_or_without_a_bundle_binary_is_refused_untouched() {
        let (dir, install) = bundle_dir();
        let spec_agent = spec(&install, Role::Agent);
        let server_there = Facts {
            units: [("k3s".to_string(), true)].into(),
            ..converged(&spec_agent)
        };
        let host = Scripted::new("n");
        let err = apply_node(&host, &spec_agent, &server_there).await;
        assert!(matches!(err, Err(K3sError::RoleConflict { other, .. }) if other == "k3s"));
        std::fs::remove_file(dir.path().join("k3s")).expect("remove");
        let err = apply_node(&host, &spec_agent, &converged(&spec_agent)).await;
        assert!(matches!(err, Err(K3sError::MissingBinary { file, .. }) if file == "k3s"));
        assert!(host.calls().is_empty());
    }
}
