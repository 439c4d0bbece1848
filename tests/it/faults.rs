//! Issue 14, item 3 (in part): signals in the middle of `up`. SIGINT and SIGTERM let
//! the in-flight steps finish (and be recorded), start no new one, release the lock
//! and exit 130 or 143; the next `up` resumes and converges with nothing duplicated.
//!
//! Fleet hosts of this module are named `ft-*` and use 10.250.0.104-116.

use std::time::Duration;

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, node_labels, path_str, text};

/// Start `up`, wait until the agents are under way, send `signal`, return the exit code
/// and what `up` printed.
fn signal_mid_up(ws: &Workspace, signal: &str) -> (Option<i32>, String) {
    let child = ws
        .cmd()
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    crate::harness::wait_for_state(ws, "\"k3s-agent/");
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
    let fleet = Fleet::start(&names, 104);
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

/// A full disk under the state directory: the write fails naming the state file, the
/// previous state stays intact and readable, and once there is room again `up` goes on.
/// A full disk on a host: the upload fails naming the host and the file.
#[test]
fn full_disks_fail_clearly_and_lose_nothing() {
    if !fleet_available("full_disks_fail_clearly_and_lose_nothing") {
        return;
    }
    let fleet = Fleet::start(&["ft-disk"], 107);
    let ws = Workspace::new("ftdisk");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ft-disk"], "");
    // The host: a tiny filesystem where the k3s binary goes.
    fleet.exec_ok("ft-disk", "mount -t tmpfs -o size=16k tmpfs /usr/local/bin");
    let out = ws.up();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("on `ft-disk`")
            && msg.contains("/usr/local/bin/k3s")
            && msg.contains("No space left on device"),
        "{msg}"
    );
    fleet.exec_ok("ft-disk", "umount /usr/local/bin");
    assert_ok(&ws.up(), "up once the host has room");

    // The controller: the state directory on a tiny filesystem, then filled up.
    let mnt = ws.dir.path().join("small");
    std::fs::create_dir_all(&mnt).expect("mountpoint");
    let mount = |args: &[&str]| {
        let st = std::process::Command::new(args[0])
            .args(&args[1..])
            .status()
            .expect("mount");
        assert!(st.success(), "{args:?}");
    };
    let small = mnt.to_str().expect("utf8").to_string();
    mount(&["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", &small]);
    let _unmount = Unmount(small.clone());
    let state_dir = mnt.join("state");
    let copy = std::process::Command::new("cp")
        .arg("-a")
        .arg(ws.state_dir())
        .arg(&state_dir)
        .status()
        .expect("cp");
    assert!(copy.success());
    let state_file = state_dir.join("ftdisk.json");
    let before = std::fs::read_to_string(&state_file).expect("state");
    // Fill the filesystem.
    let _ = std::process::Command::new("dd")
        .args(["if=/dev/zero", &format!("of={small}/fill"), "bs=4k"])
        .stderr(std::process::Stdio::null())
        .status();
    // A change to record: a new label on the node.
    ws.write_recipe(&["ft-disk"], "  node_labels: {zone: b}\n");
    let out = ws
        .cmd()
        .state_dir(&state_dir)
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    let msg = text(&out);
    assert_ne!(out.status.code(), Some(0), "{msg}");
    assert!(msg.contains("No space left on device"), "{msg}");
    assert!(
        msg.contains(&small),
        "the message names the state path: {msg}"
    );
    assert_eq!(
        std::fs::read_to_string(&state_file).expect("state"),
        before,
        "the previous state was damaged"
    );
    serde_json::from_str::<serde_json::Value>(&before).expect("still JSON");
    std::fs::remove_file(mnt.join("fill")).expect("free");
    let out = ws
        .cmd()
        .state_dir(&state_dir)
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    assert_ok(&out, "up once the state directory has room");
    let out = ws
        .cmd()
        .state_dir(&state_dir)
        .args(["down", "ftdisk", "--yes"])
        .output();
    assert_ok(&out, "down");
}

/// Unmounts a test's scratch filesystem however the test ends.
struct Unmount(String);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Run `args` with JSON events on stdout and SIGKILL it right after its `k`-th event;
/// returns whether it was killed (false: it finished before that).
fn kill_9_after_event(ws: &Workspace, args: &[&str], k: usize) -> bool {
    use std::io::BufRead;
    let mut child = ws
        .cmd()
        .args(args)
        .args(["-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn();
    let stdout = child.stdout.take().expect("stdout");
    let mut seen = 0;
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if line.starts_with('{') && line.contains("\"event\"") {
            seen += 1;
            if seen == k {
                let _ = child.kill();
                let _ = child.wait();
                return true;
            }
        }
    }
    let _ = child.wait();
    false
}

/// `kill -9` at twelve points, six of `up` and six of `down` (right after the 1st,
/// 3rd, 5th, ... JSON event), each followed by a run that converges: one k3s per host,
/// the nodes as declared, nothing left after `down`.
#[test]
fn kill_9_at_twelve_points_of_up_and_down_then_converge() {
    if !fleet_available("kill_9_at_twelve_points_of_up_and_down_then_converge") {
        return;
    }
    let names = ["ft-k9s", "ft-k9a"];
    let fleet = Fleet::start(&names, 108);
    let ws = Workspace::new("ftk9");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["ft-k9s"], "");
    let recipe = ws.recipe();
    let up_args = ["up", path_str(&recipe), "--yes"];
    let down_args = ["down", "ftk9", "--yes"];
    let mut killed = 0;
    for k in [1, 3, 5, 7, 9, 11] {
        killed += usize::from(kill_9_after_event(&ws, &up_args, k));
        assert_ok(&ws.up(), &format!("up after kill -9 at event {k} of up"));
        assert_eq!(
            node_labels(&fleet, "ft-k9s")
                .keys()
                .cloned()
                .collect::<Vec<_>>(),
            vec!["ft-k9a", "ft-k9s"],
            "event {k} of up"
        );
        for h in names {
            let n = fleet.exec_ok(h, "pgrep -f 'k3s (server|agent)' | wc -l");
            assert_eq!(n.trim(), "1", "event {k} of up: {h} runs {n} k3s processes");
        }
        killed += usize::from(kill_9_after_event(&ws, &down_args, k.div_ceil(2)));
        assert_ok(
            &ws.run(&down_args),
            &format!("down after kill -9 at event {} of down", k.div_ceil(2)),
        );
        for h in names {
            assert_eq!(fleet.k3s_leftovers(h), "", "event {k}: {h} keeps k3s files");
        }
        assert!(!ws.state_file().exists(), "state left after down");
    }
    assert!(killed >= 10, "only {killed} of 12 runs were killed mid-way");
}

/// Start `up -o json` and call `at` once the event line satisfying `when` is seen; then
/// wait for the run and return its exit code and all it printed.
fn up_and_act(
    ws: &Workspace,
    when: impl Fn(&str) -> bool,
    at: impl FnOnce(),
) -> (Option<i32>, String) {
    use std::io::BufRead;
    let mut child = ws
        .cmd()
        .args([
            "up",
            path_str(&ws.recipe()),
            "--yes",
            "-o",
            "json",
            "--connect-timeout",
            "3",
            "--connect-attempts",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = Vec::new();
    let mut at = Some(at);
    for line in std::io::BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if when(&line)
            && let Some(f) = at.take()
        {
            f();
        }
        lines.push(line);
    }
    let out = child.wait_with_output().expect("wait");
    assert!(at.is_none(), "the moment never came:\n{}", lines.join("\n"));
    (
        out.status.code(),
        format!(
            "{}\n{}",
            lines.join("\n"),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// A host cut off (its link down) in the middle of the k3s binary's upload, slowed to
/// 64 kbit/s so that the cut lands inside it; and a host stopped while it joins. Each
/// fails alone, naming the host, leaves no half-written binary in place, and the next
/// `up` (link back, host back) converges.
#[test]
fn cut_mid_upload_and_stopped_mid_join_fail_alone_and_resume() {
    if !fleet_available("cut_mid_upload_and_stopped_mid_join_fail_alone_and_resume") {
        return;
    }
    let names = ["ft-cs", "ft-cut", "ft-stop"];
    let fleet = Fleet::start(&names, 110);
    let ws = Workspace::new("ftcut");
    // ft-stop joins in a second run, so that it is still to be installed then.
    ws.write_inventory(&fleet.defs()[..2], "ops");
    ws.write_recipe(&["ft-cs"], "");
    crate::harness::fleet_sh(&["shape", "ft-cut", "64kbit"]);
    let uploading = |l: &str| l.contains("\"k3s-agent/ft-cut\"") && l.contains("installing k3s");
    let (code, out) = up_and_act(&ws, uploading, || {
        std::thread::sleep(Duration::from_millis(1500));
        crate::harness::fleet_sh(&["cut", "ft-cut"]);
    });
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("k3s-agent/ft-cut"), "{out}");
    assert!(
        out.contains("`ft-cut`") && out.contains("k3s binary"),
        "the failure names the host and the upload: {out}"
    );
    crate::harness::fleet_sh(&["uncut", "ft-cut"]);
    crate::harness::fleet_sh(&["shape", "ft-cut", "off"]);
    // No half-written binary where k3s would run it.
    let (code, _) = fleet.exec(
        "ft-cut",
        "test -e /usr/local/bin/k3s && ! /usr/local/bin/k3s --version",
    );
    assert_ne!(code, 0, "a truncated k3s binary was put in place");

    assert_ok(&ws.up(), "up once the link is back");

    // The stopped host: killed while its agent installs and joins.
    ws.write_inventory(&fleet.defs(), "ops");
    let joining = |l: &str| l.contains("\"k3s-agent/ft-stop\"") && l.contains("installing k3s");
    let (code, out) = up_and_act(&ws, joining, || fleet.stop("ft-stop"));
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("ft-stop"), "{out}");
    fleet.restart("ft-stop");
    assert_ok(&ws.up(), "up once both hosts are back");
    assert_eq!(
        node_labels(&fleet, "ft-cs")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["ft-cs", "ft-cut", "ft-stop"]
    );
    assert!(text(&ws.up()).contains("0 to change"));
    assert_ok(&ws.run(&["down", "ftcut", "--yes"]), "down");
}

/// A fault-injecting TCP proxy on loopback (this kernel has no netem): each chunk is
/// held `delay` in each direction, and with probability `loss` for another 600 ms (a
/// retransmission after a lost segment); in black-hole mode nothing passes and the
/// connections stay open, as on a link that lost everything.
struct Proxy {
    port: u16,
    black_hole: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Proxy {
    fn start(upstream: std::net::SocketAddr, delay: Duration, loss: f64) -> Proxy {
        use std::sync::atomic::{AtomicBool, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let black_hole = std::sync::Arc::new(AtomicBool::new(false));
        let bh = black_hole.clone();
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().enumerate() {
                let Ok(client) = conn else { continue };
                let Ok(server) =
                    std::net::TcpStream::connect_timeout(&upstream, Duration::from_secs(3))
                else {
                    continue;
                };
                for (i, (mut from, mut to)) in [
                    (client.try_clone(), server.try_clone()),
                    (server.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                .enumerate()
                {
                    let bh = bh.clone();
                    // A small xorshift per direction: reproducible, no dependency.
                    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ ((n as u64) << 8 | i as u64);
                    std::thread::spawn(move || {
                        use std::io::{Read, Write};
                        let mut buf = [0u8; 16 * 1024];
                        while let Ok(k) = from.read(&mut buf) {
                            if k == 0 {
                                let _ = to.shutdown(std::net::Shutdown::Write);
                                break;
                            }
                            if bh.load(Ordering::SeqCst) {
                                continue;
                            }
                            seed ^= seed << 13;
                            seed ^= seed >> 7;
                            seed ^= seed << 17;
                            let lost = (seed % 10_000) as f64 / 10_000.0 < loss;
                            std::thread::sleep(
                                delay
                                    + if lost {
                                        Duration::from_millis(600)
                                    } else {
                                        Duration::ZERO
                                    },
                            );
                            if to.write_all(&buf[..k]).is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        Proxy { port, black_hole }
    }

    fn black_hole(&self) {
        self.black_hole
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A slow, lossy link (300 ms round trip added, 5 % of segments late by 600 ms) still
/// converges; a link that loses everything ends in a clear timeout naming the host.
#[test]
fn slow_lossy_link_succeeds_and_a_dead_one_times_out_naming_the_host() {
    if !fleet_available("slow_lossy_link_succeeds_and_a_dead_one_times_out_naming_the_host") {
        return;
    }
    let fleet = Fleet::start(&["ft-ls", "ft-slow"], 115);
    let proxy = Proxy::start(
        format!("{}:22", fleet.ip("ft-slow")).parse().expect("addr"),
        Duration::from_millis(150),
        0.05,
    );
    let ws = Workspace::new("ftslow");
    let inventory = |labels: &str| {
        format!(
            "defaults:\n  user: ops\n  key: {}\nhosts:\n  - name: ft-ls\n    address: {}\n  - name: ft-slow\n    address: 127.0.0.1\n    port: {}\n{labels}",
            crate::harness::client_key().display(),
            fleet.ip("ft-ls"),
            proxy.port
        )
    };
    std::fs::write(ws.dir.path().join("inventory.yaml"), inventory("")).expect("inventory");
    ws.write_recipe(&["ft-ls"], "");
    let up = ws.up();
    assert_ok(&up, "up over a slow, lossy link");
    assert_eq!(
        node_labels(&fleet, "ft-ls")
            .keys()
            .cloned()
            .collect::<Vec<_>>(),
        vec!["ft-ls", "ft-slow"]
    );

    // Everything lost: a change on the host must reach it, and cannot.
    proxy.black_hole();
    std::fs::write(
        ws.dir.path().join("inventory.yaml"),
        inventory("    labels: {zone: b}\n"),
    )
    .expect("inventory");
    let out = ws.up();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(3), "{msg}");
    assert!(
        msg.contains("cannot connect to `ft-slow` (127.0.0.1)") && msg.contains("ft-slow"),
        "{msg}"
    );
    assert_ok(
        &ws.run(&["down", "ftslow", "--yes", "--forget", "ft-slow"]),
        "down, forgetting the unreachable host",
    );
}
