//! The test fleet (tests/fleet/fleet.sh): start hosts for one test, look inside them,
//! change them (stop, restart, rekey, another service manager), and read what the
//! cluster on them reports.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use super::{root, text};

pub fn fleet_sh(args: &[&str]) -> Output {
    Command::new("bash")
        .arg(root().join("tests/fleet/fleet.sh"))
        .args(args)
        .output()
        .expect("run fleet.sh")
}

fn must(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn client_key() -> PathBuf {
    PathBuf::from(must(fleet_sh(&["key"]), "fleet.sh key").trim())
}

/// Hosts started for one test; deleted when dropped.
pub struct Fleet {
    pub hosts: Vec<(String, String)>,
}

impl Fleet {
    /// Start `names` at 10.250.0.FIRST.. (in parallel).
    pub fn start(names: &[&str], first: u8) -> Fleet {
        let hosts: Vec<(String, String)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| {
                (
                    (*n).to_string(),
                    format!("10.250.0.{}", usize::from(first) + i),
                )
            })
            .collect();
        let handles: Vec<_> = hosts
            .iter()
            .cloned()
            .map(|(n, ip)| std::thread::spawn(move || (n.clone(), fleet_sh(&["up", &n, &ip]))))
            .collect();
        let fleet = Fleet { hosts };
        for h in handles {
            let (n, out) = h.join().expect("join");
            must(out, &format!("fleet.sh up {n}"));
        }
        fleet
    }

    /// Inventory entries for every host of the fleet, without labels.
    pub fn defs(&self) -> Vec<HostDef<'_>> {
        self.hosts
            .iter()
            .map(|(n, ip)| HostDef {
                name: n,
                ip: ip.clone(),
                labels: &[],
            })
            .collect()
    }

    pub fn ip(&self, name: &str) -> String {
        self.hosts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ip)| ip.clone())
            .expect("known host")
    }

    /// Run a shell command inside a host as root; (exit code, stdout).
    pub fn exec(&self, name: &str, cmd: &str) -> (i32, String) {
        let out = fleet_sh(&["exec", name, "--", "sh", "-c", cmd]);
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    pub fn exec_ok(&self, name: &str, cmd: &str) -> String {
        let (code, out) = self.exec(name, cmd);
        assert_eq!(code, 0, "`{cmd}` on {name} failed: {out}");
        out
    }

    /// Assert that the Raspberry Pi persona `name` has the memory cgroup words at the
    /// end of its one-line /boot/firmware/cmdline.txt (as device preparation and the
    /// enrolment script write them).
    pub fn assert_pi_cmdline_enables_memory(&self, name: &str) {
        let cmdline = self.exec_ok(name, "cat /boot/firmware/cmdline.txt");
        assert!(
            cmdline
                .trim_end()
                .ends_with("cgroup_memory=1 cgroup_enable=memory cgroup_enable=cpuset"),
            "{cmdline}"
        );
        assert_eq!(cmdline.lines().count(), 1);
    }

    /// Put the test double `tests/fleet/doubles/NAME` on `host` at `dest` (mode 0755).
    pub fn install_double(&self, host: &str, name: &str, dest: &str) {
        self.put_file(host, &root().join("tests/fleet/doubles").join(name), dest);
        self.exec_ok(host, &format!("chmod 755 {dest}"));
    }

    /// Copy a local file to `dest` on `host` (parent directories created).
    pub fn put_file(&self, host: &str, src: &Path, dest: &str) {
        assert!(
            self.hosts.iter().any(|(n, _)| n == host),
            "{host} is not in this fleet"
        );
        let file = std::fs::File::open(src).unwrap_or_else(|e| panic!("{}: {e}", src.display()));
        let out = Command::new("bash")
            .arg(root().join("tests/fleet/fleet.sh"))
            .args(["exec", host, "--", "sh", "-c"])
            .arg(format!("mkdir -p \"$(dirname {dest})\" && cat > {dest}"))
            .stdin(file)
            .output()
            .expect("fleet.sh exec");
        assert!(
            out.status.success(),
            "{} -> {host}:{dest}: {}",
            src.display(),
            text(&out)
        );
    }

    /// Let `host` reach its (Debian) package repositories: the apt-get double, online.
    pub fn repos_online(&self, host: &str) {
        self.install_double(host, "apt-get", "/usr/local/sbin/apt-get");
        self.exec_ok(
            host,
            "mkdir -p /etc/apt-double && touch /etc/apt-double/online",
        );
    }

    /// The stand-in for "the OSCAR chart and its images are available" on a server: the
    /// OSCAR API double where the k3s double's helm-controller block looks for it.
    pub fn place_oscar_double(&self, host: &str) {
        self.put_file(
            host,
            &root().join("tests/oscar-double/oscar-api"),
            "/usr/local/lib/continuum-doubles/oscar-api",
        );
    }

    /// Give a host another service manager double: `systemd`, `openrc` or `none`.
    pub fn service(&self, name: &str, kind: &str) {
        must(fleet_sh(&["service", name, kind]), "fleet.sh service");
    }

    pub fn stop(&self, name: &str) {
        must(fleet_sh(&["stop", name]), "fleet.sh stop");
    }

    pub fn restart(&self, name: &str) {
        must(
            fleet_sh(&["up", name, &self.ip(name)]),
            "fleet.sh up (restart)",
        );
    }

    pub fn rekey(&self, name: &str) {
        must(fleet_sh(&["rekey", name]), "fleet.sh rekey");
    }

    /// Number of SSH logins the host's sshd accepted so far (a host that cannot be
    /// read is a test failure, never 0).
    pub fn logins(&self, name: &str) -> usize {
        let out = self.exec_ok(
            name,
            "if test -r /var/log/sshd.log; then grep -c 'Accepted publickey' /var/log/sshd.log || true; else echo 0; fi",
        );
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}: unreadable login count {out:?}"))
    }

    /// Paths and mtimes of every k3s/continuum file on the host.
    pub fn k3s_files(&self, name: &str) -> String {
        let (_, out) = self.exec(
            name,
            "find /etc/rancher /var/lib/continuum /usr/local/bin /etc/systemd/system -type f -name '*' 2>/dev/null | grep -E 'rancher|continuum|k3s' | sort | while read f; do echo \"$f $(stat -c %Y.%s \"$f\")\"; done",
        );
        out
    }

    /// k3s leftovers on the host (empty when clean).
    pub fn k3s_leftovers(&self, name: &str) -> String {
        let (_, out) = self.exec(
            name,
            "ls -d /etc/rancher/k3s /var/lib/rancher/k3s /etc/rancher/node /usr/local/bin/k3s* /etc/systemd/system/k3s* /var/lib/continuum 2>/dev/null; true",
        );
        out.trim().to_string()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (n, _) in &self.hosts {
            let _ = fleet_sh(&["down", n]);
        }
    }
}

/// One host line of a generated inventory.
pub struct HostDef<'a> {
    pub name: &'a str,
    pub ip: String,
    pub labels: &'a [(&'a str, &'a str)],
}

/// Every Node object as `server`'s API lists them (`kubectl get nodes -o json`).
fn nodes(fleet: &Fleet, server: &str) -> Vec<serde_json::Value> {
    let json = fleet.exec_ok(server, "k3s kubectl get nodes -o json");
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("nodes json");
    match v["items"].take() {
        serde_json::Value::Array(items) => items,
        other => panic!("no items in the node list: {other}"),
    }
}

/// Kubelet version of every node as `server`'s API reports them, sorted by name.
pub fn versions(fleet: &Fleet, server: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = nodes(fleet, server)
        .iter()
        .map(|n| {
            (
                n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                n["status"]["nodeInfo"]["kubeletVersion"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

/// Names of the nodes whose Ready condition is True, as the server's API lists them,
/// sorted.
pub fn ready_nodes(fleet: &Fleet, server: &str) -> Vec<String> {
    let mut names: Vec<String> = nodes(fleet, server)
        .iter()
        .filter(|n| {
            n["status"]["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            })
        })
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.sort();
    names
}

/// Nodes as the server's API reports them: name -> labels.
pub fn node_labels(fleet: &Fleet, server: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    nodes(fleet, server)
        .iter()
        .map(|n| {
            let labels = n["metadata"]["labels"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            (
                n["metadata"]["name"].as_str().unwrap_or("").to_string(),
                labels,
            )
        })
        .collect()
}
