//! Issue 14, item 5: a host reached through a bastion. The bastion's host key is pinned
//! in the environment's known_hosts like any host's (OpenSSH's jump ssh gets `-F`, not
//! the `-o` options: continuum writes an ssh_config of the environment's), and a
//! changed bastion key is refused, naming the bastion.
//!
//! Fleet hosts of this module are named `bj-*` and use 10.250.0.102-103.

use crate::harness::{Fleet, Workspace, assert_ok, client_key, fleet_available, text};

#[test]
fn bastion_key_is_pinned_and_a_changed_one_refused() {
    if !fleet_available("bastion_key_is_pinned_and_a_changed_one_refused") {
        return;
    }
    let fleet = Fleet::start(&["bj-gw", "bj-srv"], 102);
    let gw = fleet.ip("bj-gw");
    let ws = Workspace::new("bj");
    std::fs::write(
        ws.dir.path().join("inventory.yaml"),
        format!(
            "defaults:\n  user: ops\n  key: {}\nhosts:\n  - name: bj-srv\n    address: {}\n    bastion: root@{gw}\n",
            client_key().display(),
            fleet.ip("bj-srv"),
        ),
    )
    .expect("inventory");
    ws.write_recipe(&["bj-srv"], "");
    assert_ok(&ws.up(), "up through the bastion");

    // Both keys pinned in the environment's own known_hosts.
    let kh = ws.state_dir().join("bj.known_hosts");
    let pinned = std::fs::read_to_string(&kh).expect("known_hosts");
    let names: Vec<&str> = pinned
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(
        names.contains(&gw.as_str()) && names.contains(&fleet.ip("bj-srv").as_str()),
        "{pinned}"
    );
    // The target saw continuum come from the bastion, not from the controller.
    let log = fleet.exec_ok(
        "bj-srv",
        "grep 'Accepted publickey for ops' /var/log/sshd.log",
    );
    assert!(
        log.lines().all(|l| l.contains(&format!("from {gw} "))),
        "{log}"
    );

    // The bastion is reinstalled: refused, naming it, with the way out.
    fleet.rekey("bj-gw");
    let out = ws.up();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(5), "{msg}");
    assert!(
        msg.contains(&format!("host key of the bastion `root@{gw}`"))
            && msg.contains("has CHANGED")
            && msg.contains(&format!("ssh-keygen -R '{gw}'")),
        "{msg}"
    );
    // Taken on purpose: drop the old key as the message says, and go on.
    let keygen = std::process::Command::new("ssh-keygen")
        .args(["-R", &gw, "-f"])
        .arg(&kh)
        .output()
        .expect("ssh-keygen");
    assert!(keygen.status.success());
    assert_ok(&ws.up(), "up after the bastion's key was dropped");
    assert_ok(&ws.run(&["down", "bj", "--yes"]), "down");
}
