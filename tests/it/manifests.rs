//! Issue 10 item 7 on the test fleet: removing a manifest removes its component. k3s's
//! deploy controller leaves the objects of a deleted file (the k3s double does too),
//! so these tests look at the HelmChart and other objects through kubectl on the
//! server, not only at the files: switching the ingress mode, turning Knative off and
//! on again, and dropping the serverless layer.
//!
//! Fleet hosts of this module are named `mf-*` and use 10.250.0.132-133.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use base64::Engine;
use serde_json::Value;

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, text};

/// `ingress: gateway` needs k3s v1.32.2 or later (Traefik v3).
const VERSION: &str = "v1.32.2+k3s1";
const MANIFESTS: &str = "/var/lib/rancher/k3s/server/manifests";

/// Names of the objects of one kind on the server, or the error kubectl printed.
fn names(fleet: &Fleet, host: &str, kind_and_ns: &str) -> Result<BTreeSet<String>, String> {
    let (code, out) = fleet.exec(host, &format!("k3s kubectl get {kind_and_ns} -o json 2>&1"));
    if code != 0 {
        return Err(out.trim().to_string());
    }
    let v: Value = serde_json::from_str(&out).map_err(|e| format!("{e}: {out}"))?;
    Ok(v["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["metadata"]["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default())
}

fn helmcharts(fleet: &Fleet, host: &str) -> BTreeSet<String> {
    names(fleet, host, "-n kube-system helmcharts").expect("helmcharts")
}

/// What `read` returns once it equals `want`, or after 20 s (k3s's deploy controller
/// polls the directory, and an operator's CRD arrives with its chart: `up` waits for
/// OSCAR, not for every other component).
fn eventually<T: PartialEq>(want: &T, read: impl Fn() -> T) -> T {
    let end = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let have = read();
        if &have == want || std::time::Instant::now() > end {
            return have;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The HTTP status of OSCAR's `GET /system/info` on port 80 of `ip` with Basic
/// auth, or `None` when nothing listens there.
pub(crate) fn oscar_status(ip: &str, user: &str, password: &str) -> Option<u16> {
    let addr: SocketAddr = format!("{ip}:80").parse().expect("address");
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    write!(
        s,
        "GET /system/info HTTP/1.1\r\nHost: {ip}\r\nAuthorization: Basic {auth}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    resp.split_whitespace().nth(1)?.parse().ok()
}

/// The layer's files in the manifests directory, hidden (retiring) ones included.
fn layer_files(fleet: &Fleet, host: &str) -> String {
    fleet.exec_ok(
        host,
        &format!("ls -A {MANIFESTS} | grep continuum-oscar || true"),
    )
}

fn write_recipe(ws: &Workspace, bundle: &std::path::Path, serverless: &str) {
    std::fs::write(
        ws.recipe(),
        format!(
            "name: {env}\ninventory: inventory.yaml\nk3s:\n  version: {VERSION}\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [mf-srv]\n  readiness_timeout: 90\n{serverless}",
            env = ws.env,
            bundle = bundle.display()
        ),
    )
    .expect("recipe");
}

fn layer(ws: &Workspace, knative: bool, ingress: &str) -> String {
    format!(
        "serverless:\n  profile: edge\n  knative: {knative}\n  ingress: {ingress}\n  readiness_timeout: 60\n  oscar_cli:\n    path: {}\n",
        ws.dir.path().join("oscar-cli.yaml").display()
    )
}

/// One server, the edge profile with Knative: turning Knative off removes the operator
/// chart, its KnativeServing (first, while the operator still runs) and namespace;
/// turning it on again with identical files installs it again (the files' Addon
/// records went with them); switching to gateway mode uninstalls ingress-nginx and
/// back removes Traefik's HelmChartConfig; dropping the layer uninstalls every chart,
/// deletes OSCAR's namespaces, and the OSCAR API stops answering.
#[test]
fn layer_changes_remove_the_components_they_drop() {
    if !fleet_available("layer_changes_remove_the_components_they_drop") {
        return;
    }
    let fleet = Fleet::start(&["mf-srv"], 132);
    let ip = fleet.ip("mf-srv");
    let ws = Workspace::new("mflayer");
    ws.write_inventory(&fleet.defs(), "ops");
    let bundle = crate::upgrade::bundle_at(ws.dir.path(), VERSION);
    fleet.repos_online("mf-srv"); // the NFS client comes from them (tests/it/nfs.rs)
    fleet.place_oscar_double("mf-srv");

    let all = set(&[
        "ingress-nginx",
        "knative-operator",
        "minio",
        "nfs-server-provisioner",
        "oscar",
    ]);
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx"));
    assert_ok(&ws.up(), "up with Knative and ingress-nginx");
    assert_eq!(eventually(&all, || helmcharts(&fleet, "mf-srv")), all);
    let serving = Ok(set(&["knative-serving"]));
    assert_eq!(
        eventually(&serving, || names(
            &fleet,
            "mf-srv",
            "-n knative-serving knativeservings"
        )),
        serving
    );
    let state = ws.state();
    let user = state["serverless"]["oscar_user"]
        .as_str()
        .unwrap_or("oscar")
        .to_string();
    let password = state["serverless"]["oscar_password"]
        .as_str()
        .expect("password")
        .to_string();
    assert_eq!(oscar_status(&ip, &user, &password), Some(200));

    // Knative off: its two files' objects go, KnativeServing before the operator
    // (else its finalizer would never be dropped and the removal would time out).
    write_recipe(&ws, &bundle, &layer(&ws, false, "nginx"));
    let up = ws.up();
    assert_ok(&up, "up with Knative off");
    let mut without_knative = all.clone();
    without_knative.remove("knative-operator");
    assert_eq!(helmcharts(&fleet, "mf-srv"), without_knative);
    let ks = names(&fleet, "mf-srv", "-n knative-serving knativeservings");
    assert!(
        ks.as_ref()
            .is_err_and(|e| e.contains("doesn't have a resource type \"knativeservings\"")),
        "the operator's CRD went with its chart: {ks:?}"
    );
    let ns = names(&fleet, "mf-srv", "namespaces").expect("namespaces");
    assert!(!ns.contains("knative-serving"), "{ns:?}");
    let addons = names(&fleet, "mf-srv", "-n kube-system addons").expect("addons");
    assert!(
        !addons.iter().any(|a| a.contains("knative")),
        "the files' Addon records are gone too: {addons:?}"
    );
    let files = layer_files(&fleet, "mf-srv");
    assert!(
        !files.contains("knative") && !files.contains(".removing"),
        "{files}"
    );
    // OSCAR itself stays (its chart is upgraded without a serverless backend).
    assert_eq!(
        eventually(&Some(200), || oscar_status(&ip, &user, &password)),
        Some(200)
    );

    // On again: the same two files as before are applied again.
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx"));
    assert_ok(&ws.up(), "up with Knative on again");
    assert_eq!(eventually(&all, || helmcharts(&fleet, "mf-srv")), all);
    let serving = Ok(set(&["knative-serving"]));
    assert_eq!(
        eventually(&serving, || names(
            &fleet,
            "mf-srv",
            "-n knative-serving knativeservings"
        )),
        serving
    );

    // Gateway mode: ingress-nginx is uninstalled (before `up` returns), Traefik gets
    // its HelmChartConfig (once k3s applied the new file).
    write_recipe(&ws, &bundle, &layer(&ws, true, "gateway"));
    let up = ws.up();
    assert_ok(&up, "up in gateway mode");
    let mut gateway = all.clone();
    gateway.remove("ingress-nginx");
    assert_eq!(helmcharts(&fleet, "mf-srv"), gateway);
    let traefik = Ok(set(&["traefik"]));
    assert_eq!(
        eventually(&traefik, || names(
            &fleet,
            "mf-srv",
            "-n kube-system helmchartconfigs"
        )),
        traefik
    );
    // OSCAR chart 3.6.4 has no `httproute` value (chart 4.0.0 brought it; issue 11
    // item 8): the double refuses that upgrade, so the release before it stays.
    let refused = eventually(&true, || {
        fleet
            .exec_ok("mf-srv", "cat /var/log/k3s-double/k3s.log")
            .contains("helm-install-oscar failed: values httproute.create are not values of chart oscar 3.6.4")
    });
    assert!(
        refused,
        "the double refused the OSCAR upgrade with httproute"
    );
    assert_eq!(oscar_status(&ip, &user, &password), Some(200));

    // Back to nginx: Traefik's HelmChartConfig goes, ingress-nginx is back.
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx"));
    assert_ok(&ws.up(), "up back in nginx mode");
    assert_eq!(eventually(&all, || helmcharts(&fleet, "mf-srv")), all);
    assert_eq!(
        names(&fleet, "mf-srv", "-n kube-system helmchartconfigs"),
        Ok(BTreeSet::new())
    );

    // Dropping the layer uninstalls everything and deletes OSCAR's namespaces.
    write_recipe(&ws, &bundle, "");
    assert_ok(&ws.up(), "up without the layer");
    assert_eq!(helmcharts(&fleet, "mf-srv"), BTreeSet::new());
    let ns = names(&fleet, "mf-srv", "namespaces").expect("namespaces");
    assert!(!ns.contains("oscar") && !ns.contains("oscar-svc"), "{ns:?}");
    assert_eq!(layer_files(&fleet, "mf-srv").trim(), "");
    assert_eq!(
        oscar_status(&ip, &user, &password),
        None,
        "the OSCAR API double no longer answers"
    );
    let again = ws.up();
    assert_ok(&again, "converged");
    assert!(text(&again).contains("0 to change"), "{}", text(&again));
}
