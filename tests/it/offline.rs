//! Edge reality (issue 9) on the test fleet: an offline device never blocks the
//! cluster, an environment can always be torn down, and files are written where the
//! user says (bare names in the current directory).
//!
//! Fleet hosts of this module are named `ol-*` / `td-*` and use 10.250.0.80-93.

use std::process::Output;

use crate::harness::{
    Fleet, Workspace, assert_ok, fleet_available, kubeconfig_server, node_labels, text,
};

/// The continuum binary run from the workspace directory with bare names: the recipe
/// is `recipe.yaml`, the state directory `state`.
fn bare(ws: &Workspace, args: &[&str]) -> Output {
    ws.cmd()
        .current_dir(ws.dir.path())
        .state_dir("state")
        .args(args)
        .output()
}

fn up_bare(ws: &Workspace) -> Output {
    bare(
        ws,
        &[
            "up",
            "recipe.yaml",
            "--yes",
            "--connect-timeout",
            "2",
            "--connect-attempts",
            "1",
        ],
    )
}

fn status_json(ws: &Workspace, env: &str) -> serde_json::Value {
    let out = bare(ws, &["status", env, "--output", "json"]);
    assert_ok(&out, "status");
    serde_json::from_slice(&out.stdout).expect("status json")
}

fn node<'a>(status: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    status["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["host"] == host))
        .unwrap_or_else(|| panic!("{host} not in status: {status}"))
}

/// 1 server + 3 agents, one agent host switched off: the kubeconfig is written (to a
/// bare `kubeconfig.path`) and usable, `up` exits 3, status shows the host offline with
/// its address; with `allow_unavailable: 1` the same run exits 0; once the host is
/// back, the next `up` joins it without touching the others.
#[test]
fn offline_agent_never_withholds_the_cluster() {
    if !fleet_available("offline_agent_never_withholds_the_cluster") {
        return;
    }
    let names = ["ol-srv", "ol-a1", "ol-a2", "ol-ghost"];
    let fleet = Fleet::start(&names, 80);
    let ws = Workspace::new("ol");
    ws.write_inventory(&fleet.defs(), "ops");
    let recipe = |extra: &str| {
        ws.write_recipe(
            &["ol-srv"],
            &format!("{extra}kubeconfig:\n  path: kc.yaml\n  context: ol\n"),
        );
    };
    recipe("");
    fleet.stop("ol-ghost");

    let out = up_bare(&ws);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(3), "exit code:\n{all}");
    assert!(
        all.contains("cluster-ready: done (3 node(s) Ready; not applied: ol-ghost)"),
        "{all}"
    );
    assert!(
        all.contains("kubeconfig: done (context `ol` written to"),
        "{all}"
    );
    let state = ws.state();
    assert_eq!(
        state["resources"]["k3s-agent/ol-ghost"]["status"],
        "offline"
    );
    for id in [
        "k3s-agent/ol-a1",
        "k3s-agent/ol-a2",
        "cluster-ready",
        "kubeconfig",
    ] {
        assert_eq!(state["resources"][id]["status"], "applied", "{id}: {state}");
    }

    // The kubeconfig is at the bare name, in the directory `up` ran in, and the real
    // kubectl reads the context.
    let kc = ws.dir.path().join("kc.yaml");
    assert!(kc.is_file(), "kc.yaml not written in the working directory");
    assert_eq!(
        kubeconfig_server(ws.dir.path(), "kc.yaml", "ol"),
        format!("https://{}:6443", fleet.ip("ol-srv"))
    );

    // status: the host is offline, with the inventory's address.
    let s = status_json(&ws, "ol");
    let ghost = node(&s, "ol-ghost");
    assert_eq!(ghost["state"], "offline", "{s}");
    assert_eq!(ghost["address"], fleet.ip("ol-ghost"), "{s}");
    let st = bare(&ws, &["status", "ol", "--offline"]);
    assert!(text(&st).contains("offline"), "{}", text(&st));

    // Within allow_unavailable the same situation succeeds, and the host is tried.
    recipe("  allow_unavailable: 1\n");
    let plan = bare(&ws, &["plan", "recipe.yaml"]);
    assert!(
        text(&plan).contains("+ k3s-agent/ol-ghost") && text(&plan).contains("offline last time"),
        "{}",
        text(&plan)
    );
    let out = up_bare(&ws);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "allowed offline agent:\n{all}");
    assert!(
        all.contains("1 agent(s) offline, within k3s.allow_unavailable (1): ol-ghost"),
        "{all}"
    );
    assert_eq!(
        node(&status_json(&ws, "ol"), "ol-ghost")["state"],
        "offline"
    );

    // The host comes back: only it joins.
    fleet.restart("ol-ghost");
    let logins: Vec<usize> = ["ol-a1", "ol-a2"].iter().map(|h| fleet.logins(h)).collect();
    let files: Vec<String> = ["ol-srv", "ol-a1", "ol-a2"]
        .iter()
        .map(|h| fleet.k3s_files(h))
        .collect();
    let out = up_bare(&ws);
    assert_ok(&out, "up after the host came back");
    assert_eq!(
        ws.state()["resources"]["k3s-agent/ol-ghost"]["status"],
        "applied"
    );
    for (i, h) in ["ol-a1", "ol-a2"].iter().enumerate() {
        assert_eq!(fleet.logins(h), logins[i] + 1, "{h}: more than the refresh");
    }
    for (i, h) in ["ol-srv", "ol-a1", "ol-a2"].iter().enumerate() {
        assert_eq!(fleet.k3s_files(h), files[i], "{h}: files changed");
    }
    assert_eq!(node_labels(&fleet, "ol-srv").len(), 4);
    assert!(text(&up_bare(&ws)).contains("0 to change"));

    assert_ok(&bare(&ws, &["down", "ol", "--yes"]), "down");
    let left = std::fs::read_to_string(&kc).unwrap_or_default();
    assert!(!left.contains("name: ol"), "context left behind:\n{left}");
}

/// An environment whose agent was never reachable is destroyed by a plain `down`
/// (nothing to uninstall there, no connection attempted). One whose installed agents
/// are gone for good: `nodes remove --forget` drops one that the inventory no longer
/// lists (its Node object deleted through the server), `down` refuses the other naming
/// `--forget`, and `down --forget` finishes, naming what may remain on the device.
#[test]
fn teardown_always_finishes() {
    if !fleet_available("teardown_always_finishes") {
        return;
    }
    let names = ["td-srv", "td-a1", "td-a2", "td-never"];
    let fleet = Fleet::start(&names, 90);
    let ws = Workspace::new("td");
    ws.write_inventory(&fleet.defs(), "ops");
    ws.write_recipe(&["td-srv"], "");

    // 1. Never reachable: `down` drops it without connecting.
    fleet.stop("td-never");
    let out = up_bare(&ws);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let down = bare(&ws, &["down", "td", "--yes"]);
    let all = text(&down);
    assert_ok(&down, "down with a never-reached agent");
    assert!(
        all.contains("k3s-agent/td-never: done (dropped: k3s was never installed there)"),
        "{all}"
    );
    for h in ["td-srv", "td-a1", "td-a2"] {
        assert_eq!(fleet.k3s_leftovers(h), "", "{h} still has k3s files");
    }
    assert!(!ws.state_file().exists(), "state not deleted");

    // 2. Everything installed, then two agents are gone for good.
    fleet.restart("td-never");
    assert_ok(&up_bare(&ws), "up with every host");
    fleet.stop("td-a1");
    fleet.stop("td-a2");
    // td-a1 leaves the inventory by hand first: `nodes remove` still knows it from state.
    let defs: Vec<_> = fleet
        .defs()
        .into_iter()
        .filter(|d| d.name != "td-a1")
        .collect();
    ws.write_inventory(&defs, "ops");
    // Without --forget the device is tried first (not drained for nothing) and the
    // error names the way out.
    let rm = bare(
        &ws,
        &[
            "nodes",
            "remove",
            "td",
            "td-a1",
            "--yes",
            "--connect-timeout",
            "2",
            "--connect-attempts",
            "1",
        ],
    );
    assert_eq!(rm.status.code(), Some(3), "{}", text(&rm));
    assert!(
        text(&rm).contains("continuum nodes remove td td-a1 --forget"),
        "{}",
        text(&rm)
    );
    assert_eq!(
        ws.state()["resources"]["k3s-agent/td-a1"]["status"],
        "offline"
    );
    let rm = bare(
        &ws,
        &["nodes", "remove", "td", "td-a1", "--forget", "--yes"],
    );
    let all = text(&rm);
    assert_ok(&rm, "nodes remove --forget");
    assert!(
        all.contains("forgot `td-a1` without contacting it"),
        "{all}"
    );
    assert!(all.contains("/var/lib/rancher/k3s"), "{all}");
    assert!(!node_labels(&fleet, "td-srv").contains_key("td-a1"));
    let state = ws.state();
    assert!(
        state["resources"].get("k3s-agent/td-a1").is_none(),
        "{state}"
    );
    assert!(state["hosts"].get("td-a1").is_none(), "{state}");

    let down = bare(
        &ws,
        &[
            "down",
            "td",
            "--yes",
            "--connect-timeout",
            "2",
            "--connect-attempts",
            "1",
        ],
    );
    let all = text(&down);
    assert_eq!(down.status.code(), Some(3), "{all}");
    assert!(all.contains("continuum down td --forget td-a2"), "{all}");
    assert!(ws.state_file().exists());

    // A host the state does not know is refused before anything is touched.
    let out = bare(&ws, &["down", "td", "--yes", "--forget", "td-nobody"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("has no host `td-nobody` (state knows: td-a2"),
        "{}",
        text(&out)
    );
    assert!(ws.state_file().exists());

    let down = bare(&ws, &["down", "td", "--yes", "--forget", "td-a2"]);
    let all = text(&down);
    assert_ok(&down, "down --forget");
    assert!(
        all.contains("forgot `td-a2` without contacting it")
            && all.contains("k3s-agent-uninstall.sh"),
        "{all}"
    );
    for h in ["td-srv", "td-never"] {
        assert_eq!(fleet.k3s_leftovers(h), "", "{h} still has k3s files");
    }
    assert!(!ws.state_file().exists(), "state not deleted");
}
