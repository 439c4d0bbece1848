//! The oscar-cli configuration file (docs/oscar.md, "oscar-cli config"):
//! `~/.oscar-cli/config.yaml` by default; YAML when the name ends in `.yaml` or `.yml`,
//! JSON otherwise, as oscar-cli decides.
//!
//! Invariants: entries of other clusters and every key continuum does not write are
//! kept; `ssl_verify` is always written (oscar-cli reads a missing one as false, and so
//! does `entries`); a new entry gets oscar-cli's `memory`/`log_level` defaults; the
//! file is replaced atomically with mode 0600; `default` is only set when asked, and
//! only dropped when it named the cluster being removed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use crate::state::Secret;

#[derive(Debug, thiserror::Error)]
pub enum OscarCliError {
    #[error("cannot read oscar-cli config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("oscar-cli config {path} is not valid {format}: {detail}")]
    Parse {
        path: PathBuf,
        format: &'static str,
        detail: String,
    },
    #[error("cannot write oscar-cli config {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// `~/.oscar-cli/config.yaml`.
pub fn default_path() -> PathBuf {
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".oscar-cli/config.yaml")
}

/// What continuum writes for one cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub endpoint: String,
    pub auth_user: String,
    pub auth_password: Secret,
    pub ssl_verify: bool,
}

/// An entry as read: also whether it authenticates with OIDC (oscar-cli's
/// `oidc_account_name` / `oidc_refresh_token`), which continuum does not speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub endpoint: String,
    pub auth_user: String,
    pub auth_password: Secret,
    pub ssl_verify: bool,
    pub oidc: bool,
}

/// oscar-cli's rule (docs/oscar.md, "oscar-cli config"): a file whose extension is
/// exactly `.yaml` or `.yml` is YAML; anything else is JSON.
fn is_json(path: &Path) -> bool {
    !path.extension().is_some_and(|e| e == "yaml" || e == "yml")
}

/// What `oscar-cli cluster add` writes into a new entry besides the credentials
/// (docs/oscar.md, "oscar-cli config").
const NEW_ENTRY_DEFAULTS: &[(&str, &str)] = &[("memory", "256Mi"), ("log_level", "INFO")];

fn load(path: &Path) -> Result<Value, OscarCliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(json!({})),
        Err(source) => {
            return Err(OscarCliError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    if text.trim().is_empty() {
        return Ok(json!({}));
    }
    let doc: Value = if is_json(path) {
        serde_json::from_str(&text).map_err(|e| OscarCliError::Parse {
            path: path.to_path_buf(),
            format: "JSON",
            detail: e.to_string(),
        })?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| OscarCliError::Parse {
            path: path.to_path_buf(),
            format: "YAML",
            detail: e.without_snippet().to_string(),
        })?
    };
    if !doc.is_object() {
        return Err(OscarCliError::Parse {
            path: path.to_path_buf(),
            format: if is_json(path) { "JSON" } else { "YAML" },
            detail: "the top level is not a mapping".into(),
        });
    }
    Ok(doc)
}

fn save(path: &Path, doc: &Value) -> Result<(), OscarCliError> {
    let err = |source| OscarCliError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text = if is_json(path) {
        serde_json::to_string_pretty(doc).map_err(|e| err(std::io::Error::other(e.to_string())))?
    } else {
        serde_saphyr::to_string(doc).map_err(|e| err(std::io::Error::other(e.to_string())))?
    };
    crate::files::write_atomic(path, text.as_bytes(), 0o600).map_err(err)
}

fn clusters(doc: &mut Value) -> Option<&mut Map<String, Value>> {
    let top = doc.as_object_mut()?;
    let o = top.entry("oscar").or_insert_with(|| json!({}));
    if o.is_null() {
        *o = json!({});
    }
    o.as_object_mut()
}

/// Write or update the entry of cluster `id`. Returns whether the file changed.
pub fn upsert(path: &Path, id: &str, e: &Entry, set_default: bool) -> Result<bool, OscarCliError> {
    let mut doc = load(path)?;
    let before = doc.clone();
    let Some(map) = clusters(&mut doc) else {
        return Err(OscarCliError::Parse {
            path: path.to_path_buf(),
            format: "YAML",
            detail: "`oscar` is not a mapping".into(),
        });
    };
    let entry = map.entry(id.to_string()).or_insert_with(|| json!({}));
    if !entry.is_object() {
        *entry = json!({});
    }
    if let Some(m) = entry.as_object_mut() {
        for (k, v) in NEW_ENTRY_DEFAULTS {
            m.entry(*k).or_insert_with(|| json!(v));
        }
        m.insert("endpoint".into(), json!(e.endpoint));
        m.insert("auth_user".into(), json!(e.auth_user));
        m.insert("auth_password".into(), json!(e.auth_password.expose()));
        m.insert("ssl_verify".into(), json!(e.ssl_verify));
    }
    if set_default && let Some(top) = doc.as_object_mut() {
        top.insert("default".into(), json!(id));
    }
    if doc == before && path.exists() {
        return Ok(false);
    }
    save(path, &doc)?;
    Ok(true)
}

/// Remove cluster `id`. Returns whether the file changed.
pub fn remove(path: &Path, id: &str) -> Result<bool, OscarCliError> {
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = load(path)?;
    let mut changed = clusters(&mut doc).is_some_and(|m| m.remove(id).is_some());
    if let Some(top) = doc.as_object_mut()
        && top.get("default").and_then(Value::as_str) == Some(id)
    {
        // A default naming a cluster that no longer exists would break oscar-cli.
        top.remove("default");
        changed = true;
    }
    if changed {
        save(path, &doc)?;
    }
    Ok(changed)
}

/// Every cluster entry with endpoint and basic auth credentials.
pub fn entries(path: &Path) -> Result<BTreeMap<String, ReadEntry>, OscarCliError> {
    let doc = load(path)?;
    let mut out = BTreeMap::new();
    if let Some(m) = doc.get("oscar").and_then(Value::as_object) {
        for (id, v) in m {
            let s = |k: &str| {
                v.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            out.insert(
                id.clone(),
                ReadEntry {
                    endpoint: s("endpoint"),
                    auth_user: s("auth_user"),
                    auth_password: Secret::new(s("auth_password")),
                    // oscar-cli's `ssl_verify` is a plain bool: missing reads as false.
                    ssl_verify: v
                        .get("ssl_verify")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    oidc: ["oidc_account_name", "oidc_refresh_token"].iter().any(|k| {
                        v.get(*k)
                            .and_then(Value::as_str)
                            .is_some_and(|s| !s.is_empty())
                    }),
                },
            );
        }
    }
    Ok(out)
}

/// The whole document (tests, `endpoints show`).
pub fn document(path: &Path) -> Result<Value, OscarCliError> {
    load(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry() -> Entry {
        Entry {
            endpoint: "http://10.0.0.1".into(),
            auth_user: "oscar".into(),
            auth_password: Secret::new("pw"),
            ssl_verify: true,
        }
    }

    #[test]
    fn upsert_keeps_other_entries_unknown_keys_and_default() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        std::fs::write(
            &path,
            "oscar:\n  a:\n    endpoint: https://a\n    auth_user: u\n    auth_password: p\n    ssl_verify: true\n    memory: 256Mi\n  b:\n    endpoint: https://b\n    oidc_account_name: egi\ndefault: a\nx-extra: keep\n",
        )
        .expect("write");
        assert!(upsert(&path, "farm", &entry(), false).expect("upsert"));
        assert!(
            !upsert(&path, "farm", &entry(), false).expect("again"),
            "idempotent"
        );
        let doc = document(&path).expect("doc");
        assert_eq!(doc["default"], "a");
        assert_eq!(doc["x-extra"], "keep");
        assert_eq!(doc["oscar"]["a"]["memory"], "256Mi");
        assert_eq!(doc["oscar"]["b"]["oidc_account_name"], "egi");
        assert_eq!(doc["oscar"]["farm"]["endpoint"], "http://10.0.0.1");
        let mode = std::fs::metadata(&path).expect("m").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(upsert(&path, "farm", &entry(), true).expect("default"));
        assert_eq!(document(&path).expect("doc")["default"], "farm");
        assert!(remove(&path, "farm").expect("remove"));
        let doc = document(&path).expect("doc");
        assert!(doc["oscar"].get("farm").is_none());
        assert!(doc.get("default").is_none());
        assert_eq!(entries(&path).expect("e").len(), 2);
    }

    #[test]
    fn json_by_extension() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.json");
        std::fs::write(
            &path,
            r#"{"oscar": {"x": {"endpoint": "https://x"}}, "default": "x"}"#,
        )
        .expect("w");
        upsert(&path, "y", &entry(), false).expect("upsert");
        let doc: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("r")).expect("json");
        assert_eq!(doc["default"], "x");
        assert_eq!(doc["oscar"]["y"]["auth_user"], "oscar");
    }

    /// Oscar-cli reads YAML only from `.yaml`/`.yml` (exactly) and
    /// JSON from any other name; a missing `ssl_verify` is false there; a new entry
    /// gets `oscar-cli cluster add`'s defaults.
    #[test]
    fn format_ssl_verify_and_defaults_follow_oscar_cli() {
        let dir = tempfile::tempdir().expect("tmp");
        for name in ["config", "config.YAML", "cfg.conf"] {
            let path = dir.path().join(name);
            upsert(&path, "y", &entry(), false).expect("upsert");
            let doc: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).expect("r")).expect(name);
            assert_eq!(doc["oscar"]["y"]["ssl_verify"], true, "{name}");
            assert_eq!(doc["oscar"]["y"]["memory"], "256Mi", "{name}");
            assert_eq!(doc["oscar"]["y"]["log_level"], "INFO", "{name}");
        }
        let yml = dir.path().join("c.yml");
        std::fs::write(
            &yml,
            "oscar:\n  old:\n    endpoint: https://old\n    auth_user: u\n    auth_password: p\n    memory: 1Gi\n  egi:\n    endpoint: https://egi\n    oidc_account_name: egi\n",
        )
        .expect("w");
        let e = entries(&yml).expect("yaml by .yml");
        assert!(!e["old"].ssl_verify, "missing ssl_verify reads as false");
        assert!(!e["old"].oidc && e["egi"].oidc);
        let mut insecure = entry();
        insecure.ssl_verify = false;
        upsert(&yml, "old", &insecure, false).expect("upsert");
        let doc = document(&yml).expect("doc");
        assert_eq!(
            doc["oscar"]["old"]["ssl_verify"], false,
            "written explicitly"
        );
        assert_eq!(
            doc["oscar"]["old"]["memory"], "1Gi",
            "a user's value is kept"
        );
    }

    #[test]
    fn garbage_is_a_clear_error_and_untouched() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, "oscar: [1, 2\n").expect("w");
        let e = upsert(&path, "y", &entry(), false).expect_err("bad yaml");
        assert!(e.to_string().contains("config.yaml"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).expect("r"), "oscar: [1, 2\n");
    }
}
