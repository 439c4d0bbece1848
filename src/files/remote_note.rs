//! A controller's note of where an environment's state lives when that is not the
//! local state directory: `STATE_DIR/ENV.remote.json`, written by `up` when the state
//! is in S3 (from `--state` or the recipe's `state:`), removed by a `down` that
//! removed the state. Commands that take only an environment name (`status`, `down`,
//! `nodes remove`, `enroll`) read it, so a teardown never needs the user to remember
//! the bucket. It holds the location only: no credentials, no key.
//!
//! Invariant: a local `ENV.json` wins over a note (the note is used only when the
//! directory holds no state for the environment), so a stale note never hides state.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{StateError, write_atomic};
use crate::recipe::StateSite;

#[derive(Debug, Serialize, Deserialize)]
struct Note {
    url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_style: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    region: Option<String>,
}

/// `STATE_DIR/ENV.remote.json`.
pub fn path(dir: &Path, env: &str) -> PathBuf {
    dir.join(format!("{env}.remote.json"))
}

/// Record that `env`'s state lives at `site`.
pub fn write(dir: &Path, env: &str, site: &StateSite) -> Result<(), StateError> {
    let p = path(dir, env);
    let note = Note {
        url: site.url.clone(),
        endpoint: site.endpoint.clone(),
        path_style: site.path_style,
        region: site.region.clone(),
    };
    let mut text = serde_json::to_vec_pretty(&note).map_err(|e| StateError::Write {
        path: p.clone(),
        source: std::io::Error::other(e),
    })?;
    text.push(b'\n');
    std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
        path: dir.to_path_buf(),
        source,
    })?;
    write_atomic(&p, &text, 0o600).map_err(|source| StateError::Write { path: p, source })
}

/// Where `env`'s state lives according to the note, when the state directory holds
/// no state of its own for it.
pub fn read(dir: &Path, env: &str) -> Result<Option<StateSite>, StateError> {
    if super::Store::new(dir, env).path().exists() {
        return Ok(None);
    }
    let p = path(dir, env);
    let text = match std::fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(StateError::Read { path: p, source }),
    };
    let note: Note = serde_json::from_str(&text).map_err(|source| StateError::Corrupt {
        path: p.clone(),
        source,
    })?;
    let (bucket, prefix) =
        crate::recipe::validators::s3_url(&note.url).map_err(|reason| StateError::BadUrl {
            url: format!("{} (in {})", note.url, p.display()),
            reason,
        })?;
    Ok(Some(StateSite {
        url: note.url,
        bucket,
        prefix,
        endpoint: note.endpoint,
        path_style: note.path_style,
        region: note.region,
    }))
}

/// Forget the note (nothing to do when there is none).
pub fn remove(dir: &Path, env: &str) -> Result<(), StateError> {
    let p = path(dir, env);
    match std::fs::remove_file(&p) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write { path: p, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site() -> StateSite {
        StateSite {
            url: "s3://team-state/envs".into(),
            bucket: "team-state".into(),
            prefix: "envs".into(),
            endpoint: Some("http://127.0.0.1:9000".into()),
            path_style: Some(true),
            region: None,
        }
    }

    #[test]
    fn a_note_round_trips_and_local_state_wins() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(read(d.path(), "farm").expect("read").is_none());
        write(d.path(), "farm", &site()).expect("write");
        assert_eq!(read(d.path(), "farm").expect("read"), Some(site()));
        let mode = std::fs::metadata(path(d.path(), "farm"))
            .expect("meta")
            .permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o600
        );
        std::fs::write(d.path().join("farm.json"), "{}").expect("local state");
        assert!(read(d.path(), "farm").expect("read").is_none());
        std::fs::remove_file(d.path().join("farm.json")).expect("rm");
        remove(d.path(), "farm").expect("remove");
        remove(d.path(), "farm").expect("remove twice");
        assert!(read(d.path(), "farm").expect("read").is_none());
    }

    #[test]
    fn a_damaged_note_is_an_error_naming_the_file() {
        let d = tempfile::tempdir().expect("tempdir");
        std::fs::write(path(d.path(), "farm"), "{\"url\": \"http://x\"}").expect("write");
        let e = read(d.path(), "farm").expect_err("bad url");
        assert!(e.to_string().contains("farm.remote.json"), "{e}");
    }
}
