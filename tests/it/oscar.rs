//! Issues 4 and 11: the OSCAR serverless layer. `fn` operations against OSCAR API
//! doubles (`harness::OscarDouble`, tests/oscar-double/oscar-api) on loopback ports
//! chosen by the kernel, in both of the double's modes (grycap/oscar v4.1.2 and v3.6.4
//! behaviour), with every request continuum sends checked against the names of
//! OSCAR's published OpenAPI spec for that version; and the end-to-end `up` on the
//! test fleet, where the k3s double's helm-controller block serves the OSCAR API
//! double when the OSCAR HelmChart lands.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::harness::{
    Continuum, Fleet, OscarDouble, Workspace, assert_ok, fleet_available, http_redirect,
    oscar_status, path_str, read_yaml, root, secrets_file, text,
};

/// The two behaviours of the double (and of the OSCAR versions continuum supports).
const V41: &str = "4.1.2";
const V36: &str = "3.6.4";

// ---------------------------------------------------------------------------------
// OSCAR's published OpenAPI spec, as names (a list of names is a fact; the spec file
// is not copied). grycap/oscar branch gh-pages: `v4.1.2/api/swagger.yaml` (Swagger
// 2.0) and `v3.6.4/api/api.yaml` (OpenAPI 3.0.3).

/// `paths` of `v4.1.2/api/swagger.yaml`: (method, path).
const ROUTES_4_1_2: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("POST", "/job/{serviceName}"),
    ("POST", "/run/{serviceName}"),
    ("GET", "/system/buckets"),
    ("POST", "/system/buckets"),
    ("PUT", "/system/buckets"),
    ("DELETE", "/system/buckets/{bucket}"),
    ("GET", "/system/buckets/{bucket}"),
    ("POST", "/system/buckets/{bucket}/presign"),
    ("GET", "/system/config"),
    ("PUT", "/system/config"),
    ("DELETE", "/system/federation/{serviceName}"),
    ("GET", "/system/federation/{serviceName}"),
    ("POST", "/system/federation/{serviceName}"),
    ("PUT", "/system/federation/{serviceName}"),
    ("GET", "/system/info"),
    ("GET", "/system/logs/"),
    ("DELETE", "/system/logs/{serviceName}"),
    ("GET", "/system/logs/{serviceName}"),
    ("DELETE", "/system/logs/{serviceName}/{jobName}"),
    ("GET", "/system/logs/{serviceName}/{jobName}"),
    ("GET", "/system/metrics"),
    ("GET", "/system/metrics/{serviceName}"),
    ("GET", "/system/metrics/breakdown"),
    ("GET", "/system/quotas/user"),
    ("GET", "/system/quotas/user/{userId}"),
    ("PUT", "/system/quotas/user/{userId}"),
    ("GET", "/system/services"),
    ("POST", "/system/services"),
    ("PUT", "/system/services"),
    ("DELETE", "/system/services/{serviceName}"),
    ("GET", "/system/services/{serviceName}"),
    ("GET", "/system/services/{serviceName}/auth"),
    ("GET", "/system/services/{serviceName}/deployment"),
    ("GET", "/system/services/{serviceName}/deployment/logs"),
    ("POST", "/system/services/{serviceName}/restart"),
    ("POST", "/system/services/{serviceName}/start"),
    ("POST", "/system/services/{serviceName}/stop"),
    ("GET", "/system/status"),
    ("GET", "/system/volumes"),
    ("POST", "/system/volumes"),
    ("DELETE", "/system/volumes/{volumeName}"),
    ("GET", "/system/volumes/{volumeName}"),
];

/// `definitions."types.Service".properties` of `v4.1.2/api/swagger.yaml`.
const SERVICE_4_1_2: &[&str] = &[
    "allowed_users",
    "alpine",
    "annotations",
    "bucket_list",
    "cluster_id",
    "clusters",
    "cpu",
    "deployment",
    "enable_gpu",
    "enable_sgx",
    "environment",
    "ephemeral_storage_request",
    "expose",
    "federation",
    "file_stage_in",
    "image",
    "image_prefetch",
    "image_pull_secrets",
    "input",
    "interlink_node_name",
    "isolation_level",
    "kserve",
    "labels",
    "log_level",
    "memory",
    "mount",
    "name",
    "namespace",
    "output",
    "owner",
    "script",
    "storage_providers",
    "synchronous",
    "token",
    "total_cpu",
    "total_memory",
    "visibility",
    "vo",
    "volume",
    "volume_status",
];
/// `types.Federation`, `types.Replica`, `types.Cluster` of `v4.1.2/api/swagger.yaml`.
const FEDERATION_4_1_2: &[&str] = &[
    "delegation",
    "group_id",
    "members",
    "rescheduler_threshold",
    "topology",
];
const REPLICA: &[&str] = &[
    "cluster_id",
    "headers",
    "priority",
    "service_name",
    "ssl_verify",
    "type",
    "url",
];
const CLUSTER_4_1_2: &[&str] = &["auth_password", "auth_user", "endpoint", "ssl_verify"];

/// `paths` of `v3.6.4/api/api.yaml`.
const ROUTES_3_6_4: &[(&str, &str)] = &[
    ("GET", "/system/services"),
    ("POST", "/system/services"),
    ("PUT", "/system/services"),
    ("DELETE", "/system/services/{serviceName}"),
    ("GET", "/system/services/{serviceName}"),
    ("DELETE", "/system/logs/{serviceName}"),
    ("GET", "/system/logs/{serviceName}"),
    ("DELETE", "/system/logs/{serviceName}/{jobName}"),
    ("GET", "/system/logs/{serviceName}/{jobName}"),
    ("GET", "/system/info"),
    ("GET", "/health"),
    ("POST", "/job/{serviceName}"),
    ("GET", "/system/config"),
    ("POST", "/run/{serviceName}"),
    ("GET", "/system/buckets"),
    ("POST", "/system/buckets"),
    ("PUT", "/system/buckets"),
    ("DELETE", "/system/buckets/{bucket}"),
    ("POST", "/system/buckets/{bucket}/presign"),
    ("GET", "/status"),
];

/// `components.schemas.Service.properties` of `v3.6.4/api/api.yaml` (its `replicas`
/// items have the `REPLICA` names).
const SERVICE_3_6_4: &[&str] = &[
    "alpine",
    "annotations",
    "cluster_id",
    "clusters",
    "cpu",
    "enable_gpu",
    "environment",
    "image",
    "image_pull_secrets",
    "input",
    "isolation_level",
    "labels",
    "log_level",
    "memory",
    "mount",
    "name",
    "output",
    "replicas",
    "rescheduler_threshold",
    "script",
    "storage_providers",
    "synchronous",
    "token",
    "total_cpu",
    "total_memory",
];
/// Fields of `types.Service` at v3.6.4 (`pkg/types/service.go`, decoded by the
/// create and update handlers) that its api.yaml leaves out, and that continuum sends:
/// the owner back on a PUT, the legacy `delegation`, and the `visibility` every GET
/// reports (docs/oscar.md, "Published spec").
const TYPE_ONLY_3_6_4: &[&str] = &["delegation", "owner", "visibility"];

fn route_matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(a, b)| (a.starts_with('{') && !b.is_empty()) || a == b)
}

fn keys_within(v: &Value, allowed: &[&str], what: &str, version: &str) {
    if let Some(m) = v.as_object() {
        for k in m.keys() {
            assert!(
                allowed.contains(&k.as_str()),
                "OSCAR {version}'s spec has no {what} field `{k}`: {v}"
            );
        }
    }
}

/// Every request continuum sent to `d` is a route of the spec for `d`'s version, and
/// every service body uses only the spec's field names.
fn assert_requests_follow_spec(d: &OscarDouble) {
    let new = d.version.starts_with('4');
    let (routes, service, version): (&[(&str, &str)], Vec<&str>, &str) = if new {
        (ROUTES_4_1_2, SERVICE_4_1_2.to_vec(), "v4.1.2")
    } else {
        let mut s = SERVICE_3_6_4.to_vec();
        s.extend(TYPE_ONLY_3_6_4);
        (ROUTES_3_6_4, s, "v3.6.4")
    };
    let sent = d.sent_by_continuum();
    assert!(!sent.is_empty(), "continuum sent nothing to this double");
    for r in &sent {
        let method = r["method"].as_str().expect("method");
        let path = r["path"].as_str().expect("path");
        assert!(
            routes
                .iter()
                .any(|(m, t)| *m == method && route_matches(t, path)),
            "{method} {path} is not in OSCAR {version}'s published spec"
        );
        if path == "/system/services" && matches!(method, "POST" | "PUT") {
            let b = &r["body"];
            keys_within(b, &service, "Service", version);
            if let Some(f) = b.get("federation") {
                keys_within(f, FEDERATION_4_1_2, "Federation", version);
                for m in f["members"].as_array().into_iter().flatten() {
                    keys_within(m, REPLICA, "Replica", version);
                }
            }
            for m in b["replicas"].as_array().into_iter().flatten() {
                keys_within(m, REPLICA, "replicas item", version);
            }
            for c in b["clusters"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                keys_within(c, CLUSTER_4_1_2, "Cluster", version);
            }
        }
    }
}

// ---------------------------------------------------------------------------------

/// An oscar-cli config naming the doubles (plus extra raw entries).
fn oscar_cli_config(dir: &Path, doubles: &[(&str, &OscarDouble)], extra: &str) -> PathBuf {
    let mut s = String::from("oscar:\n");
    for (id, d) in doubles {
        s.push_str(&format!(
            "  {id}:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: {}\n    ssl_verify: false\n",
            d.url(),
            d.password
        ));
    }
    s.push_str(extra);
    let p = dir.join("oscar-cli.yaml");
    std::fs::write(&p, s).expect("write oscar-cli config");
    p
}

/// `continuum` for the `fn` commands: state in `dir/state`, `cli` as the oscar-cli
/// config.
fn fn_cli(dir: &Path, cli: &Path) -> Continuum {
    Continuum::new()
        .state_dir(dir.join("state"))
        .oscar_cli_config(cli)
}

/// A one-service FDL for `cluster` (cpu given as the YAML number 1, which OSCAR's
/// `types.Service` takes as the string "1").
fn fdl(dir: &Path, cluster: &str, name: &str, extra: &str) -> PathBuf {
    std::fs::write(
        dir.join("detect.sh"),
        "#!/bin/sh\necho \"detecting $INPUT_FILE_PATH\"\n",
    )
    .expect("script");
    let p = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &p,
        format!(
            "functions:\n  oscar:\n  - {cluster}:\n      name: {name}\n      image: ghcr.io/grycap/yolov8:arm64\n      script: detect.sh\n      cpu: 1\n      memory: 512Mi\n      input:\n      - storage_provider: minio.default\n        path: {name}/in\n{extra}"
        ),
    )
    .expect("fdl");
    p
}

/// `continuum fn apply` of a one-service FDL on `cluster`; the stored definition.
fn seed(dir: &Path, cli: &Path, d: &OscarDouble, cluster: &str, name: &str) -> Value {
    let f = fdl(dir, cluster, name, "");
    assert_ok(
        &fn_cli(dir, cli)
            .args(["fn", "apply", path_str(&f)])
            .output(),
        "fn apply",
    );
    d.service(name).expect("applied")
}

/// Run continuum, expect failure, return its output text.
fn fails(dir: &Path, cli: &Path, args: &[&str]) -> String {
    let out = fn_cli(dir, cli).args(args).output();
    assert!(!out.status.success(), "{args:?} must fail: {}", text(&out));
    text(&out)
}

fn same_definition(a: &Value, b: &Value) {
    for k in ["image", "script", "cpu", "memory", "input"] {
        assert_eq!(a[k], b[k], "field {k} differs");
    }
}

/// apply (twice), copy, list and move between two doubles of `version`, and copies to
/// and from the other version.
fn apply_copy_move(version: &str) {
    let other = if version == V41 { V36 } else { V41 };
    let edge = OscarDouble::start("edge", version, &[]);
    let cloud = OscarDouble::start("cloud", version, &[]);
    let far = OscarDouble::start("far", other, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let cli = oscar_cli_config(
        dir.path(),
        &[("edge", &edge), ("cloud", &cloud), ("far", &far)],
        "",
    );

    // apply: the script file is inlined, cpu is a string, OSCAR's defaults are no
    // mismatch (issue 11: a real OSCAR fills cpu/memory and much more).
    let f = fdl(dir.path(), "edge", "yolo", "      log_level: debug\n");
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "apply", path_str(&f)])
        .output();
    assert_ok(&out, "fn apply");
    let src = edge.service("yolo").expect("applied on edge");
    assert_eq!(
        src["script"],
        "#!/bin/sh\necho \"detecting $INPUT_FILE_PATH\"\n"
    );
    assert_eq!(src["cluster_id"], "edge");
    assert_eq!(src["cpu"], "1");
    assert_eq!(src["log_level"], "DEBUG");
    assert_eq!(src["owner"], "cluster_admin");
    assert_eq!(
        src["enable_gpu"], false,
        "a non-omitempty field OSCAR shows"
    );
    // A service without cpu or memory: OSCAR's defaults are not a mismatch.
    std::fs::write(
        dir.path().join("plain.yaml"),
        "functions:\n  oscar:\n  - edge:\n      name: plain\n      image: alpine\n      script: detect.sh\n",
    )
    .expect("fdl");
    assert_ok(
        &fn_cli(dir.path(), &cli)
            .args(["fn", "apply", path_str(&dir.path().join("plain.yaml"))])
            .output(),
        "fn apply without resources",
    );
    let plain = edge.service("plain").expect("plain");
    assert_eq!(
        (plain["cpu"].as_str(), plain["memory"].as_str()),
        (Some("0.2"), Some("256Mi"))
    );
    // Applying again updates in place (PUT), keeping the owner (item 14).
    assert_ok(
        &fn_cli(dir.path(), &cli)
            .args(["fn", "apply", path_str(&f)])
            .output(),
        "fn apply again",
    );
    let again = edge.service("yolo").expect("still");
    assert_eq!(again["owner"], "cluster_admin", "a PUT keeps the owner");
    if version == V41 {
        assert_eq!(again["token"], src["token"], "4.1 keeps the token on PUT");
    }
    let put = edge
        .sent_by_continuum()
        .into_iter()
        .rfind(|r| r["method"] == "PUT")
        .expect("a PUT");
    assert_eq!(put["body"]["owner"], "cluster_admin");

    // copy edge -> cloud.
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "copy", "yolo", "--from", "edge", "--to", "cloud"])
        .output();
    assert_ok(&out, "fn copy");
    assert!(text(&out).contains("verified"), "{}", text(&out));
    let copied = cloud.service("yolo").expect("copied to cloud");
    same_definition(&src, &copied);
    assert_eq!(copied["cluster_id"], "cloud");
    assert_ne!(
        copied["token"], src["token"],
        "the target must not carry the source's token"
    );
    assert!(edge.service("yolo").is_some(), "copy keeps the source");

    // fn list sees it; tokens are not printed.
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "list", "--cluster", "cloud", "-o", "json"])
        .output();
    assert_ok(&out, "fn list");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("token").is_none());

    // move a second service: deleted at the source only after the target has it.
    let f2 = fdl(dir.path(), "edge", "blur", "");
    assert_ok(
        &fn_cli(dir.path(), &cli)
            .args(["fn", "apply", path_str(&f2)])
            .output(),
        "apply blur",
    );
    let blur = edge.service("blur").expect("blur");
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "move", "blur", "--from", "edge", "--to", "cloud"])
        .output();
    assert_ok(&out, "fn move");
    assert!(edge.service("blur").is_none(), "moved away from the edge");
    let moved = cloud.service("blur").expect("moved to cloud");
    same_definition(&blur, &moved);
    assert_ne!(moved["token"], blur["token"]);

    // Across versions, both ways: the request form follows the target's /system/info.
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "copy", "yolo", "--from", "edge", "--to", "far"])
        .output();
    assert_ok(&out, "fn copy to the other version");
    same_definition(&src, &far.service("yolo").expect("on far"));
    let out = fn_cli(dir.path(), &cli)
        .args(["fn", "move", "yolo", "--from", "far", "--to", "cloud"])
        .output();
    assert_ok(&out, "fn move back from the other version (PUT on cloud)");
    assert!(far.service("yolo").is_none());

    for d in [&edge, &cloud, &far] {
        assert_requests_follow_spec(d);
    }
}

/// Issue 11: apply, copy and move against the double behaving as OSCAR v4.1.2.
#[test]
fn fn_apply_copy_move_against_oscar_4_1() {
    apply_copy_move(V41);
}

/// Issue 11: the same against the double behaving as OSCAR v3.6.4.
#[test]
fn fn_apply_copy_move_against_oscar_3_6() {
    apply_copy_move(V36);
}

/// Issue 11 item 5: on 4.1 the `federation` block goes to the coordinator only, with
/// the refresh token; the coordinator pushes the members' copies with the caller's
/// Authorization; the result is read from /system/federation.
#[test]
fn fn_federate_writes_the_coordinator_only_on_oscar_4_1() {
    let pw = format!("shared-{}", std::process::id());
    let edge = OscarDouble::start_with("edge", V41, &pw, &[]);
    let cloud = OscarDouble::start_with("cloud", V41, &pw, &[]);
    let legacy = OscarDouble::start_with("legacy", V36, &pw, &[]);
    let other = OscarDouble::start("other", V41, &[]);
    let flaky = OscarDouble::start_with("flaky", V41, &pw, &["--fail-put", "500"]);
    let dir = tempfile::tempdir().expect("tmp");
    let cli = oscar_cli_config(
        dir.path(),
        &[
            ("edge", &edge),
            ("cloud", &cloud),
            ("legacy", &legacy),
            ("other", &other),
            ("flaky", &flaky),
        ],
        "",
    );
    let d = dir.path();
    seed(d, &cli, &edge, "edge", "yolo");
    let fed = |members: &str, extra: &[&str]| {
        let mut a = vec![
            "fn",
            "federate",
            "yolo",
            "--members",
            members,
            "--delegation",
            "topsis",
        ];
        a.extend_from_slice(extra);
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let run = |args: &[String]| {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        fn_cli(d, &cli).args(&a).output()
    };

    // Without the refresh token 4.1 refuses; continuum says so before writing.
    let before = edge.service("yolo");
    let out = run(&fed("edge,cloud", &[]));
    assert!(!out.status.success());
    assert!(text(&out).contains("refresh_token"), "{}", text(&out));
    assert_eq!(edge.service("yolo"), before);
    assert!(cloud.names().is_empty());

    let rt = secrets_file(d, "rt.yaml", "refresh_token: eyJ.test-refresh.token\n");
    // A member with other Basic credentials would refuse what the coordinator
    // forwards: refused before any write, naming that member.
    let out = run(&fed("edge,other", &["--secrets", path_str(&rt)]));
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("member `other` refuses the credentials of coordinator `edge`"),
        "{t}"
    );
    assert!(other.names().is_empty() && edge.service("yolo") == before);

    let out = run(&fed(
        "edge,cloud,legacy",
        &["--secrets", path_str(&rt), "--topology", "star"],
    ));
    assert_ok(&out, "fn federate (4.1 coordinator)");
    let coord = edge.service("yolo").expect("coordinator");
    assert_eq!(coord["federation"]["delegation"], "topsis");
    assert_eq!(coord["federation"]["topology"], "star");
    assert_eq!(coord["federation"]["group_id"], "yolo");
    assert_eq!(coord["environment"]["secrets"]["refresh_token"], "");
    // Continuum wrote a federation block only to the coordinator; members got plain
    // copies from continuum and their worker copies from the coordinator.
    for (name, m) in [("cloud", &cloud), ("legacy", &legacy)] {
        for r in m.sent_by_continuum() {
            assert!(r["body"].get("federation").is_none(), "{name}: {r}");
        }
        let pushed = m.pushed();
        assert!(
            !pushed.is_empty(),
            "{name}: nothing pushed by the coordinator"
        );
        assert!(pushed.iter().all(|r| r["method"] == "PUT"), "{name}");
        let s = m.service("yolo").expect("member copy");
        assert_eq!(s["cluster_id"], name);
        assert_eq!(
            s["annotations"]["oscar.grycap/federation-worker"], "true",
            "{name}: {s}"
        );
        same_definition(&coord, &s);
    }
    let (code, body) = edge.request("GET", "/system/federation/yolo", None);
    assert_eq!(code, 200);
    let f: Value = serde_json::from_str(&body).expect("federation");
    assert_eq!(f["members"][0]["cluster_id"], "cloud");
    assert_eq!(f["members"][1]["cluster_id"], "legacy");

    // Again with the default mesh topology: each member's copy lists the coordinator
    // (its origin) and the other members; copying a member's copy elsewhere makes a
    // plain service, not a worker nor a second coordinator.
    assert_ok(
        &run(&fed("edge,cloud,legacy", &["--secrets", path_str(&rt)])),
        "fn federate (mesh)",
    );
    let worker = cloud.service("yolo").expect("cloud's copy");
    assert_eq!(worker["federation"]["topology"], "mesh");
    let ids: Vec<&str> = worker["federation"]["members"]
        .as_array()
        .expect("mesh members")
        .iter()
        .filter_map(|m| m["cluster_id"].as_str())
        .collect();
    assert_eq!(ids, ["edge", "legacy"]);
    let _ = other.request("DELETE", "/system/services/yolo", None);
    let out = run(&["fn", "copy", "yolo", "--from", "cloud", "--to", "other"].map(str::to_string));
    assert_ok(&out, "copy a member's copy");
    assert!(
        text(&out).contains("the copy on `other` is not federated (`federation` left out)"),
        "{}",
        text(&out)
    );
    let plain = other.service("yolo").expect("copied");
    assert!(plain.get("federation").is_none(), "{plain}");
    assert!(
        plain["annotations"]
            .get("oscar.grycap/federation-worker")
            .is_none(),
        "{plain}"
    );

    // A member that fails the coordinator's push: OSCAR answers 200 "with federation
    // warnings"; continuum reports a failure showing them.
    let out = run(&fed("edge,flaky", &["--secrets", path_str(&rt)]));
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("could not update every federation member") && t.contains("status 500"),
        "{t}"
    );

    // A member refusing what a new federated service's POST forwards (the coordinator's
    // 401) is reported as that member's refusal, not the coordinator's.
    std::fs::write(d.join("detect.sh"), "#!/bin/sh\necho\n").expect("script");
    let f = d.join("fed.yaml");
    std::fs::write(
        &f,
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: fedsvc\n      image: img\n      script: detect.sh\n      environment:\n        secrets: {{refresh_token: rt}}\n      federation:\n        topology: star\n        members:\n        - {{type: oscar, cluster_id: other, service_name: fedsvc}}\nclusters:\n  other:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: x\n    ssl_verify: false\n",
            other.url()
        ),
    )
    .expect("fdl");
    let t = fails(d, &cli, &["fn", "apply", path_str(&f)]);
    assert!(
        t.contains("member(s) `other` refused what coordinator `edge` forwarded"),
        "{t}"
    );
    assert!(!t.contains("refused the credentials (401"), "{t}");
    assert!(edge.service("fedsvc").is_none());

    // A new federated service whose member already has that name: OSCAR would roll
    // back by deleting the member's service; continuum refuses before writing.
    let f = d.join("clash.yaml");
    std::fs::write(
        &f,
        format!(
            "functions:\n  oscar:\n  - edge:\n      name: clash\n      image: img\n      script: detect.sh\n      environment:\n        secrets: {{refresh_token: rt}}\n      federation:\n        members:\n        - {{type: oscar, cluster_id: cloud, service_name: yolo}}\nclusters:\n  cloud:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: {pw}\n    ssl_verify: false\n",
            cloud.url()
        ),
    )
    .expect("fdl");
    let kept = cloud.service("yolo").expect("cloud's copy");
    let t = fails(d, &cli, &["fn", "apply", path_str(&f)]);
    assert!(
        t.contains("member `cloud` already has a service `yolo`") && t.contains("rolling back"),
        "{t}"
    );
    assert!(edge.service("clash").is_none());
    assert_eq!(cloud.service("yolo"), Some(kept));

    for d in [&edge, &cloud, &legacy] {
        assert_requests_follow_spec(d);
    }
}

/// Before 4.1: per-cluster `replicas` + `delegation` on every member, `topsis`
/// included (it exists since 3.6); a 4.1 member cannot join a 3.6 coordinator.
#[test]
fn fn_federate_writes_replicas_on_every_member_before_4_1() {
    let a = OscarDouble::start("a", V36, &[]);
    let b = OscarDouble::start("b", V36, &[]);
    let new = OscarDouble::start("new", V41, &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let cli = oscar_cli_config(dir.path(), &[("a", &a), ("b", &b), ("new", &new)], "");
    let d = dir.path();
    seed(d, &cli, &a, "a", "yolo");
    let args = [
        "fn",
        "federate",
        "yolo",
        "--members",
        "a,b",
        "--delegation",
        "topsis",
    ];
    assert_ok(
        &fn_cli(d, &cli).args(args).output(),
        "fn federate (3.6 replicas form)",
    );
    for (me, other, dbl) in [("a", "b", &a), ("b", "a", &b)] {
        let s = dbl.service("yolo").expect("federated");
        assert_eq!(s["delegation"], "topsis", "{me}");
        assert_eq!(s["replicas"][0]["cluster_id"], other, "{me}");
        assert!(s.get("federation").is_none(), "{me}");
        assert!(s["clusters"][other]["endpoint"].is_string(), "{me}");
    }
    assert_ne!(
        a.service("yolo").expect("a")["token"],
        b.service("yolo").expect("b")["token"]
    );
    let before = new.names();
    let t = fails(d, &cli, &["fn", "federate", "yolo", "--members", "a,new"]);
    assert!(
        t.contains("`new` runs OSCAR 4.1") && t.contains("list `new` first"),
        "{t}"
    );
    assert_eq!(new.names(), before);
    for d in [&a, &b] {
        assert_requests_follow_spec(d);
    }
}

/// Issue 11 item 13: no credential is carried from one cluster to another. A service
/// with secrets is refused unless they are given again, naming them; other clusters'
/// passwords are dropped, even those continuum knows (the target's own entry gets its
/// registered one); `fn list` prints no password, token or secret.
#[test]
fn fn_copy_carries_no_credentials() {
    for version in [V41, V36] {
        let edge = OscarDouble::start("edge", version, &[]);
        let cloud = OscarDouble::start("cloud", version, &[]);
        let dir = tempfile::tempdir().expect("tmp");
        let cli = oscar_cli_config(dir.path(), &[("edge", &edge), ("cloud", &cloud)], "");
        let d = dir.path();
        let body = serde_json::json!({
            "name": "keyed", "image": "img", "script": "echo",
            "environment": {"variables": {"MODE": "fast"},
                            "secrets": {"API_KEY": "k-123-secret", "DB_PASS": "d-456-secret"}},
            "clusters": {
                "cloud": {"endpoint": cloud.url(), "auth_user": "oscar", "auth_password": "stale-cloud-pw", "ssl_verify": false},
                "edge": {"endpoint": edge.url(), "auth_user": "oscar", "auth_password": edge.password, "ssl_verify": false},
                "elsewhere": {"endpoint": "https://elsewhere.example", "auth_user": "u", "auth_password": "elsewhere-pw", "ssl_verify": true}
            }
        });
        let (code, t) = edge.request("POST", "/system/services", Some(&body.to_string()));
        assert_eq!(code, 201, "{t}");

        // fn list: no password, token or secret, in JSON or text.
        let token = edge.service("keyed").expect("there")["token"]
            .as_str()
            .expect("token")
            .to_string();
        for fmt in ["json", "text"] {
            let out = fn_cli(d, &cli)
                .args(["fn", "list", "--cluster", "edge", "-o", fmt])
                .output();
            assert_ok(&out, "fn list");
            let t = text(&out);
            for s in [
                "stale-cloud-pw",
                "elsewhere-pw",
                edge.password.as_str(),
                token.as_str(),
            ] {
                assert!(!t.contains(s), "{version} {fmt}: `{s}` printed: {t}");
            }
        }

        let t = fails(
            d,
            &cli,
            &["fn", "copy", "keyed", "--from", "edge", "--to", "cloud"],
        );
        assert!(
            t.contains("secrets OSCAR returns blank: API_KEY, DB_PASS"),
            "{version}: {t}"
        );
        assert!(cloud.names().is_empty());
        let partial = secrets_file(d, "partial.yaml", "API_KEY: k-123-secret\n");
        let t = fails(
            d,
            &cli,
            &[
                "fn",
                "copy",
                "keyed",
                "--from",
                "edge",
                "--to",
                "cloud",
                "--secrets",
                path_str(&partial),
            ],
        );
        assert!(
            t.contains("blank: DB_PASS") && !t.contains("API_KEY;"),
            "{version}: {t}"
        );

        let all = secrets_file(
            d,
            "all.yaml",
            "API_KEY: k-123-secret\nDB_PASS: d-456-secret\n",
        );
        let out = fn_cli(d, &cli)
            .args([
                "fn",
                "copy",
                "keyed",
                "--from",
                "edge",
                "--to",
                "cloud",
                "--secrets",
                path_str(&all),
            ])
            .output();
        assert_ok(&out, "fn copy with the secrets given again");
        for id in ["edge", "elsewhere"] {
            assert!(
                text(&out).contains(&format!(
                    "`clusters.{id}`: the password read from `edge` was not copied to `cloud`"
                )),
                "{}",
                text(&out)
            );
        }
        let posted = cloud
            .sent_by_continuum()
            .into_iter()
            .find(|r| r["method"] == "POST")
            .expect("POST");
        let b = &posted["body"];
        assert_eq!(b["environment"]["secrets"]["API_KEY"], "k-123-secret");
        for id in ["elsewhere", "edge"] {
            assert!(b["clusters"][id].get("auth_password").is_none(), "{b}");
        }
        assert_eq!(
            b["clusters"]["cloud"]["auth_password"],
            cloud.password.as_str()
        );
        assert!(!b.to_string().contains("stale-cloud-pw"), "{b}");
        let copied = cloud.service("keyed").expect("copied");
        assert_eq!(
            copied["environment"]["secrets"]["API_KEY"], "",
            "blank once stored"
        );
        assert_eq!(copied["environment"]["variables"]["MODE"], "fast");
        assert_requests_follow_spec(&cloud);
    }
}

/// A failed POST on the target leaves the source intact (and the target empty).
#[test]
fn fn_copy_failed_post_leaves_source_intact() {
    let edge = OscarDouble::start("edge", V41, &[]);
    let broken = OscarDouble::start("cloud", V41, &["--fail-post", "500"]);
    let dir = tempfile::tempdir().expect("tmp");
    let cli = oscar_cli_config(dir.path(), &[("edge", &edge), ("cloud", &broken)], "");
    let src = seed(dir.path(), &cli, &edge, "edge", "yolo");
    for verb in ["copy", "move"] {
        let args = ["fn", verb, "yolo", "--from", "edge", "--to", "cloud"];
        let t = fails(dir.path(), &cli, &args);
        assert!(t.contains("500") && t.contains("`cloud`"), "{verb}: {t}");
        assert_eq!(
            edge.service("yolo").as_ref(),
            Some(&src),
            "{verb}: the source is untouched"
        );
        assert!(broken.names().is_empty(), "{verb}: nothing on the target");
    }
}

/// Unreachable endpoint, wrong password, a name over 39 characters, an FDL naming an
/// unknown cluster, an OSCAR older than 3.6, an oscar-cli entry with OIDC only: each
/// a clear error, nothing half-done.
#[test]
fn fn_errors_are_clear_and_nothing_is_half_done() {
    let edge = OscarDouble::start("edge", V41, &[]);
    let cloud = OscarDouble::start("cloud", V41, &[]);
    let ancient = OscarDouble::start("ancient", "3.5.3", &[]);
    // A port nobody listens on: bind, note, release.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!(
        "  gone:\n    endpoint: http://127.0.0.1:{dead_port}\n    auth_user: oscar\n    auth_password: x\n  badpw:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: not-the-password\n  egi:\n    endpoint: {}\n    oidc_account_name: egi\n",
        cloud.url(),
        cloud.url()
    );
    let cli = oscar_cli_config(
        dir.path(),
        &[("edge", &edge), ("cloud", &cloud), ("ancient", &ancient)],
        &extra,
    );
    let src = seed(dir.path(), &cli, &edge, "edge", "yolo");
    let (d, c) = (dir.path(), cli.as_path());

    let t = fails(
        d,
        c,
        &["fn", "move", "yolo", "--from", "edge", "--to", "gone"],
    );
    assert!(t.contains("cannot reach OSCAR cluster `gone`"), "{t}");
    assert_eq!(edge.service("yolo").as_ref(), Some(&src));

    let t = fails(
        d,
        c,
        &["fn", "move", "yolo", "--from", "edge", "--to", "badpw"],
    );
    assert!(t.contains("refused the credentials"), "{t}");
    assert!(
        !t.contains("not-the-password"),
        "the password is never printed"
    );
    assert_eq!(edge.service("yolo").as_ref(), Some(&src));
    assert!(cloud.names().is_empty());

    let t = fails(
        d,
        c,
        &["fn", "copy", "yolo", "--from", "edge", "--to", "ancient"],
    );
    assert!(
        t.contains("`ancient` runs OSCAR 3.5.3") && t.contains("3.6 or later"),
        "{t}"
    );
    assert!(ancient.names().is_empty());

    let t = fails(d, c, &["fn", "list", "--cluster", "egi"]);
    assert!(t.contains("authenticates with OIDC"), "{t}");

    let long = "a".repeat(40);
    let t = fails(
        d,
        c,
        &["fn", "copy", &long, "--from", "edge", "--to", "cloud"],
    );
    assert!(
        t.contains("has 40 characters; OSCAR allows at most 39"),
        "{t}"
    );
    let long_fdl = fdl(d, "cloud", &long, "");
    let t = fails(d, c, &["fn", "apply", path_str(&long_fdl)]);
    assert!(t.contains("at most 39"), "{t}");
    assert!(cloud.names().is_empty());

    // Two services; the second names a cluster nobody knows: nothing is applied.
    let mixed = fdl(
        d,
        "cloud",
        "first",
        "  - nowhere:\n      name: second\n      image: img\n      script: detect.sh\n",
    );
    let t = fails(d, c, &["fn", "apply", path_str(&mixed)]);
    assert!(
        t.contains("unknown cluster `nowhere`") && t.contains("first.yaml:12"),
        "{t}"
    );
    assert!(
        t.contains("known: ancient, badpw, cloud, edge, egi, gone"),
        "{t}"
    );
    assert!(cloud.names().is_empty(), "nothing half-applied");
}

/// `up` with a serverless section on the fleet: manifests land 0600, the k3s double's
/// helm controller serves the OSCAR API double, readiness and registration go over
/// the network, the oscar-cli config keeps its other clusters; `down` unregisters.
#[test]
fn oscar_layer_up_registers_and_down_unregisters() {
    if !fleet_available("oscar_layer_up_registers_and_down_unregisters") {
        return;
    }
    let fleet = Fleet::start(&["os-srv"], 120);
    fleet.repos_online("os-srv"); // the NFS client comes from them (tests/it/nfs.rs)
    let ws = Workspace::new("osedge");
    ws.write_inventory(&fleet.defs(), "ops");
    let cli = ws.dir.path().join("oscar-cli/config.yaml");
    std::fs::create_dir_all(cli.parent().expect("dir")).expect("mkdir");
    std::fs::write(
        &cli,
        "oscar:\n  alpha:\n    endpoint: https://alpha.example\n    auth_user: u\n    auth_password: p\n    ssl_verify: true\n    memory: 1Gi\n  beta:\n    endpoint: https://beta.example\n    oidc_account_name: egi\ndefault: alpha\nx-unknown: kept\n",
    )
    .expect("oscar-cli config");
    // traefik is off explicitly, so dropping the section later does not restart k3s.
    let with_layer = format!(
        "  disable: [traefik]\nserverless:\n  profile: edge\n  readiness_timeout: 4\n  oscar_cli:\n    path: {}\n",
        cli.display()
    );
    ws.write_recipe(&["os-srv"], &with_layer);
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    assert_ok(&plan, "plan");
    assert!(
        text(&plan).contains("+ serverless") && text(&plan).contains("+ endpoint"),
        "{}",
        text(&plan)
    );

    // Without the OSCAR chart available the layer never answers: `up` fails naming
    // the component, after the manifests landed and k3s is up. The endpoint is https
    // (issue 11 item 10); ingress-nginx answers it with its default backend's 404.
    let up = ws.up();
    assert_eq!(up.status.code(), Some(3), "{}", text(&up));
    let t = text(&up);
    assert!(
        t.contains("OSCAR on cluster `osedge` is not ready after")
            && t.contains("OSCAR manager /health"),
        "{t}"
    );
    assert!(
        t.contains(&format!("https://{}/health", fleet.ip("os-srv"))),
        "{t}"
    );
    // The pinned k3s (v1.31.4) has no `valuesSecrets`: loading the recipe says so.
    assert!(t.contains("cannot read chart values from Secrets"), "{t}");
    let eps = ws.run(&["endpoints", "list", "-o", "json"]);
    assert_eq!(
        String::from_utf8_lossy(&eps.stdout).trim(),
        "[]",
        "nothing registered before ready"
    );

    // The stand-in for "the OSCAR chart and images are available" (see the k3s
    // double's helm-controller block); the next `up` resumes and finishes.
    fleet.place_oscar_double("os-srv");
    let up = ws.up();
    assert_ok(&up, "up");
    let state = ws.state();
    let password = state["serverless"]["oscar_password"]
        .as_str()
        .expect("generated password")
        .to_string();
    assert_eq!(password.len(), 64, "32 CSPRNG bytes, hex");
    assert!(
        !text(&up).contains(&password),
        "the password is never printed"
    );

    // Manifests on the server, 0600, traefik disabled for ingress-nginx.
    let listing = fleet.exec_ok(
        "os-srv",
        "cd /var/lib/rancher/k3s/server/manifests && stat -c '%a %n' continuum-oscar-*.yaml",
    );
    let files: Vec<&str> = listing.lines().collect();
    assert_eq!(files.len(), 6, "{listing}");
    assert!(files.iter().all(|l| l.starts_with("600 ")), "{listing}");
    assert!(listing.contains("continuum-oscar-50-oscar.yaml"));
    assert!(listing.contains("continuum-oscar-05-secrets.yaml"));
    // MinIO's root credentials are a Secret its chart reads (`existingSecret`).
    let minio = fleet.exec_ok(
        "os-srv",
        "k3s kubectl -n minio get secret continuum-minio-root -o json",
    );
    let minio: Value = serde_json::from_str(&minio).expect("secret json");
    let data = minio["data"].as_object().expect("data");
    assert!(
        data.contains_key("rootUser") && data.contains_key("rootPassword"),
        "{minio}"
    );
    let config = fleet.exec_ok("os-srv", "cat /etc/rancher/k3s/config.yaml");
    assert!(config.contains("traefik"), "{config}");

    // Plain http is redirected to https even without a recipe certificate: Basic auth
    // never crosses in clear (issue 11, item 10).
    assert_eq!(
        http_redirect(&format!("http://{}/system/info", fleet.ip("os-srv"))),
        format!("308 https://{}/system/info", fleet.ip("os-srv"))
    );

    // Registered, with what the endpoint reported over the network.
    let list = ws.run(&["endpoints", "list", "-o", "json"]);
    assert_ok(&list, "endpoints list");
    let eps: Vec<Value> = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["name"], "osedge");
    assert_eq!(
        eps[0]["oscar_url"],
        format!("https://{}", fleet.ip("os-srv"))
    );
    assert_eq!(
        eps[0]["minio_url"],
        format!("http://{}:30300", fleet.ip("os-srv"))
    );
    assert_eq!(eps[0]["tier"], "edge");
    assert_eq!(eps[0]["arch"], "amd64");
    assert_eq!(eps[0]["gpu"], false);
    assert_eq!(eps[0]["kube_context"], "osedge");
    // The version of the pinned manager image (`image.tag`, docs/oscar.md).
    assert_eq!(eps[0]["oscar_version"], "4.1.2");
    let show = ws.run(&["endpoints", "show", "osedge"]);
    assert_ok(&show, "endpoints show");
    assert!(!text(&show).contains(&password) && text(&show).contains("--reveal"));
    let reveal = ws.run(&["endpoints", "show", "osedge", "--reveal"]);
    assert!(text(&reveal).contains(&password), "{}", text(&reveal));

    let status = ws.run(&["status", "osedge"]);
    assert_ok(&status, "status");
    assert!(
        text(&status).contains(&format!(
            "OSCAR endpoint `osedge` (edge) https://{}  health: ok",
            fleet.ip("os-srv")
        )),
        "{}",
        text(&status)
    );

    // The oscar-cli config kept its two other clusters, unknown keys and default.
    let doc: Value = read_yaml(&cli);
    assert_eq!(doc["default"], "alpha");
    assert_eq!(doc["x-unknown"], "kept");
    assert_eq!(doc["oscar"]["alpha"]["memory"], "1Gi");
    assert_eq!(doc["oscar"]["beta"]["oidc_account_name"], "egi");
    assert_eq!(doc["oscar"]["osedge"]["auth_password"], password.as_str());
    let mode = std::fs::metadata(&cli)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(mode.ok(), Some(0o600));

    // Functions through the registered endpoint (catalog + state credentials).
    let out = ws
        .cmd()
        .args([
            "fn",
            "list",
            "--cluster",
            "osedge",
            "--oscar-cli-config",
            path_str(&cli),
        ])
        .output();
    assert_ok(&out, "fn list on the fleet endpoint");
    assert!(text(&out).contains("No services"), "{}", text(&out));

    // Converged: nothing to change.
    let again = ws.up();
    assert_ok(&again, "second up");
    assert!(text(&again).contains("0 to change"), "{}", text(&again));

    // Dropping the section deletes the layer: manifests and registration go; the
    // other oscar-cli clusters stay.
    ws.write_recipe(&["os-srv"], "  disable: [traefik]\n");
    let plan = ws.run(&["plan", path_str(&ws.recipe())]);
    let t = text(&plan);
    assert!(
        t.contains("- serverless") && t.contains("- endpoint") && t.contains("2 to delete"),
        "{t}"
    );
    let drop = ws.up();
    assert_ok(&drop, "up without the layer");
    let left = fleet.exec_ok(
        "os-srv",
        "ls /var/lib/rancher/k3s/server/manifests/ | grep -c continuum-oscar || true",
    );
    assert_eq!(left.trim(), "0");
    // ...and their components: k3s keeps the objects of a deleted manifest, so the
    // HelmCharts were deleted first (helm-controller uninstalled each release).
    let charts = fleet.exec_ok(
        "os-srv",
        "k3s kubectl -n kube-system get helmcharts -o name",
    );
    assert_eq!(charts.trim(), "", "no HelmChart left");
    assert_eq!(
        oscar_status(&fleet.ip("os-srv"), "oscar", &password),
        None,
        "OSCAR uninstalled"
    );
    assert!(
        ws.state().get("serverless").is_none(),
        "credentials forgotten"
    );
    let doc: Value = read_yaml(&cli);
    assert!(doc["oscar"].get("osedge").is_none());
    assert_eq!(doc["oscar"]["alpha"]["memory"], "1Gi");

    // Back again (new credentials): the helm controller double restarts OSCAR with them.
    ws.write_recipe(&["os-srv"], &with_layer);
    assert_ok(&ws.up(), "up with the layer again");
    let doc: Value = read_yaml(&cli);
    let new_password = ws.state()["serverless"]["oscar_password"]
        .as_str()
        .expect("pw")
        .to_string();
    assert_ne!(new_password, password);
    assert_eq!(
        doc["oscar"]["osedge"]["auth_password"],
        new_password.as_str()
    );

    assert_eq!(
        oscar_status(&fleet.ip("os-srv"), "oscar", &new_password),
        Some(200)
    );
    let down = ws.run(&["down", "osedge", "--yes"]);
    assert_ok(&down, "down");
    assert_eq!(
        oscar_status(&fleet.ip("os-srv"), "oscar", &new_password),
        None,
        "down took OSCAR with k3s"
    );
    let list = ws.run(&["endpoints", "list", "-o", "json"]);
    let eps: Vec<Value> = serde_json::from_slice(&list.stdout).expect("json");
    assert!(eps.is_empty(), "{eps:?}");
    let doc: Value = read_yaml(&cli);
    assert!(doc["oscar"].get("osedge").is_none());
    assert_eq!(doc["oscar"]["alpha"]["endpoint"], "https://alpha.example");
    assert_eq!(doc["oscar"]["beta"]["endpoint"], "https://beta.example");
    assert_eq!(doc["default"], "alpha");
}

/// `serverless:` in a recipe: profiles, overrides and mistakes with positions.
#[test]
fn serverless_section_is_validated_with_positions() {
    use continuum::files::load_recipe;
    use continuum::recipe::LoadError;
    let dir = tempfile::tempdir().expect("tmp");
    let inventory = root().join("tests/fixtures/good/inventory.yaml");
    let write = |body: &str| {
        let p = dir.path().join("r.yaml");
        std::fs::write(
            &p,
            format!(
                "name: farm\ninventory: {}\nk3s:\n  version: v1.31.4+k3s1\n  servers: [srv-1]\n  agents: [agent-1]\n{body}",
                inventory.display()
            ),
        )
        .expect("write recipe");
        p
    };
    let ok = load_recipe(&write(
        "serverless:\n  profile: edge\n  values:\n    oscar:\n      resources: {requests: {memory: 96Mi}}\n",
    ))
    .expect("valid");
    let s = ok.env.serverless.as_ref().expect("serverless");
    assert_eq!(
        s.endpoint, "https://10.0.0.1",
        "https by default (issue 11, item 10)"
    );
    assert!(!s.knative, "edge: Knative off by default");
    assert!(
        ok.env.cluster.disable.iter().any(|d| d == "traefik"),
        "nginx ingress turns traefik off"
    );
    // Gateway values need Traefik v3, packaged from k3s v1.32.2 (docs/k3s-config.md).
    // A Gateway's HTTPS listener needs the recipe's certificate (issue 11, item 8).
    std::fs::write(
        dir.path().join("tls.crt"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .expect("write tls.crt");
    std::fs::write(
        dir.path().join("tls.key"),
        "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
    )
    .expect("write tls.key");
    let gw_recipe = write(
        "serverless:\n  profile: cloud\n  ingress: gateway\n  tls: {cert: tls.crt, key: tls.key}\n",
    );
    let text = std::fs::read_to_string(&gw_recipe)
        .expect("read recipe")
        .replace("v1.31.4+k3s1", "v1.32.2+k3s1");
    std::fs::write(&gw_recipe, text).expect("write recipe");
    let gw = load_recipe(&gw_recipe).expect("gateway");
    assert!(!gw.env.cluster.disable.iter().any(|d| d == "traefik"));
    assert!(gw.env.serverless.as_ref().expect("s").knative);

    let bad = write(
        "serverless:\n  profile: egde\n  ingress: traefik\n  endpoint: ftp://x\n  values:\n    oscr: {a: 1}\n  credentials:\n    minio_secret_key: short\n",
    );
    let Err(LoadError::Invalid(diags)) = load_recipe(&bad) else {
        panic!("must be rejected");
    };
    let at = |line: u64, frag: &str| {
        let d = diags
            .iter()
            .find(|d| d.pos.line == line)
            .unwrap_or_else(|| panic!("no diagnostic on line {line}: {diags:#?}"));
        assert!(d.to_string().contains(frag), "{d}");
    };
    at(8, "did you mean `edge`");
    at(9, "unknown ingress mode `traefik`");
    at(10, "invalid serverless endpoint");
    at(12, "did you mean `oscar`");
    at(14, "at least 8 characters");
    let unknown = write("serverless:\n  profile: edge\n  replicas: 3\n");
    let Err(LoadError::Invalid(diags)) = load_recipe(&unknown) else {
        panic!("unknown key must be rejected");
    };
    assert!(diags[0].to_string().contains("r.yaml:9:"), "{}", diags[0]);
}

/// The client against the double in both modes: Basic on /system, only the service
/// token on /job and /run; a wrong password or token is a credential error naming the
/// cluster; a duplicate POST is 409 on 3.6 and 400 on 4.1; a /system/info shaped as
/// upstream's (Knative: an object; kube: none) decodes.
#[tokio::test]
async fn client_auth_rules_against_the_double() {
    use continuum::oscar::client::{Api, ClientError, Oscar};
    use continuum::state::Secret;
    for (version, backend, duplicate) in [(V41, "knative", 400), (V36, "kube", 409)] {
        let d = OscarDouble::start("edge", version, &["--backend", backend]);
        let t = Duration::from_secs(5);
        let ok = Oscar::new(
            "edge",
            &d.url(),
            "oscar",
            Secret::new(d.password.clone()),
            true,
            t,
        )
        .expect("client");
        let bad =
            Oscar::new("edge", &d.url(), "oscar", Secret::new("wrong"), true, t).expect("client");
        let info = ok.system_info().await.expect("info");
        assert_eq!(info.version, version);
        assert_eq!(
            info.serverless_backend.map(|b| b.name),
            (backend == "knative").then(|| "Knative".to_string())
        );
        let api = if version == V41 { Api::V4_1 } else { Api::V3_6 };
        assert_eq!(
            ok.system_info()
                .await
                .expect("info")
                .api("edge")
                .expect("api"),
            api
        );
        assert!(matches!(
            bad.system_info().await,
            Err(ClientError::Unauthorized { .. })
        ));
        bad.health().await.expect("/health takes no auth");

        let def = serde_json::json!({"name": "echo", "image": "alpine", "script": "cat"});
        ok.create_service(&def).await.expect("create");
        let stored = ok.get_service("echo").await.expect("get").expect("there");
        let token = stored["token"].as_str().expect("token").to_string();
        assert_eq!(token.len(), 64, "32 random bytes, hex");
        let e = ok.create_service(&def).await.expect_err("duplicate");
        assert!(
            e.to_string().contains(&format!("with {duplicate}")),
            "{version}: {e}"
        );

        let body = serde_json::json!({"x": 1});
        ok.invoke("echo", &token, &body, false)
            .await
            .expect("job with the service token");
        if backend == "knative" {
            let echoed = ok.invoke("echo", &token, &body, true).await.expect("run");
            assert_eq!(serde_json::from_str::<Value>(&echoed).expect("json"), body);
        } else {
            let e = ok
                .invoke("echo", &token, &body, true)
                .await
                .expect_err("no /run");
            assert!(e.to_string().contains("404"), "{e}");
        }
        let e = ok
            .invoke("echo", "not-the-token", &body, false)
            .await
            .expect_err("wrong token");
        assert!(matches!(e, ClientError::Unauthorized { .. }), "{e}");
        // Basic credentials are not accepted on /job (the raw request carries Basic only).
        let (code, _) = d.request("POST", "/job/echo", Some("{}"));
        assert_eq!(code, 401);
        assert!(ok.delete_service("echo").await.expect("delete"));
        assert!(!ok.delete_service("echo").await.expect("absent"));
    }
}
