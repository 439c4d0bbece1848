//! State in S3 against moto, at its edges (no fleet hosts):
//! - a bucket that is not there (a mistyped `--state`, or a bucket not created yet):
//!   every store operation is the typed `NoBucket` error naming the bucket, not "no
//!   state yet", a lost compare-and-swap race or a lock that "kept changing"; the CLI
//!   says the same;
//! - SIGINT while `enroll bundle` holds the lock: the lock object is deleted;
//! - `enroll list` without the age identity.

use std::path::Path;

use continuum::files::StateError;
use continuum::state::{Secret, State};
use continuum::statestore::{Remote, Store};

use crate::harness::{Continuum, Moto, moto_available};

const MISSING: &str = "no-such-team-bucket";

fn remote(moto: &Moto) -> Remote {
    let mut r = Remote::parse(&format!("s3://{MISSING}/envs")).expect("url");
    r.endpoint = Some(moto.url());
    r.path_style = true;
    r.region = Some("us-east-1".to_string());
    r.static_credentials = Some(("test".into(), Secret::new("test")));
    r
}

fn is_no_bucket(e: &StateError) -> bool {
    matches!(e, StateError::NoBucket { bucket, .. } if bucket == MISSING)
        && e.to_string().contains(MISSING)
}

#[test]
fn s3state_missing_bucket_is_a_typed_error_everywhere() {
    if !moto_available("s3state_missing_bucket_is_a_typed_error_everywhere") {
        return;
    }
    let moto = Moto::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let r = remote(&moto);
    let store = Store::open(dir.path(), Some(&r), "farm").expect("open needs no call");

    let e = store.load().expect_err("load on a missing bucket");
    assert!(is_no_bucket(&e), "load: {e:?}");
    let e = store.load_public().expect_err("load_public");
    assert!(is_no_bucket(&e), "load_public: {e:?}");
    let e = store.save(&mut State::new("farm")).expect_err("save");
    assert!(is_no_bucket(&e), "save: {e:?}");
    let e = store.lock().expect_err("lock");
    assert!(is_no_bucket(&e), "lock: {e:?}");
    let e = store.remove_state().expect_err("remove");
    assert!(is_no_bucket(&e), "remove_state: {e:?}");
    let e = continuum::statestore::list(Path::new("/nonexistent"), Some(&r)).expect_err("list");
    assert!(is_no_bucket(&e), "list: {e:?}");

    let out = Continuum::new()
        .moto(&moto)
        .state_dir(dir.path())
        .env("CONTINUUM_STATE", format!("s3://{MISSING}/envs"))
        .env("CONTINUUM_STATE_ENDPOINT", moto.url())
        .env("CONTINUUM_STATE_REGION", "us-east-1")
        .args(["state", "show", "farm"])
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(MISSING) && err.contains("does not exist"),
        "{err}"
    );
}

/// SIGINT while `enroll bundle` holds an S3-backed environment's lock (here: waiting
/// for a first server that accepts TCP and never says a word) ends the run as
/// interrupted (130) with the lock object deleted, so the next run is not refused.
#[test]
fn s3state_sigint_during_enroll_releases_the_lock_object() {
    use continuum::state::HostState;
    use std::time::{Duration, Instant};

    if !moto_available("s3state_sigint_during_enroll_releases_the_lock_object") {
        return;
    }
    let moto = Moto::start();
    crate::s3state::bucket(&moto);
    let ws = crate::harness::Workspace::new("farm");
    let (id, _) = crate::s3state::identity(ws.dir.path());
    std::fs::write(
        ws.dir.path().join("inventory.yaml"),
        "hosts:\n  - name: srv\n    address: 127.0.0.1\n    user: root\n",
    )
    .expect("inventory");
    ws.write_recipe(&["srv"], "");

    // A "server" that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("listener");
    let port = silent.local_addr().expect("addr").port();
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in silent.incoming().take(4) {
            conns.push(c);
        }
        std::thread::sleep(Duration::from_secs(60));
    });

    let mut r = Remote::parse(&format!("s3://{}/edge", crate::s3state::BUCKET)).expect("url");
    r.endpoint = Some(moto.url());
    r.path_style = true;
    r.region = Some("us-east-1".to_string());
    r.identity = Some(id.clone());
    r.static_credentials = Some(("test".into(), Secret::new("test")));
    let store = Store::open(&ws.state_dir(), Some(&r), "farm").expect("open");
    let mut st = State::new("farm");
    st.recipe = Some(ws.recipe());
    st.cluster.init_server = Some("srv".into());
    st.cluster.server_url = Some("https://127.0.0.1:6443".into());
    st.hosts.insert(
        "srv".into(),
        HostState {
            address: "127.0.0.1".into(),
            port,
            user: Some("root".into()),
            ..HostState::default()
        },
    );
    store.save(&mut st).expect("seed state");

    let out = ws.dir.path().join("bundle");
    let mut child = Continuum::new()
        .moto(&moto)
        .state_dir(ws.state_dir())
        .env("CONTINUUM_STATE", r.url())
        .env("CONTINUUM_STATE_ENDPOINT", moto.url())
        .env("CONTINUUM_STATE_REGION", "us-east-1")
        .env("CONTINUUM_AGE_IDENTITY", &id)
        .args(["enroll", "bundle", "farm", "--pool", "field", "--online"])
        .arg("--out")
        .arg(&out)
        .args(["--connect-timeout", "60", "--connect-attempts", "1"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let lock_key = "edge/farm.lock";
    let start = Instant::now();
    while crate::s3state::raw(&moto, lock_key).is_none() {
        if let Some(status) = child.try_wait().expect("wait") {
            panic!("enroll ended before taking the lock: {status}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no lock object");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(800));
    let pid = child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill")
            .success()
    );
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "enroll did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut err);
    }
    assert_eq!(status.code(), Some(130), "{status}: {err}");
    assert!(
        crate::s3state::raw(&moto, lock_key).is_none(),
        "the lock object was left behind: {err}"
    );
    drop(held);
}

/// `enroll list` shows the pools of an S3-backed state whose secrets are sealed,
/// without the age identity (it needs no secret), as `state show` does.
#[test]
fn s3state_enroll_list_needs_no_key() {
    use continuum::state::PoolState;

    if !moto_available("s3state_enroll_list_needs_no_key") {
        return;
    }
    let moto = Moto::start();
    crate::s3state::bucket(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, _) = crate::s3state::identity(dir.path());
    let mut r = Remote::parse(&format!("s3://{}/pools", crate::s3state::BUCKET)).expect("url");
    r.endpoint = Some(moto.url());
    r.path_style = true;
    r.region = Some("us-east-1".to_string());
    r.identity = Some(id);
    r.static_credentials = Some(("test".into(), Secret::new("test")));
    let store = Store::open(dir.path(), Some(&r), "farm").expect("open");
    let mut st = State::new("farm");
    st.cluster.token = Secret::new("cluster-secret");
    st.pools.insert(
        "field".into(),
        PoolState {
            token_id: "abc123".into(),
            labels: [("continuum.io/pool".to_string(), "field".to_string())].into(),
            arch: "arm64".into(),
            install: "online".into(),
            created: 1,
            expires: Some(u64::MAX / 2),
            revoked: None,
        },
    );
    store.save(&mut st).expect("seed");

    let out = Continuum::new()
        .moto(&moto)
        .state_dir(dir.path())
        .env("CONTINUUM_STATE", r.url())
        .env("CONTINUUM_STATE_ENDPOINT", moto.url())
        .env("CONTINUUM_STATE_REGION", "us-east-1")
        .env_remove("CONTINUUM_AGE_IDENTITY")
        .args(["enroll", "list", "farm", "--output", "json"])
        .output();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("abc123") && text.contains("field"), "{text}");
    assert!(!text.contains("cluster-secret"), "{text}");
}
