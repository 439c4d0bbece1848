//! Issue 10, item 5: hosts whose service manager is openrc (Alpine and others), and
//! hosts with no service manager k3s's install script can use (docs/k3s.md, "Service
//! managers"). The fleet's service manager doubles (tests/fleet/doubles/openrc and
//! systemctl) stand in for OpenRC and systemd.
//!
//! Fleet hosts of this module are named `or-*` and use 10.250.0.64-66.

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, path_str, text, versions};
use crate::upgrade::{FROM, TO, bundle_at};

fn write_recipe(ws: &Workspace, version: &str, bundle: &std::path::Path) {
    std::fs::write(
        ws.recipe(),
        format!(
            "name: {env}\ninventory: inventory.yaml\nk3s:\n  version: {version}\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [or-s]\n  readiness_timeout: 90\n",
            env = ws.env,
            bundle = bundle.display()
        ),
    )
    .expect("recipe");
}

/// A host with neither systemd nor openrc is refused before anything changes on it;
/// on openrc hosts continuum installs (init scripts, env files under /etc/rancher/k3s),
/// sees a stopped service as drift and starts it, upgrades with a restart through
/// openrc, and `down` removes the services and their runlevel links.
#[test]
fn openrc_hosts_follow_install_sh_and_a_host_without_one_is_refused() {
    if !fleet_available("openrc_hosts_follow_install_sh_and_a_host_without_one_is_refused") {
        return;
    }
    let fleet = Fleet::start(&["or-s", "or-a", "or-n"], 64);
    fleet.service("or-s", "openrc");
    fleet.service("or-a", "openrc");
    fleet.service("or-n", "none");
    let ws = Workspace::new("or");
    ws.write_inventory(&fleet.defs(), "ops");
    let from = bundle_at(ws.dir.path(), FROM);
    write_recipe(&ws, FROM, &from);

    // Neither service manager: a clear error naming the host, nothing written there.
    let up = ws.up();
    let all = text(&up);
    assert_ne!(up.status.code(), Some(0), "{all}");
    assert!(
        all.contains("`or-n` has neither systemd nor openrc"),
        "{all}"
    );
    assert_eq!(fleet.k3s_leftovers("or-n"), "", "or-n was changed");
    fleet.exec_ok("or-s", "rc-service k3s status");
    fleet.exec_ok("or-a", "rc-service k3s-agent status");

    // Once it has openrc too, everything converges.
    fleet.service("or-n", "openrc");
    assert_ok(&ws.up(), "up once every host has openrc");
    for (host, svc) in [
        ("or-s", "k3s"),
        ("or-a", "k3s-agent"),
        ("or-n", "k3s-agent"),
    ] {
        fleet.exec_ok(
            host,
            &format!(
                "test -x /etc/init.d/{svc} && test -L /etc/runlevels/default/{svc} && test -f /etc/rancher/k3s/{svc}.env && ! test -e /etc/systemd/system/{svc}.service && rc-service {svc} status"
            ),
        );
    }
    assert_eq!(
        versions(&fleet, "or-s"),
        [("or-a", FROM), ("or-n", FROM), ("or-s", FROM)]
            .map(|(n, v)| (n.to_string(), v.to_string()))
    );
    assert!(
        text(&ws.up()).contains("0 to change"),
        "the refresh reads openrc's service status as converged"
    );

    // A stopped service is drift, and `up` starts it through openrc.
    fleet.exec_ok("or-a", "rc-service k3s-agent stop");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("k3s-agent/or-a") && text(&plan).contains("drift: service inactive"),
        "{}",
        text(&plan)
    );
    assert_ok(&ws.up(), "up after the openrc service was stopped");
    fleet.exec_ok("or-a", "rc-service k3s-agent status");

    // An upgrade restarts every node through openrc: every node reports the new version.
    let to = bundle_at(ws.dir.path(), TO);
    write_recipe(&ws, TO, &to);
    assert_ok(&ws.up(), "upgrade on openrc hosts");
    assert_eq!(
        versions(&fleet, "or-s"),
        [("or-a", TO), ("or-n", TO), ("or-s", TO)].map(|(n, v)| (n.to_string(), v.to_string()))
    );
    let starts = fleet.exec_ok(
        "or-a",
        "grep -c 'Starting k3s agent' /var/log/k3s-agent.log",
    );
    assert!(
        starts.trim().parse::<u32>().unwrap_or(0) >= 3,
        "install, start after the stop, upgrade: {starts}"
    );
    assert!(text(&ws.up()).contains("0 to change"));

    assert_ok(&ws.run(&["down", "or", "--yes"]), "down");
    for host in ["or-s", "or-a", "or-n"] {
        assert_eq!(fleet.k3s_leftovers(host), "", "{host}");
        assert_eq!(
            fleet
                .exec_ok(
                    host,
                    "ls /etc/init.d/ /etc/runlevels/default/ | grep k3s || true"
                )
                .trim(),
            "",
            "{host}: an openrc service is left"
        );
    }
}
