//! Test harness around tests/fleet/fleet.sh: start hosts, look inside them, write
//! recipes and inventories for them, and run the continuum binary against them with
//! a private state directory and kubeconfig.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether a test that cannot run here must fail instead of skipping: under CI
/// (`CI=true`, as `.ci/run` runs) or with `CONTINUUM_REQUIRE_FLEET=1` nothing passes
/// silently.
pub fn must_run() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|v| v == "true" || v == "1");
    on("CI") || on("CONTINUUM_REQUIRE_FLEET")
}

/// Where skipped tests are listed, one `test: reason` line each; scripts/test prints
/// and counts them at the end of the run.
pub fn skip_log() -> PathBuf {
    std::env::var_os("CONTINUUM_SKIP_LOG").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt"),
        PathBuf::from,
    )
}

/// Record that `test` did not run, and why (stderr and the skip log).
pub fn skipped(test: &str, why: &str) {
    eprintln!("{test}: skipped ({why})");
    let line = format!("{test}: {why}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// Whether the fleet is available; tests that need it return early otherwise (listed
/// in the skip log), and fail when they must run.
pub fn fleet_available(test: &str) -> bool {
    let ok = std::env::var("CONTINUUM_FLEET").is_ok_and(|v| v == "1");
    assert!(
        ok || !must_run(),
        "{test}: the test fleet is not available under CI=true or CONTINUUM_REQUIRE_FLEET=1 (scripts/test as root sets CONTINUUM_FLEET=1)"
    );
    if !ok {
        skipped(
            test,
            "needs the test fleet: run `bash .ci/run`, which sets CONTINUUM_FLEET=1",
        );
    }
    ok
}

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

/// A temporary workspace: inventory, recipe, state directory and kubeconfig.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub env: String,
}

impl Workspace {
    pub fn new(env: &str) -> Workspace {
        Workspace {
            dir: tempfile::Builder::new()
                .prefix("cit")
                .tempdir()
                .expect("tempdir"),
            env: env.to_string(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }
    pub fn recipe(&self) -> PathBuf {
        self.dir.path().join("recipe.yaml")
    }
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join(format!("{}.json", self.env))
    }

    pub fn write_inventory(&self, hosts: &[HostDef<'_>], user: &str) {
        let key = client_key();
        let mut s = format!(
            "defaults:\n  user: {user}\n  key: {}\nhosts:\n",
            key.display()
        );
        for h in hosts {
            s.push_str(&format!("  - name: {}\n    address: {}\n", h.name, h.ip));
            if !h.labels.is_empty() {
                s.push_str("    labels:\n");
                for (k, v) in h.labels {
                    s.push_str(&format!("      {k}: \"{v}\"\n"));
                }
            }
        }
        std::fs::write(self.dir.path().join("inventory.yaml"), s).expect("write inventory");
    }

    /// A recipe over the inventory; `servers` first is the init server.
    pub fn write_recipe(&self, servers: &[&str], extra: &str) {
        let s = format!(
            "name: {env}\ninventory: inventory.yaml\nk3s:\n  version: v1.31.4+k3s1\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [{servers}]\n  readiness_timeout: 90\n{extra}",
            env = self.env,
            bundle = root().join("tests/k3s-double").display(),
            servers = servers.join(", "),
        );
        std::fs::write(self.recipe(), s).expect("write recipe");
    }

    /// The continuum binary with this workspace's state dir and kubeconfig.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_continuum"));
        c.env("CONTINUUM_STATE_DIR", self.state_dir())
            .env("KUBECONFIG", self.kubeconfig())
            .env_remove("CONTINUUM_LOG")
            .stdin(std::process::Stdio::null());
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().expect("run continuum")
    }

    pub fn up(&self) -> Output {
        let recipe = self.recipe();
        self.run(&[
            "up",
            recipe.to_str().expect("utf8"),
            "--yes",
            "--connect-timeout",
            "3",
            "--connect-attempts",
            "2",
        ])
    }

    pub fn state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.state_file()).expect("state file");
        serde_json::from_str(&text).expect("state json")
    }
}

/// Kubelet version of every node as `server`'s API reports them, sorted by name.
pub fn versions(fleet: &Fleet, server: &str) -> Vec<(String, String)> {
    let json = fleet.exec_ok(server, "k3s kubectl get nodes -o json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("nodes json");
    let mut out: Vec<(String, String)> = v["items"]
        .as_array()
        .expect("items")
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

/// Every file below `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// Wait (at most 90 s) until the workspace's state file mentions `needle`: a run in
/// progress has reached that step.
pub fn wait_for_state(ws: &Workspace, needle: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        if std::fs::read_to_string(ws.state_file()).is_ok_and(|t| t.contains(needle)) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the run never reached {needle}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}",
        out.status.code(),
        text(out)
    );
}

/// Nodes as the server's API reports them: name -> labels.
pub fn node_labels(fleet: &Fleet, server: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let json = fleet.exec_ok(server, "k3s kubectl get nodes -o json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("nodes json");
    v["items"]
        .as_array()
        .expect("items")
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

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}
