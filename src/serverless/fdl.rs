//! oscar-cli's Functions Definition Language (REFERENCE.md §2, "FDL"):
//! `functions: {oscar: [{CLUSTER_ID: {SERVICE FIELDS}}]}` plus `storage_providers`.
//! `script:` is a local path, relative to the FDL file, inlined here (as oscar-cli does).
//!
//! Invariant: `load` reads every script and checks every name before returning, so a
//! bad FDL fails before any cluster is contacted.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::MAX_SERVICE_NAME;

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
}

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

/// Parse an FDL file, inline scripts, merge `storage_providers` into each service.
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
    let providers = doc.get("storage_providers").cloned();
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
            let name = svc_map
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
            for k in ["image", "script"] {
                if svc_map
                    .get(k)
                    .and_then(Value::as_str)
                    .is_none_or(str::is_empty)
                {
                    return Err(shape(line, format!("service `{name}` has no `{k}`")));
                }
            }
            let mut def = svc.clone();
            let script_rel = svc_map
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
            def["script"] = Value::String(script);
            if let Some(p) = &providers
                && def.get("storage_providers").is_none()
            {
                def["storage_providers"] = p.clone();
            }
            out.push(FdlService {
                cluster: cluster.clone(),
                name,
                definition: def,
                line,
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
    fn scripts_are_inlined_and_providers_merged() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("s.sh"), "#!/bin/sh\necho hi\n").expect("w");
        let fdl = dir.path().join("f.yaml");
        std::fs::write(
            &fdl,
            "functions:\n  oscar:\n  - edge:\n      name: grayify\n      image: ghcr.io/grycap/imagemagick\n      script: s.sh\n      memory: 256Mi\nstorage_providers:\n  minio:\n    default:\n      endpoint: http://m\n",
        )
        .expect("w");
        let s = load(&fdl).expect("load");
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].cluster, "edge");
        assert_eq!(s[0].line, 3);
        assert_eq!(s[0].definition["script"], "#!/bin/sh\necho hi\n");
        assert_eq!(
            s[0].definition["storage_providers"]["minio"]["default"]["endpoint"],
            "http://m"
        );
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
