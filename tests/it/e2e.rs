//! End-to-end scenarios of issue 2 on the test fleet with the k3s test double.

use std::time::{Duration, Instant};

use crate::harness::{
    Fleet, HostDef, Workspace, assert_ok, fleet_available, kubeconfig_server, node_labels,
    path_str, text,
};

/// 1 server + 2 agents come up; kubectl accepts the kubeconfig; a second `up` changes
/// nothing; a 4th host joins alone; `down` leaves nothing behind.
#[test]
fn lifecycle_up_idempotent_grow_down() {
    if !fleet_available("lifecycle_up_idempotent_grow_down") {
        return;
    }
    let names = ["lc-srv", "lc-a1", "lc-a2", "lc-a3"];
    let fleet = Fleet::start(&names, 20);
    let ws = Workspace::new("lc");
    let hosts = |n: usize| -> Vec<HostDef<'static>> {
        names[..n]
            .iter()
            .map(|h| HostDef {
                name: h,
                ip: fleet.ip(h),
                labels: if h.starts_with("lc-a") {
                    &[("continuum.io/tier", "edge")]
                } else {
                    &[]
                },
            })
            .collect()
    };
    ws.write_inventory(&hosts(3), "ops");
    ws.write_recipe(&["lc-srv"], "  node_labels:\n    continuum.io/env: lc\n");

    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert_ok(&plan, "plan");
    assert!(text(&plan).contains("5 to create"), "{}", text(&plan));

    let t = Instant::now();
    let up = ws.up();
    assert_ok(&up, "first up");
    eprintln!(
        "first up (1 server + 2 agents): {:.1} s",
        t.elapsed().as_secs_f64()
    );

    // The API lists both agents with their labels.
    let nodes = node_labels(&fleet, "lc-srv");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    for a in ["lc-a1", "lc-a2"] {
        let l = &nodes[a];
        assert_eq!(
            l.get("continuum.io/tier").map(String::as_str),
            Some("edge"),
            "{a}: {l:?}"
        );
        assert_eq!(l.get("continuum.io/env").map(String::as_str), Some("lc"));
    }
    // config.yaml is private on every host; the token is in no output.
    let state = ws.state();
    let token = state["cluster"]["token"]
        .as_str()
        .expect("token")
        .to_string();
    assert!(!text(&up).contains(&token));
    for h in &names[..3] {
        let mode = fleet.exec_ok(h, "stat -c %a /etc/rancher/k3s/config.yaml");
        assert_eq!(mode.trim(), "600", "{h}");
    }
    // Issue 10: agents join with the agents' token (`::node:`), never the cluster's.
    for h in ["lc-a1", "lc-a2"] {
        let config = fleet.exec_ok(h, "cat /etc/rancher/k3s/config.yaml");
        assert!(
            config.contains("::node:") && !config.contains(&token),
            "{h} joined with a server token"
        );
    }
    let server_config = fleet.exec_ok("lc-srv", "cat /etc/rancher/k3s/config.yaml");
    assert!(server_config.contains("agent-token:"), "{server_config}");
    let state_mode = std::fs::metadata(ws.state_file())
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(state_mode.ok(), Some(0o600));

    // The real kubectl accepts the merged kubeconfig.
    assert_eq!(
        kubeconfig_server(ws.dir.path(), path_str(&ws.kubeconfig()), "lc"),
        format!("https://{}:6443", fleet.ip("lc-srv"))
    );

    // Second up: nothing to change. It refreshes (issue 10): exactly one read-only
    // login per host, no file touched. With --refresh=false no host is contacted.
    let logins: Vec<usize> = names[..3].iter().map(|h| fleet.logins(h)).collect();
    // The counter must see continuum at all, or the checks below prove nothing.
    assert!(
        logins.iter().all(|n| *n > 0),
        "no login counted: {logins:?}"
    );
    let files: Vec<String> = names[..3].iter().map(|h| fleet.k3s_files(h)).collect();
    let again = ws.up();
    assert_ok(&again, "second up");
    assert!(text(&again).contains("0 to change"), "{}", text(&again));
    for (i, h) in names[..3].iter().enumerate() {
        assert_eq!(
            fleet.logins(h),
            logins[i] + 1,
            "{h}: a converged up refreshes with one login"
        );
        assert_eq!(
            fleet.k3s_files(h),
            files[i],
            "{h}: files changed on a converged up"
        );
    }
    let logins: Vec<usize> = names[..3].iter().map(|h| fleet.logins(h)).collect();
    let quiet = ws.run(&["up", path_str(&ws.recipe()), "--yes", "--refresh=false"]);
    assert_ok(&quiet, "up --refresh=false");
    assert!(text(&quiet).contains("0 to change"), "{}", text(&quiet));
    for (i, h) in names[..3].iter().enumerate() {
        assert_eq!(
            fleet.logins(h),
            logins[i],
            "{h} saw a login with --refresh=false"
        );
    }

    // A 4th host in the inventory: only it is joined.
    ws.write_inventory(&hosts(4), "ops");
    let plan = ws.run(&["plan", path_str(&ws.recipe()), "--refresh=false"]);
    assert!(text(&plan).contains("+ k3s-agent/lc-a3"), "{}", text(&plan));
    assert!(text(&plan).contains("1 to create"), "{}", text(&plan));
    let grow = ws.up();
    assert_ok(&grow, "up with a 4th host");
    for (i, h) in names[1..3].iter().enumerate() {
        assert_eq!(
            fleet.logins(h),
            logins[i + 1] + 1,
            "{h}: only the refresh may contact it when lc-a3 joins"
        );
        assert_eq!(
            fleet.k3s_files(h),
            files[i + 1],
            "{h}: files changed when only lc-a3 joined"
        );
    }
    assert_eq!(
        fleet.k3s_files("lc-srv"),
        files[0],
        "server files changed when only lc-a3 joined"
    );
    assert_eq!(node_labels(&fleet, "lc-srv").len(), 4);

    let status = ws.run(&["status", "lc", "--output", "json"]);
    assert_ok(&status, "status");
    let s: serde_json::Value = serde_json::from_slice(&status.stdout).expect("status json");
    let nodes = s["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    assert!(
        nodes.iter().all(|n| n["ready"] == "True"
            && n["arch"] == "amd64"
            && n["version"] == "v1.31.4+k3s1"),
        "{s}"
    );

    let down = ws.run(&["down", "lc", "--yes"]);
    assert_ok(&down, "down");
    for h in names {
        assert_eq!(fleet.k3s_leftovers(h), "", "{h} still has k3s files");
    }
    let kc = std::fs::read_to_string(ws.kubeconfig()).unwrap_or_default();
    assert!(
        !kc.contains("name: lc"),
        "context left in kubeconfig:\n{kc}"
    );
    assert!(!ws.state_file().exists(), "state not deleted");
}

/// A host stopped during `up`: the others finish, the exit code is non-zero and names
/// the host; once it is back, `up` completes only that host.
#[test]
fn stopped_host_fails_alone_and_resumes() {
    if !fleet_available("stopped_host_fails_alone_and_resumes") {
        return;
    }
    let names = ["sh-srv", "sh-a1", "sh-a2"];
    let fleet = Fleet::start(&names, 30);
    let ws = Workspace::new("sh");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["sh-srv"], "");

    let child = ws
        .cmd()
        .args([
            "up",
            path_str(&ws.recipe()),
            "--yes",
            "--connect-timeout",
            "2",
            "--connect-attempts",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    std::thread::sleep(Duration::from_millis(300));
    fleet.stop("sh-a2");
    let out = child.wait_with_output().expect("wait");
    assert_eq!(
        out.status.code(),
        Some(3),
        "partial failure exit code:\n{}",
        text(&out)
    );
    let all = text(&out);
    assert!(all.contains("sh-a2"), "{all}");
    let state = ws.state();
    assert_eq!(state["resources"]["k3s-server/sh-srv"]["status"], "applied");
    assert_eq!(state["resources"]["k3s-agent/sh-a1"]["status"], "applied");
    // Issue 9: unreachable from the start is `offline`; lost mid-install is `failed`.
    let a2 = state["resources"]["k3s-agent/sh-a2"]["status"].clone();
    assert!(a2 == "offline" || a2 == "failed", "{a2}");
    assert!(
        state["resources"]["k3s-agent/sh-a2"]["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("sh-a2"))
    );

    fleet.restart("sh-a2");
    let a1_logins = fleet.logins("sh-a1");
    let a1_files = fleet.k3s_files("sh-a1");
    let plan = ws.run(&["plan", path_str(&ws.recipe()), "--refresh=false"]);
    let p = text(&plan);
    assert!(
        p.contains("+ k3s-agent/sh-a2")
            && !p.contains("k3s-agent/sh-a1 ")
            && !p.contains("k3s-server/sh-srv"),
        "{p}"
    );
    let again = ws.up();
    assert_ok(&again, "up after the host came back");
    assert_eq!(
        fleet.logins("sh-a1"),
        a1_logins + 1,
        "sh-a1: only the refresh may contact it"
    );
    assert_eq!(fleet.k3s_files("sh-a1"), a1_files);
    assert_eq!(node_labels(&fleet, "sh-srv").len(), 3);
    assert_ok(&ws.run(&["down", "sh", "--yes"]), "down");
}

/// `kill -9` in the middle of `up`, then `up` again: converges, nothing duplicated,
/// nothing lost from state.
#[test]
fn kill_9_mid_up_then_resume() {
    if !fleet_available("kill_9_mid_up_then_resume") {
        return;
    }
    let names = ["k9-srv", "k9-a1", "k9-a2"];
    let fleet = Fleet::start(&names, 40);
    let ws = Workspace::new("k9");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["k9-srv"], "");

    let mut child = ws
        .cmd()
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    // Kill as soon as the first server is recorded and the agents are under way.
    crate::harness::wait_for_state(&ws, "\"k3s-agent/");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let before = ws.state();
    let token = before["cluster"]["token"].clone();
    assert!(token.as_str().is_some_and(|t| t.len() == 64));

    let again = ws.up();
    assert_ok(&again, "up after kill -9");
    let after = ws.state();
    assert_eq!(
        after["cluster"]["token"], token,
        "the cluster token changed"
    );
    for id in [
        "k3s-server/k9-srv",
        "k3s-agent/k9-a1",
        "k3s-agent/k9-a2",
        "cluster-ready",
        "kubeconfig",
    ] {
        assert_eq!(after["resources"][id]["status"], "applied", "{id}: {after}");
    }
    let nodes = node_labels(&fleet, "k9-srv");
    assert_eq!(
        nodes.keys().cloned().collect::<Vec<_>>(),
        vec!["k9-a1", "k9-a2", "k9-srv"]
    );
    // Exactly one k3s process per host, one config.
    for h in names {
        let n = fleet.exec_ok(h, "pgrep -f 'k3s (server|agent)' | wc -l");
        assert_eq!(n.trim(), "1", "{h} runs {n} k3s processes");
    }
    assert!(text(&ws.up()).contains("0 to change"));
    assert_ok(&ws.run(&["down", "k9", "--yes"]), "down");
}

/// A changed host key is refused with a clear message (and exit code 5); an explicit
/// `--replace-host-key` accepts it.
#[test]
fn changed_host_key_is_refused() {
    if !fleet_available("changed_host_key_is_refused") {
        return;
    }
    let fleet = Fleet::start(&["hk-srv"], 50);
    let ws = Workspace::new("hk");
    ws.write_inventory(
        &[HostDef {
            name: "hk-srv",
            ip: fleet.ip("hk-srv"),
            labels: &[],
        }],
        "root",
    );
    ws.write_recipe(&["hk-srv"], "");
    assert_ok(&ws.up(), "first up");
    let fp = ws.state()["hosts"]["hk-srv"]["host_key_fingerprint"]
        .as_str()
        .expect("pinned fingerprint")
        .to_string();
    assert!(fp.starts_with("SHA256:"));

    fleet.rekey("hk-srv");
    // Force a contact: a label change updates the node.
    ws.write_inventory(
        &[HostDef {
            name: "hk-srv",
            ip: fleet.ip("hk-srv"),
            labels: &[("zone", "b")],
        }],
        "root",
    );
    let out = ws.up();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    let msg = text(&out);
    assert!(
        msg.contains("has CHANGED")
            && msg.contains("--replace-host-key hk-srv")
            && msg.contains(&fp),
        "{msg}"
    );

    // Another controller (another checkout sharing the state, or this one after its
    // known_hosts was deleted by hand) has no pin of its own: the fingerprint state
    // recorded still decides, and the key its first contact saw is not kept.
    let other = tempfile::Builder::new()
        .prefix("cit")
        .tempdir()
        .expect("tempdir");
    let other_state = other.path().join("state");
    std::fs::create_dir_all(&other_state).expect("state dir");
    std::fs::copy(ws.state_file(), other_state.join("hk.json")).expect("copy state");
    let out = ws
        .cmd()
        .state_dir(&other_state)
        .args(["status", "hk"])
        .output();
    let msg = text(&out);
    assert!(
        msg.contains("has CHANGED")
            && msg.contains(&fp)
            && msg.contains("recorded in the environment's state"),
        "{msg}"
    );
    let known = std::fs::read_to_string(other_state.join("hk.known_hosts")).unwrap_or_default();
    assert!(
        !known.contains(&fleet.ip("hk-srv")),
        "the unverified key was kept: {known}"
    );
    let out = ws
        .cmd()
        .state_dir(&other_state)
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    assert_eq!(out.status.code(), Some(5), "{}", text(&out));
    assert!(text(&out).contains("recorded in the environment's state"));

    let out = ws.run(&[
        "up",
        path_str(&ws.recipe()),
        "--yes",
        "--replace-host-key",
        "hk-srv",
    ]);
    assert_ok(&out, "up with --replace-host-key");
    let new_fp = ws.state()["hosts"]["hk-srv"]["host_key_fingerprint"]
        .as_str()
        .expect("fp")
        .to_string();
    assert_ne!(new_fp, fp);
    assert_ok(&ws.run(&["down", "hk", "--yes"]), "down");
}

/// A non-root user without passwordless sudo gets a clear error and nothing changes.
#[test]
fn user_without_sudo_is_a_clear_error() {
    if !fleet_available("user_without_sudo_is_a_clear_error") {
        return;
    }
    let fleet = Fleet::start(&["ns-srv"], 60);
    let ws = Workspace::new("ns");
    ws.write_inventory(
        &[HostDef {
            name: "ns-srv",
            ip: fleet.ip("ns-srv"),
            labels: &[],
        }],
        "nosudo",
    );
    ws.write_recipe(&["ns-srv"], "");
    let out = ws.up();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(
        text(&out).contains("cannot run sudo without a password"),
        "{}",
        text(&out)
    );
    assert_eq!(fleet.k3s_leftovers("ns-srv"), "");
}
