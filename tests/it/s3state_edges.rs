//! State in S3 against moto, at its edges (no fleet hosts):
//! - a bucket that is not there (a mistyped `--state`, or a bucket not created yet):
//!   every store operation is the typed `NoBucket` error naming the bucket, not "no
//!   state yet", a lost compare-and-swap race or a lock that "kept changing"; the CLI
//!   says the same.

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

