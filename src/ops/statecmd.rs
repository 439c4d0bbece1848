//! The `state` commands: list the environments of a store, show one (without its
//! secrets), show or break a lock, and migrate an environment between stores
//! (local directory or S3). Migration takes both locks, copies, reads the copy back
//! and compares, and only then removes the source; run again after a crash it picks
//! up where it stopped (docs/state.md, "Migration").

use std::path::Path;

use super::{OpsError, Settings};
use crate::files::StateError;
use crate::state::State;
use crate::statestore::{self, Holder, Location, Store};

/// `state list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Listing {
    pub location: String,
    pub environments: Vec<String>,
}

pub fn list(settings: &Settings) -> Result<Listing, OpsError> {
    let environments = statestore::list(&settings.state_dir, settings.remote.as_ref())?;
    Ok(Listing {
        location: settings
            .remote
            .as_ref()
            .map_or_else(|| settings.state_dir.display().to_string(), |r| r.url()),
        environments,
    })
}

/// `state show ENV`: the recorded state with every secret emptied (no key needed).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Shown {
    pub location: String,
    pub state: State,
}

pub fn show(env: &str, settings: &Settings) -> Result<Shown, OpsError> {
    let store = settings.store(env)?;
    let state = store.load_public()?.ok_or_else(|| StateError::NotFoundAt {
        env: env.to_string(),
        url: store.location(),
    })?;
    Ok(Shown {
        location: store.location(),
        state,
    })
}

/// `state unlock ENV [--force]`.
pub fn unlock(env: &str, force: bool, settings: &Settings) -> Result<Holder, OpsError> {
    Ok(settings.store(env)?.holder(force)?)
}

/// What `state migrate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Migrated {
    pub env: String,
    pub from: String,
    pub to: String,
    pub serial: u64,
    /// The destination already held this state (a migration run again).
    pub already_there: bool,
    pub source_removed: bool,
}

/// Equal but for the serial (which every save bumps).
fn same(a: &State, b: &State) -> bool {
    let mut a = a.clone();
    a.serial = b.serial;
    &a == b
}

/// Move `env`'s state from `from` to `to`. The controller's own files stay in
/// `files_dir` (`--state-dir`). `stop` is asked between the steps (a signal): when it
/// says so the migration ends there as `Interrupted`, its locks released, and a run
/// again resumes it.
pub fn migrate(
    env: &str,
    from: &Location,
    to: &Location,
    keep_source: bool,
    files_dir: &Path,
    stop: &dyn Fn() -> bool,
) -> Result<Migrated, OpsError> {
    let step = || {
        if stop() {
            Err(OpsError::Interrupted)
        } else {
            Ok(())
        }
    };
    let refuse = |reason: String| StateError::Migrate {
        env: env.to_string(),
        reason,
    };
    if from == to {
        return Err(refuse("the source and the destination are the same".into()).into());
    }
    let src = Store::at(from, files_dir, env)?;
    let dst = Store::at(to, files_dir, env)?;
    let _src_lock = src.lock()?;
    step()?;
    let _dst_lock = dst.lock()?;
    step()?;
    let mut report = Migrated {
        env: env.to_string(),
        from: src.location(),
        to: dst.location(),
        serial: 0,
        already_there: false,
        source_removed: false,
    };
    let source = src.load()?;
    let existing = dst.load()?;
    step()?;
    let source = match (source, existing) {
        (None, Some(d)) => {
            // A run that stopped after removing the source: done.
            report.serial = d.serial;
            report.already_there = true;
            report.source_removed = true;
            return Ok(report);
        }
        (None, None) => {
            return Err(StateError::NotFoundAt {
                env: env.to_string(),
                url: src.location(),
            }
            .into());
        }
        (Some(s), Some(d)) if same(&s, &d) => {
            report.already_there = true;
            s
        }
        (Some(_), Some(d)) => {
            return Err(refuse(format!(
                "{} already holds a different state for it (serial {}); remove it or choose another destination",
                dst.location(),
                d.serial
            ))
            .into());
        }
        (Some(s), None) => {
            let mut copy = s.clone();
            dst.save(&mut copy)?;
            s
        }
    };
    step()?;
    let back = Store::at(to, files_dir, env)?.load()?;
    match back {
        Some(b) if same(&source, &b) => report.serial = b.serial,
        _ => {
            return Err(refuse(format!(
                "the copy at {} does not read back equal to the source; the source is kept",
                dst.location()
            ))
            .into());
        }
    }
    if !keep_source {
        step()?;
        src.remove_state()?;
        report.source_removed = true;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// A signal between two steps ends the migration there with both locks released
    /// and the source intact; the next run completes it.
    #[test]
    fn an_interrupted_migration_releases_its_locks_and_resumes() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(&a).expect("a");
        let src = Store::open(&a, None, "farm").expect("src");
        let mut st = State::new("farm");
        st.cluster.server_url = Some("https://10.0.0.1:6443".into());
        src.save(&mut st).expect("save");
        let (from, to) = (Location::Dir(a.clone()), Location::Dir(b.clone()));
        for stop_after in 0..5 {
            let asked = Cell::new(0);
            let stop = || {
                asked.set(asked.get() + 1);
                asked.get() > stop_after
            };
            let r = migrate("farm", &from, &to, false, tmp.path(), &stop);
            assert!(
                matches!(r, Err(OpsError::Interrupted)),
                "stop after {stop_after}: {r:?}"
            );
            // Both locks are free again and the source is still there.
            drop(src.lock().expect("source lock released"));
            drop(
                Store::open(&b, None, "farm")
                    .and_then(|s| s.lock())
                    .expect("destination lock released"),
            );
            assert!(src.load().expect("load").is_some(), "source kept");
        }
        let done = migrate("farm", &from, &to, false, tmp.path(), &|| false).expect("resume");
        assert!(done.source_removed);
        assert!(src.load().expect("load").is_none());
        let moved = Store::open(&b, None, "farm")
            .expect("dst")
            .load()
            .expect("load");
        assert_eq!(
            moved.and_then(|s| s.cluster.server_url).as_deref(),
            Some("https://10.0.0.1:6443")
        );
    }
}
