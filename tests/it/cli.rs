//! CLI behaviour that needs no hosts: help, plan output, exit codes, refusal paths.

use crate::harness::{Continuum, Workspace, assert_ok, root};

#[test]
fn help_lists_the_commands() {
    let out = Continuum::new().arg("--help").output();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    insta::assert_snapshot!("help", text);
}

#[test]
fn plan_of_the_example_recipe() {
    let ws = Workspace::new("farm-edge");
    let out = ws
        .cmd()
        .current_dir(root())
        .args(["plan", "recipes/farm-edge.yaml"])
        .output();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    insta::assert_snapshot!(
        "plan_farm_edge",
        String::from_utf8_lossy(&out.stdout).to_string()
    );
}

#[test]
fn plan_json_is_machine_readable() {
    let ws = Workspace::new("farm-edge");
    let out = ws
        .cmd()
        .current_dir(root())
        .args(["plan", "recipes/farm-edge.yaml", "--output", "json"])
        .output();
    assert!(out.status.success());
    // JSON Lines: warnings (e.g. a key file missing on this machine) come as their own
    // events before the plan.
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect();
    let v = lines
        .iter()
        .find(|v| v["event"] == "plan")
        .expect("a plan event");
    assert_eq!(v["plan"]["env"], "farm-edge");
    assert_eq!(v["plan"]["changes"].as_array().map(Vec::len), Some(5));
}

#[test]
fn graph_prints_dot_with_edges() {
    let out = Continuum::new()
        .current_dir(root())
        .args(["graph", "recipes/farm-ha.yaml"])
        .output();
    assert!(out.status.success());
    let dot = String::from_utf8_lossy(&out.stdout);
    assert!(dot.starts_with("digraph \"farm\""));
    assert!(dot.contains("\"k3s-server/pi-01\" -> \"k3s-server/pi-02\";"));
    assert!(dot.contains("\"k3s-server/pi-01\" -> \"k3s-agent/jetson-01\";"));
    // Issue 9: the kubeconfig needs the first server and only runs after readiness.
    assert!(dot.contains("\"cluster-ready\" -> \"kubeconfig\" [style=dashed];"));
    assert!(dot.contains("\"k3s-server/pi-01\" -> \"kubeconfig\";"));
    assert!(dot.contains("\"k3s-agent/jetson-01\" -> \"cluster-ready\" [style=dashed];"));
}

#[test]
fn up_without_yes_and_without_terminal_is_refused() {
    let ws = Workspace::new("farm-edge");
    let out = ws
        .cmd()
        .current_dir(root())
        .args(["up", "recipes/farm-edge.yaml"])
        .output();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("re-run with --yes"));
    assert!(!ws.state_file().exists(), "nothing may be written");
}

#[test]
fn status_of_unknown_environment_is_an_error() {
    let ws = Workspace::new("nope");
    let out = ws.cmd().args(["status", "nope"]).output();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no state for environment `nope`"));
}

#[test]
fn down_of_unknown_environment_is_a_no_op() {
    let ws = Workspace::new("nope");
    let out = ws.cmd().args(["down", "nope", "--yes"]).output();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to destroy"));
}

#[test]
fn a_second_up_on_a_locked_environment_names_the_holder() {
    let ws = Workspace::new("farm-edge");
    let store = continuum::files::Store::new(&ws.state_dir(), "farm-edge");
    let _lock = store.lock().expect("lock");
    let out = ws
        .cmd()
        .current_dir(root())
        .args(["up", "recipes/farm-edge.yaml", "--yes"])
        .output();
    assert_eq!(out.status.code(), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
}

/// Issue 9: every command that writes a file accepts a bare name in the current
/// directory, writes it atomically there and exits 0 (no "cannot write inv.yaml").
#[test]
fn bare_file_names_write_in_the_current_directory() {
    let ws = Workspace::new("bare");
    let cwd = tempfile::tempdir().expect("cwd");
    let run = |args: &[&str]| ws.cmd().current_dir(cwd.path()).args(args).output();
    // inventory add: created, then extended, in the working directory.
    assert_ok(
        &run(&[
            "inventory",
            "add",
            "inv.yaml",
            "pi-01",
            "--host",
            "10.0.0.5",
        ]),
        "inventory add (create)",
    );
    assert_ok(
        &run(&[
            "inventory",
            "add",
            "inv.yaml",
            "pi-02",
            "--host",
            "10.0.0.6",
        ]),
        "inventory add (extend)",
    );
    let inv = std::fs::read_to_string(cwd.path().join("inv.yaml")).expect("inv.yaml");
    assert!(inv.contains("pi-01") && inv.contains("pi-02"), "{inv}");
    // A bastion or user a shell would read is refused, and the file is left as it was.
    for (flag, value) in [
        ("--bastion", "x;touch /tmp/pwned;@gw.example.org"),
        ("--user", "ops -oProxyCommand=sh"),
    ] {
        let out = run(&[
            "inventory",
            "add",
            "inv.yaml",
            "pi-03",
            "--host",
            "10.0.0.7",
            flag,
            value,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag} {value} accepted");
        assert!(
            err.contains("inv.yaml:") && err.contains("invalid"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(cwd.path().join("inv.yaml")).expect("inv.yaml"),
            inv,
            "the inventory changed"
        );
    }

    // inventory import: source and target both bare names.
    std::fs::copy(
        root().join("tests/fixtures/ansible/k3s-ansible.yml"),
        cwd.path().join("sample.yml"),
    )
    .expect("copy sample");
    assert_ok(
        &run(&["inventory", "import", "sample.yml", "out.yaml"]),
        "inventory import",
    );
    let out = std::fs::read_to_string(cwd.path().join("out.yaml")).expect("out.yaml");
    assert!(out.contains("jetson-01"), "{out}");

    // graph --svg: rendered by Graphviz, written atomically at the bare name.
    std::fs::write(
        cwd.path().join("recipe.yaml"),
        format!(
            "name: bare\ninventory: inv.yaml\nk3s:\n  version: v1.31.4+k3s1\n  install: {{source: bundle, bundle: {}}}\n  servers: [pi-01]\n",
            root().join("tests/k3s-double").display()
        ),
    )
    .expect("recipe");
    assert!(
        std::process::Command::new("dot").arg("-V").output().is_ok(),
        "Graphviz `dot` is needed for `graph --svg` (scripts/test installs it)"
    );
    let g = run(&["graph", "recipe.yaml", "--svg", "graph.svg"]);
    assert_ok(&g, "graph --svg");
    let svg = std::fs::read_to_string(cwd.path().join("graph.svg")).expect("graph.svg");
    assert!(
        svg.contains("<svg") && svg.replace("&#45;", "-").contains("k3s-agent/pi-02"),
        "{svg}"
    );
    let leftovers: Vec<String> = std::fs::read_dir(cwd.path())
        .expect("ls")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}
