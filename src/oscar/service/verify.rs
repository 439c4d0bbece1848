//! What a GET shows after OSCAR stored a definition (docs/oscar.md, "Writes"): the
//! handlers' defaults and normalisation per version, reproduced so that a write is
//! verified on the fields continuum set only, and the first mismatch named.

use serde_json::{Map, Value, json};

use super::{SERVER_LABELS, is_zero};
use crate::oscar::client::Api;

/// The script as OSCAR stores it: CRLF and CR line endings become LF.
fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

/// The log levels OSCAR keeps; any other becomes INFO.
const LOG_LEVELS: &[&str] = &["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/// What a GET shows after OSCAR stored `sent`, for the fields `sent` has (the
/// handlers' normalisation; docs/oscar.md, "Writes"): defaults for empty
/// cpu/memory/visibility, the log level upper-cased or INFO, line endings, secrets
/// blanked; in 4.1 storage paths prefixed with the service name, allowed users trimmed,
/// the federation's topology and group defaulted. What OSCAR overwrites (token, its
/// labels, the default MinIO) is not expected at all.
pub fn expected(sent: &Value, api: Api) -> Value {
    let mut want = sent.clone();
    let Some(m) = want.as_object_mut() else {
        return want;
    };
    m.remove("token");
    let name = m
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    for (k, default) in [
        ("cpu", "0.2"),
        ("memory", "256Mi"),
        ("visibility", "private"),
    ] {
        if m.get(k).and_then(Value::as_str) == Some("") {
            m.insert(k.into(), json!(default));
        }
    }
    if let Some(level) = m.get("log_level").and_then(Value::as_str) {
        let up = level.to_uppercase();
        let level = if LOG_LEVELS.contains(&up.as_str()) {
            up
        } else {
            "INFO".to_string()
        };
        m.insert("log_level".into(), json!(level));
    }
    if let Some(script) = m.get("script").and_then(Value::as_str) {
        let s = normalize_newlines(script);
        m.insert("script".into(), json!(s));
    }
    if let Some(labels) = m.get_mut("labels").and_then(Value::as_object_mut) {
        for l in SERVER_LABELS {
            labels.remove(*l);
        }
    }
    if let Some(secrets) = m
        .get_mut("environment")
        .and_then(|e| e.get_mut("secrets"))
        .and_then(Value::as_object_mut)
    {
        for v in secrets.values_mut() {
            *v = json!("");
        }
    }
    if let Some(minio) = m
        .get_mut("storage_providers")
        .and_then(|s| s.get_mut("minio"))
        .and_then(Value::as_object_mut)
    {
        minio.remove("default");
    }
    if api == Api::V4_1 {
        for key in ["input", "output"] {
            if let Some(list) = m.get_mut(key).and_then(Value::as_array_mut) {
                for io in list.iter_mut() {
                    normalize_path(io, &name);
                }
            }
        }
        if let Some(users) = m.get_mut("allowed_users").and_then(Value::as_array_mut) {
            users.retain(|u| u.as_str().is_none_or(|s| !s.trim().is_empty()));
            for u in users.iter_mut() {
                if let Some(s) = u.as_str() {
                    *u = json!(s.trim());
                }
            }
        }
        if let Some(fed) = m.get_mut("federation").and_then(Value::as_object_mut) {
            for (k, default) in [("topology", "none"), ("group_id", name.as_str())] {
                if fed.get(k).and_then(Value::as_str).is_none_or(str::is_empty) {
                    fed.insert(k.into(), json!(default));
                }
            }
        }
    }
    want
}

/// `normalizeStoragePaths` (4.1; docs/oscar.md, "Versions"): the path trimmed of
/// spaces and slashes; a MinIO or S3 path without a folder gets the service name as
/// its bucket.
fn normalize_path(io: &mut Value, service: &str) {
    let provider = io
        .get("storage_provider")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .trim()
        .split('.')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    if let Some(p) = io.get("path").and_then(Value::as_str) {
        let trimmed = p.trim_matches(|c| c == ' ' || c == '/');
        let path = if (provider == "minio" || provider == "s3") && !trimmed.contains('/') {
            format!("{service}/{trimmed}")
        } else {
            trimmed.to_string()
        };
        io["path"] = json!(path);
    }
}

/// The first place where `got` does not show what `want` has: a field `want` does not
/// have is never a mismatch; one it has with a non-zero value must be there, equal
/// (objects compared by `want`'s keys, arrays element by element).
pub fn mismatch(want: &Value, got: &Value) -> Option<String> {
    diff(want, got, "")
}

fn diff(want: &Value, got: &Value, at: &str) -> Option<String> {
    let field = |k: &str| {
        if at.is_empty() {
            k.to_string()
        } else {
            format!("{at}.{k}")
        }
    };
    match want {
        Value::Null => None,
        Value::Object(w) => {
            let empty = Map::new();
            let g = match got {
                Value::Object(g) => g,
                Value::Null => &empty,
                other => {
                    return Some(format!(
                        "`{at}` is {} there, expected an object",
                        short(other)
                    ));
                }
            };
            for (k, wv) in w {
                match g.get(k) {
                    None | Some(Value::Null) if is_zero(wv) => {}
                    None => {
                        return Some(format!(
                            "`{}` is absent there, expected {}",
                            field(k),
                            short(wv)
                        ));
                    }
                    Some(gv) => {
                        if let Some(d) = diff(wv, gv, &field(k)) {
                            return Some(d);
                        }
                    }
                }
            }
            None
        }
        Value::Array(w) => {
            let g: &[Value] = match got {
                Value::Array(g) => g,
                Value::Null => &[],
                other => {
                    return Some(format!("`{at}` is {} there, expected a list", short(other)));
                }
            };
            if g.len() != w.len() {
                return Some(format!(
                    "`{at}` has {} entries there, expected {}",
                    g.len(),
                    w.len()
                ));
            }
            w.iter()
                .zip(g)
                .enumerate()
                .find_map(|(i, (wv, gv))| diff(wv, gv, &format!("{at}[{i}]")))
        }
        scalar => {
            let same = match (scalar, got) {
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                (a, Value::Null) => is_zero(a),
                (a, b) => a == b,
            };
            (!same).then(|| format!("`{at}` is {} there, expected {}", short(got), short(scalar)))
        }
    }
}

/// `v` as JSON text, cut to 60 characters for a message.
fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_non_ascii_value_is_shortened_on_a_char_boundary() {
        // Cutting by bytes would panic on JSON text with multi-byte characters (and
        // leave a half-copied service behind, as the panic would skip the cleanup).
        let v = Value::String("é".repeat(80));
        let s = short(&v);
        assert!(s.ends_with("..."), "{s}");
        assert_eq!(s.chars().count(), 60);
        assert_eq!(short(&Value::String("ok".into())), "\"ok\"");
    }
}
