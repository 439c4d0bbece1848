//! Issue 10 item 7 on the test fleet: removing a manifest removes its component. k3s's
//! deploy controller leaves the objects of a deleted file (the k3s double does too),
//! so these tests look at the HelmChart and other objects through kubectl on the
//! server, not only at the files: switching the ingress mode, turning Knative off and
//! on again, and dropping the serverless layer. Issue 11: what the node's ports serve
//! in each mode (https, the certificate, the redirect) and `valuesSecrets`.
//!
//! Fleet hosts of this module are named `mf-*` and use 10.250.0.132-133.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Fleet, Workspace, assert_ok, fleet_available, http_redirect, oscar_status, poll_until, text,
};

/// `ingress: gateway` needs k3s v1.32.2 or later (Traefik v3); from v1.32.4 k3s's
/// helm-controller reads chart values from Secrets (`valuesSecrets`).
const VERSION: &str = "v1.32.4+k3s1";
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
    poll_until(
        Duration::from_secs(20),
        Duration::from_millis(500),
        read,
        |have| have == want,
    )
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// The subject of the certificate served on `ip`:443 without SNI (as clients of an
/// IP endpoint connect), or the error openssl printed.
fn served_certificate(ip: &str) -> String {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {ip}:443 </dev/null 2>/dev/null | openssl x509 -noout -subject 2>&1"
        ))
        .output()
        .expect("openssl");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
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

/// The `serverless:` section; `tls` names a certificate and key (PEM files), which the
/// test's client cannot verify (self-signed), so `ssl_verify` is off explicitly.
fn layer(ws: &Workspace, knative: bool, ingress: &str, tls: Option<&(PathBuf, PathBuf)>) -> String {
    let tls = tls.map_or(String::new(), |(c, k)| {
        format!(
            "  tls:\n    cert: {}\n    key: {}\n",
            c.display(),
            k.display()
        )
    });
    format!(
        "serverless:\n  profile: edge\n  knative: {knative}\n  ingress: {ingress}\n  readiness_timeout: 60\n{tls}  oscar_cli:\n    path: {}\n    ssl_verify: false\n",
        ws.dir.path().join("oscar-cli.yaml").display()
    )
}

/// A self-signed certificate for `ip` (an IP SAN, CN `cn`) and its key, in `dir`.
pub(crate) fn self_signed(dir: &Path, cn: &str, ip: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.crt")), dir.join(format!("{cn}.key")));
    let out = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .args(["-subj", &format!("/CN={cn}"), "-addext"])
        .arg(format!("subjectAltName=IP:{ip}"))
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl: {}", text(&out));
    (cert, key)
}

/// One server at k3s v1.32.4 (Traefik v3 with the Gateway API, and a helm-controller
/// with `valuesSecrets`), the edge profile with Knative: the OSCAR chart's credentials
/// come from its values Secret; turning Knative off removes the operator chart, its
/// KnativeServing (first, while the operator still runs) and namespace; turning it on
/// again with identical files installs it again (the files' Addon records went with
/// them); switching to gateway mode (with the recipe's certificate) uninstalls
/// ingress-nginx and serves OSCAR through Traefik's Gateway, and back removes Traefik's
/// HelmChartConfig and the Gateway, ingress-nginx serving the certificate and
/// redirecting http; dropping the layer uninstalls every chart, deletes OSCAR's
/// namespaces, and the OSCAR API stops answering.
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
    let tls = self_signed(ws.dir.path(), "oscar-mf", &ip);

    let all = set(&[
        "ingress-nginx",
        "knative-operator",
        "minio",
        "nfs-server-provisioner",
        "oscar",
    ]);
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx", None));
    let up = ws.up();
    assert_ok(&up, "up with Knative and ingress-nginx");
    assert!(
        !text(&up).contains("cannot read chart values from Secrets"),
        "k3s {VERSION} has valuesSecrets: {}",
        text(&up)
    );
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
    // The password reached OSCAR through the values Secret, not the HelmChart.
    let chart = fleet.exec_ok(
        "mf-srv",
        "k3s kubectl -n kube-system get helmchart oscar -o json",
    );
    assert!(
        !chart.contains(&password) && chart.contains("continuum-oscar-values"),
        "{chart}"
    );
    let secret = fleet.exec_ok(
        "mf-srv",
        "k3s kubectl -n kube-system get secret continuum-oscar-values -o name",
    );
    assert_eq!(secret.trim(), "secret/continuum-oscar-values");
    // ingress-nginx without a certificate of the recipe's: its own, http not redirected.
    assert!(
        served_certificate(&ip).contains("Kubernetes Ingress Controller Fake Certificate"),
        "{}",
        served_certificate(&ip)
    );

    // Knative off: its two files' objects go, KnativeServing before the operator
    // (else its finalizer would never be dropped and the removal would time out).
    write_recipe(&ws, &bundle, &layer(&ws, false, "nginx", None));
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
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx", None));
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

    // Gateway mode (OSCAR 4.1's chart has the HTTPRoute; the recipe gives the
    // certificate a Gateway needs): ingress-nginx is uninstalled (before `up`
    // returns), Traefik gets its HelmChartConfig and OSCAR's route its Gateway.
    write_recipe(&ws, &bundle, &layer(&ws, true, "gateway", Some(&tls)));
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
    assert_eq!(
        names(&fleet, "mf-srv", "-n kube-system gateways"),
        Ok(set(&["continuum-oscar"]))
    );
    assert_eq!(
        eventually(&Some(200), || oscar_status(&ip, &user, &password)),
        Some(200)
    );
    // Traefik picks the listener's certificate by the connection's IP (no SNI).
    assert!(
        served_certificate(&ip).contains("CN = oscar-mf"),
        "{}",
        served_certificate(&ip)
    );

    // Back to nginx, keeping the certificate: Traefik's HelmChartConfig and the
    // Gateway go, ingress-nginx is back with the recipe's certificate as its default
    // one and http redirected to https.
    write_recipe(&ws, &bundle, &layer(&ws, true, "nginx", Some(&tls)));
    assert_ok(&ws.up(), "up back in nginx mode");
    assert_eq!(eventually(&all, || helmcharts(&fleet, "mf-srv")), all);
    assert_eq!(
        names(&fleet, "mf-srv", "-n kube-system helmchartconfigs"),
        Ok(BTreeSet::new())
    );
    let gateways = names(&fleet, "mf-srv", "-n kube-system gateways");
    assert!(
        gateways == Ok(BTreeSet::new())
            || gateways
                .as_ref()
                .is_err_and(|e| e.contains("doesn't have a resource type")),
        "the Gateway went (or its type with Traefik): {gateways:?}"
    );
    assert_eq!(
        eventually(&Some(200), || oscar_status(&ip, &user, &password)),
        Some(200)
    );
    assert!(
        served_certificate(&ip).contains("CN = oscar-mf"),
        "{}",
        served_certificate(&ip)
    );
    assert_eq!(
        http_redirect(&format!("http://{ip}/health")),
        format!("308 https://{ip}/health")
    );

    // Dropping the layer uninstalls everything and deletes OSCAR's namespaces.
    write_recipe(&ws, &bundle, "");
    assert_ok(&ws.up(), "up without the layer");
    assert_eq!(helmcharts(&fleet, "mf-srv"), BTreeSet::new());
    let ns = names(&fleet, "mf-srv", "namespaces").expect("namespaces");
    assert!(!ns.contains("oscar") && !ns.contains("oscar-svc"), "{ns:?}");
    assert_eq!(layer_files(&fleet, "mf-srv").trim(), "");
    // k3s's Traefik is back without the layer (it answers 404 for what it does not
    // route), OSCAR is gone.
    let status = oscar_status(&ip, &user, &password);
    assert!(
        matches!(status, None | Some(404)),
        "the OSCAR API double no longer answers: {status:?}"
    );
    let again = ws.up();
    assert_ok(&again, "converged");
    assert!(text(&again).contains("0 to change"), "{}", text(&again));
}
