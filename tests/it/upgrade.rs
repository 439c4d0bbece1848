//! Issue 10 on the test fleet (real k3s behaviour, through the k3s double): upgrades
//! that restart in the documented order, drift seen by the refresh, labels and taints
//! on live nodes, air-gap images, host firewalls.
//!
//! Fleet hosts of this module are named `ug-*` and use 10.250.0.61-63 and .84-.89.

use std::path::{Path, PathBuf};

use crate::harness::{
    Fleet, Workspace, assert_ok, fleet_available, path_str, root, text, versions,
};

pub(crate) const FROM: &str = "v1.31.4+k3s1";
pub(crate) const TO: &str = "v1.32.1+k3s1";

/// A copy of the k3s double's bundle whose binaries report `version` (the double's
/// version is one constant; the install script reads it from the binary).
pub(crate) fn bundle_at(dir: &Path, version: &str) -> PathBuf {
    let b = dir.join(format!("bundle-{version}"));
    std::fs::create_dir_all(&b).expect("bundle dir");
    let src = root().join("tests/k3s-double");
    for f in [
        "install.sh",
        "k3s-airgap-images-amd64.tar.zst",
        "k3s-airgap-images-arm64.tar.zst",
    ] {
        std::fs::copy(src.join(f), b.join(f)).expect("bundle file");
    }
    for bin in ["k3s", "k3s-arm64"] {
        let text = std::fs::read_to_string(src.join(bin)).expect("double binary");
        let text = text.replace(
            &format!("K3S_VERSION = \"{FROM}\""),
            &format!("K3S_VERSION = \"{version}\""),
        );
        assert!(text.contains(version), "{bin}: version constant not found");
        std::fs::write(b.join(bin), text).expect("write binary");
        let mut p = std::fs::metadata(b.join(bin)).expect("meta").permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o755);
        std::fs::set_permissions(b.join(bin), p).expect("chmod");
    }
    b
}

fn write_recipe(ws: &Workspace, version: &str, bundle: &Path) {
    std::fs::write(
        ws.recipe(),
        format!(
            "name: {env}\ninventory: inventory.yaml\nk3s:\n  version: {version}\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [ug-s1]\n  readiness_timeout: 90\n",
            env = ws.env,
            bundle = bundle.display()
        ),
    )
    .expect("recipe");
}

/// When the host's k3s daemon started at `version`, from its log (`time="..."`).
fn started_at(fleet: &Fleet, host: &str, unit: &str, version: &str) -> String {
    let log = fleet.exec_ok(host, &format!("cat /var/log/k3s-double/{unit}.log"));
    log.lines()
        .rev()
        .filter(|l| l.contains("Starting k3s") && l.contains(version))
        .find_map(|l| l.split('"').nth(1))
        .unwrap_or_else(|| panic!("{host}: no start at {version} in its log:\n{log}"))
        .to_string()
}

/// 1 server + 2 agents at version A; recipe and bundle to version B: the plan shows
/// `version A -> B (restart)` and the order; `up` restarts every node at B, the server
/// before the agents and the agents one batch after the other (read from the hosts'
/// logs); the next `up` is a no-op; a stopped agent is seen by the refresh and started.
#[test]
fn upgrade_restarts_every_node_in_order_and_a_stopped_unit_is_started() {
    if !fleet_available("upgrade_restarts_every_node_in_order_and_a_stopped_unit_is_started") {
        return;
    }
    let names = ["ug-s1", "ug-a1", "ug-a2"];
    let fleet = Fleet::start(&names, 85);
    let ws = Workspace::new("ug");
    ws.write_inventory(&fleet.defs(), "ops");
    let from = bundle_at(ws.dir.path(), FROM);
    write_recipe(&ws, FROM, &from);
    assert_ok(&ws.up(), "up at the first version");
    assert!(versions(&fleet, "ug-s1").iter().all(|(_, v)| v == FROM));

    let to = bundle_at(ws.dir.path(), TO);
    write_recipe(&ws, TO, &to);
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    let p = text(&plan);
    assert_ok(&plan, "plan of the upgrade");
    for id in ["k3s-server/ug-s1", "k3s-agent/ug-a1", "k3s-agent/ug-a2"] {
        assert!(
            p.lines()
                .any(|l| l.contains(id) && l.contains(&format!("version {FROM} -> {TO} (restart)"))),
            "{id}:\n{p}"
        );
    }
    assert!(
        p.contains(&format!("Upgrade {FROM} -> {TO}, in this order:")),
        "{p}"
    );
    assert!(p.contains("servers one at a time"), "{p}");
    assert!(
        p.contains("agent batch 1: ug-a1") && p.contains("agent batch 2: ug-a2"),
        "{p}"
    );

    let up = ws.up();
    let out = text(&up);
    assert_ok(&up, "up to the new version");
    assert_eq!(
        versions(&fleet, "ug-s1"),
        vec![
            ("ug-a1".to_string(), TO.to_string()),
            ("ug-a2".to_string(), TO.to_string()),
            ("ug-s1".to_string(), TO.to_string()),
        ]
    );
    // Every node really restarted at the new version, in order.
    let s1 = started_at(&fleet, "ug-s1", "k3s", TO);
    let a1 = started_at(&fleet, "ug-a1", "k3s-agent", TO);
    let a2 = started_at(&fleet, "ug-a2", "k3s-agent", TO);
    assert!(
        s1 <= a1 && a1 <= a2,
        "start times: s1 {s1}, a1 {a1}, a2 {a2}"
    );
    let pos = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in:\n{out}"))
    };
    assert!(
        pos(&format!(
            "k3s-server/ug-s1: done (upgraded {FROM} -> {TO}, Ready)"
        )) < pos("k3s-agent/ug-a1: update"),
        "{out}"
    );
    assert!(
        pos(&format!(
            "k3s-agent/ug-a1: done (upgraded {FROM} -> {TO}, Ready)"
        )) < pos("k3s-agent/ug-a2: update"),
        "{out}"
    );
    assert!(
        text(&ws.up()).contains("0 to change"),
        "a second up changes nothing"
    );

    // Drift: a stopped k3s is seen by the refresh and started by `up`.
    fleet.exec_ok("ug-a2", "systemctl stop k3s-agent");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("k3s-agent/ug-a2") && text(&plan).contains("drift: service inactive"),
        "{}",
        text(&plan)
    );
    let quiet = ws.run(&["plan", path_str(&ws.recipe()), "--refresh=false"]);
    assert!(text(&quiet).contains("0 to change"), "{}", text(&quiet));
    assert_ok(&ws.up(), "up after the agent was stopped");
    fleet.exec_ok("ug-a2", "systemctl is-active --quiet k3s-agent");
    assert!(text(&ws.up()).contains("0 to change"));
    assert_ok(&ws.run(&["down", "ug", "--yes"]), "down");
}

/// Labels and taints are applied by k3s only when a node registers: a change reaches
/// the live node through the API, without a restart, and removes only what continuum
/// set (a label set by hand stays).
#[test]
fn labels_and_taints_reach_live_nodes_without_restart() {
    if !fleet_available("labels_and_taints_reach_live_nodes_without_restart") {
        return;
    }
    let fleet = Fleet::start(&["ug-ls", "ug-la"], 88);
    let ws = Workspace::new("ul");
    let write = |labels: &str, taints: &str| {
        std::fs::write(
            ws.recipe(),
            format!(
                "name: ul\ninventory: inventory.yaml\nk3s:\n  version: {FROM}\n  install:\n    source: bundle\n    bundle: {}\n  servers: [ug-ls]\n  readiness_timeout: 90\n  node_labels: {labels}\n  node_taints: {taints}\n",
                root().join("tests/k3s-double").display()
            ),
        )
        .expect("recipe");
    };
    ws.write_inventory(&fleet.defs(), "ops");
    write("{zone: a, tier: edge}", "[\"gpu=true:NoSchedule\"]");
    assert_ok(&ws.up(), "first up");
    fleet.exec_ok("ug-ls", "k3s kubectl label node ug-la manual=yes");
    let starts = |h: &str, unit: &str| {
        fleet
            .exec_ok(
                h,
                &format!("grep -c 'Starting k3s' /var/log/k3s-double/{unit}.log"),
            )
            .trim()
            .to_string()
    };
    let before = (starts("ug-ls", "k3s"), starts("ug-la", "k3s-agent"));

    write("{zone: b, site: farm}", "[\"edge:PreferNoSchedule\"]");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("changed: node-label, node-taint"),
        "{}",
        text(&plan)
    );
    let up = ws.up();
    assert_ok(&up, "up with new labels and taints");
    assert!(
        text(&up).contains("labels and taints updated on the live node, no restart"),
        "{}",
        text(&up)
    );
    assert_eq!(
        (starts("ug-ls", "k3s"), starts("ug-la", "k3s-agent")),
        before,
        "k3s restarted for a label change"
    );
    let json = fleet.exec_ok("ug-ls", "k3s kubectl get node ug-la -o json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("node json");
    let labels = &v["metadata"]["labels"];
    assert_eq!(labels["zone"], "b");
    assert_eq!(labels["site"], "farm");
    assert!(
        labels.get("tier").is_none(),
        "tier was set by continuum and is gone: {labels}"
    );
    assert_eq!(labels["manual"], "yes", "a label set by hand stays");
    let taints: Vec<(String, String)> = v["spec"]["taints"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|t| {
                    (
                        t["key"].as_str().unwrap_or("").to_string(),
                        t["effect"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        taints,
        vec![("edge".to_string(), "PreferNoSchedule".to_string())]
    );
    assert!(text(&ws.up()).contains("0 to change"));
    assert_ok(&ws.run(&["down", "ul", "--yes"]), "down");
}

/// Air-gapped bundles carry the system images: a bundle without the host's
/// `k3s-airgap-images-<arch>` is refused before anything is written there; with it the
/// tarball lands in `agent/images/` before k3s starts, only when it changed.
#[test]
fn airgap_images_are_required_and_uploaded_once() {
    if !fleet_available("airgap_images_are_required_and_uploaded_once") {
        return;
    }
    let fleet = Fleet::start(&["ug-im"], 84);
    let ws = Workspace::new("ui");
    ws.write_inventory(&fleet.defs(), "ops");
    let bundle = ws.dir.path().join("bundle");
    std::fs::create_dir(&bundle).expect("bundle");
    let src = root().join("tests/k3s-double");
    for f in ["install.sh", "k3s"] {
        std::fs::copy(src.join(f), bundle.join(f)).expect("copy");
    }
    std::fs::write(
        ws.recipe(),
        format!(
            "name: ui\ninventory: inventory.yaml\nk3s:\n  version: {FROM}\n  install:\n    source: bundle\n    bundle: {}\n  servers: [ug-im]\n  readiness_timeout: 60\n",
            bundle.display()
        ),
    )
    .expect("recipe");
    let up = ws.up();
    assert_eq!(up.status.code(), Some(3), "{}", text(&up));
    assert!(
        text(&up).contains("no air-gap images for amd64 (expected k3s-airgap-images-amd64.tar.zst"),
        "{}",
        text(&up)
    );
    assert_eq!(fleet.k3s_leftovers("ug-im"), "", "something was installed");

    std::fs::copy(
        src.join("k3s-airgap-images-amd64.tar.zst"),
        bundle.join("k3s-airgap-images-amd64.tar.zst"),
    )
    .expect("images");
    assert_ok(&ws.up(), "up with the images");
    let stat = "stat -c %Y.%s /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst";
    let first = fleet.exec_ok("ug-im", stat);
    assert!(text(&ws.up()).contains("0 to change"));
    assert_eq!(fleet.exec_ok("ug-im", stat), first, "uploaded again");

    // A new tarball in the bundle is drift: uploaded, and k3s restarted to import it.
    std::fs::write(
        bundle.join("k3s-airgap-images-amd64.tar.zst"),
        "k3s TEST DOUBLE air-gap images, second edition\n",
    )
    .expect("new images");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("air-gap images k3s-airgap-images-amd64.tar.zst missing or different"),
        "{}",
        text(&plan)
    );
    assert_ok(&ws.up(), "up with new images");
    assert_eq!(
        fleet.exec_ok(
            "ug-im",
            "cat /var/lib/rancher/k3s/agent/images/k3s-airgap-images-amd64.tar.zst"
        ),
        "k3s TEST DOUBLE air-gap images, second edition\n"
    );
    assert_ok(&ws.run(&["down", "ui", "--yes"]), "down");
}

/// An active host firewall that does not let in what k3s needs: the node is refused
/// before any change, with the exact commands; once they ran, `up` installs it.
#[test]
fn closed_host_firewall_is_refused_with_the_commands_that_open_it() {
    if !fleet_available("closed_host_firewall_is_refused_with_the_commands_that_open_it") {
        return;
    }
    let fleet = Fleet::start(&["ug-fw"], 61);
    fleet.install_double("ug-fw", "ufw", "/usr/sbin/ufw");
    fleet.exec_ok("ug-fw", "ufw allow 22/tcp");
    let ws = Workspace::new("uf");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ug-fw"], "");
    let up = ws.up();
    let all = text(&up);
    assert_eq!(up.status.code(), Some(3), "{all}");
    assert!(
        all.contains("`ug-fw` runs ufw, which does not let in what k3s needs"),
        "{all}"
    );
    let commands: Vec<String> = all
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("sudo ufw allow"))
        .map(str::to_string)
        .collect();
    for want in [
        "sudo ufw allow 6443/tcp",
        "sudo ufw allow 10250/tcp",
        "sudo ufw allow 8472/udp",
        "sudo ufw allow from 10.42.0.0/16 to any",
        "sudo ufw allow from 10.43.0.0/16 to any",
    ] {
        assert!(commands.iter().any(|c| c == want), "{want} missing: {all}");
    }
    assert_eq!(fleet.k3s_leftovers("ug-fw"), "", "something was installed");
    for c in commands.iter().collect::<std::collections::BTreeSet<_>>() {
        fleet.exec_ok("ug-fw", c.trim_start_matches("sudo "));
    }
    assert_ok(&ws.up(), "up once the firewall lets k3s in");
    assert_ok(&ws.run(&["down", "uf", "--yes"]), "down");
}

/// A host whose /usr/local/bin is read-only (an immutable /usr): install.sh falls back
/// to /opt/bin; continuum puts the binary there, passes INSTALL_K3S_BIN_DIR, records
/// it, and `down` finds the uninstall script there.
#[test]
fn read_only_usr_local_bin_falls_back_to_opt_bin() {
    if !fleet_available("read_only_usr_local_bin_falls_back_to_opt_bin") {
        return;
    }
    let fleet = Fleet::start(&["ug-ro"], 62);
    fleet.exec_ok(
        "ug-ro",
        "mkdir -p /opt/bin && mount --bind /usr/local/bin /usr/local/bin && mount -o remount,bind,ro /usr/local/bin",
    );
    let ws = Workspace::new("ur");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ug-ro"], "");
    let plan = ws.run(&["plan", "-v", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("/opt/bin/k3s when /usr/local/bin is read-only"),
        "{}",
        text(&plan)
    );
    assert_ok(&ws.up(), "up with a read-only /usr/local/bin");
    fleet.exec_ok(
        "ug-ro",
        "test -x /opt/bin/k3s && test -x /opt/bin/k3s-uninstall.sh",
    );
    assert_eq!(
        fleet
            .exec_ok("ug-ro", "ls /usr/local/bin | grep -c k3s || true")
            .trim(),
        "0"
    );
    assert_eq!(ws.state()["hosts"]["ug-ro"]["bin_dir"], "/opt/bin");
    let nodes = fleet.exec_ok("ug-ro", "/opt/bin/k3s kubectl get nodes -o json");
    assert!(nodes.contains("\"ug-ro\""), "{nodes}");
    assert!(
        text(&ws.up()).contains("0 to change"),
        "the refresh finds k3s in /opt/bin"
    );
    assert_ok(&ws.run(&["down", "ur", "--yes"]), "down");
    assert_eq!(
        fleet.exec_ok("ug-ro", "ls /opt/bin").trim(),
        "",
        "left in /opt/bin"
    );
}

/// An enforcing SELinux host: install.sh's SELinux step is skipped with a bundle, so
/// continuum installs container-selinux and k3s-selinux when the host reaches its
/// repositories, else stops before any change naming them; the node runs with
/// `selinux: true`, and the refresh sees that as converged.
#[test]
fn enforcing_selinux_gets_its_packages_or_a_clear_error() {
    if !fleet_available("enforcing_selinux_gets_its_packages_or_a_clear_error") {
        return;
    }
    let fleet = Fleet::start(&["ug-se"], 63);
    fleet.install_double("ug-se", "getenforce", "/usr/sbin/getenforce");
    fleet.install_double("ug-se", "rpm", "/usr/bin/rpm");
    fleet.install_double("ug-se", "dnf", "/usr/bin/dnf");
    fleet.exec_ok(
        "ug-se",
        "mkdir -p /etc/selinux-double && echo Enforcing > /etc/selinux-double/mode",
    );
    let ws = Workspace::new("use");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ug-se"], "");
    let up = ws.up();
    let all = text(&up);
    assert_eq!(up.status.code(), Some(3), "{all}");
    assert!(
        all.contains("enforces SELinux and lacks container-selinux and k3s-selinux"),
        "{all}"
    );
    assert_eq!(
        fleet.k3s_leftovers("ug-se"),
        "",
        "k3s went on without its policy"
    );

    fleet.exec_ok(
        "ug-se",
        "mkdir -p /etc/dnf-double && touch /etc/dnf-double/online",
    );
    assert_ok(&ws.up(), "up once the repositories are reachable");
    fleet.exec_ok("ug-se", "rpm -q container-selinux k3s-selinux");
    let config = fleet.exec_ok("ug-se", "cat /etc/rancher/k3s/config.yaml");
    assert!(config.contains("selinux: true"), "{config}");
    assert!(
        text(&ws.up()).contains("0 to change"),
        "refresh agrees with selinux: true"
    );
    assert_ok(&ws.run(&["down", "use", "--yes"]), "down");
}
