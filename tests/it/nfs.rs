//! Issue 11, item 7: the NFS client on every node of a cluster with the serverless
//! layer (the kubelet mounts the nfs-server-provisioner's volumes with the host's
//! mount.nfs; docs/oscar.md, "NFS client on the nodes"). The fleet's hosts are Debian
//! without nfs-common and without network; the apt-get double stands in for reachable
//! repositories.
//!
//! Fleet hosts of this module are named `nf-*` and use 10.250.0.100-101.

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, path_str, text};

/// A node that cannot get the NFS client is refused before anything changes on it,
/// naming the package; once the repositories answer, `up` installs it on every node;
/// a client removed by hand is drift that the next `up` repairs.
#[test]
fn serverless_nodes_get_the_nfs_client_or_a_clear_error() {
    if !fleet_available("serverless_nodes_get_the_nfs_client_or_a_clear_error") {
        return;
    }
    let fleet = Fleet::start(&["nf-s", "nf-a"], 100);
    let ws = Workspace::new("nf");
    ws.write_inventory(&fleet.defs(), "ops");
    let cli = ws.dir.path().join("oscar-cli.yaml");
    ws.write_recipe(
        &["nf-s"],
        &format!(
            "  disable: [traefik]\nserverless:\n  profile: edge\n  readiness_timeout: 30\n  oscar_cli:\n    path: {}\n",
            cli.display()
        ),
    );

    // Offline repositories (the real apt-get, no network): refused, nothing installed.
    let up = ws.up();
    let all = text(&up);
    assert_eq!(up.status.code(), Some(3), "{all}");
    assert!(
        all.contains("`nf-s` has no NFS client (mount.nfs)")
            && all.contains("`apt-get install nfs-common` failed there")
            && all.contains("Install nfs-common on it"),
        "{all}"
    );
    for h in ["nf-s", "nf-a"] {
        assert_eq!(fleet.k3s_leftovers(h), "", "{h} was changed");
    }

    // Reachable repositories: the client is installed on every node, then k3s.
    for h in ["nf-s", "nf-a"] {
        fleet.repos_online(h);
    }
    fleet.place_oscar_double("nf-s");
    let up = ws.up();
    assert_ok(&up, "up once the repositories answer");
    assert!(
        text(&up).contains("installing the NFS client (nfs-common)"),
        "{}",
        text(&up)
    );
    for h in ["nf-s", "nf-a"] {
        fleet.exec_ok(
            h,
            "test -x /usr/sbin/mount.nfs && test -f /var/lib/apt-double/nfs-common",
        );
    }
    assert!(text(&ws.up()).contains("0 to change"));

    // Removed by hand: the refresh names it, `up` puts it back.
    fleet.exec_ok("nf-a", "rm -f /usr/sbin/mount.nfs");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert!(
        text(&plan).contains("k3s-agent/nf-a")
            && text(&plan).contains("no NFS client (mount.nfs) for the serverless layer's volumes"),
        "{}",
        text(&plan)
    );
    assert_ok(&ws.up(), "up repairs the NFS client");
    fleet.exec_ok("nf-a", "test -x /usr/sbin/mount.nfs");
    assert_ok(&ws.run(&["down", "nf", "--yes"]), "down");
}
