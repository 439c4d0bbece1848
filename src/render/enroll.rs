//! The first-boot files of an enrolment pool (`continuum enroll bundle`,
//! docs/enrolment.md): the agent's config.yaml with the pool's token and labels, the
//! POSIX first-boot script, its systemd unit, cloud-init user-data that installs both,
//! the Raspberry Pi kernel command-line addition and the bundle's README. Pure
//! functions of a `PoolSpec`; writing them (0700 directory, 0600 files) and copying the
//! k3s artifacts beside them is `ops::enroll`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Where the bundle lives on a device: the unit and user-data run the script there,
/// and the script takes the k3s artifacts from its own directory.
pub const DEVICE_DIR: &str = "/opt/continuum-enroll";
/// The script's own state on a device; `enrolled` in it is the done-marker.
pub const STATE_DIR: &str = "/var/lib/continuum-enroll";
pub const DONE_MARKER: &str = "/var/lib/continuum-enroll/enrolled";
pub const SCRIPT: &str = "continuum-enroll.sh";
pub const UNIT: &str = "continuum-enroll.service";
/// Kernel command-line words k3s needs on a Raspberry Pi (docs/k3s.md, "Devices and
/// sizing"; the same words `k3s::device` adds over SSH).
pub const PI_CMDLINE: &str = "cgroup_memory=1 cgroup_enable=memory cgroup_enable=cpuset";

/// How a pool's devices get k3s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolInstall {
    /// The bundle's own files: the k3s binary of `arch`, install.sh and, when
    /// `images` names it, the air-gap images tarball.
    Bundle {
        arch: String,
        images: Option<String>,
    },
    /// get.k3s.io (or the recipe's script URL), version pinned.
    Online { script_url: String },
}

/// Everything the first-boot files say.
#[derive(Debug, Clone)]
pub struct PoolSpec<'a> {
    pub env: &'a str,
    pub pool: &'a str,
    /// `https://ADDRESS:6443` of the first server.
    pub server_url: &'a str,
    /// `K10<ca hash>::<id>.<secret>` (a secret).
    pub token: &'a str,
    pub labels: &'a BTreeMap<String, String>,
    pub version: &'a str,
    pub install: PoolInstall,
    /// Human text of the token's expiry, for the README.
    pub expires: &'a str,
}

/// One file of the bundle: its name in the bundle directory and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BundleFile {
    pub name: &'static str,
    pub text: String,
}

/// A YAML scalar that stays a string whatever it holds (a JSON string is valid YAML).
fn yq(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A POSIX shell single-quoted word.
fn sq(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The agent's /etc/rancher/k3s/config.yaml: the server (what K3S_URL would say), the
/// pool's token and one `node-label` per label (docs/k3s-config.md).
pub fn config_yaml(spec: &PoolSpec<'_>) -> String {
    let mut s = format!(
        "# k3s agent of pool {pool} in {env} (continuum enroll; docs/enrolment.md)\nserver: {url}\ntoken: {token}\n",
        pool = spec.pool,
        env = spec.env,
        url = yq(spec.server_url),
        token = yq(spec.token),
    );
    if !spec.labels.is_empty() {
        s.push_str("node-label:\n");
        for (k, v) in spec.labels {
            let _ = writeln!(s, "  - {}", yq(&format!("{k}={v}")));
        }
    }
    s
}

/// In a bundle for 32-bit ARM: a 64-bit ARM kernel runs 32-bit ARM programs, and
/// 32-bit Raspberry Pi OS runs on one on a Pi 5 (and a Pi 4 with `arm_64bit=1`), where
/// `uname -m` says aarch64.
const ARM_ON_ARM64: &str = "if [ \"$have\" = arm64 ]; then have=arm; bin=k3s-armhf; fi\n";

/// The install part of the script, per install mode.
fn install_block(spec: &PoolSpec<'_>) -> String {
    let version = sq(spec.version);
    match &spec.install {
        PoolInstall::Bundle { arch, images } => {
            let images = images.as_deref().map_or_else(String::new, |f| {
                format!(
                    "mkdir -p /var/lib/rancher/k3s/agent/images\n\
                     cp \"$DIR\"/{f} /var/lib/rancher/k3s/agent/images/\n",
                    f = sq(f)
                )
            });
            format!(
                r#"# k3s from this bundle (air-gap install: docs/k3s.md, "Air-gap images").
case "$(uname -m)" in
  x86_64) have=amd64; bin=k3s ;;
  aarch64|arm64) have=arm64; bin=k3s-arm64 ;;
  armv7l|armv7*) have=arm; bin=k3s-armhf ;;
  *) fail "this machine is $(uname -m); k3s has no build for it" ;;
esac
{compat}[ "$have" = {arch} ] || fail "this bundle holds k3s for {arch}, but this machine is $have; make a bundle with --arch $have"
[ -f "$DIR/$bin" ] && [ -f "$DIR/install.sh" ] || fail "$DIR lacks $bin or install.sh: copy the whole bundle there"
BIN_DIR=/usr/local/bin
if ! ( mkdir -p "$BIN_DIR" && touch "$BIN_DIR/.continuum-w" && rm -f "$BIN_DIR/.continuum-w" ) 2>/dev/null; then
  BIN_DIR=/opt/bin
fi
mkdir -p "$BIN_DIR"
cp "$DIR/$bin" "$BIN_DIR/k3s.continuum-new"
chmod 755 "$BIN_DIR/k3s.continuum-new"
mv "$BIN_DIR/k3s.continuum-new" "$BIN_DIR/k3s"
{images}env INSTALL_K3S_SKIP_DOWNLOAD=true INSTALL_K3S_VERSION={version} INSTALL_K3S_EXEC=agent \
  INSTALL_K3S_BIN_DIR="$BIN_DIR" sh "$DIR/install.sh"
"#,
                arch = arch,
                compat = if arch == "arm" { ARM_ON_ARM64 } else { "" },
            )
        }
        PoolInstall::Online { script_url } => format!(
            r#"# k3s from the internet, version pinned (docs/k3s.md, "Install").
if command -v curl >/dev/null 2>&1; then
  curl -sfL {url} -o "$STATE/install.sh" || fail "cannot download {url}"
elif command -v wget >/dev/null 2>&1; then
  wget -qO "$STATE/install.sh" {url} || fail "cannot download {url}"
else
  fail "neither curl nor wget is installed"
fi
env INSTALL_K3S_VERSION={version} INSTALL_K3S_EXEC=agent sh "$STATE/install.sh"
"#,
            url = sq(script_url),
        ),
    }
}

/// The first-boot script (POSIX sh, run as root). Idempotent: it does nothing once the
/// done-marker exists. On a Raspberry Pi it adds the memory cgroup to cmdline.txt and,
/// when the running kernel has the memory controller off, reboots once; the unit runs
/// it again after the boot. Then it installs the agent config, installs k3s as an agent
/// (which starts it and waits until it registered) and writes the marker. The bundle's
/// copy of the token is removed once the device joined.
pub fn script(spec: &PoolSpec<'_>) -> String {
    format!(
        r#"#!/bin/sh
# continuum first-boot enrolment: pool {pool} of environment {env} (docs/enrolment.md).
# Generated by `continuum enroll bundle`; run as root. It does nothing once
# {done} exists.
set -eu
DIR=$(cd "$(dirname "$0")" && pwd)
STATE={state}
DONE={done}
fail() {{ echo "continuum-enroll: $*" >&2; exit 1; }}
[ "$(id -u)" = 0 ] || fail "run me as root"
if [ -e "$DONE" ]; then
  echo "continuum-enroll: already enrolled ($DONE); nothing to do"
  exit 0
fi
mkdir -p "$STATE"
chmod 700 "$STATE"
if [ -e /etc/systemd/system/k3s.service ] || [ -e /etc/init.d/k3s ]; then
  fail "this machine already runs a k3s server; it cannot also join pool {pool}"
fi

# Raspberry Pi: k3s needs the memory cgroup (docs/k3s.md, "Devices and sizing").
CMDLINE=
for f in /boot/firmware/cmdline.txt /boot/cmdline.txt; do
  if [ -f "$f" ]; then CMDLINE=$f; break; fi
done
if [ -n "$CMDLINE" ]; then
  line=$(head -n 1 "$CMDLINE")
  new=
  # Split into words, without expanding a `*` or `?` a kernel argument may hold.
  set -f
  for w in $line; do
    [ "$w" = cgroup_disable=memory ] || new="$new $w"
  done
  set +f
  for w in {pi}; do
    case " $new " in *" $w "*) ;; *) new="$new $w" ;; esac
  done
  new=${{new# }}
  if [ "$new" != "$line" ]; then
    [ -e "$CMDLINE.continuum-orig" ] || cp -p "$CMDLINE" "$CMDLINE.continuum-orig"
    printf '%s\n' "$new" > "$CMDLINE.continuum-new"
    mv "$CMDLINE.continuum-new" "$CMDLINE"
    echo "continuum-enroll: added the memory cgroup to $CMDLINE"
  fi
  # cgroup v2 (Bookworm): the root's controllers; v1: the enabled column of /proc/cgroups.
  if [ -f /sys/fs/cgroup/cgroup.controllers ]; then
    grep -qw memory /sys/fs/cgroup/cgroup.controllers && mem=on || mem=off
  else
    awk '$1 == "memory" && $4 == 1 {{ f = 1 }} END {{ exit !f }}' /proc/cgroups && mem=on || mem=off
  fi
  if [ "$mem" = off ]; then
    if [ -e "$STATE/rebooted" ]; then
      fail "the memory cgroup is still off after a reboot with $CMDLINE: $(cat /proc/cmdline)"
    fi
    touch "$STATE/rebooted"
    echo "continuum-enroll: rebooting once for the memory cgroup; enrolment continues after the boot"
    sync
    reboot
    exit 0
  fi
fi

# The agent's config: server, the pool's token (0600) and labels.
mkdir -p /etc/rancher/k3s
if [ -f "$DIR/config.yaml" ]; then
  ( umask 077 && cp "$DIR/config.yaml" /etc/rancher/k3s/config.yaml.continuum-new )
  chmod 600 /etc/rancher/k3s/config.yaml.continuum-new
  mv /etc/rancher/k3s/config.yaml.continuum-new /etc/rancher/k3s/config.yaml
elif [ ! -f /etc/rancher/k3s/config.yaml ]; then
  fail "$DIR/config.yaml is missing: copy the whole bundle there"
fi

{install}
# Joined: the token is not needed here any more.
rm -f "$DIR/config.yaml"
date -u +%Y-%m-%dT%H:%M:%SZ > "$DONE"
echo "continuum-enroll: joined pool {pool} of {env}"
"#,
        pool = spec.pool,
        env = spec.env,
        state = STATE_DIR,
        done = DONE_MARKER,
        pi = PI_CMDLINE,
        install = install_block(spec),
    )
}

/// The systemd unit for images without cloud-init: a oneshot after the network is up,
/// skipped once the done-marker exists.
pub fn unit(spec: &PoolSpec<'_>) -> String {
    format!(
        "[Unit]\n\
         Description=continuum enrolment into {env} (pool {pool})\n\
         Wants=network-online.target\n\
         After=network-online.target\n\
         ConditionPathExists=!{done}\n\
         \n\
         [Service]\n\
         Type=oneshot\n\
         ExecStart=/bin/sh {dir}/{script}\n\
         RemainAfterExit=yes\n\
         TimeoutStartSec=900\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        env = spec.env,
        pool = spec.pool,
        done = DONE_MARKER,
        dir = DEVICE_DIR,
        script = SCRIPT,
    )
}

fn indent(text: &str, by: usize) -> String {
    let pad = " ".repeat(by);
    text.lines()
        .map(|l| {
            if l.is_empty() {
                String::new()
            } else {
                format!("{pad}{l}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// cloud-init user-data: writes the script, the config and the unit, then enables and
/// starts the unit (so a Raspberry Pi's reboot for the memory cgroup resumes there).
/// In bundle mode the k3s artifacts must already be in `DEVICE_DIR` in the image.
pub fn user_data(spec: &PoolSpec<'_>) -> String {
    let file = |path: String, mode: &str, text: String| {
        format!(
            "  - path: {path}\n    owner: root:root\n    permissions: '{mode}'\n    content: |\n{}\n",
            indent(&text, 6)
        )
    };
    let mut s = format!(
        "#cloud-config\n# continuum enrolment: pool {pool} of {env} (docs/enrolment.md).\n\
         # It holds the pool's join token: keep it secret until the token expires.\nwrite_files:\n",
        pool = spec.pool,
        env = spec.env
    );
    s.push_str(&file(
        format!("{DEVICE_DIR}/{SCRIPT}"),
        "0700",
        script(spec),
    ));
    s.push_str(&file(
        format!("{DEVICE_DIR}/config.yaml"),
        "0600",
        config_yaml(spec),
    ));
    s.push_str(&file(
        format!("/etc/systemd/system/{UNIT}"),
        "0644",
        unit(spec),
    ));
    let _ = write!(
        s,
        "runcmd:\n  - [systemctl, daemon-reload]\n  - [systemctl, enable, {UNIT}]\n  - [systemctl, start, --no-block, {UNIT}]\n"
    );
    s
}

/// The words to append to the single line of a Raspberry Pi's cmdline.txt, for images
/// prepared by hand (the script adds them itself when it finds the file).
pub fn cmdline_append() -> String {
    format!("{PI_CMDLINE}\n")
}

/// The bundle's README: what each file is for and how to use it.
pub fn readme(spec: &PoolSpec<'_>) -> String {
    let mode = match &spec.install {
        PoolInstall::Bundle { arch, .. } => format!(
            "from this bundle's files (k3s {v} for {arch}); copy the WHOLE directory to {DEVICE_DIR}",
            v = spec.version
        ),
        PoolInstall::Online { .. } => format!(
            "online through the k3s install script (k3s {v}); the device needs internet access",
            v = spec.version
        ),
    };
    let labels = spec
        .labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "# Enrolment bundle: pool {pool} of {env}\n\n\
         SECRET until {expires}: config.yaml and user-data hold the pool's join token. Anyone with\n\
         them can join a machine to the cluster until the token expires or\n\
         `continuum enroll revoke {env} --pool {pool}` deletes it.\n\n\
         Devices join {url} with the labels {labels}.\n\
         k3s is installed {mode}.\n\n\
         - `user-data`: cloud-init. Writes the script, config.yaml and the unit, then starts the unit.\n\
         \x20 In bundle mode the k3s files (k3s binary, install.sh, air-gap images) must already be in\n\
         \x20 {DEVICE_DIR} in the image.\n\
         - `{SCRIPT}` + `{UNIT}`: for images without cloud-init. Copy this directory to\n\
         \x20 {DEVICE_DIR}, the unit to /etc/systemd/system/, and enable it\n\
         \x20 (`ln -s ../{UNIT} /etc/systemd/system/multi-user.target.wants/`).\n\
         \x20 The script is idempotent: it does nothing once {DONE_MARKER} exists.\n\
         - `cmdline.txt.append`: Raspberry Pi only, the words k3s needs at the end of the single line of\n\
         \x20 /boot/firmware/cmdline.txt (/boot/cmdline.txt before bookworm). The script adds them itself\n\
         \x20 and reboots once when the memory cgroup is off.\n",
        pool = spec.pool,
        env = spec.env,
        expires = spec.expires,
        url = spec.server_url,
    )
}

/// Every text file of the bundle, in the order they are written.
pub fn files(spec: &PoolSpec<'_>) -> Vec<BundleFile> {
    vec![
        BundleFile {
            name: "config.yaml",
            text: config_yaml(spec),
        },
        BundleFile {
            name: SCRIPT,
            text: script(spec),
        },
        BundleFile {
            name: UNIT,
            text: unit(spec),
        },
        BundleFile {
            name: "user-data",
            text: user_data(spec),
        },
        BundleFile {
            name: "cmdline.txt.append",
            text: cmdline_append(),
        },
        BundleFile {
            name: "README.md",
            text: readme(spec),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "K10aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa::abcdef.0123456789abcdef";

    fn labels() -> BTreeMap<String, String> {
        [("continuum.io/pool", "field"), ("site", "north")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn spec<'a>(labels: &'a BTreeMap<String, String>, install: PoolInstall) -> PoolSpec<'a> {
        PoolSpec {
            env: "farm",
            pool: "field",
            server_url: "https://10.0.0.1:6443",
            token: TOKEN,
            labels,
            version: "v1.31.4+k3s1",
            install,
            expires: "2026-12-02 14:00 UTC",
        }
    }

    fn bundle() -> PoolInstall {
        PoolInstall::Bundle {
            arch: "arm64".into(),
            images: Some("k3s-airgap-images-arm64.tar.zst".into()),
        }
    }

    #[test]
    fn bundle_files_snapshot() {
        let l = labels();
        let s = spec(&l, bundle());
        for f in files(&s) {
            insta::assert_snapshot!(format!("enroll_bundle_{}", f.name), f.text);
        }
    }

    #[test]
    fn online_script_snapshot() {
        let l = labels();
        let s = spec(
            &l,
            PoolInstall::Online {
                script_url: "https://get.k3s.io".into(),
            },
        );
        insta::assert_snapshot!("enroll_online_script", script(&s));
    }

    #[test]
    fn config_carries_server_token_and_every_label_quoted() {
        let l = labels();
        let c = config_yaml(&spec(&l, bundle()));
        let v: serde_json::Value = serde_saphyr::from_str(&c).expect("config.yaml is YAML");
        assert_eq!(v["server"], "https://10.0.0.1:6443");
        assert_eq!(v["token"], TOKEN);
        assert_eq!(
            v["node-label"],
            serde_json::json!(["continuum.io/pool=field", "site=north"])
        );
    }

    #[test]
    fn user_data_is_cloud_config_with_the_script_config_and_unit() {
        let l = labels();
        let s = spec(&l, bundle());
        let ud = user_data(&s);
        assert!(ud.starts_with("#cloud-config\n"));
        let v: serde_json::Value = serde_saphyr::from_str(&ud).expect("user-data is YAML");
        let files = v["write_files"].as_array().expect("write_files");
        let by_path = |p: &str| {
            files
                .iter()
                .find(|f| f["path"] == p)
                .unwrap_or_else(|| panic!("{p} in {files:?}"))
        };
        assert_eq!(
            by_path(&format!("{DEVICE_DIR}/{SCRIPT}"))["content"]
                .as_str()
                .map(str::trim_end),
            Some(script(&s).trim_end())
        );
        let cfg = by_path(&format!("{DEVICE_DIR}/config.yaml"));
        assert_eq!(cfg["permissions"], "0600");
        assert_eq!(
            cfg["content"].as_str().map(str::trim_end),
            Some(config_yaml(&s).trim_end())
        );
        by_path(&format!("/etc/systemd/system/{UNIT}"));
        assert_eq!(v["runcmd"].as_array().map(Vec::len), Some(3));
    }

    #[test]
    fn shell_words_are_quoted() {
        assert_eq!(sq("it's"), r"'it'\''s'");
        let l = labels();
        let s = spec(
            &l,
            PoolInstall::Online {
                script_url: "https://example.org/x'y".into(),
            },
        );
        assert!(script(&s).contains(r"'https://example.org/x'\''y'"));
    }

    /// Which k3s build the bundle script picks on a machine whose `uname -m` is
    /// `machine`: the script's architecture check run by sh with a stub `uname`.
    fn picked(arch: &str, machine: &str) -> String {
        let install = PoolInstall::Bundle {
            arch: arch.into(),
            images: None,
        };
        let l = labels();
        let block = install_block(&spec(&l, install));
        let start = block.find("case \"$(uname -m)\"").expect("case");
        let end = block.find("[ -f \"$DIR/$bin\" ]").expect("check");
        let tmp = tempfile::tempdir().expect("tempdir");
        let stub = tmp.path().join("uname");
        std::fs::write(&stub, format!("#!/bin/sh\necho {machine}\n")).expect("stub");
        std::fs::set_permissions(&stub, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let script = format!(
            "set -eu\nfail() {{ echo \"refused: $*\"; exit 0; }}\n{}echo \"$have $bin\"\n",
            &block[start..end]
        );
        let path = format!(
            "{}:{}",
            tmp.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .env("PATH", path)
            .output()
            .expect("sh");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// 32-bit Raspberry Pi OS on a Pi 5 runs a 64-bit kernel (`uname -m`: aarch64)
    /// under its 32-bit userland: an `--arch arm` bundle installs there.
    #[test]
    fn an_arm_bundle_installs_on_a_64_bit_arm_kernel() {
        assert_eq!(picked("arm", "aarch64"), "arm k3s-armhf");
        assert_eq!(picked("arm", "armv7l"), "arm k3s-armhf");
        assert_eq!(picked("arm64", "aarch64"), "arm64 k3s-arm64");
        assert!(picked("arm64", "armv7l").starts_with("refused:"));
        assert!(picked("amd64", "aarch64").starts_with("refused:"));
        assert!(picked("arm", "x86_64").starts_with("refused:"));
    }
}
