//! State in S3 (issue 15, item 1) against moto's S3 (same server as EC2): the
//! compare-and-swap merge that loses no update in a forced race, secrets not in clear
//! in the object, the lock refusing a second controller by name and broken only by
//! `state unlock --force`, `state migrate` both ways, and (fleet, 10.250.0.210-212)
//! two controllers racing `up` and `kill -9` mid-`up` resumed from another checkout.
//!
//! moto checks `If-Match`/`If-None-Match` and then writes, not atomically (its
//! s3/responses.py, `put_object`), so two truly simultaneous conditional PUTs can both
//! pass there (real S3 returns 409 ConditionalRequestConflict to one). The forced
//! race therefore fixes the interleaving: both writers read the same version, one
//! writes, and the other writes on the stale ETag, which every implementation must
//! refuse with 412; it asserts how many races each writer lost. The concurrent test
//! then lets two threads write freely (10-20 lost races a run here): its stale-ETag
//! races are real, and only a check-then-put overlap inside moto itself, which real
//! S3 excludes, could defeat it (docs/state.md, "Where moto differs").

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use continuum::files::StateError;
use continuum::state::{ResourceState, Secret, State, Status};
use continuum::statestore::{Remote, Store};

use crate::harness::{
    Continuum, Fleet, Moto, Workspace, assert_ok, fleet_available, moto_available, path_str,
    poll_until, text,
};

pub(crate) const BUCKET: &str = "team-state";
const REGION: &str = "us-east-1";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A raw S3 client on the emulator, to set up the bucket and read objects as stored.
pub(crate) fn s3(moto: &Moto) -> (tokio::runtime::Runtime, aws_sdk_s3::Client) {
    let rt = rt();
    let client = rt.block_on(async {
        let creds = aws_sdk_s3::config::Credentials::new("test", "test", None, None, "static");
        let conf = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new(REGION))
            .endpoint_url(moto.url())
            .force_path_style(true)
            .credentials_provider(creds)
            .build();
        aws_sdk_s3::Client::from_conf(conf)
    });
    (rt, client)
}

pub(crate) fn bucket(moto: &Moto) {
    let (rt, c) = s3(moto);
    rt.block_on(c.create_bucket().bucket(BUCKET).send())
        .expect("create bucket");
}

/// The object as stored (None: absent).
pub(crate) fn raw(moto: &Moto, key: &str) -> Option<String> {
    let (rt, c) = s3(moto);
    rt.block_on(async {
        let out = c.get_object().bucket(BUCKET).key(key).send().await.ok()?;
        let body = out.body.collect().await.ok()?.into_bytes();
        Some(String::from_utf8_lossy(&body).to_string())
    })
}

/// What a run printed on stdout (a JSON document), without its log lines.
fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// A fresh age identity in `dir`; returns its file and its recipient.
pub(crate) fn identity(dir: &Path) -> (PathBuf, String) {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let path = dir.join("team.agekey");
    std::fs::write(
        &path,
        format!("# team key\n{}\n", id.to_string().expose_secret()),
    )
    .expect("write identity");
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod identity");
    (path, id.to_public().to_string())
}

fn remote(moto: &Moto, prefix: &str, identity: Option<&Path>) -> Remote {
    let mut r = Remote::parse(&format!("s3://{BUCKET}/{prefix}")).expect("url");
    r.endpoint = Some(moto.url());
    r.path_style = true;
    r.region = Some(REGION.to_string());
    r.identity = identity.map(Path::to_path_buf);
    r.static_credentials = Some(("test".into(), Secret::new("test")));
    r
}

fn resource(host: &str) -> ResourceState {
    ResourceState {
        status: Status::Applied,
        hash: format!("h-{host}"),
        host: Some(host.to_string()),
        role: None,
        attrs: BTreeMap::new(),
        last_error: None,
        updated_at: 1,
        version: None,
        kind: None,
    }
}

/// The binary with its state in the emulator's bucket under `prefix`.
fn cli(moto: &Moto, state_dir: &Path, prefix: &str, identity: &Path) -> Continuum {
    Continuum::new()
        .moto(moto)
        .state_dir(state_dir)
        .env("CONTINUUM_STATE", format!("s3://{BUCKET}/{prefix}"))
        .env("CONTINUUM_STATE_ENDPOINT", moto.url())
        .env("CONTINUUM_STATE_REGION", REGION)
        .env("CONTINUUM_AGE_IDENTITY", identity)
}

/// Two writers read the same version; each then writes on what it read, in turn,
/// several rounds: every write after the first of a round is on a stale ETag, is
/// refused, and is merged onto the newer object. Both writers' resources survive.
#[test]
fn s3_forced_race_of_state_writes_loses_no_update() {
    if !moto_available("s3_forced_race_of_state_writes_loses_no_update") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, _) = identity(dir.path());
    let r = remote(&moto, "race", Some(&id));
    let a = Store::open(dir.path(), Some(&r), "farm").expect("open a");
    let b = Store::open(dir.path(), Some(&r), "farm").expect("open b");
    let mut sa = State::new("farm");
    sa.cluster.token = Secret::new("cluster-secret-1");
    a.save(&mut sa).expect("first save");

    let mut sa = a.load().expect("load a").expect("state");
    let mut sb = b.load().expect("load b").expect("state");
    for round in 0..5 {
        sa.resources.insert(format!("res/a{round}"), resource("a"));
        sb.resources.insert(format!("res/b{round}"), resource("b"));
        // B changes a value A leaves alone: A's stale write must not undo it.
        sb.cluster.server_url = Some(format!("https://b:{round}"));
        a.save(&mut sa).expect("a saves");
        b.save(&mut sb).expect("b saves on a stale ETag");
        // A is stale now; its next write merges.
    }
    a.save(&mut sa).expect("a saves last");
    // B lost each round's race, A each round after the first and its last save.
    assert_eq!(b.conflicts(), 5);
    assert_eq!(a.conflicts(), 5);
    let c = Store::open(dir.path(), Some(&r), "farm").expect("open c");
    let last = c.load().expect("load").expect("state");
    for round in 0..5 {
        assert!(
            last.resources.contains_key(&format!("res/a{round}")),
            "a{round}"
        );
        assert!(
            last.resources.contains_key(&format!("res/b{round}")),
            "b{round}"
        );
    }
    assert_eq!(last.cluster.server_url.as_deref(), Some("https://b:4"));
    assert_eq!(last.cluster.token.expose(), "cluster-secret-1");
    // The writer's own copy is the merged state (its next delta is against it).
    assert_eq!(sa.resources.len(), 10);
    // 1 + 5 rounds of 2 + 1 saves, each past the one before.
    assert!(last.serial >= 12, "serial {}", last.serial);
}

/// A run whose lock was broken (`state unlock --force`) and taken by another run
/// learns it at its first save after the other run wrote: that save still lands
/// (merged: no update lost), then fails naming the new holder, and so does every
/// later save, so the run stops instead of working beside the other.
#[test]
fn s3_a_run_whose_lock_was_broken_stops_at_its_next_save() {
    if !moto_available("s3_a_run_whose_lock_was_broken_stops_at_its_next_save") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, _) = identity(dir.path());
    let mut ra = remote(&moto, "broken", Some(&id));
    ra.command = "up (old run)".into();
    let mut rb = remote(&moto, "broken", Some(&id));
    rb.command = "up (new run)".into();
    let a = Store::open(dir.path(), Some(&ra), "farm").expect("open a");
    let b = Store::open(dir.path(), Some(&rb), "farm").expect("open b");
    let lock_a = a.lock().expect("a locks");
    let mut sa = State::new("farm");
    sa.resources.insert("res/a0".into(), resource("a"));
    a.save(&mut sa).expect("a saves under its lock");

    // Someone decides run A is gone: breaks its lock, and run B takes over.
    assert!(b.holder(true).expect("unlock --force").broken);
    let _lock_b = b.lock().expect("b locks");
    let mut sb = b.load().expect("load b").expect("state");
    sb.resources.insert("res/b0".into(), resource("b"));
    b.save(&mut sb).expect("b saves");

    sa.resources.insert("res/a1".into(), resource("a"));
    let e = a.save(&mut sa).expect_err("a learns its lock is gone");
    assert!(matches!(e, StateError::LockLost { .. }), "{e}");
    assert!(e.to_string().contains("up (new run)"), "{e}");
    sa.resources.insert("res/a2".into(), resource("a"));
    let e = a.save(&mut sa).expect_err("and stays stopped");
    assert!(matches!(e, StateError::LockLost { .. }), "{e}");
    let last = b.load().expect("load").expect("state");
    for id in ["res/a0", "res/a1", "res/a2", "res/b0"] {
        assert!(last.resources.contains_key(id), "{id} lost");
    }
    // A's lock, dropped now, leaves B's alone.
    drop(lock_a);
    assert!(raw(&moto, "broken/farm.lock").is_some_and(|l| l.contains("new run")));
}

/// Secrets are age-encrypted in the object; the rest reads without the key; loading
/// the secrets without the key is a typed error naming what is needed.
#[test]
fn s3_secrets_are_not_in_clear_in_the_object() {
    if !moto_available("s3_secrets_are_not_in_clear_in_the_object") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, recipient) = identity(dir.path());
    let r = remote(&moto, "sec", Some(&id));
    let store = Store::open(dir.path(), Some(&r), "farm").expect("open");
    let mut st = State::new("farm");
    st.cluster.token = Secret::new("tok-0123456789abcdef");
    st.cluster.join_token = Secret::new("K10cafe::server:join-secret-xyz");
    st.serverless = Some(continuum::state::Credentials {
        oscar_user: "oscar".into(),
        oscar_password: Secret::new("oscar-pass-qwerty"),
        minio_access_key: "minio".into(),
        minio_secret_key: Secret::new("minio-secret-asdf"),
    });
    st.resources.insert("k3s-server/s1".into(), resource("s1"));
    store.save(&mut st).expect("save");

    let object = raw(&moto, "sec/farm.json").expect("object");
    for secret in [
        "tok-0123456789abcdef",
        "join-secret-xyz",
        "oscar-pass-qwerty",
        "minio-secret-asdf",
    ] {
        assert!(!object.contains(secret), "{secret} in clear:\n{object}");
    }
    assert!(object.contains("k3s-server/s1"), "{object}");
    assert!(object.contains(&recipient), "{object}");

    let back = store.load().expect("load").expect("state");
    assert_eq!(
        back.cluster.join_token.expose(),
        "K10cafe::server:join-secret-xyz"
    );
    assert_eq!(
        back.serverless
            .as_ref()
            .map(|c| c.minio_secret_key.expose()),
        Some("minio-secret-asdf")
    );

    let keyless = Store::open(dir.path(), Some(&remote(&moto, "sec", None)), "farm")
        .expect("open without key");
    match keyless.load() {
        Err(e @ StateError::NoKey { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("CONTINUUM_AGE_IDENTITY"), "{msg}");
            assert!(msg.contains(&recipient), "{msg}");
        }
        other => panic!("expected NoKey, got {other:?}"),
    }
    let public = keyless.load_public().expect("public").expect("state");
    assert!(public.cluster.token.is_empty());
    assert!(public.resources.contains_key("k3s-server/s1"));
    let mut fresh = State::new("other");
    fresh.cluster.token = Secret::new("x");
    let no_recipient =
        Store::open(dir.path(), Some(&remote(&moto, "sec", None)), "other").expect("open");
    assert!(matches!(
        no_recipient.save(&mut fresh),
        Err(StateError::NoKey { .. })
    ));
}

/// The state lives in S3 because the recipe says so: `up` (the device switched off)
/// leaves a note on the controller, so `status` and `down` by the environment's name
/// alone reach the S3 state, and the teardown finishes; the note goes with the state.
#[test]
fn s3_state_from_the_recipe_is_found_by_name_for_status_and_down() {
    if !moto_available("s3_state_from_the_recipe_is_found_by_name_for_status_and_down") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let ws = Workspace::new("noted");
    let (id, _) = identity(ws.dir.path());
    // Loopback, a port nobody listens on: the device is off.
    std::fs::write(
        ws.dir.path().join("inventory.yaml"),
        "hosts:\n  - name: n1\n    address: 127.0.0.1\n    port: 1\n    user: ops\n",
    )
    .expect("inventory");
    ws.write_recipe(
        &["n1"],
        &format!(
            "state:\n  url: s3://{BUCKET}/noted\n  endpoint: {}\n  region: {REGION}\n",
            moto.url()
        ),
    );
    let run = || {
        Continuum::new()
            .moto(&moto)
            .state_dir(ws.state_dir())
            .kubeconfig(ws.kubeconfig())
            .env("CONTINUUM_AGE_IDENTITY", &id)
            .current_dir(ws.dir.path())
    };
    let up = run()
        .args([
            "up",
            "recipe.yaml",
            "--yes",
            "--connect-timeout",
            "2",
            "--connect-attempts",
            "1",
        ])
        .output();
    assert!(!up.status.success(), "{}", text(&up));
    assert!(raw(&moto, "noted/noted.json").is_some(), "state in S3");
    let note = ws.state_dir().join("noted.remote.json");
    let noted = std::fs::read_to_string(&note).expect("the note");
    assert!(noted.contains("s3://team-state/noted") && !noted.contains("AGE-SECRET"));
    assert!(!ws.state_file().exists(), "no local state");

    let status = run().args(["status", "noted"]).output();
    assert_ok(&status, "status by name");
    assert!(text(&status).contains("offline"), "{}", text(&status));
    let down = run().args(["down", "noted", "--yes"]).output();
    assert_ok(&down, "down by name, the device off");
    assert!(raw(&moto, "noted/noted.json").is_none(), "state removed");
    assert!(!note.exists(), "the note goes with the state");
    let gone = run().args(["status", "noted"]).output();
    assert!(text(&gone).contains("--state s3://"), "{}", text(&gone));
}

/// A held lock refuses `up` from another controller, naming the holder and the
/// command that breaks it; `state unlock` shows the holder, `--force` breaks it.
#[test]
fn s3_lock_refuses_a_second_controller_by_name() {
    if !moto_available("s3_lock_refuses_a_second_controller_by_name") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let ws = Workspace::new("locked");
    let (id, _) = identity(ws.dir.path());
    // A host nobody answers on: `up` must stop at the lock, before any connection.
    std::fs::write(
        ws.dir.path().join("inventory.yaml"),
        "hosts:\n  - name: l1\n    address: 10.250.0.215\n    user: ops\n",
    )
    .expect("inventory");
    // The recipe names the same location (`state:`); the environment says it too.
    ws.write_recipe(
        &["l1"],
        &format!(
            "state:\n  url: s3://{BUCKET}/lk\n  endpoint: {}\n  region: {REGION}\n",
            moto.url()
        ),
    );
    let r = remote(&moto, "lk", Some(&id));
    let holder = Store::open(ws.dir.path(), Some(&r), "locked").expect("open");
    let lock = holder.lock().expect("lock");

    let out = cli(&moto, &ws.state_dir(), "lk", &id)
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    let msg = text(&out);
    assert_eq!(out.status.code(), Some(4), "{msg}");
    assert!(
        msg.contains(&format!("pid {}", std::process::id()))
            && msg.contains("s3://team-state/lk")
            && msg.contains("state unlock locked --force"),
        "{msg}"
    );
    // The recipe's `state:` alone reaches the same lock.
    let by_recipe = Continuum::new()
        .moto(&moto)
        .state_dir(ws.state_dir())
        .env("CONTINUUM_AGE_IDENTITY", &id)
        .args(["up", path_str(&ws.recipe()), "--yes"])
        .output();
    assert_eq!(by_recipe.status.code(), Some(4), "{}", text(&by_recipe));
    assert!(
        text(&by_recipe).contains("s3://team-state/lk"),
        "{}",
        text(&by_recipe)
    );
    let lock_object = raw(&moto, "lk/locked.lock").expect("lock object");
    for field in [
        "\"owner\"",
        "\"host\"",
        "\"pid\"",
        "\"started\"",
        "\"command\"",
    ] {
        assert!(lock_object.contains(field), "{lock_object}");
    }

    let show = cli(&moto, &ws.state_dir(), "lk", &id)
        .args(["state", "unlock", "locked"])
        .output();
    assert_ok(&show, "state unlock without --force");
    assert!(text(&show).contains("locked by"), "{}", text(&show));
    assert!(raw(&moto, "lk/locked.lock").is_some(), "shown, not broken");

    let force = cli(&moto, &ws.state_dir(), "lk", &id)
        .args(["state", "unlock", "locked", "--force", "-o", "json"])
        .output();
    assert_ok(&force, "state unlock --force");
    let v: serde_json::Value = serde_json::from_str(stdout(&force).trim()).expect("json");
    assert_eq!(v["broken"], true, "{v}");
    assert_eq!(v["holder"]["pid"], std::process::id(), "{v}");
    assert!(raw(&moto, "lk/locked.lock").is_none(), "broken");
    // The broken lock's owner does not delete a lock it no longer holds.
    let other = holder.lock().expect("taken again");
    drop(lock);
    assert!(
        raw(&moto, "lk/locked.lock").is_some(),
        "the new holder's lock stays"
    );
    drop(other);
    assert!(raw(&moto, "lk/locked.lock").is_none(), "released");
}

/// `state migrate` from a directory to S3 and back, `state list` and `state show` on
/// both, and a migration run again after it finished.
#[test]
fn s3_state_migrate_list_show() {
    if !moto_available("s3_state_migrate_list_show") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let ws = Workspace::new("mig");
    let (id, _) = identity(ws.dir.path());
    let local = continuum::files::Store::new(&ws.state_dir(), "mig");
    let mut st = State::new("mig");
    st.cluster.token = Secret::new("migrated-token-42");
    st.resources.insert("k3s-server/m1".into(), resource("m1"));
    local.save(&mut st).expect("local save");

    let run = |args: &[&str]| cli(&moto, &ws.state_dir(), "mg", &id).args(args).output();
    let dir = path_str(&ws.state_dir()).to_string();
    let url = format!("s3://{BUCKET}/mg");
    let out = run(&["state", "migrate", "mig", "--from", &dir, "--to", &url]);
    assert_ok(&out, "migrate to S3");
    assert!(!ws.state_file().exists(), "the source is removed");
    let object = raw(&moto, "mg/mig.json").expect("object");
    assert!(!object.contains("migrated-token-42"), "{object}");
    let again = run(&["state", "migrate", "mig", "--from", &dir, "--to", &url]);
    assert_ok(&again, "migrate again");
    assert!(text(&again).contains("already"), "{}", text(&again));

    let list = run(&["state", "list", "-o", "json"]);
    assert_ok(&list, "list");
    let v: serde_json::Value = serde_json::from_str(stdout(&list).trim()).expect("json");
    assert_eq!(v["environments"], serde_json::json!(["mig"]), "{v}");
    let show = run(&["state", "show", "mig", "-o", "json"]);
    assert_ok(&show, "show");
    let shown = text(&show);
    assert!(
        shown.contains("k3s-server/m1") && !shown.contains("migrated-token-42"),
        "{shown}"
    );

    let back = run(&[
        "state",
        "migrate",
        "mig",
        "--from",
        &url,
        "--to",
        &dir,
        "--keep-source",
    ]);
    assert_ok(&back, "migrate back");
    assert!(raw(&moto, "mg/mig.json").is_some(), "--keep-source");
    let restored = local.load().expect("load").expect("state");
    assert_eq!(restored.cluster.token.expose(), "migrated-token-42");
    assert!(restored.resources.contains_key("k3s-server/m1"));
    let list = Continuum::new()
        .state_dir(ws.state_dir())
        .args(["state", "list"])
        .output();
    assert_ok(&list, "local list");
    assert!(text(&list).contains("mig"), "{}", text(&list));
}

/// Whether the object at `key` mentions `needle` (polling the emulator).
fn wait_for_object(moto: &Moto, key: &str, needle: &str) {
    let reached = poll_until(
        Duration::from_secs(120),
        Duration::from_millis(50),
        || raw(moto, key).is_some_and(|t| t.contains(needle)),
        |r| *r,
    );
    assert!(reached, "{key} never mentioned {needle}");
}

/// Fleet: two controllers race `up` on one S3-backed environment (one proceeds, the
/// other is refused naming the holder); then `kill -9` mid-`up`, and `up` from another
/// checkout is refused until `state unlock --force`, then converges.
#[test]
fn s3_racing_controllers_and_kill_9_then_up_from_another_checkout() {
    let test = "s3_racing_controllers_and_kill_9_then_up_from_another_checkout";
    if !fleet_available(test) || !moto_available(test) {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let names = ["s3-srv", "s3-a1", "s3-a2"];
    let fleet = Fleet::start(&names, 210);
    // Two checkouts: each its own directory, recipe, inventory and local state dir.
    let one = Workspace::new("s3k");
    let two = Workspace::new("s3k");
    for ws in [&one, &two] {
        ws.write_inventory(&fleet.defs(), "ops");
        ws.write_recipe(&["s3-srv"], "");
    }
    let (id, _) = identity(one.dir.path());
    let run = |ws: &Workspace| {
        cli(&moto, &ws.state_dir(), "team", &id)
            .kubeconfig(ws.kubeconfig())
            .current_dir(ws.dir.path())
    };
    let up_args = |ws: &Workspace| {
        vec![
            "up".to_string(),
            path_str(&ws.recipe()).to_string(),
            "--yes".to_string(),
        ]
    };

    // The race: both at once; exactly one is refused, naming the other.
    let first = run(&one)
        .args(up_args(&one))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let second = run(&two)
        .args(up_args(&two))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let (p1, p2) = (first.id(), second.id());
    let o1 = first.wait_with_output().expect("first");
    let o2 = second.wait_with_output().expect("second");
    let (won, lost, winner_pid) = if o1.status.code() == Some(4) {
        (o2, o1, p2)
    } else {
        (o1, o2, p1)
    };
    assert_eq!(lost.status.code(), Some(4), "{}", text(&lost));
    assert!(
        text(&lost).contains(&format!("pid {winner_pid}")),
        "the refusal names the holder: {}",
        text(&lost)
    );
    assert_ok(&won, "the controller that took the lock");
    let converged = raw(&moto, "team/s3k.json").expect("state");
    assert!(converged.contains("cluster-ready"), "{converged}");
    assert!(raw(&moto, "team/s3k.lock").is_none(), "released");

    // kill -9 mid-up (after a change to the recipe, so up has work): take an agent
    // out and back in.
    assert_ok(&run(&one).args(["down", "s3k", "--yes"]).output(), "down");
    let mut child = run(&one)
        .args(up_args(&one))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    wait_for_object(&moto, "team/s3k.json", "\"k3s-agent/");
    child.kill().expect("kill -9");
    let _ = child.wait();
    let reader = Store::open(
        two.dir.path(),
        Some(&remote(&moto, "team", Some(&id))),
        "s3k",
    )
    .expect("open");
    let before = reader.load().expect("load").expect("state");
    assert_eq!(before.cluster.token.expose().len(), 64);

    let refused = run(&two).args(up_args(&two)).output();
    assert_eq!(refused.status.code(), Some(4), "{}", text(&refused));
    assert!(
        text(&refused).contains(&format!("pid {}", child.id())),
        "{}",
        text(&refused)
    );
    let unlock = run(&two)
        .args(["state", "unlock", "s3k", "--force"])
        .output();
    assert_ok(&unlock, "state unlock --force");
    assert!(
        text(&unlock).contains(&format!("pid {}", child.id())),
        "{}",
        text(&unlock)
    );
    let again = run(&two).args(up_args(&two)).output();
    assert_ok(&again, "up from the other checkout after kill -9");
    let after: serde_json::Value =
        serde_json::from_str(&raw(&moto, "team/s3k.json").expect("state")).expect("json");
    assert!(
        after["secrets"]["age"].as_str().is_some(),
        "secrets sealed: {after}"
    );
    for id in [
        "k3s-server/s3-srv",
        "k3s-agent/s3-a1",
        "k3s-agent/s3-a2",
        "cluster-ready",
        "kubeconfig",
    ] {
        assert_eq!(
            after["state"]["resources"][id]["status"], "applied",
            "{id}: {after}"
        );
    }
    let status = run(&two).args(["status", "s3k", "--offline"]).output();
    assert_ok(&status, "status through --state");
    let nodes = crate::harness::node_labels(&fleet, "s3-srv");
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    // The cluster token survived the crash and the other checkout.
    let token_after = reader.load().expect("load").expect("state").cluster.token;
    assert_eq!(
        token_after, before.cluster.token,
        "the cluster token changed"
    );
    assert_ok(&run(&two).args(["down", "s3k", "--yes"]).output(), "down");
    assert!(
        raw(&moto, "team/s3k.json").is_none(),
        "down removes the state"
    );
}

/// Two writers saving at the same time from two threads, each adding its own
/// resources: every save is conditional, so each lost race is merged and retried,
/// and no resource is lost.
#[test]
fn s3_concurrent_writers_lose_no_update() {
    if !moto_available("s3_concurrent_writers_lose_no_update") {
        return;
    }
    let moto = Moto::start();
    bucket(&moto);
    let dir = tempfile::tempdir().expect("tempdir");
    let (id, _) = identity(dir.path());
    let r = remote(&moto, "conc", Some(&id));
    let first = Store::open(dir.path(), Some(&r), "farm").expect("open");
    first.save(&mut State::new("farm")).expect("first save");
    let rounds = 20;
    let writers: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|w| {
            let (r, dir) = (r.clone(), dir.path().to_path_buf());
            std::thread::spawn(move || {
                let store = Store::open(&dir, Some(&r), "farm").expect("open");
                let mut st = store.load().expect("load").expect("state");
                for i in 0..rounds {
                    st.resources.insert(format!("res/{w}{i}"), resource(w));
                    store.save(&mut st).expect("save");
                }
                store.conflicts()
            })
        })
        .collect();
    let conflicts: u64 = writers.into_iter().map(|w| w.join().expect("writer")).sum();
    eprintln!("s3_concurrent_writers_lose_no_update: {conflicts} lost races merged");
    let last = first.load().expect("load").expect("state");
    let missing: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..rounds).map(move |i| format!("res/{w}{i}")))
        .filter(|k| !last.resources.contains_key(k))
        .collect();
    assert!(missing.is_empty(), "lost: {missing:?}");
}
