//! Issue 4: the OSCAR serverless layer. `fn` operations against OSCAR API doubles
//! (tests/oscar-double/oscar-api) on loopback ports chosen by the kernel, and the
//! end-to-end `up` on the test fleet, where the k3s double's helm-controller block
//! serves the OSCAR API double when the OSCAR HelmChart lands.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;

use crate::harness::{Fleet, Workspace, assert_ok, fleet_available, path_str, root, text};

/// One OSCAR API double process on 127.0.0.1 (killed on drop).
struct OscarDouble {
    child: Child,
    port: u16,
    password: String,
    _dir: tempfile::TempDir,
}

impl OscarDouble {
    fn start(cluster_id: &str, version: &str, extra: &[&str]) -> OscarDouble {
        let dir = tempfile::tempdir().expect("tmp");
        let port_file = dir.path().join("port");
        let password = format!("pw-{cluster_id}-{}", std::process::id());
        let child = Command::new("python3")
            .arg(root().join("tests/oscar-double/oscar-api"))
            .args([
                "--port",
                "0",
                "--cluster-id",
                cluster_id,
                "--version",
                version,
            ])
            .arg("--port-file")
            .arg(&port_file)
            .args(extra)
            .env("OSCAR_DOUBLE_PASSWORD", &password)
            .stdout(Stdio::null())
            .spawn()
            .expect("start the OSCAR API double");
        let t = Instant::now();
        let port = loop {
            if let Ok(s) = std::fs::read_to_string(&port_file)
                && let Ok(p) = s.trim().parse::<u16>()
            {
                break p;
            }
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "OSCAR double did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        OscarDouble {
            child,
            port,
            password,
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Raw HTTP request with Basic auth; (status, body).
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http(self.port, method, path, &self.password, body)
    }

    fn service(&self, name: &str) -> Option<Value> {
        let (code, body) = self.request("GET", &format!("/system/services/{name}"), None);
        (code == 200).then(|| serde_json::from_str(&body).expect("service json"))
    }

    fn names(&self) -> Vec<String> {
        let (code, body) = self.request("GET", "/system/services", None);
        assert_eq!(code, 200, "{body}");
        let v: Vec<Value> = serde_json::from_str(&body).expect("list");
        let mut n: Vec<String> = v
            .iter()
            .map(|s| s["name"].as_str().unwrap_or("").to_string())
            .collect();
        n.sort();
        n
    }
}

impl Drop for OscarDouble {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http(port: u16, method: &str, path: &str, password: &str, body: Option<&str>) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("oscar:{password}"));
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = resp
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

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

fn continuum(dir: &Path, cli: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_continuum"))
        .env("CONTINUUM_STATE_DIR", dir.join("state"))
        .env("CONTINUUM_OSCAR_CLI_CONFIG", cli)
        .env_remove("CONTINUUM_LOG")
        .stdin(Stdio::null())
        .args(args)
        .output()
        .expect("run continuum")
}

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
            "functions:\n  oscar:\n  - {cluster}:\n      name: {name}\n      image: ghcr.io/grycap/yolov8:arm64\n      script: detect.sh\n      cpu: \"0.5\"\n      memory: 512Mi\n      input:\n      - storage_provider: minio.default\n        path: {name}/in\n{extra}"
        ),
    )
    .expect("fdl");
    p
}

/// `continuum fn apply` of a one-service FDL on `cluster`; the stored definition.
fn seed(dir: &Path, cli: &Path, d: &OscarDouble, cluster: &str, name: &str) -> Value {
    let f = fdl(dir, cluster, name, "");
    assert_ok(
        &continuum(dir, cli, &["fn", "apply", path_str(&f)]),
        "fn apply",
    );
    d.service(name).expect("applied")
}

/// Run continuum, expect failure, return its output text.
fn fails(dir: &Path, cli: &Path, args: &[&str]) -> String {
    let out = continuum(dir, cli, args);
    assert!(!out.status.success(), "{args:?} must fail: {}", text(&out));
    text(&out)
}

fn same_definition(a: &Value, b: &Value) {
    for k in ["image", "script", "cpu", "memory", "input"] {
        assert_eq!(a[k], b[k], "field {k} differs");
    }
}

/// `continuum fn federate yolo --members M --delegation D`.
fn federate<'a>(members: &'a str, delegation: &'a str) -> [&'a str; 7] {
    [
        "fn",
        "federate",
        "yolo",
        "--members",
        members,
        "--delegation",
        delegation,
    ]
}

/// apply on the edge, copy and move to the cloud, federate both: the target holds the
/// service with the same image, script and resources and its own token.
#[test]
fn fn_apply_copy_move_federate_between_doubles() {
    let edge = OscarDouble::start("edge", "4.1.0", &[]);
    let cloud = OscarDouble::start("cloud", "4.1.0", &[]);
    let legacy = OscarDouble::start("legacy", "3.6.4", &[]);
    let dir = tempfile::tempdir().expect("tmp");
    let cli = oscar_cli_config(
        dir.path(),
        &[("edge", &edge), ("cloud", &cloud), ("legacy", &legacy)],
        "",
    );

    // apply: the script file is inlined.
    let f = fdl(dir.path(), "edge", "yolo", "");
    let out = continuum(dir.path(), &cli, &["fn", "apply", path_str(&f)]);
    assert_ok(&out, "fn apply");
    let src = edge.service("yolo").expect("applied on edge");
    assert_eq!(
        src["script"],
        "#!/bin/sh\necho \"detecting $INPUT_FILE_PATH\"\n"
    );
    assert_eq!(src["cluster_id"], "edge");
    // Applying again updates in place (PUT), it does not fail with 409.
    assert_ok(
        &continuum(dir.path(), &cli, &["fn", "apply", path_str(&f)]),
        "fn apply again",
    );
    assert_eq!(
        edge.service("yolo").expect("still")["token"],
        src["token"],
        "PUT keeps the token"
    );

    // copy edge -> cloud.
    let out = continuum(
        dir.path(),
        &cli,
        &["fn", "copy", "yolo", "--from", "edge", "--to", "cloud"],
    );
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
    let out = continuum(
        dir.path(),
        &cli,
        &["fn", "list", "--cluster", "cloud", "-o", "json"],
    );
    assert_ok(&out, "fn list");
    let listed: Vec<Value> = serde_json::from_slice(&out.stdout).expect("json list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].get("token").is_none());

    // move a second service: deleted at the source only after the target has it.
    let f2 = fdl(dir.path(), "edge", "blur", "");
    assert_ok(
        &continuum(dir.path(), &cli, &["fn", "apply", path_str(&f2)]),
        "apply blur",
    );
    let blur = edge.service("blur").expect("blur");
    let out = continuum(
        dir.path(),
        &cli,
        &["fn", "move", "blur", "--from", "edge", "--to", "cloud"],
    );
    assert_ok(&out, "fn move");
    assert!(edge.service("blur").is_none(), "moved away from the edge");
    let moved = cloud.service("blur").expect("moved to cloud");
    same_definition(&blur, &moved);
    assert_ne!(moved["token"], blur["token"]);

    // federate edge + cloud (both 4.1): a federation block on each, naming the other.
    let out = continuum(dir.path(), &cli, &federate("edge,cloud", "load-based"));
    assert_ok(&out, "fn federate");
    for (me, other, d) in [("edge", "cloud", &edge), ("cloud", "edge", &cloud)] {
        let s = d.service("yolo").expect("federated");
        let fed = &s["federation"];
        assert_eq!(fed["delegation"], "load-based", "{me}: {s}");
        assert_eq!(fed["members"][0]["cluster_id"], other, "{me}");
        assert!(s.get("replicas").is_none(), "{me}");
        assert!(s["clusters"][other]["endpoint"].is_string(), "{me}");
        same_definition(&src, &s);
    }

    // federate with an OSCAR older than 4.1: the legacy `replicas` form there.
    let out = continuum(dir.path(), &cli, &federate("edge,legacy", "load-based"));
    assert_ok(&out, "fn federate with a legacy member");
    let old = legacy.service("yolo").expect("on legacy");
    assert!(old.get("federation").is_none(), "{old}");
    assert_eq!(old["replicas"][0]["cluster_id"], "edge");
    assert_eq!(old["delegation"], "load-based");
    assert_eq!(
        edge.service("yolo").expect("edge")["federation"]["members"][0]["cluster_id"],
        "legacy"
    );
    // topsis does not exist before 4.1: refused before anything is written.
    let before = legacy.service("yolo");
    let t = fails(dir.path(), &cli, &federate("edge,legacy", "topsis"));
    assert!(t.contains("before 4.1"), "{t}");
    assert_eq!(legacy.service("yolo"), before);
}

/// A failed POST on the target leaves the source intact (and the target empty).
#[test]
fn fn_copy_failed_post_leaves_source_intact() {
    let edge = OscarDouble::start("edge", "4.1.0", &[]);
    let broken = OscarDouble::start("cloud", "4.1.0", &["--fail-post", "500"]);
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
/// unknown cluster: each a clear error, nothing half-done.
#[test]
fn fn_errors_are_clear_and_nothing_is_half_done() {
    let edge = OscarDouble::start("edge", "4.1.0", &[]);
    let cloud = OscarDouble::start("cloud", "4.1.0", &[]);
    // A port nobody listens on: bind, note, release.
    let dead_port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let dir = tempfile::tempdir().expect("tmp");
    let extra = format!(
        "  gone:\n    endpoint: http://127.0.0.1:{dead_port}\n    auth_user: oscar\n    auth_password: x\n  badpw:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: not-the-password\n",
        cloud.url()
    );
    let cli = oscar_cli_config(dir.path(), &[("edge", &edge), ("cloud", &cloud)], &extra);
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
    assert!(t.contains("known: badpw, cloud, edge, gone"), "{t}");
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
    // the component, after the manifests landed and k3s is up.
    let up = ws.up();
    assert_eq!(up.status.code(), Some(3), "{}", text(&up));
    let t = text(&up);
    assert!(
        t.contains("OSCAR on cluster `osedge` is not ready after")
            && t.contains("OSCAR manager /health"),
        "{t}"
    );
    assert!(
        t.contains(&format!("http://{}/health", fleet.ip("os-srv"))),
        "{t}"
    );
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
    assert_eq!(files.len(), 5, "{listing}");
    assert!(files.iter().all(|l| l.starts_with("600 ")), "{listing}");
    assert!(listing.contains("continuum-oscar-50-oscar.yaml"));
    let config = fleet.exec_ok("os-srv", "cat /etc/rancher/k3s/config.yaml");
    assert!(config.contains("traefik"), "{config}");

    // Registered, with what the endpoint reported over the network.
    let list = ws.run(&["endpoints", "list", "-o", "json"]);
    assert_ok(&list, "endpoints list");
    let eps: Vec<Value> = serde_json::from_slice(&list.stdout).expect("json");
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0]["name"], "osedge");
    assert_eq!(
        eps[0]["oscar_url"],
        format!("http://{}", fleet.ip("os-srv"))
    );
    assert_eq!(
        eps[0]["minio_url"],
        format!("http://{}:30300", fleet.ip("os-srv"))
    );
    assert_eq!(eps[0]["tier"], "edge");
    assert_eq!(eps[0]["arch"], "amd64");
    assert_eq!(eps[0]["gpu"], false);
    assert_eq!(eps[0]["kube_context"], "osedge");
    assert_eq!(eps[0]["oscar_version"], "4.1.0");
    let show = ws.run(&["endpoints", "show", "osedge"]);
    assert_ok(&show, "endpoints show");
    assert!(!text(&show).contains(&password) && text(&show).contains("--reveal"));
    let reveal = ws.run(&["endpoints", "show", "osedge", "--reveal"]);
    assert!(text(&reveal).contains(&password), "{}", text(&reveal));

    let status = ws.run(&["status", "osedge"]);
    assert_ok(&status, "status");
    assert!(
        text(&status).contains(&format!(
            "OSCAR endpoint `osedge` (edge) http://{}  health: ok",
            fleet.ip("os-srv")
        )),
        "{}",
        text(&status)
    );

    // The oscar-cli config kept its two other clusters, unknown keys and default.
    let doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&cli).expect("read")).expect("yaml");
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
        .output()
        .expect("fn list");
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
    assert!(
        ws.state().get("serverless").is_none(),
        "credentials forgotten"
    );
    let doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&cli).expect("read")).expect("yaml");
    assert!(doc["oscar"].get("osedge").is_none());
    assert_eq!(doc["oscar"]["alpha"]["memory"], "1Gi");

    // Back again (new credentials): the helm controller double restarts OSCAR with them.
    ws.write_recipe(&["os-srv"], &with_layer);
    assert_ok(&ws.up(), "up with the layer again");
    let doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&cli).expect("read")).expect("yaml");
    let new_password = ws.state()["serverless"]["oscar_password"]
        .as_str()
        .expect("pw")
        .to_string();
    assert_ne!(new_password, password);
    assert_eq!(
        doc["oscar"]["osedge"]["auth_password"],
        new_password.as_str()
    );

    let down = ws.run(&["down", "osedge", "--yes"]);
    assert_ok(&down, "down");
    let list = ws.run(&["endpoints", "list", "-o", "json"]);
    let eps: Vec<Value> = serde_json::from_slice(&list.stdout).expect("json");
    assert!(eps.is_empty(), "{eps:?}");
    let doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(&cli).expect("read")).expect("yaml");
    assert!(doc["oscar"].get("osedge").is_none());
    assert_eq!(doc["oscar"]["alpha"]["endpoint"], "https://alpha.example");
    assert_eq!(doc["oscar"]["beta"]["endpoint"], "https://beta.example");
    assert_eq!(doc["default"], "alpha");
}

/// `serverless:` in a recipe: profiles, overrides and mistakes with positions.
#[test]
fn serverless_section_is_validated_with_positions() {
    use continuum::recipe::{LoadError, load_recipe};
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

/// The client against the double: Basic on /system, only the service token on /job
/// and /run; a wrong password or token is a credential error naming the cluster.
#[tokio::test]
async fn client_auth_rules_against_the_double() {
    use continuum::serverless::client::{ClientError, Oscar};
    use continuum::state::Secret;
    let d = OscarDouble::start("edge", "4.1.0", &[]);
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
    let bad = Oscar::new("edge", &d.url(), "oscar", Secret::new("wrong"), true, t).expect("client");
    assert_eq!(ok.system_info().await.expect("info").version, "4.1.0");
    assert!(matches!(
        bad.system_info().await,
        Err(ClientError::Unauthorized { .. })
    ));
    bad.health().await.expect("/health takes no auth");

    let def = serde_json::json!({"name": "echo", "image": "alpine", "script": "cat"});
    ok.create_service(&def).await.expect("create");
    let stored = ok.get_service("echo").await.expect("get").expect("there");
    let token = stored["token"].as_str().expect("token").to_string();
    // Re-posting a definition with its read-only token is refused by OSCAR's contract.
    let e = ok
        .create_service(&stored)
        .await
        .expect_err("token is read-only");
    assert!(e.to_string().contains("400"), "{e}");

    let body = serde_json::json!({"x": 1});
    ok.invoke("echo", &token, &body, false)
        .await
        .expect("job with the service token");
    let echoed = ok.invoke("echo", &token, &body, true).await.expect("run");
    assert_eq!(serde_json::from_str::<Value>(&echoed).expect("json"), body);
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
