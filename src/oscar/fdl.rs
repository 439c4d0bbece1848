//! oscar-cli's Functions Definition Language (docs/oscar.md, "FDL"):
//! `functions: {oscar: [{CLUSTER_ID: {SERVICE FIELDS}}]}` plus top-level
//! `storage_providers` and `clusters`, read as oscar-cli does: `script:` is a local
//! path, relative to the FDL file, inlined; `cluster_id` is the cluster key; the
//! top-level `storage_providers` and `clusters` replace the service's own; scalars in
//! string fields (`cpu: 1`) are strings (`"1"`), as they decode into OSCAR's
//! `types.Service`.
//!
//! Invariant: `load` reads every script and checks every name before returning, so a
//! bad FDL fails before any cluster is contacted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::recipe::serverless::{MAX_SERVICE_NAME, is_service_name};

#[derive(Debug, thiserror::Error)]
pub enum FdlError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not valid YAML: {detail}")]
    Parse { path: PathBuf, detail: String },
    #[error("{path}:{line}: {detail}")]
    Shape {
        path: PathBuf,
        line: usize,
        detail: String,
    },
    #[error("{path}:{line}: service `{service}`: cannot read its script {script}")]
    Script {
        path: PathBuf,
        line: usize,
        service: String,
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// One service of an FDL file, script inlined.
#[derive(Debug, Clone, PartialEq)]
pub struct FdlService {
    pub cluster: String,
    pub name: String,
    pub definition: Value,
    /// Line of the cluster key in the FDL file (for messages).
    pub line: usize,
    /// What reading it as oscar-cli does changed (shown to the user).
    pub notes: Vec<String>,
}

/// `types.Service` fields of Go type string: a YAML scalar there is read as its text
/// (docs/oscar.md, "FDL").
const STRING_FIELDS: &[&str] = &[
    "name",
    "cluster_id",
    "memory",
    "cpu",
    "total_memory",
    "total_cpu",
    "ephemeral_storage_request",
    "log_level",
    "image",
    "vo",
    "interlink_node_name",
    "visibility",
    "isolation_level",
    "delegation",
];

/// Line (1-based) of the first `needle:` key in `text`, else 1.
fn line_of(text: &str, needle: &str) -> usize {
    let key = format!("{needle}:");
    text.lines()
        .position(|l| {
            let t = l.trim_start().trim_start_matches("- ").trim_start();
            t.starts_with(&key)
        })
        .map_or(1, |i| i + 1)
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Scalars in string fields and in the `map[string]string` fields become strings.
fn stringify(def: &mut serde_json::Map<String, Value>) {
    for k in STRING_FIELDS {
        if let Some(s) = def.get(*k).and_then(scalar_text) {
            def.insert((*k).to_string(), Value::String(s));
        }
    }
    let stringify_map = |m: Option<&mut Value>| {
        if let Some(m) = m.and_then(Value::as_object_mut) {
            for v in m.values_mut() {
                if let Some(s) = scalar_text(v) {
                    *v = Value::String(s);
                }
            }
        }
    };
    for k in ["labels", "annotations"] {
        stringify_map(def.get_mut(k));
    }
    if let Some(env) = def.get_mut("environment") {
        for k in ["variables", "secrets"] {
            stringify_map(env.get_mut(k));
        }
    }
}

/// Parse an FDL file, inline scripts, put the top-level `storage_providers` and
/// `clusters` into each service.
pub fn load(path: &Path) -> Result<Vec<FdlService>, FdlError> {
    let text = std::fs::read_to_string(path).map_err(|source| FdlError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: Value = serde_saphyr::from_str(&text).map_err(|e| FdlError::Parse {
        path: path.to_path_buf(),
        detail: e.without_snippet().to_string(),
    })?;
    let shape = |line: usize, detail: String| FdlError::Shape {
        path: path.to_path_buf(),
        line,
        detail,
    };
    let list = doc
        .get("functions")
        .and_then(|f| f.get("oscar"))
        .and_then(Value::as_array)
        .ok_or_else(|| {
            shape(
                1,
                "expected `functions: {oscar: [{CLUSTER_ID: {...}}]}`".into(),
            )
        })?;
    let top = |k: &str| doc.get(k).filter(|v| !v.is_null()).cloned();
    let providers = top("storage_providers");
    let clusters = top("clusters");
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for item in list {
        let Some(m) = item.as_object() else {
            return Err(shape(
                line_of(&text, "oscar"),
                "each entry of functions.oscar must be `CLUSTER_ID: {service}`".into(),
            ));
        };
        for (cluster, svc) in m {
            let line = line_of(&text, cluster);
            let Some(svc_map) = svc.as_object() else {
                return Err(shape(
                    line,
                    format!("the service under `{cluster}` is not a mapping"),
                ));
            };
            let mut def = svc_map.clone();
            stringify(&mut def);
            let name = def
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| shape(line, format!("the service under `{cluster}` has no name")))?
                .to_string();
            if name.len() > MAX_SERVICE_NAME {
                return Err(shape(
                    line_of(&text, "name").max(line),
                    format!(
                        "service name `{name}` has {} characters; OSCAR allows at most {MAX_SERVICE_NAME}",
                        name.len()
                    ),
                ));
            }
            if !is_service_name(&name) {
                return Err(shape(
                    line_of(&text, "name").max(line),
                    format!(
                        "service name `{}` is not an RFC 1035 label (lowercase letters, digits and `-`, starting with a letter): Kubernetes would refuse the objects OSCAR names after it",
                        name.escape_debug()
                    ),
                ));
            }
            for k in ["image", "script"] {
                if def.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    return Err(shape(line, format!("service `{name}` has no `{k}`")));
                }
            }
            let script_rel = def
                .get("script")
                .and_then(Value::as_str)
                .unwrap_or_default();
            let script_path = base.join(script_rel);
            let script =
                std::fs::read_to_string(&script_path).map_err(|source| FdlError::Script {
                    path: path.to_path_buf(),
                    line,
                    service: name.clone(),
                    script: script_path.clone(),
                    source,
                })?;
            def.insert("script".into(), Value::String(script));
            def.insert("cluster_id".into(), Value::String(cluster.clone()));
            // oscar-cli's ReadFDL sets both from the top level, replacing the service's.
            let mut notes = Vec::new();
            for (key, top) in [("storage_providers", &providers), ("clusters", &clusters)] {
                let own = def.remove(key).filter(|v| !v.is_null());
                if own.is_some() && own != *top {
                    notes.push(format!(
                        "{}:{line}: service `{name}`: its own `{key}` is replaced by the FDL's top-level `{key}` (as oscar-cli does)",
                        path.display()
                    ));
                }
                if let Some(t) = top {
                    def.insert(key.into(), t.clone());
                }
            }
            out.push(FdlService {
                cluster: cluster.clone(),
                name,
                definition: Value::Object(def),
                line,
                notes,
            });
        }
    }
    if out.is_empty() {
        return Err(shape(1, "the FDL defines no service".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_are_inlined_and_top_level_blocks_replace_the_services() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("s.sh"), "#!/bin/sh\necho hi\n").expect("w");
        let fdl = dir.path().join("f.yaml");
        std::fs::write(
            &fdl,
            "functions:\n  oscar:\n  - edge:\n      name: grayify\n      image: ghcr.io/grycap/imagemagick\n      script: s.sh\n      memory: 256Mi\n      cpu: 1\n      total_cpu: 0.5\n      environment:\n        variables: {PORT: 8080, DEBUG: true}\n      storage_providers:\n        minio:\n          own: {endpoint: http://x}\n  - cloud:\n      name: blur\n      image: i\n      script: s.sh\n      clusters: {a: {endpoint: http://a}}\nstorage_providers:\n  minio:\n    default:\n      endpoint: http://m\nclusters:\n  edge:\n    endpoint: https://edge\n    auth_user: u\n    auth_password: p\n    ssl_verify: true\n",
        )
        .expect("w");
        let s = load(&fdl).expect("load");
        assert_eq!(s.len(), 2);
        let d = &s[0].definition;
        assert_eq!(s[0].cluster, "edge");
        assert_eq!(s[0].line, 3);
        assert_eq!(d["script"], "#!/bin/sh\necho hi\n");
        assert_eq!(d["cluster_id"], "edge");
        assert_eq!(
            d["cpu"], "1",
            "YAML 1 is the string \"1\" (types.Service.CPU)"
        );
        assert_eq!(d["total_cpu"], "0.5");
        assert_eq!(d["environment"]["variables"]["PORT"], "8080");
        assert_eq!(d["environment"]["variables"]["DEBUG"], "true");
        assert_eq!(
            d["storage_providers"]["minio"]["default"]["endpoint"],
            "http://m"
        );
        assert!(d["storage_providers"]["minio"].get("own").is_none());
        assert_eq!(d["clusters"]["edge"]["endpoint"], "https://edge");
        assert_eq!(s[1].definition["clusters"]["edge"]["auth_user"], "u");
        assert!(s[1].definition["clusters"].get("a").is_none());
        assert_eq!(s[0].notes.len(), 1, "{:?}", s[0].notes);
        assert!(s[0].notes[0].contains("own `storage_providers` is replaced"));
        assert!(s[1].notes[0].contains("own `clusters` is replaced"));
    }

    #[test]
    fn missing_script_and_long_name_are_clear() {
        let dir = tempfile::tempdir().expect("tmp");
        let fdl = dir.path().join("f.yaml");
        std::fs::write(&fdl, "functions:\n  oscar:\n  - edge:\n      name: a\n      image: i\n      script: nope.sh\n").expect("w");
        let e = load(&fdl).expect_err("no script").to_string();
        assert!(e.contains("nope.sh") && e.contains("f.yaml:3"), "{e}");
        let long = "x".repeat(40);
        std::fs::write(&fdl, format!("functions:\n  oscar:\n  - edge:\n      name: {long}\n      image: i\n      script: s\n")).expect("w");
        let e = load(&fdl).expect_err("long").to_string();
        assert!(e.contains("at most 39"), "{e}");
    }
}
