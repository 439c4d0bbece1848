//! Issue 5 on the test fleet: inventory editing and Ansible import, device personas
//! (Raspberry Pi and Jetson: TEST DOUBLES of device firmware made by
//! `tests/fleet/fleet.sh persona`, see the "Personas" block there), device preparation
//! in `up`, per-arch artifacts, growing and shrinking a live cluster.
//!
//! Fleet hosts of this module are named `ed-*` and use 10.250.0.140-179.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::{
    Fleet, Workspace, assert_ok, fleet_available, fleet_sh, node_labels, path_str, poll_until,
    root, text,
};

/// Make a running fleet host look like a device (a firmware test double).
fn persona(name: &str, args: &[&str]) {
    let mut a = vec!["persona", name];
    a.extend_from_slice(args);
    let out = fleet_sh(&a);
    assert!(out.status.success(), "persona {name}: {}", text(&out));
}

fn inventory(ws: &Workspace) -> std::path::PathBuf {
    ws.dir.path().join("inventory.yaml")
}

fn probe(ws: &Workspace) {
    let inv = inventory(ws);
    let out = ws.run(&[
        "inventory",
        "probe",
        path_str(&inv),
        "--connect-timeout",
        "3",
    ]);
    assert_ok(&out, "inventory probe");
}

fn sshd_logins(fleet: &Fleet, names: &[&str]) -> BTreeMap<String, usize> {
    names
        .iter()
        .map(|n| ((*n).to_string(), fleet.logins(n)))
        .collect()
}

/// Pi with the memory cgroup off: `up` edits cmdline.txt, reboots, VERIFIES, joins.
/// A Pi whose firmware reads another cmdline file (config.txt `cmdline=`): a clear
/// error and no k3s on it; the rest of the cluster comes up.
#[test]
fn pi_memory_cgroup_is_enabled_and_verified() {
    if !fleet_available("pi_memory_cgroup_is_enabled_and_verified") {
        return;
    }
    let fleet = Fleet::start(&["ed-pis", "ed-pi-ok", "ed-pi-stuck"], 142);
    persona("ed-pi-ok", &["pi", "iptables=1.8.2"]);
    persona("ed-pi-stuck", &["pi", "cmdline=stuck"]);
    let ws = Workspace::new("edpi");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ed-pis"], "");
    probe(&ws);
    let list = ws.run(&["inventory", "list", path_str(&inventory(&ws)), "-o", "json"]);
    assert_ok(&list, "inventory list");
    let rows: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(rows[1]["model"], "Raspberry Pi 4 Model B Rev 1.4", "{rows}");

    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("device-prep/ed-pi-ok"),
        "{}",
        text(&plan)
    );
    let cmdline_before = fleet.exec_ok("ed-pi-ok", "cat /sys/fs/cgroup/cgroup.controllers");
    assert!(!cmdline_before.contains("memory"));

    let up = ws.up();
    let out = text(&up);
    assert_eq!(
        up.status.code(),
        Some(3),
        "partial failure expected:\n{out}"
    );
    // The good Pi: cmdline.txt edited once, rebooted, memory controller on, joined.
    fleet.assert_pi_cmdline_enables_memory("ed-pi-ok");
    let reboots = fleet.exec_ok(
        "ed-pi-ok",
        "grep -c 'reboot requested' /var/log/fleet-reboot.log",
    );
    assert_eq!(reboots.trim(), "1");
    assert!(
        fleet
            .exec_ok("ed-pi-ok", "cat /sys/fs/cgroup/cgroup.controllers")
            .contains("memory")
    );
    let nodes = node_labels(&fleet, "ed-pis");
    let pi = &nodes["ed-pi-ok"];
    assert_eq!(pi["continuum.io/device"], "raspberry-pi", "{pi:?}");
    assert_eq!(pi["continuum.io/model"], "Raspberry-Pi-4-Model-B-Rev-1.4");
    let config = fleet.exec_ok("ed-pi-ok", "cat /etc/rancher/k3s/config.yaml");
    assert!(
        config.contains("prefer-bundled-bin: true"),
        "iptables 1.8.2: prefer-bundled-bin missing from config.yaml"
    );
    // The stuck Pi: a clear error that says what to change; k3s never installed there.
    assert!(
        out.contains("memory cgroup controller is still OFF on `ed-pi-stuck`"),
        "{out}"
    );
    assert!(out.contains("`cmdline=` line in config.txt"), "{out}");
    assert!(out.contains("k3s-agent/ed-pi-stuck: skipped"), "{out}");
    assert_eq!(fleet.k3s_leftovers("ed-pi-stuck"), "");
    assert!(!nodes.contains_key("ed-pi-stuck"));

    // Resuming: the good Pi is not rebooted again.
    let again = ws.up();
    assert_eq!(again.status.code(), Some(3), "{}", text(&again));
    let reboots = fleet.exec_ok(
        "ed-pi-ok",
        "grep -c 'reboot requested' /var/log/fleet-reboot.log",
    );
    assert_eq!(reboots.trim(), "1");
}

/// Jetson with the toolkit: joins with GPU/model/L4T labels, default runtime nvidia,
/// containerd lists nvidia, RuntimeClass `nvidia` created. Without the toolkit: a clear
/// error before k3s is installed there.
#[test]
fn jetson_needs_toolkit_and_gets_gpu_runtime() {
    if !fleet_available("jetson_needs_toolkit_and_gets_gpu_runtime") {
        return;
    }
    let fleet = Fleet::start(&["ed-js", "ed-jet-ok", "ed-jet-no"], 145);
    persona("ed-jet-ok", &["jetson", "toolkit=yes", "l4t=R36:3.0"]);
    persona("ed-jet-no", &["jetson", "toolkit=no"]);
    let ws = Workspace::new("edjet");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ed-js"], "  nvidia_default_runtime: true\n");
    probe(&ws);
    let up = ws.up();
    let out = text(&up);
    assert_eq!(up.status.code(), Some(3), "{out}");
    assert!(out.contains("`ed-jet-no` is an NVIDIA Jetson"), "{out}");
    assert!(out.contains("nvidia-container-toolkit"), "{out}");
    assert_eq!(
        fleet.k3s_leftovers("ed-jet-no"),
        "",
        "no k3s on the toolkit-less Jetson"
    );

    let nodes = node_labels(&fleet, "ed-js");
    let j = &nodes["ed-jet-ok"];
    assert_eq!(j["nvidia.com/gpu.present"], "true", "{j:?}");
    assert_eq!(
        j["continuum.io/model"],
        "NVIDIA-Jetson-Orin-Nano-Developer-Kit"
    );
    assert_eq!(j["continuum.io/l4t-release"], "36.3.0");
    let toml = fleet.exec_ok(
        "ed-jet-ok",
        "cat /var/lib/rancher/k3s/agent/etc/containerd/config.toml",
    );
    assert!(toml.contains("default_runtime_name = \"nvidia\""), "{toml}");
    assert!(toml.contains("runtimes.\"nvidia\""), "{toml}");
    let rc = fleet.exec_ok("ed-js", "k3s kubectl get runtimeclass nvidia -o json");
    let rc: serde_json::Value = serde_json::from_str(&rc).expect("runtimeclass json");
    assert_eq!(rc["handler"], "nvidia");
    assert!(out.contains("gpu-runtime/ed-jet-ok: done"), "{out}");
    assert!(!nodes.contains_key("ed-jet-no"));
}

/// A Pi joins a live 3-node cluster: only the new host is changed (the agents see no
/// SSH login at all; the server only answers the read-only readiness query, its k3s
/// files keep their mtimes). `nodes remove` then drains, deletes and uninstalls it.
#[test]
fn grow_live_cluster_by_one_pi_and_shrink_again() {
    if !fleet_available("grow_live_cluster_by_one_pi_and_shrink_again") {
        return;
    }
    let fleet = Fleet::start(&["ed-gs", "ed-ga1", "ed-ga2", "ed-gpi"], 148);
    persona("ed-gpi", &["pi"]);
    let ws = Workspace::new("edgrow");
    let defs = fleet.defs();
    ws.write_inventory(&defs[..3], "ops");
    ws.write_recipe(&["ed-gs"], "");
    assert_ok(&ws.up(), "first up (3 nodes)");
    let others = ["ed-gs", "ed-ga1", "ed-ga2"];
    let files_before: Vec<String> = others.iter().map(|h| fleet.k3s_files(h)).collect();
    let logins_before = sshd_logins(&fleet, &others);

    let inv = inventory(&ws);
    let add = ws.run(&[
        "inventory",
        "add",
        path_str(&inv),
        "ed-gpi",
        "--host",
        &fleet.ip("ed-gpi"),
        "--role",
        "agent",
        "--label",
        "continuum.io/tier=edge",
    ]);
    assert_ok(&add, "inventory add");
    let probe = ws.run(&["inventory", "probe", path_str(&inv), "--host", "ed-gpi"]);
    assert_ok(&probe, "inventory probe --host");
    assert!(
        text(&probe).contains("memory cgroup off"),
        "{}",
        text(&probe)
    );
    let up = ws.up();
    assert_ok(&up, "up with the Pi");
    let out = text(&up);
    assert!(out.contains("device-prep/ed-gpi: done (changed)"), "{out}");
    assert!(node_labels(&fleet, "ed-gs").contains_key("ed-gpi"));

    // The other agents: only the refresh's one read-only login (issue 10).
    let logins_after = sshd_logins(&fleet, &others);
    assert_eq!(
        logins_after["ed-ga1"],
        logins_before["ed-ga1"] + 1,
        "agent ed-ga1: more than the refresh"
    );
    assert_eq!(
        logins_after["ed-ga2"],
        logins_before["ed-ga2"] + 1,
        "agent ed-ga2: more than the refresh"
    );
    for (h, before) in others.iter().zip(&files_before) {
        assert_eq!(&fleet.k3s_files(h), before, "{h}: k3s files changed");
    }
    // The server was only asked read-only questions (readiness) in that run.
    let server_cmds = fleet.exec_ok("ed-gs", "grep -c 'Accepted publickey' /var/log/sshd.log");
    assert!(server_cmds.trim().parse::<usize>().unwrap_or(0) <= logins_before["ed-gs"] + 1);

    // Shrink: drain + delete through the server, uninstall on the Pi, nothing else.
    let files_before: Vec<String> = others.iter().map(|h| fleet.k3s_files(h)).collect();
    let logins_before = sshd_logins(&fleet, &["ed-ga1", "ed-ga2"]);
    let rm = ws.run(&["nodes", "remove", "edgrow", "ed-gpi", "--yes"]);
    assert_ok(&rm, "nodes remove");
    let out = text(&rm);
    assert!(out.contains("cordoning and draining"), "{out}");
    assert!(!node_labels(&fleet, "ed-gs").contains_key("ed-gpi"));
    assert_eq!(fleet.k3s_leftovers("ed-gpi"), "");
    let state = ws.state();
    assert!(state["hosts"].get("ed-gpi").is_none(), "{state}");
    assert!(
        state["resources"]
            .as_object()
            .expect("resources")
            .keys()
            .all(|k| !k.contains("ed-gpi"))
    );
    assert!(
        !std::fs::read_to_string(&inv)
            .expect("inventory")
            .contains("ed-gpi")
    );
    // Only the refresh's login on the other agents.
    let after = sshd_logins(&fleet, &["ed-ga1", "ed-ga2"]);
    for (h, n) in &logins_before {
        assert_eq!(after[h], n + 1, "{h}: more than the refresh");
    }
    for (h, before) in others.iter().zip(&files_before) {
        assert_eq!(
            &fleet.k3s_files(h),
            before,
            "{h}: k3s files changed by the shrink"
        );
    }
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(text(&plan).contains("0 to change"), "{}", text(&plan));
}

/// Removing a server is refused when etcd would lose its quorum; the inventory stays.
#[test]
fn server_removal_keeps_etcd_quorum() {
    if !fleet_available("server_removal_keeps_etcd_quorum") {
        return;
    }
    let fleet = Fleet::start(&["ed-q1", "ed-q2", "ed-q3"], 152);
    let ws = Workspace::new("edq");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ed-q1", "ed-q2", "ed-q3"], "");
    assert_ok(&ws.up(), "HA up");
    let inv_before = std::fs::read_to_string(inventory(&ws)).expect("inventory");
    // ed-q3 goes silent: 2 of 3 Ready. Removing ed-q2 would leave 1 of 2: no quorum.
    fleet.stop("ed-q3");
    let q3_not_ready = |nodes: &String| {
        nodes
            .lines()
            .any(|l| l.starts_with("ed-q3") && l.contains("NotReady"))
    };
    let nodes = poll_until(
        Duration::from_secs(40),
        Duration::from_secs(2),
        || fleet.exec_ok("ed-q1", "k3s kubectl get nodes"),
        q3_not_ready,
    );
    assert!(q3_not_ready(&nodes), "ed-q3 never went NotReady:\n{nodes}");
    let rm = ws.run(&["nodes", "remove", "edq", "ed-q2", "--yes"]);
    assert!(!rm.status.success());
    assert!(
        text(&rm).contains("refusing to remove server `ed-q2`"),
        "{}",
        text(&rm)
    );
    assert_eq!(
        std::fs::read_to_string(inventory(&ws)).expect("inventory"),
        inv_before
    );
    assert!(fleet.k3s_leftovers("ed-q2").contains("/usr/local/bin/k3s"));
    let init = ws.run(&["nodes", "remove", "edq", "ed-q1", "--yes"]);
    assert!(text(&init).contains("first server"), "{}", text(&init));
}

/// A probed arm64 host and a bundle without `k3s-arm64`: `up` fails before any host
/// is contacted.
#[test]
fn missing_arch_binary_fails_before_any_change() {
    if !fleet_available("missing_arch_binary_fails_before_any_change") {
        return;
    }
    let fleet = Fleet::start(&["ed-arm", "ed-amd"], 155);
    let ws = Workspace::new("edarch");
    ws.write_inventory(&fleet.defs(), "ops");
    let bundle = ws.dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("bundle dir");
    for f in ["install.sh", "k3s"] {
        std::fs::copy(root().join("tests/k3s-double").join(f), bundle.join(f)).expect("copy");
    }
    let recipe = format!(
        "name: edarch\ninventory: inventory.yaml\nk3s:\n  version: v1.31.4+k3s1\n  install:\n    source: bundle\n    bundle: {}\n  servers: [ed-amd]\n",
        bundle.display()
    );
    std::fs::write(ws.recipe(), recipe).expect("recipe");
    // What a probe of a Raspberry Pi OS 64-bit host stores.
    let inv = inventory(&ws);
    let text_inv = std::fs::read_to_string(&inv).expect("inventory").replace(
        &format!("address: {}\n", fleet.ip("ed-arm")),
        &format!("address: {}\n    probed: {{arch: aarch64, cgroup_controllers: [cpu, memory], init: systemd}}\n", fleet.ip("ed-arm")),
    );
    std::fs::write(&inv, text_inv).expect("inventory");
    let logins = sshd_logins(&fleet, &["ed-arm", "ed-amd"]);
    let up = ws.up();
    assert!(!up.status.success());
    let out = text(&up);
    assert!(
        out.contains("no k3s binary for arm64 (expected k3s-arm64) needed by `ed-arm`"),
        "{out}"
    );
    assert_eq!(
        sshd_logins(&fleet, &["ed-arm", "ed-amd"]),
        logins,
        "a host was contacted"
    );
    assert_eq!(fleet.k3s_leftovers("ed-amd"), "");
}

fn ansible_inventory_list(src: &Path) -> serde_json::Value {
    let venv = std::process::Command::new("bash")
        .arg(root().join("tests/pyenv/setup.sh"))
        .output()
        .expect("tests/pyenv/setup.sh");
    assert!(venv.status.success(), "{}", text(&venv));
    let venv = String::from_utf8_lossy(&venv.stdout).trim().to_string();
    let out = std::process::Command::new(Path::new(&venv).join("bin/ansible-inventory"))
        .args(["--list", "-i"])
        .arg(src)
        .env("ANSIBLE_LOCAL_TEMP", std::env::temp_dir())
        .output()
        .expect("ansible-inventory");
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).expect("ansible-inventory json")
}

/// `inventory import` of k3s-ansible style YAML and INI: the same hosts and roles (and
/// address, user, port) as `ansible-inventory --list` reports.
#[test]
fn ansible_import_matches_ansible_inventory() {
    for fixture in ["k3s-ansible.yml", "k3s-ansible.ini"] {
        let src = root().join("tests/fixtures/ansible").join(fixture);
        let ws = Workspace::new("edimport");
        let inv = inventory(&ws);
        let out = ws.run(&["inventory", "import", path_str(&src), path_str(&inv)]);
        assert_ok(&out, "inventory import");
        let list = ws.run(&["inventory", "list", path_str(&inv), "-o", "json"]);
        assert_ok(&list, "inventory list");
        let ours: serde_json::Value = serde_json::from_slice(&list.stdout).expect("json");
        let ours = ours.as_array().expect("rows");

        let ans = ansible_inventory_list(&src);
        let mut expected = Vec::new();
        for (group, role) in [("server", "server"), ("agent", "agent")] {
            for h in ans[group]["hosts"].as_array().expect("hosts") {
                let h = h.as_str().expect("host");
                let vars = &ans["_meta"]["hostvars"][h];
                expected.push((
                    vars["ansible_host"].as_str().unwrap_or(h).to_string(),
                    role.to_string(),
                    vars["ansible_user"].as_str().map(str::to_string),
                    vars["ansible_port"].as_u64().unwrap_or(22),
                ));
            }
        }
        let mut got: Vec<(String, String, Option<String>, u64)> = ours
            .iter()
            .map(|r| {
                (
                    r["address"].as_str().expect("address").to_string(),
                    r["role"].as_str().unwrap_or("").to_string(),
                    r["user"].as_str().map(str::to_string),
                    r["port"].as_u64().expect("port"),
                )
            })
            .collect();
        expected.sort();
        got.sort();
        assert_eq!(got, expected, "{fixture}");
        assert_eq!(got.len(), 4);
        // Importing again keeps the file as it is (hosts are matched by name).
        let before = std::fs::read_to_string(&inv).expect("inventory");
        assert_ok(
            &ws.run(&["inventory", "import", path_str(&src), path_str(&inv)]),
            "re-import",
        );
        assert_eq!(std::fs::read_to_string(&inv).expect("inventory"), before);
    }
}

/// `inventory add|remove` keep comments and order; a bad edit leaves the file alone.
#[test]
fn inventory_edits_keep_comments() {
    let ws = Workspace::new("ededit");
    let inv = inventory(&ws);
    let original = "# farm\ndefaults:\n  user: ubuntu # everyone\nhosts:\n  # the server\n  - name: pi-01\n    address: 10.0.4.11\n    role: server\n  - name: pi-02\n    address: 10.0.4.12\n";
    std::fs::write(&inv, original).expect("write");
    let add = ws.run(&[
        "inventory",
        "add",
        path_str(&inv),
        "jetson-03",
        "--host",
        "10.0.4.13",
        "--user",
        "nvidia",
        "--bastion",
        "ops@gw:2222",
        "--label",
        "continuum.io/gpu=orin",
        "--role",
        "agent",
    ]);
    assert_ok(&add, "inventory add");
    let text_after = std::fs::read_to_string(&inv).expect("read");
    assert!(text_after.starts_with(original), "{text_after}");
    let dup = ws.run(&[
        "inventory",
        "add",
        path_str(&inv),
        "pi-01",
        "--host",
        "10.0.4.99",
    ]);
    assert_eq!(dup.status.code(), Some(2), "{}", text(&dup));
    let bad = ws.run(&[
        "inventory",
        "add",
        path_str(&inv),
        "Bad_Name",
        "--host",
        "10.0.4.98",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(text(&bad).contains("invalid host name"), "{}", text(&bad));
    assert_eq!(
        std::fs::read_to_string(&inv).expect("read"),
        text_after,
        "unchanged after a refused edit"
    );
    let rm = ws.run(&["inventory", "remove", path_str(&inv), "pi-02"]);
    assert_ok(&rm, "inventory remove");
    let list = ws.run(&["inventory", "list", path_str(&inv)]);
    let l = text(&list);
    assert!(
        l.contains("pi-01") && l.contains("jetson-03") && !l.contains("pi-02"),
        "{l}"
    );
    let text_final = std::fs::read_to_string(&inv).expect("read");
    assert!(
        text_final.contains("# the server\n  - name: pi-01\n"),
        "{text_final}"
    );
}

/// First contact with a "fresh image" (password login, no key): a wrong password is a
/// clear error that changes nothing; the right one installs the key, pins the host key
/// in the inventory and is stored nowhere; later connections use the key.
#[test]
fn first_contact_by_password_installs_key_and_pins_host_key() {
    if !fleet_available("first_contact_by_password_installs_key_and_pins_host_key") {
        return;
    }
    const PASSWORD: &str = "Fresh-Image-pa55";
    let fleet = Fleet::start(&["ed-fc"], 157);
    let mut pw = std::process::Command::new("bash")
        .arg(root().join("tests/fleet/fleet.sh"))
        .args(["password", "ed-fc", "ops"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("fleet.sh password");
    std::io::Write::write_all(
        pw.stdin.as_mut().expect("stdin"),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .expect("write password");
    assert!(pw.wait().expect("wait").success());
    let ws = Workspace::new("edfc");
    let inv = inventory(&ws);
    let key = crate::harness::client_key();
    std::fs::write(
        &inv,
        format!("defaults:\n  key: {}\nhosts: []\n", key.display()),
    )
    .expect("inventory");
    let ip = fleet.ip("ed-fc");
    let add = |password: &str| {
        ws.cmd()
            .args([
                "inventory",
                "add",
                path_str(&inv),
                "ed-fc",
                "--host",
                &ip,
                "--user",
                "ops",
                "--password-stdin",
            ])
            .input(&format!("{password}\n"))
            .output()
    };
    let before = std::fs::read_to_string(&inv).expect("inventory");
    let wrong = add("not-the-password");
    assert!(!wrong.status.success());
    assert!(
        text(&wrong).contains("refused the password for user `ops`"),
        "{}",
        text(&wrong)
    );
    assert_eq!(std::fs::read_to_string(&inv).expect("inventory"), before);

    let ok = add(PASSWORD);
    assert_ok(&ok, "inventory add --password-stdin");
    let host_pub = fleet.exec_ok("ed-fc", "cat /etc/ssh/ssh_host_ed25519_key.pub");
    let pinned: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let inv_text = std::fs::read_to_string(&inv).expect("inventory");
    assert!(
        inv_text.contains(&format!("host_key: \"{}\"", pinned.join(" "))),
        "{inv_text}"
    );
    let client_pub = std::fs::read_to_string(key.with_extension("pub")).expect("pub key");
    let authorized = fleet.exec_ok("ed-fc", "cat /home/ops/.ssh/authorized_keys");
    assert_eq!(authorized.trim(), client_pub.trim());
    // The password is nowhere: output, inventory, state directory.
    // Each run's own password: the refused one is not echoed either.
    assert!(!text(&ok).contains(PASSWORD) && !text(&wrong).contains("not-the-password"));
    assert!(!inv_text.contains(PASSWORD));
    // Key logins now work, against the pinned host key.
    let probe = ws.run(&["inventory", "probe", path_str(&inv)]);
    assert_ok(&probe, "probe with the installed key");
    for entry in crate::harness::files_under(ws.dir.path()) {
        let bytes = std::fs::read(&entry).unwrap_or_default();
        assert!(
            !String::from_utf8_lossy(&bytes).contains(PASSWORD),
            "password in {}",
            entry.display()
        );
    }
    let log = fleet.exec_ok(
        "ed-fc",
        "grep -E 'Accepted (password|publickey)' /var/log/sshd.log | awk '{print $2}'",
    );
    assert_eq!(log.lines().filter(|l| *l == "password").count(), 1, "{log}");
    assert!(log.lines().any(|l| l == "publickey"), "{log}");
}

/// An emulated arm64 host (qemu-user-static + binfmt_misc, tests/fleet/README.md "arm64 hosts") with the Pi
/// persona: the probe reports aarch64, the memory cgroup is fixed, and the bundle's
/// `k3s-arm64` is what lands in /usr/local/bin/k3s. The binfmt registration is removed
/// again when this test made it.
#[test]
fn arm64_pi_gets_the_arm64_binary() {
    if !fleet_available("arm64_pi_gets_the_arm64_binary") {
        return;
    }
    let status = fleet_sh(&["binfmt", "status"]);
    let ours = !String::from_utf8_lossy(&status.stdout).starts_with("registered");
    let on = fleet_sh(&["binfmt", "on"]);
    assert!(on.status.success(), "binfmt on: {}", text(&on));
    let rootfs = fleet_sh(&["rootfs", "arm64"]);
    assert!(rootfs.status.success(), "arm64 rootfs: {}", text(&rootfs));
    {
        let fleet = Fleet::start(&["ed-a64s"], 158);
        let pi = ("ed-a64pi".to_string(), "10.250.0.159".to_string());
        let up = std::process::Command::new("bash")
            .arg(root().join("tests/fleet/fleet.sh"))
            .args(["up", &pi.0, &pi.1])
            .env("FLEET_ARCH", "arm64")
            .env("FLEET_UP_TIMEOUT", "90")
            .output()
            .expect("fleet.sh up arm64");
        let fleet = Fleet {
            hosts: fleet.hosts.iter().cloned().chain([pi.clone()]).collect(),
        };
        assert!(up.status.success(), "arm64 host: {}", text(&up));
        assert_eq!(fleet.exec_ok("ed-a64pi", "uname -m").trim(), "aarch64");
        persona("ed-a64pi", &["pi", "model=Raspberry Pi 5 Model B Rev 1.0"]);
        let ws = Workspace::new("eda64");
        ws.write_inventory(&fleet.defs(), "ops");
        ws.write_recipe(&["ed-a64s"], "");
        // Everything on the arm64 host runs under qemu: give readiness more time.
        let recipe = std::fs::read_to_string(ws.recipe()).expect("recipe");
        std::fs::write(
            ws.recipe(),
            recipe.replace("readiness_timeout: 90", "readiness_timeout: 240"),
        )
        .expect("recipe");
        probe(&ws);
        let inv = std::fs::read_to_string(inventory(&ws)).expect("inventory");
        assert!(inv.contains("\"arch\":\"aarch64\""), "{inv}");
        let up = ws.up();
        assert_ok(&up, "up with an arm64 Pi");
        let want = std::process::Command::new("sha256sum")
            .arg(root().join("tests/k3s-double/k3s-arm64"))
            .output()
            .expect("sha256sum");
        let want = String::from_utf8_lossy(&want.stdout)
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_string();
        let got = fleet.exec_ok("ed-a64pi", "sha256sum /usr/local/bin/k3s | cut -d' ' -f1");
        assert_eq!(got.trim(), want);
        let nodes = node_labels(&fleet, "ed-a64s");
        assert_eq!(nodes["ed-a64pi"]["kubernetes.io/arch"], "arm64");
        assert_eq!(
            nodes["ed-a64pi"]["continuum.io/model"],
            "Raspberry-Pi-5-Model-B-Rev-1.0"
        );
        assert!(
            fleet
                .exec_ok("ed-a64pi", "cat /sys/fs/cgroup/cgroup.controllers")
                .contains("memory")
        );
        drop(fleet);
    }
    if ours {
        let off = fleet_sh(&["binfmt", "off"]);
        assert!(off.status.success(), "binfmt off: {}", text(&off));
    }
}

/// A Pi that was never probed gets no preparation node; `up` must still not install a
/// k3s that cannot run pods on it: it stops there, naming the fix. An unprobed Jetson
/// joins (k3s runs without its GPU) with a warning naming the same fix.
#[test]
fn unprobed_pi_with_memory_cgroup_off_is_refused_before_install() {
    if !fleet_available("unprobed_pi_with_memory_cgroup_off_is_refused_before_install") {
        return;
    }
    let fleet = Fleet::start(&["ed-us", "ed-upi", "ed-ujet"], 170);
    persona("ed-upi", &["pi"]);
    persona("ed-ujet", &["jetson"]);
    let ws = Workspace::new("edupi");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ed-us"], "");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(!text(&plan).contains("device-prep/"), "{}", text(&plan));
    let up = ws.up();
    let out = text(&up);
    assert_eq!(up.status.code(), Some(3), "{out}");
    assert!(
        out.contains("`ed-upi` is a Raspberry Pi") && out.contains("memory cgroup off"),
        "{out}"
    );
    assert!(out.contains("continuum inventory probe"), "{out}");
    assert_eq!(
        fleet.k3s_files("ed-upi").trim(),
        "",
        "k3s installed on the Pi"
    );
    assert_eq!(
        ws.state()["resources"]["k3s-server/ed-us"]["status"],
        "applied"
    );
    // The unprobed Jetson joined, with the warning naming the fix.
    assert!(
        out.contains("`ed-ujet` is an ")
            && out.contains("that was not probed")
            && out.contains("continuum inventory probe INVENTORY --host ed-ujet"),
        "{out}"
    );
    assert_eq!(
        ws.state()["resources"]["k3s-agent/ed-ujet"]["status"],
        "applied"
    );
}
