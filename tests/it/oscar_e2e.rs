//! Issue 11, "What it must show", on the test fleet: a cluster of the cloud profile
//! (Knative backend) and one of the edge profile (kube backend) come up ready through
//! the k3s double (OSCAR behind ingress-nginx, over https); then, through the endpoints
//! `up` registered (the oscar-cli config it writes), `fn apply`, `copy`, `move` and
//! `federate` pass between the two clusters: with both on OSCAR 4.1.2 (the default;
//! `federate` in the 4.1 coordinator form, the coordinator pushing the member's copy
//! over https itself), then with both switched to OSCAR 3.6 (`serverless.oscar_version`;
//! the replicas form). A copy of a service with secrets is refused, naming them.
//!
//! Fleet hosts of this module are named `oe-*` and use 10.250.0.180-181.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Fleet, Workspace, assert_ok, client_key, curl_with_credentials, fleet_available, path_str,
    poll_until, read_yaml, root, secrets_file, text,
};

/// The Basic password of both clusters: with Basic auth a 4.1 coordinator forwards its
/// caller's credentials to the members (docs/oscar.md, "Federation (4.1)").
const PASSWORD: &str = "oe-shared-0123456789";

/// One cluster of the test: its environment name, host and profile.
struct Cluster {
    env: &'static str,
    host: &'static str,
    profile: &'static str,
}

const CLOUD: Cluster = Cluster {
    env: "oecloud",
    host: "oe-cloud",
    profile: "cloud",
};
const EDGE: Cluster = Cluster {
    env: "oeedge",
    host: "oe-edge",
    profile: "edge",
};

/// Inventory and recipe of `c` in the workspace (one server; `oscar_version` as the
/// recipe names it, or the default); the recipe's path.
fn recipe(ws: &Workspace, fleet: &Fleet, c: &Cluster, oscar_version: Option<&str>) -> PathBuf {
    let inv = ws.dir.path().join(format!("inventory-{}.yaml", c.env));
    std::fs::write(
        &inv,
        format!(
            "defaults:\n  user: ops\n  key: {}\nhosts:\n  - name: {}\n    address: {}\n",
            client_key().display(),
            c.host,
            fleet.ip(c.host)
        ),
    )
    .expect("inventory");
    let version = oscar_version.map_or(String::new(), |v| format!("  oscar_version: \"{v}\"\n"));
    let p = ws.dir.path().join(format!("{}.yaml", c.env));
    std::fs::write(
        &p,
        format!(
            "name: {env}\ninventory: {inv}\nk3s:\n  version: v1.31.4+k3s1\n  install:\n    source: bundle\n    bundle: {bundle}\n  servers: [{host}]\n  readiness_timeout: 90\nserverless:\n  profile: {profile}\n  readiness_timeout: 120\n{version}  credentials:\n    oscar_password: {PASSWORD}\n  oscar_cli:\n    path: {cli}\n",
            env = c.env,
            inv = inv.display(),
            bundle = root().join("tests/k3s-double").display(),
            host = c.host,
            profile = c.profile,
            cli = cli_config(ws).display(),
        ),
    )
    .expect("recipe");
    p
}

/// The oscar-cli config both recipes register their endpoint in.
fn cli_config(ws: &Workspace) -> PathBuf {
    ws.dir.path().join("oscar-cli.yaml")
}

/// `continuum fn ...` against the registered endpoints.
fn fn_cmd(ws: &Workspace, args: &[&str]) -> Output {
    let cli = cli_config(ws);
    let mut a = vec!["fn"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["--oscar-cli-config", path_str(&cli)]);
    ws.run(&a)
}

/// A GET of OSCAR's API at `https://IP` (certificate not checked, as `ssl_verify:
/// false`): (status, body). curl reads the credentials from stdin, not argv.
fn oscar_get(ip: &str, path: &str) -> (u16, String) {
    let out = curl_with_credentials(
        &["-sk", "--max-time", "10", "-w", "\n%{http_code}"],
        &format!("https://{ip}{path}"),
        "oscar",
        PASSWORD,
    );
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The service `name` as `ip`'s OSCAR stores it, if it has one.
fn service(ip: &str, name: &str) -> Option<Value> {
    let (code, body) = oscar_get(ip, &format!("/system/services/{name}"));
    (code == 200).then(|| serde_json::from_str(&body).expect("service json"))
}

/// A one-service FDL for cluster `cluster` (its oscar-cli id), with extra lines.
fn fdl(dir: &Path, cluster: &str, name: &str, extra: &str) -> PathBuf {
    std::fs::write(dir.join("e2e.sh"), "#!/bin/sh\necho \"$INPUT_FILE_PATH\"\n").expect("script");
    let p = dir.join(format!("{name}.fdl.yaml"));
    std::fs::write(
        &p,
        format!(
            "functions:\n  oscar:\n  - {cluster}:\n      name: {name}\n      image: ghcr.io/grycap/cowsay\n      script: e2e.sh\n      cpu: 1\n      memory: 256Mi\n      input:\n      - storage_provider: minio.default\n        path: {name}/in\n{extra}"
        ),
    )
    .expect("fdl");
    p
}

/// Both clusters reach ready at `oscar_version` (the recipes' value, or the default)
/// and OSCAR reports `reports`; the cloud one runs the Knative backend. `registered`:
/// the catalog's entries were made by this `up` (it records the version reported at
/// registration, and a version switch alone does not register again).
fn bring_up(
    ws: &Workspace,
    fleet: &Fleet,
    oscar_version: Option<&str>,
    reports: &str,
    registered: bool,
) {
    for c in [&CLOUD, &EDGE] {
        let r = recipe(ws, fleet, c, oscar_version);
        let out = ws.up_recipe(&r);
        assert_ok(&out, &format!("up {} ({} profile)", c.env, c.profile));
    }
    let list = ws.run(&["endpoints", "list", "-o", "json"]);
    assert_ok(&list, "endpoints list");
    let eps: Vec<Value> = serde_json::from_slice(&list.stdout).expect("endpoints json");
    for c in [&CLOUD, &EDGE] {
        let e = eps
            .iter()
            .find(|e| e["name"] == c.env)
            .unwrap_or_else(|| panic!("{} not registered: {eps:?}", c.env));
        assert_eq!(e["oscar_url"], format!("https://{}", fleet.ip(c.host)));
        assert_eq!(e["tier"], c.profile);
        if registered {
            assert_eq!(e["oscar_version"], reports, "{e}");
        }
        // `up` is ready once OSCAR answers; after a version switch the previous
        // manager may still be the one answering for a moment (as while a Helm
        // upgrade rolls out), so the new version is waited for here.
        let (_, info) = poll_until(
            Duration::from_secs(30),
            Duration::from_millis(500),
            || {
                let (code, info) = oscar_get(&fleet.ip(c.host), "/system/info");
                (
                    code,
                    serde_json::from_str::<Value>(&info).unwrap_or(Value::Null),
                )
            },
            |(code, info)| *code == 200 && info["version"] == reports,
        );
        assert_eq!(info["version"], reports, "{info}");
    }
    let (code, info) = oscar_get(&fleet.ip(CLOUD.host), "/system/info");
    assert_eq!(code, 200, "{info}");
    let info: Value = serde_json::from_str(&info).expect("info");
    assert_eq!(info["serverless_backend"]["name"], "Knative", "{info}");
    let (_, info) = oscar_get(&fleet.ip(EDGE.host), "/system/info");
    let info: Value = serde_json::from_str(&info).expect("info");
    assert!(
        info.get("serverless_backend").is_none(),
        "kube backend: {info}"
    );
    // The oscar-cli config names both endpoints, https, certificate not verifiable.
    let cli: Value = read_yaml(&cli_config(ws));
    for c in [&CLOUD, &EDGE] {
        assert_eq!(
            cli["oscar"][c.env]["endpoint"],
            format!("https://{}", fleet.ip(c.host))
        );
        assert_eq!(cli["oscar"][c.env]["ssl_verify"], false);
    }
}

/// apply on one cluster, copy to the other, move back, and a copy of a service with
/// secrets refused naming them; services are named after `tag`.
fn apply_copy_move(ws: &Workspace, fleet: &Fleet, tag: &str) {
    let d = ws.dir.path();
    let (cloud, edge) = (fleet.ip(CLOUD.host), fleet.ip(EDGE.host));
    let name = format!("e2e-{tag}");
    let f = fdl(d, CLOUD.env, &name, "");
    assert_ok(
        &fn_cmd(ws, &["apply", path_str(&f)]),
        "fn apply on the cloud cluster",
    );
    let applied = service(&cloud, &name).expect("applied on the cloud cluster");
    assert_eq!(applied["cpu"], "1");
    assert_eq!(applied["cluster_id"], CLOUD.env);

    let out = fn_cmd(ws, &["copy", &name, "--from", CLOUD.env, "--to", EDGE.env]);
    assert_ok(&out, "fn copy cloud -> edge");
    let copied = service(&edge, &name).expect("copied to the edge cluster");
    for k in ["image", "script", "cpu", "memory"] {
        assert_eq!(copied[k], applied[k], "{k}");
    }
    assert!(service(&cloud, &name).is_some(), "a copy keeps the source");

    let moving = format!("e2e-{tag}-mv");
    let f = fdl(d, EDGE.env, &moving, "");
    assert_ok(
        &fn_cmd(ws, &["apply", path_str(&f)]),
        "fn apply on the edge cluster",
    );
    let out = fn_cmd(
        ws,
        &["move", &moving, "--from", EDGE.env, "--to", CLOUD.env],
    );
    assert_ok(&out, "fn move edge -> cloud (Knative)");
    assert!(
        service(&cloud, &moving).is_some(),
        "moved to the cloud cluster"
    );
    assert!(
        service(&edge, &moving).is_none(),
        "gone from the edge cluster"
    );

    let keyed = format!("e2e-{tag}-keyed");
    let f = fdl(
        d,
        CLOUD.env,
        &keyed,
        "      environment:\n        secrets:\n          API_KEY: k-e2e-secret\n",
    );
    assert_ok(
        &fn_cmd(ws, &["apply", path_str(&f)]),
        "fn apply with a secret",
    );
    let out = fn_cmd(ws, &["copy", &keyed, "--from", CLOUD.env, "--to", EDGE.env]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("secrets OSCAR returns blank: API_KEY"),
        "{}",
        text(&out)
    );
    assert!(
        service(&edge, &keyed).is_none(),
        "nothing written on the target"
    );
}

#[test]
fn cloud_and_edge_clusters_apply_copy_move_and_federate() {
    if !fleet_available("cloud_and_edge_clusters_apply_copy_move_and_federate") {
        return;
    }
    let fleet = Fleet::start(&[CLOUD.host, EDGE.host], 180);
    for c in [&CLOUD, &EDGE] {
        fleet.repos_online(c.host); // the NFS client (tests/it/nfs.rs)
        fleet.place_oscar_double(c.host);
    }
    let ws = Workspace::new(CLOUD.env);
    let d = ws.dir.path();
    let (cloud, edge) = (fleet.ip(CLOUD.host), fleet.ip(EDGE.host));

    // OSCAR 4.1.2 on both (the default).
    bring_up(&ws, &fleet, None, "4.1.2", true);
    apply_copy_move(&ws, &fleet, "v41");
    // 4.1 federation: the block goes to the coordinator (the first member) with the
    // refresh token; the coordinator pushes the member's copy over https itself.
    let rt = secrets_file(d, "rt.yaml", "refresh_token: eyJ.e2e-refresh.token\n");
    let members = format!("{},{}", CLOUD.env, EDGE.env);
    let out = fn_cmd(
        &ws,
        &[
            "federate",
            "e2e-v41",
            "--members",
            &members,
            "--secrets",
            path_str(&rt),
        ],
    );
    assert_ok(&out, "fn federate (4.1 coordinator form)");
    let coord = service(&cloud, "e2e-v41").expect("coordinator");
    assert_eq!(
        coord["federation"]["members"][0]["cluster_id"], EDGE.env,
        "{coord}"
    );
    let worker = service(&edge, "e2e-v41").expect("member copy");
    assert_eq!(
        worker["annotations"]["oscar.grycap/federation-worker"], "true",
        "{worker}"
    );
    assert_eq!(worker["cluster_id"], EDGE.env);
    let (code, fed) = oscar_get(&cloud, "/system/federation/e2e-v41");
    assert_eq!(code, 200, "{fed}");
    let fed: Value = serde_json::from_str(&fed).expect("federation json");
    assert_eq!(fed["members"][0]["cluster_id"], EDGE.env, "{fed}");

    // Both switched to OSCAR 3.6 (`serverless.oscar_version`): ready again, reporting
    // 3.6.4; the same operations, federation in the replicas form.
    bring_up(&ws, &fleet, Some("3.6"), "3.6.4", false);
    apply_copy_move(&ws, &fleet, "v36");
    let out = fn_cmd(
        &ws,
        &[
            "federate",
            "e2e-v36",
            "--members",
            &members,
            "--delegation",
            "topsis",
        ],
    );
    assert_ok(&out, "fn federate (3.6 replicas form)");
    for (ip, other) in [(&cloud, EDGE.env), (&edge, CLOUD.env)] {
        let s = service(ip, "e2e-v36").expect("federated");
        assert_eq!(s["delegation"], "topsis", "{s}");
        assert_eq!(s["replicas"][0]["cluster_id"], other, "{s}");
        assert!(s.get("federation").is_none(), "{s}");
        assert!(s["clusters"][other]["endpoint"].is_string(), "{s}");
    }
}
