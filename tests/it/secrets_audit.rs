//! Issue 14, item 4: a secrets audit. Marker secrets (the OSCAR password and MinIO
//! secret key given in the recipe, the k3s token continuum generates, a service secret
//! in an FDL) go through a whole `up` with the serverless layer, `fn apply`, `fn list`
//! and `fn copy`, at every verbosity and as JSON events. They must appear in no output, no
//! process argv or environment (sampled from /proc on the hosts and on the controller
//! while the run goes on), no file that is not 0600, and no Kubernetes object other
//! than a Secret.
//!
//! Fleet hosts of this module are named `sa-*` and use 10.250.0.117-118.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;

use crate::harness::{
    Fleet, OscarDouble, Workspace, assert_ok, fleet_available, path_str, secrets_file, text,
};

const VERSION: &str = "v1.32.4+k3s1";
const OSCAR_PW: &str = "MARKERoscarPw7f3a9c";
const MINIO_SK: &str = "MARKERminioSk8b2c1d";
const SVC_SECRET: &str = "MARKERsvcSecret5e6f";

/// Every form a marker may take on its way: as is, and base64 (Secrets' `data`, HTTP
/// Basic auth).
fn forms(markers: &[String]) -> Vec<String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let mut v: Vec<String> = markers.to_vec();
    for m in markers {
        v.push(b64.encode(m));
        v.push(b64.encode(format!("oscar:{m}")));
    }
    v
}

fn found_in(text: &str, forms: &[String]) -> Option<String> {
    forms.iter().find(|f| text.contains(f.as_str())).cloned()
}

/// Samples argv and environment of every process on the hosts and on this machine
/// (but this test's own) until stopped; what it found, by where.
fn sample_processes(
    fleet: Arc<Fleet>,
    hosts: Vec<String>,
    forms: Vec<String>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(usize, BTreeSet<String>)> {
    std::thread::spawn(move || {
        let me = std::process::id();
        let mut rounds = 0;
        let mut hits = BTreeSet::new();
        let read_all = "for p in /proc/[0-9]*; do printf '%s ' \"${p#/proc/}\"; tr '\\0' ' ' < $p/cmdline 2>/dev/null; printf ' || '; tr '\\0' ' ' < $p/environ 2>/dev/null; echo; done";
        while !stop.load(Ordering::SeqCst) {
            for h in &hosts {
                let (_, out) = fleet.exec(h, read_all);
                for line in out.lines() {
                    if let Some(f) = found_in(line, &forms) {
                        hits.insert(format!("{h}: {f} in {}", &line[..line.len().min(200)]));
                    }
                }
            }
            if let Ok(dir) = std::fs::read_dir("/proc") {
                for e in dir.flatten() {
                    let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
                        continue;
                    };
                    if pid == me {
                        continue;
                    }
                    for what in ["cmdline", "environ"] {
                        let bytes = std::fs::read(e.path().join(what)).unwrap_or_default();
                        let t = String::from_utf8_lossy(&bytes).replace('\0', " ");
                        if let Some(f) = found_in(&t, &forms) {
                            hits.insert(format!("controller pid {pid} {what}: {f}"));
                        }
                    }
                }
            }
            rounds += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        (rounds, hits)
    })
}

/// Files under `dir` that hold a marker and are not 0600.
fn loose_files(dir: &Path, forms: &[String]) -> Vec<String> {
    crate::harness::files_under(dir)
        .into_iter()
        .filter(|p| {
            std::fs::read(p).is_ok_and(|b| found_in(&String::from_utf8_lossy(&b), forms).is_some())
        })
        .filter_map(|p| {
            let mode = std::fs::metadata(&p)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
                .unwrap_or(0);
            (mode != 0o600).then(|| format!("{} ({mode:o})", p.display()))
        })
        .collect()
}

#[test]
fn marker_secrets_appear_nowhere_they_should_not() {
    if !fleet_available("marker_secrets_appear_nowhere_they_should_not") {
        return;
    }
    let fleet = Arc::new(Fleet::start(&["sa-srv", "sa-a1"], 117));
    for h in ["sa-srv", "sa-a1"] {
        fleet.repos_online(h);
    }
    fleet.place_oscar_double("sa-srv");
    let ws = Workspace::new("sa");
    ws.write_inventory(&fleet.defs(), "ops");
    let bundle = crate::upgrade::bundle_at(ws.dir.path(), VERSION);
    let cli = ws.dir.path().join("oscar-cli.yaml");
    std::fs::write(
        ws.recipe(),
        format!(
            "name: sa\ninventory: inventory.yaml\nk3s:\n  version: {VERSION}\n  install:\n    source: bundle\n    bundle: {}\n  servers: [sa-srv]\n  readiness_timeout: 90\nserverless:\n  profile: edge\n  readiness_timeout: 60\n  credentials:\n    oscar_password: {OSCAR_PW}\n    minio_secret_key: {MINIO_SK}\n  oscar_cli:\n    path: {}\n    ssl_verify: false\n",
            bundle.display(),
            cli.display()
        ),
    )
    .expect("recipe");
    // The recipe itself holds two markers: make it 0600 as a user should.
    std::fs::set_permissions(
        ws.recipe(),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");

    let mut markers = vec![
        OSCAR_PW.to_string(),
        MINIO_SK.to_string(),
        SVC_SECRET.to_string(),
    ];
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_processes(
        fleet.clone(),
        vec!["sa-srv".into(), "sa-a1".into()],
        forms(&markers),
        stop.clone(),
    );
    let outputs = Arc::new(Mutex::new(Vec::new()));
    let run = |args: &[&str]| {
        let out = ws.cmd().env("CONTINUUM_LOG", "trace").args(args).output();
        outputs
            .lock()
            .expect("outputs")
            .push((args.join(" "), text(&out)));
        out
    };
    let up = run(&["up", path_str(&ws.recipe()), "--yes", "-vv"]);
    assert_ok(&up, "up with the serverless layer");
    // The k3s token is generated: it is a marker from now on.
    let st = ws.state();
    for k in ["token", "agent_token", "join_token", "agent_join_token"] {
        if let Some(t) = st["cluster"][k].as_str().filter(|t| !t.is_empty()) {
            markers.push(t.to_string());
        }
    }
    assert!(
        markers.len() >= 5,
        "the cluster's tokens are markers too: {markers:?}"
    );
    let again = run(&["up", path_str(&ws.recipe()), "--yes", "-vv", "-o", "json"]);
    assert_ok(&again, "a second up, JSON events");

    // A service with a secret, applied and listed (text and JSON).
    let fdl = ws.dir.path().join("fdl.yaml");
    std::fs::write(ws.dir.path().join("s.sh"), "#!/bin/sh\necho hi\n").expect("script");
    std::fs::write(
        &fdl,
        format!(
            "functions:\n  oscar:\n  - sa:\n      name: audit\n      image: img\n      script: s.sh\n      environment:\n        secrets:\n          API_KEY: {SVC_SECRET}\n"
        ),
    )
    .expect("fdl");
    std::fs::set_permissions(&fdl, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let cli_arg = cli.display().to_string();
    let apply = run(&[
        "fn",
        "apply",
        path_str(&fdl),
        "--oscar-cli-config",
        &cli_arg,
        "-vv",
    ]);
    assert_ok(&apply, "fn apply");
    for o in [&["-o", "text"][..], &["-o", "json"][..]] {
        let mut args = vec![
            "fn",
            "list",
            "--cluster",
            "sa",
            "--oscar-cli-config",
            &cli_arg,
            "-vv",
        ];
        args.extend_from_slice(o);
        assert_ok(&run(&args), "fn list");
    }
    // `fn copy` to another cluster (an OSCAR API double on loopback, registered in the
    // oscar-cli config): the secret must be given again, from a 0600 file.
    let other = OscarDouble::start_with("other", "4.1.2", "pw-other", &[]);
    let cfg = std::fs::read_to_string(&cli).expect("oscar-cli config");
    let cfg = cfg.replacen(
        "oscar:\n",
        &format!(
            "oscar:\n  other:\n    endpoint: {}\n    auth_user: oscar\n    auth_password: pw-other\n    ssl_verify: false\n",
            other.url()
        ),
        1,
    );
    std::fs::write(&cli, cfg).expect("oscar-cli config");
    let secrets = secrets_file(
        ws.dir.path(),
        "secrets.yaml",
        &format!("API_KEY: {SVC_SECRET}\n"),
    );
    let copy = run(&[
        "fn",
        "copy",
        "audit",
        "--from",
        "sa",
        "--to",
        "other",
        "--secrets",
        path_str(&secrets),
        "--oscar-cli-config",
        &cli_arg,
        "-vv",
    ]);
    assert_ok(&copy, "fn copy with the secret given again");
    assert_ok(&run(&["status", "sa", "-vv"]), "status");
    stop.store(true, Ordering::SeqCst);
    let (rounds, proc_hits) = sampler.join().expect("sampler");
    let forms = forms(&markers);

    // 1. Output at every verbosity, JSON events included.
    for (args, out) in outputs.lock().expect("outputs").iter() {
        assert!(
            found_in(out, &forms).is_none(),
            "`{args}` printed a secret:\n{out}"
        );
    }
    // 2. Process argv and environment, here and on the hosts, during the whole run.
    assert!(rounds >= 3, "the sampler ran {rounds} rounds only");
    assert!(
        proc_hits.is_empty(),
        "secrets in argv/environ: {proc_hits:#?}"
    );
    // 3. Files: locally (state, kubeconfig, oscar-cli config, the recipe itself), and
    // on the hosts, nothing holding a secret is readable by others.
    let loose = loose_files(ws.dir.path(), &forms);
    assert!(loose.is_empty(), "secrets in files not 0600: {loose:?}");
    // Positive control: the scan does see the state file, which holds them (0600).
    let state = std::fs::read_to_string(ws.state_file()).expect("state");
    assert!(
        found_in(&state, &forms).is_some(),
        "the scan would find nothing"
    );
    for h in ["sa-srv", "sa-a1"] {
        let pattern = forms.join("\\|");
        let listing = fleet.exec_ok(
            h,
            &format!(
                "grep -rlI -e '{}' /etc /var/lib/rancher /var/lib/continuum /var/log /root /home /tmp /run 2>/dev/null | while read f; do echo \"$(stat -c %a \"$f\") $f\"; done; true",
                pattern.replace('\'', "")
            ),
        );
        let loose: Vec<&str> = listing.lines().filter(|l| !l.starts_with("600 ")).collect();
        assert!(
            loose.is_empty(),
            "{h}: secrets in files not 0600: {loose:?}"
        );
        // Positive control: config.yaml holds the token (0600) and is found.
        assert!(
            listing.contains("600 /etc/rancher/k3s/config.yaml"),
            "{h}: the scan found nothing: {listing}"
        );
    }
    // 4. Kubernetes objects: only Secrets may hold them.
    for kind in [
        "helmcharts",
        "helmchartconfigs",
        "addons",
        "namespaces",
        "nodes",
        "runtimeclasses",
    ] {
        let (_, json) = fleet.exec("sa-srv", &format!("k3s kubectl get {kind} -A -o json"));
        assert!(
            found_in(&json, &forms).is_none(),
            "a {kind} object holds a secret"
        );
    }
    let (_, secrets) = fleet.exec("sa-srv", "k3s kubectl get secrets -A -o json");
    assert!(
        found_in(&secrets, &forms).is_some(),
        "the credentials are in Secrets (the positive control of the check above)"
    );
    assert_ok(&ws.run(&["down", "sa", "--yes"]), "down");
}
