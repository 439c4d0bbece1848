//! Issue 14, item 3 (in part): signals in the middle of `up`. SIGINT and SIGTERM let
//! the in-flight steps finish (and be recorded), start no new one, release the lock
//! and exit 130 or 143; the next `up` resumes and converges with nothing duplicated.
//!
//! Fleet hosts of this module are named `ft-*` and use 10.250.0.74-76.

use std::time::{Duration, Instant};

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, node_labels, path_str, text};

/// Start `up`, wait until the agents are under way, send `signal`, return the exit code
/// and what `up` printed.
fn signal_mid_up(ws: &Workspace, signal: &str) -> (Option<i32>, String) {
    let child = ws
        .cmd()
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn up");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(t) = std::fs::read_to_string(ws.state_file())
            && t.contains("\"k3s-agent/")
        {
            break;
        }
        assert!(Instant::now() < deadline, "up never reached the agents");
        std::thread::sleep(Duration::from_millis(20));
    }
    let sent = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
    let out = child.wait_with_output().expect("wait for up");
    (out.status.code(), text(&out))
}

#[test]
fn sigint_and_sigterm_mid_up_stop_cleanly_and_up_resumes() {
    if !fleet_available("sigint_and_sigterm_mid_up_stop_cleanly_and_up_resumes") {
        return;
    }
    let names = ["ft-srv", "ft-a1", "ft-a2"];
    let fleet = Fleet::start(&names, 74);
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let ws = Workspace::new(&format!("ft{}", signal.to_lowercase()));
        ws.write_inventory(&fleet.defs(), "ops");
        ws.write_recipe(&["ft-srv"], "");
        let (got, out) = signal_mid_up(&ws, signal);
        assert_eq!(got, Some(code), "SIG{signal}:\n{out}");
        assert!(
            out.contains("finishing in-flight steps"),
            "SIG{signal}: {out}"
        );
        // Nothing is left half-marked: every resource in state is applied or pending
        // (a pending one is resumed by the next run), and the lock is free.
        let st = ws.state();
        for (id, r) in st["resources"].as_object().expect("resources") {
            let s = r["status"].as_str().unwrap_or("");
            assert!(matches!(s, "applied" | "pending"), "{id}: {s}");
        }
        let again = ws.up();
        assert_ok(&again, &format!("up after SIG{signal}"));
        assert!(!text(&again).contains("locked"), "{}", text(&again));
        assert_eq!(
            node_labels(&fleet, "ft-srv")
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec!["ft-a1", "ft-a2", "ft-srv"]
        );
        for h in names {
            let n = fleet.exec_ok(h, "pgrep -f 'k3s (server|agent)' | wc -l");
            assert_eq!(n.trim(), "1", "{h} runs {n} k3s processes");
        }
        assert!(text(&ws.up()).contains("0 to change"));
        assert_ok(&ws.run(&["down", &ws.env, "--yes"]), "down");
    }
}
