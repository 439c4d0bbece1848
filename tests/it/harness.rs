//! The one place for integration-test helpers: whether a test may run here (the skip
//! log, `must_run`), the continuum binary (`run::Continuum`, `Workspace::cmd`), the test
//! fleet (`fleet`), the moto EC2 emulator (`moto`), the OSCAR API double (`oscar`), and
//! small readers and waits every test file uses.

#![allow(dead_code)]

mod fleet;
mod moto;
mod oscar;
mod run;
mod workspace;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

pub use fleet::{Fleet, HostDef, client_key, fleet_sh, node_labels, ready_nodes, versions};
pub use moto::{Moto, REGION, moto_available};
pub use oscar::{OscarDouble, curl_with_credentials, http_redirect, oscar_status};
pub use run::Continuum;
pub use workspace::{Workspace, wait_for_state};

/// The repository (the crate's manifest directory).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether a test that cannot run here must fail instead of skipping: under CI
/// (`CI=true`, as `.ci/run` runs) or with `CONTINUUM_REQUIRE_FLEET=1` nothing passes
/// silently.
pub fn must_run() -> bool {
    let on = |v: &str| std::env::var(v).is_ok_and(|v| v == "true" || v == "1");
    on("CI") || on("CONTINUUM_REQUIRE_FLEET")
}

/// Where skipped tests are listed, one `test: reason` line each; scripts/test prints
/// and counts them at the end of the run.
pub fn skip_log() -> PathBuf {
    std::env::var_os("CONTINUUM_SKIP_LOG").map_or_else(
        || PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("skipped-tests.txt"),
        PathBuf::from,
    )
}

/// Record that `test` did not run, and why (stderr and the skip log).
pub fn skipped(test: &str, why: &str) {
    eprintln!("{test}: skipped ({why})");
    let line = format!("{test}: {why}\n");
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(skip_log())
        .and_then(|mut f| std::io::Write::write_all(&mut f, line.as_bytes()));
}

/// Whether the fleet is available; tests that need it return early otherwise (listed
/// in the skip log), and fail when they must run.
pub fn fleet_available(test: &str) -> bool {
    let ok = std::env::var("CONTINUUM_FLEET").is_ok_and(|v| v == "1");
    assert!(
        ok || !must_run(),
        "{test}: the test fleet is not available under CI=true or CONTINUUM_REQUIRE_FLEET=1 (scripts/test as root sets CONTINUUM_FLEET=1)"
    );
    if !ok {
        skipped(
            test,
            "needs the test fleet: run `bash .ci/run`, which sets CONTINUUM_FLEET=1",
        );
    }
    ok
}

/// Every file below `dir` (recursively).
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// What a process printed: stdout, then stderr.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[track_caller]
pub fn assert_ok(out: &Output, what: &str) {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}",
        out.status.code(),
        text(out)
    );
}

/// A path as the `&str` an argument list takes (test paths are UTF-8).
pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("utf8 path")
}

/// Read with `read` every `every` until `done` holds of what it read, or `timeout` has
/// passed; the last value read either way.
pub fn poll_until<T>(
    timeout: Duration,
    every: Duration,
    mut read: impl FnMut() -> T,
    done: impl Fn(&T) -> bool,
) -> T {
    let end = Instant::now() + timeout;
    loop {
        let have = read();
        if done(&have) || Instant::now() > end {
            return have;
        }
        std::thread::sleep(every);
    }
}

/// A secrets file (mode 0600, as `--secrets` requires) named `name` in `dir`.
pub fn secrets_file(dir: &Path, name: &str, body: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, body).expect("secrets");
    std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    p
}

/// A YAML file (an oscar-cli config, say) as a JSON value.
pub fn read_yaml(path: &Path) -> serde_json::Value {
    serde_saphyr::from_str(&std::fs::read_to_string(path).expect("read")).expect("yaml")
}

/// The API server URL of `context` in `kubeconfig`, as the real kubectl reads it (run
/// in `dir`, so a relative `kubeconfig` is found there).
pub fn kubeconfig_server(dir: &Path, kubeconfig: &str, context: &str) -> String {
    let out = Command::new("kubectl")
        .current_dir(dir)
        .args([
            "config",
            "view",
            "--kubeconfig",
            kubeconfig,
            "--context",
            context,
            "--minify",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ])
        .output()
        .expect("kubectl");
    assert!(out.status.success(), "kubectl config view: {}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}
