//! Pull-based enrolment (issue 15 item 2) on the test fleet with the k3s double: a
//! fleet host runs a pool's first-boot script (the harness stands in for the boot) and
//! joins with the pool's labels; an expired token and a revoked one are refused; the
//! node that joined stays; a Raspberry Pi reboots once for the memory cgroup, then
//! joins. Hosts 10.250.0.216-222 only.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, node_labels, path_str, text};

/// Copy every file of the bundle `dir` to `/opt/continuum-enroll` on `host` and run the
/// first-boot script there as root, as the unit would; (exit code, output).
fn boot(fleet: &Fleet, host: &str, dir: &Path) -> (i32, String) {
    fleet.exec_ok(
        host,
        "rm -rf /opt/continuum-enroll && mkdir -m 700 /opt/continuum-enroll",
    );
    for e in std::fs::read_dir(dir).expect("bundle dir") {
        let p = e.expect("entry").path();
        let name = p
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_string();
        fleet.put_file(host, &p, &format!("/opt/continuum-enroll/{name}"));
    }
    run_script(fleet, host)
}

/// Run the first-boot script already on `host` as root, as the unit does at a boot;
/// (exit code, output).
fn run_script(fleet: &Fleet, host: &str) -> (i32, String) {
    fleet
        .exec(
            host,
            "sh /opt/continuum-enroll/continuum-enroll.sh 2>&1; echo \"exit=$?\"",
        )
        .1
        .rsplit_once("exit=")
        .map(|(out, code)| (code.trim().parse().unwrap_or(-1), out.to_string()))
        .unwrap_or((-1, String::new()))
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).expect("metadata").permissions().mode() & 0o777
}

#[test]
fn enrolled_device_joins_with_pool_labels_expired_and_revoked_tokens_are_refused() {
    if !fleet_available(
        "enrolled_device_joins_with_pool_labels_expired_and_revoked_tokens_are_refused",
    ) {
        return;
    }
    let names = ["en-srv", "en-dev1", "en-dev2", "en-dev3"];
    let fleet = Fleet::start(&names, 216);
    let ws = Workspace::new("en");
    ws.write_inventory(&fleet.defs()[..1], "ops");
    ws.write_recipe(&["en-srv"], "");
    assert_ok(&ws.up(), "up");

    // A bundle for pool `field`: private directory and files, the token in no output.
    let field = ws.dir.path().join("field");
    let out = ws.run(&[
        "enroll",
        "bundle",
        "en",
        "--pool",
        "field",
        "--out",
        path_str(&field),
        "--label",
        "site=north",
        "--label",
        "example.com/tier=edge",
        "--ttl",
        "1h",
    ]);
    assert_ok(&out, "enroll bundle field");
    assert_eq!(mode(&field), 0o700);
    for f in [
        "user-data",
        "continuum-enroll.sh",
        "continuum-enroll.service",
        "config.yaml",
        "cmdline.txt.append",
        "README.md",
        "k3s",
        "install.sh",
    ] {
        let p = field.join(f);
        assert!(p.is_file(), "{f} missing: {}", text(&out));
        assert_eq!(mode(&p), 0o600, "{f}");
    }
    let config = std::fs::read_to_string(field.join("config.yaml")).expect("config.yaml");
    let token = config
        .lines()
        .find_map(|l| l.strip_prefix("token: "))
        .map(|t| t.trim_matches('"').to_string())
        .expect("token line");
    let (_, id_secret) = token.split_once("::").expect("K10 token");
    assert!(
        !text(&out).contains(id_secret),
        "the token is in the output"
    );
    let state_text = std::fs::read_to_string(ws.state_file()).expect("state");
    assert!(
        !state_text.contains(id_secret),
        "the token's secret is in state"
    );
    let state = ws.state();
    let pool = &state["pools"]["field"];
    assert_eq!(pool["token_id"].as_str(), id_secret.split('.').next());
    assert_eq!(pool["labels"]["continuum.io/pool"], "field");
    // The server's token list names it with its description.
    let listed = fleet.exec_ok("en-srv", "k3s token list");
    assert!(listed.contains("continuum pool field"), "{listed}");

    // A device runs the first-boot files and joins with the pool's labels.
    let (code, log) = boot(&fleet, "en-dev1", &field);
    assert_eq!(code, 0, "{log}");
    let nodes = node_labels(&fleet, "en-srv");
    let l = nodes
        .get("en-dev1")
        .unwrap_or_else(|| panic!("en-dev1 not registered: {nodes:?}"));
    assert_eq!(
        l.get("continuum.io/pool").map(String::as_str),
        Some("field")
    );
    assert_eq!(l.get("site").map(String::as_str), Some("north"));
    assert_eq!(l.get("example.com/tier").map(String::as_str), Some("edge"));
    let shown = fleet.exec_ok("en-srv", "k3s kubectl get nodes --show-labels");
    assert!(shown.contains("continuum.io/pool=field"), "{shown}");
    // The device's copy of the token is gone; its config is private; a second boot
    // does nothing.
    fleet.exec_ok("en-dev1", "test ! -e /opt/continuum-enroll/config.yaml");
    let m = fleet.exec_ok("en-dev1", "stat -c %a /etc/rancher/k3s/config.yaml");
    assert_eq!(m.trim(), "600");
    let (code, again) = boot(&fleet, "en-dev1", &field);
    assert_eq!(code, 0, "{again}");
    assert!(again.contains("already enrolled"), "{again}");

    // status lists it as enrolled through the pool, in text and JSON.
    let st = ws.run(&["status", "en"]);
    assert_ok(&st, "status");
    assert!(
        text(&st).contains("Enrolled through pools") && text(&st).contains("en-dev1"),
        "{}",
        text(&st)
    );
    let st = ws.run(&["-o", "json", "status", "en"]);
    assert_ok(&st, "status json");
    let v: serde_json::Value = serde_json::from_slice(&st.stdout).expect("status json");
    let enrolled = v["enrolled"].as_array().expect("enrolled");
    assert!(
        enrolled
            .iter()
            .any(|n| n["name"] == "en-dev1" && n["pool"] == "field"),
        "{v}"
    );

    // An expired token is refused (and the tokencleaner removed it).
    let short = ws.dir.path().join("short");
    assert_ok(
        &ws.run(&[
            "enroll",
            "bundle",
            "en",
            "--pool",
            "short",
            "--out",
            path_str(&short),
            "--ttl",
            "3s",
        ]),
        "enroll bundle short",
    );
    std::thread::sleep(Duration::from_secs(5));
    let (code, log) = boot(&fleet, "en-dev2", &short);
    assert_ne!(code, 0, "an expired token joined: {log}");
    let agent_log = fleet.exec_ok("en-dev2", "cat /var/log/k3s-double/k3s-agent.log");
    assert!(agent_log.contains("401 Unauthorized"), "{agent_log}");
    assert!(!node_labels(&fleet, "en-srv").contains_key("en-dev2"));
    let listed = fleet.exec_ok("en-srv", "k3s token list");
    assert!(!listed.contains("continuum pool short"), "{listed}");
    let pools = ws.run(&["-o", "json", "enroll", "list", "en"]);
    assert_ok(&pools, "enroll list");
    let v: serde_json::Value = serde_json::from_slice(&pools.stdout).expect("pools json");
    let cond = |p: &str| {
        v.as_array()
            .and_then(|a| a.iter().find(|r| r["pool"] == p))
            .map(|r| r["condition"].clone())
    };
    assert_eq!(cond("short"), Some("expired".into()));
    assert_eq!(cond("field"), Some("active".into()));

    // Revoked: a new device is refused; revoking twice is fine; the joined node stays.
    let rev = ws.run(&["enroll", "revoke", "en", "--pool", "field"]);
    assert_ok(&rev, "revoke");
    assert!(text(&rev).contains("deleted"), "{}", text(&rev));
    let rev = ws.run(&["enroll", "revoke", "en", "--pool", "field"]);
    assert_ok(&rev, "revoke again");
    assert!(text(&rev).contains("already gone"), "{}", text(&rev));
    let (code, log) = boot(&fleet, "en-dev3", &field);
    assert_ne!(code, 0, "a revoked token joined: {log}");
    let agent_log = fleet.exec_ok("en-dev3", "cat /var/log/k3s-double/k3s-agent.log");
    assert!(agent_log.contains("401 Unauthorized"), "{agent_log}");
    let server_log = fleet.exec_ok("en-srv", "cat /var/log/k3s-double/k3s.log");
    assert!(server_log.contains("invalid bearer token"), "{server_log}");
    assert!(!node_labels(&fleet, "en-srv").contains_key("en-dev3"));
    std::thread::sleep(Duration::from_secs(4));
    let ready = fleet.exec_ok("en-srv", "k3s kubectl get node en-dev1 -o json");
    let node: serde_json::Value = serde_json::from_str(&ready).expect("node json");
    let cond_ready = node["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .map(|c| c["status"].clone());
    assert_eq!(
        cond_ready,
        Some("True".into()),
        "the joined node lost its place"
    );

    // Nodes enrolled this way are not in the recipe: `up` leaves them alone.
    let again = ws.up();
    assert_ok(&again, "second up");
    assert!(text(&again).contains("0 to change"), "{}", text(&again));
    assert!(node_labels(&fleet, "en-srv").contains_key("en-dev1"));
    let down = ws.run(&["down", "en", "--yes"]);
    assert_ok(&down, "down");
    assert!(
        text(&down).contains("joined through the pool(s) field, short are not contacted"),
        "{}",
        text(&down)
    );
}

/// Make a running fleet host look like a Raspberry Pi (the fleet's firmware double).
fn pi_persona(name: &str, args: &[&str]) {
    let mut a = vec!["persona", name, "pi"];
    a.extend_from_slice(args);
    let out = crate::harness::fleet_sh(&a);
    assert!(out.status.success(), "persona {name}: {}", text(&out));
}

/// Wait until the persona's reboot double has finished its fake boot.
fn wait_rebooted(fleet: &Fleet, host: &str) {
    let done = crate::harness::poll_until(
        Duration::from_secs(60),
        Duration::from_millis(500),
        || {
            fleet
                .exec(host, "grep -c rebooted /var/log/fleet-reboot.log")
                .1
        },
        |n| n.trim().parse::<u32>().is_ok_and(|n| n >= 1),
    );
    assert!(
        done.trim().parse::<u32>().is_ok_and(|n| n >= 1),
        "{host} never came back"
    );
}

/// A Raspberry Pi runs the first-boot script: it adds the memory cgroup to
/// cmdline.txt, reboots once, and after the boot (the unit runs the script again) joins.
/// A Pi whose firmware reads another file stays off: the script fails after one reboot
/// instead of rebooting again. Hosts 10.250.0.220-222.
#[test]
fn pi_enrols_after_one_reboot_for_the_memory_cgroup() {
    if !fleet_available("pi_enrols_after_one_reboot_for_the_memory_cgroup") {
        return;
    }
    let names = ["ep-srv", "ep-pi", "ep-stuck"];
    let fleet = Fleet::start(&names, 220);
    pi_persona("ep-pi", &[]);
    pi_persona("ep-stuck", &["cmdline=stuck"]);
    let ws = Workspace::new("ep");
    ws.write_inventory(&fleet.defs()[..1], "ops");
    ws.write_recipe(&["ep-srv"], "");
    assert_ok(&ws.up(), "up");
    let dir = ws.dir.path().join("pis");
    assert_ok(
        &ws.run(&[
            "enroll",
            "bundle",
            "ep",
            "--pool",
            "pis",
            "--out",
            path_str(&dir),
            "--ttl",
            "1h",
        ]),
        "enroll bundle pis",
    );

    for host in ["ep-pi", "ep-stuck"] {
        let (code, log) = boot(&fleet, host, &dir);
        assert_eq!(code, 0, "{host}: {log}");
        assert!(log.contains("rebooting once"), "{host}: {log}");
        wait_rebooted(&fleet, host);
    }
    fleet.assert_pi_cmdline_enables_memory("ep-pi");
    fleet.exec_ok("ep-pi", "test -f /boot/firmware/cmdline.txt.continuum-orig");
    // After the boot the unit runs the script again: the good Pi joins.
    let (code, log) = run_script(&fleet, "ep-pi");
    assert_eq!(code, 0, "{log}");
    let nodes = node_labels(&fleet, "ep-srv");
    assert_eq!(
        nodes
            .get("ep-pi")
            .and_then(|l| l.get("continuum.io/pool"))
            .map(String::as_str),
        Some("pis"),
        "{nodes:?}"
    );
    // The stuck Pi: no second reboot, a clear error, no k3s.
    let (code, log) = run_script(&fleet, "ep-stuck");
    assert_ne!(code, 0, "{log}");
    assert!(log.contains("still off after a reboot"), "{log}");
    for (host, n) in [("ep-pi", "1"), ("ep-stuck", "1")] {
        let reboots = fleet.exec_ok(host, "grep -c 'reboot requested' /var/log/fleet-reboot.log");
        assert_eq!(reboots.trim(), n, "{host}");
    }
    assert!(!node_labels(&fleet, "ep-srv").contains_key("ep-stuck"));
    assert_ok(&ws.run(&["down", "ep", "--yes"]), "down");
}
