//! Merging a k3s admin kubeconfig into the user's kubeconfig, structurally.
//!
//! Invariants: entries of other clusters, users and contexts and any key continuum
//! does not know are kept as they were; the file is replaced atomically with mode
//! 0600; `current-context` is only set when the file had none.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("cannot read kubeconfig {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("kubeconfig {path} is not valid YAML: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("the server's kubeconfig lacks {what}")]
    Incomplete { what: String },
    #[error("cannot write kubeconfig {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The kubeconfig file to use: explicit path, else first entry of `$KUBECONFIG`, else
/// `~/.kube/config`.
pub fn default_path(explicit: Option<&Path>) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_path_buf();
    }
    if let Some(first) = std::env::var_os("KUBECONFIG")
        .as_ref()
        .and_then(|v| std::env::split_paths(v).find(|p| !p.as_os_str().is_empty()))
    {
        return first;
    }
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".kube/config")
}

fn load(path: &Path) -> Result<Value, KubeconfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Ok(empty()),
        Ok(text) => serde_saphyr::from_str::<Value>(&text).map_err(|e| KubeconfigError::Parse {
            path: path.to_path_buf(),
            detail: e.without_snippet().to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(empty()),
        Err(source) => Err(KubeconfigError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn empty() -> Value {
    json!({"apiVersion": "v1", "kind": "Config", "preferences": {}, "clusters": [], "users": [], "contexts": []})
}

fn named<'a>(doc: &'a Value, list: &str, name: &str) -> Option<&'a Value> {
    doc.get(list)?
        .as_array()?
        .iter()
        .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
}

fn upsert(doc: &mut Map<String, Value>, list: &str, entry: Value) {
    let name = entry.get("name").cloned();
    let arr = doc.entry(list).or_insert_with(|| Value::Array(Vec::new()));
    if !arr.is_array() {
        *arr = Value::Array(Vec::new());
    }
    if let Value::Array(items) = arr {
        items.retain(|e| e.get("name") != name.as_ref());
        items.push(entry);
    }
}

fn remove_named(doc: &mut Map<String, Value>, list: &str, name: &str) -> bool {
    if let Some(Value::Array(items)) = doc.get_mut(list) {
        let before = items.len();
        items.retain(|e| e.get("name").and_then(Value::as_str) != Some(name));
        return items.len() != before;
    }
    false
}

/// Build the entries for `context` from a k3s admin kubeconfig (names `default`),
/// pointing at `server`.
pub fn from_k3s(
    k3s_yaml: &str,
    context: &str,
    server: &str,
) -> Result<(Value, Value, Value), KubeconfigError> {
    let src: Value = serde_saphyr::from_str(k3s_yaml).map_err(|e| KubeconfigError::Parse {
        path: PathBuf::from(crate::k3s::KUBECONFIG_PATH),
        detail: e.without_snippet().to_string(),
    })?;
    let cluster = named(&src, "clusters", "default")
        .and_then(|c| c.get("cluster"))
        .ok_or_else(|| KubeconfigError::Incomplete {
            what: "cluster `default`".into(),
        })?;
    let user = named(&src, "users", "default")
        .and_then(|u| u.get("user"))
        .ok_or_else(|| KubeconfigError::Incomplete {
            what: "user `default`".into(),
        })?;
    let mut cluster = cluster.clone();
    if let Some(m) = cluster.as_object_mut() {
        m.insert("server".into(), Value::String(server.to_string()));
    }
    Ok((
        json!({"name": context, "cluster": cluster}),
        json!({"name": context, "user": user.clone()}),
        json!({"name": context, "context": {"cluster": context, "user": context}}),
    ))
}

fn save(path: &Path, doc: &Value) -> Result<(), KubeconfigError> {
    let err = |source| KubeconfigError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let text =
        serde_saphyr::to_string(doc).map_err(|e| err(std::io::Error::other(e.to_string())))?;
    crate::files::write_atomic(path, text.as_bytes(), 0o600).map_err(err)
}

/// Merge the cluster into the kubeconfig at `path`. Returns whether the file changed.
pub fn merge(path: &Path, entries: (Value, Value, Value)) -> Result<bool, KubeconfigError> {
    let mut doc = load(path)?;
    let before = doc.clone();
    let context = entries
        .2
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let Some(map) = doc.as_object_mut() else {
        return Err(KubeconfigError::Parse {
            path: path.to_path_buf(),
            detail: "the top level is not a mapping".into(),
        });
    };
    upsert(map, "clusters", entries.0);
    upsert(map, "users", entries.1);
    upsert(map, "contexts", entries.2);
    let has_current = map
        .get("current-context")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if !has_current {
        map.insert("current-context".into(), Value::String(context));
    }
    map.entry("apiVersion").or_insert_with(|| json!("v1"));
    map.entry("kind").or_insert_with(|| json!("Config"));
    if doc == before && path.exists() {
        return Ok(false);
    }
    save(path, &doc)?;
    Ok(true)
}

/// Remove `context` (and its cluster and user entries) from the kubeconfig.
pub fn remove(path: &Path, context: &str) -> Result<bool, KubeconfigError> {
    if !path.exists() {
        return Ok(false);
    }
    let mut doc = load(path)?;
    let Some(map) = doc.as_object_mut() else {
        return Ok(false);
    };
    let mut changed = remove_named(map, "contexts", context);
    changed |= remove_named(map, "clusters", context);
    changed |= remove_named(map, "users", context);
    if map.get("current-context").and_then(Value::as_str) == Some(context) {
        map.insert("current-context".into(), Value::String(String::new()));
        changed = true;
    }
    if changed {
        save(path, &doc)?;
    }
    Ok(changed)
}

/// Whether the kubeconfig has `context`.
pub fn has_context(path: &Path, context: &str) -> bool {
    load(path).is_ok_and(|d| named(&d, "contexts", context).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const K3S: &str = "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: Q0E=\n    server: https://127.0.0.1:6443\n  name: default\ncontexts:\n- context:\n    cluster: default\n    user: default\n  name: default\ncurrent-context: default\nusers:\n- name: default\n  user:\n    client-certificate-data: Q0VSVA==\n    client-key-data: S0VZ\n";

    #[test]
    fn merge_keeps_other_contexts_and_is_private() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("config");
        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Config\nclusters:\n- name: other\n  cluster: {server: https://o:6443}\nusers:\n- name: other\n  user: {token: t}\ncontexts:\n- name: other\n  context: {cluster: other, user: other}\ncurrent-context: other\nx-custom: keep\n",
        )
        .expect("write");
        let entries = from_k3s(K3S, "farm", "https://10.0.0.1:6443").expect("entries");
        assert!(merge(&path, entries.clone()).expect("merge"));
        assert!(
            !merge(&path, entries).expect("merge again"),
            "second merge changes nothing"
        );
        let doc = load(&path).expect("load");
        assert!(named(&doc, "contexts", "other").is_some());
        assert!(named(&doc, "contexts", "farm").is_some());
        assert_eq!(doc["current-context"], "other");
        assert_eq!(doc["x-custom"], "keep");
        assert_eq!(
            named(&doc, "clusters", "farm").expect("c")["cluster"]["server"],
            "https://10.0.0.1:6443"
        );
        let mode = std::fs::metadata(&path).expect("m").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(remove(&path, "farm").expect("remove"));
        let doc = load(&path).expect("load");
        assert!(named(&doc, "contexts", "farm").is_none());
        assert!(named(&doc, "contexts", "other").is_some());
    }
}
