//! The OSCAR service definition as each API version takes and returns it
//! (docs/oscar.md, "Service definitions"): the field names of upstream's
//! `types.Service` per version, the body continuum sends (server-set fields and fields
//! the target version lacks left out), what OSCAR fills in on a write (so that a
//! verification compares only what continuum set), secrets and redaction.
//!
//! Pure: no I/O. Definitions stay `serde_json::Value`, so fields continuum does not
//! know survive a read and are never a reason to fail.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::client::Api;
use crate::state::Secret;

/// JSON names of `types.Service` at grycap/oscar v4.1.2 (`pkg/types/service.go`).
pub const FIELDS_4_1: &[&str] = &[
    "name",
    "cluster_id",
    "memory",
    "cpu",
    "total_memory",
    "total_cpu",
    "ephemeral_storage_request",
    "enable_gpu",
    "enable_sgx",
    "image_prefetch",
    "synchronous",
    "federation",
    "log_level",
    "image",
    "alpine",
    "token",
    "file_stage_in",
    "input",
    "output",
    "script",
    "image_pull_secrets",
    "expose",
    "environment",
    "annotations",
    "vo",
    "labels",
    "storage_providers",
    "clusters",
    "owner",
    "namespace",
    "interlink_node_name",
    "visibility",
    "allowed_users",
    "isolation_level",
    "bucket_list",
    "mount",
    "volume",
    "volume_status",
    "deployment",
    "kserve",
];

/// JSON names of `types.Service` at grycap/oscar v3.6.4 (`pkg/types/service.go`).
pub const FIELDS_3_6: &[&str] = &[
    "name",
    "cluster_id",
    "memory",
    "cpu",
    "total_memory",
    "total_cpu",
    "enable_gpu",
    "enable_sgx",
    "image_prefetch",
    "synchronous",
    "replicas",
    "delegation",
    "rescheduler_threshold",
    "log_level",
    "image",
    "alpine",
    "token",
    "file_stage_in",
    "input",
    "output",
    "script",
    "image_pull_secrets",
    "expose",
    "environment",
    "annotations",
    "vo",
    "labels",
    "storage_providers",
    "clusters",
    "owner",
    "interlink_node_name",
    "visibility",
    "allowed_users",
    "isolation_level",
    "bucket_list",
    "mount",
];

/// Fields the server sets or reports only: never sent (the owner is sent back on a
/// PUT only, see `with_owner`).
pub const SERVER_SET: &[&str] = &["token", "owner", "namespace", "volume_status", "deployment"];

/// Labels OSCAR sets on every write (`checkValues` in `pkg/handlers/create.go`;
/// `owner_name` in v4.1.2's create handler): never sent, never compared.
pub const SERVER_LABELS: &[&str] = &[
    "oscar_service",
    "applicationId",
    "queue",
    "oscar.grycap/user-service",
    "owner_name",
];

/// Annotations a 4.1 coordinator puts on the copies it pushes
/// (`buildWorkerService` in `pkg/utils/federation.go`): they make a service a worker of
/// another cluster's federation, which a copy is not. Never sent.
pub const WORKER_ANNOTATIONS: &[&str] = &[
    "oscar.grycap/origin-cluster",
    "oscar.grycap/origin-service",
    "oscar.grycap/federation-worker",
];

/// The secret key 4.1 requires on a federated service (`pkg/types/service.go`,
/// `RefreshTokenSecretKey`).
pub const REFRESH_TOKEN: &str = "refresh_token";

pub fn fields(api: Api) -> &'static [&'static str] {
    match api {
        Api::V3_6 => FIELDS_3_6,
        Api::V4_1 => FIELDS_4_1,
    }
}

/// Go's zero value for a JSON value (what `omitempty` leaves out and what an absent
/// field decodes to).
pub fn is_zero(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
    }
}

/// A struct whose every leaf is a zero value (`expose`, `synchronous`, `mount` as a
/// GET returns them when unset).
fn all_zero(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.values().all(all_zero),
        other => is_zero(other),
    }
}

/// Structs that GET returns in full even when unset.
const STRUCTS: &[&str] = &["expose", "synchronous", "mount", "environment"];

/// The body to send to a cluster of version `api` as `cluster`: server-set fields,
/// OSCAR's own labels, a pushed copy's worker annotations and the server's hidden
/// default MinIO left out, zero values
/// dropped (they decode to the same thing), `cluster_id` set. Fields `api`'s
/// `types.Service` does not have are left out too; the non-empty ones are returned by
/// name, for the caller to report.
pub fn body_for(def: &Value, api: Api, cluster: &str) -> (Value, Vec<String>) {
    let mut dropped = Vec::new();
    let Some(src) = def.as_object() else {
        return (def.clone(), dropped);
    };
    let known = fields(api);
    let mut out = Map::new();
    for (k, v) in src {
        if SERVER_SET.contains(&k.as_str()) {
            continue;
        }
        if !known.contains(&k.as_str()) {
            if !all_zero(v) {
                dropped.push(k.clone());
            }
            continue;
        }
        if is_zero(v) || (STRUCTS.contains(&k.as_str()) && all_zero(v)) {
            continue;
        }
        out.insert(k.clone(), v.clone());
    }
    if let Some(labels) = out.get_mut("labels").and_then(Value::as_object_mut) {
        for l in SERVER_LABELS {
            labels.remove(*l);
        }
        if labels.is_empty() {
            out.remove("labels");
        }
    }
    if let Some(ann) = out.get_mut("annotations").and_then(Value::as_object_mut) {
        for a in WORKER_ANNOTATIONS {
            ann.remove(*a);
        }
        if ann.is_empty() {
            out.remove("annotations");
        }
    }
    strip_hidden_minio(&mut out);
    out.insert("cluster_id".into(), json!(cluster));
    dropped.sort();
    (Value::Object(out), dropped)
}

/// The default MinIO provider OSCAR fills in carries `hidden` credentials
/// (`checkValues`): it describes the source's own MinIO and is the server's to set.
fn strip_hidden_minio(out: &mut Map<String, Value>) {
    let Some(sp) = out
        .get_mut("storage_providers")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    if let Some(minio) = sp.get_mut("minio").and_then(Value::as_object_mut) {
        let hidden = minio.get("default").is_some_and(|d| {
            ["access_key", "secret_key"]
                .iter()
                .any(|k| d.get(*k).and_then(Value::as_str) == Some("hidden"))
        });
        if hidden {
            minio.remove("default");
        }
        if minio.is_empty() {
            sp.remove("minio");
        }
    }
    if sp.values().all(is_zero) {
        out.remove("storage_providers");
    }
}

/// Send the owner the target stored back with a PUT: with Basic auth upstream's update
/// handler stores the body's owner (it copies the stored one only for OIDC users), so
/// a PUT without it would clear it (docs/oscar.md, "Writes").
pub fn with_owner(body: &mut Value, existing: &Value) {
    if let (Some(m), Some(owner)) = (
        body.as_object_mut(),
        existing
            .get("owner")
            .and_then(Value::as_str)
            .filter(|o| !o.is_empty()),
    ) {
        m.insert("owner".into(), json!(owner));
    }
}

fn normalize_newlines(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

const LOG_LEVELS: &[&str] = &["NOTSET", "DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"];

/// What a GET shows after OSCAR stored `sent`, for the fields `sent` has (the
/// handlers' normalisation; docs/oscar.md, "What OSCAR fills in"): defaults for empty
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

/// `normalizeStoragePaths` (4.1): the path trimmed of spaces and slashes; a MinIO or
/// S3 path without a folder gets the service name as its bucket.
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

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        format!("{}...", s.chars().take(57).collect::<String>())
    } else {
        s
    }
}

/// Names of the service's secrets (`environment.secrets`), sorted.
pub fn secret_names(def: &Value) -> Vec<String> {
    def.get("environment")
        .and_then(|e| e.get("secrets"))
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// Put the given values of `names` into `environment.secrets`. Returns the names
/// nothing was given for.
pub fn fill_secrets(
    def: &mut Value,
    names: &[String],
    given: &BTreeMap<String, Secret>,
) -> Vec<String> {
    let mut missing = Vec::new();
    let mut values = Map::new();
    for n in names {
        match given.get(n) {
            Some(v) => {
                values.insert(n.clone(), json!(v.expose()));
            }
            None => missing.push(n.clone()),
        }
    }
    if !values.is_empty()
        && let Some(m) = def.as_object_mut()
    {
        let env = m.entry("environment").or_insert_with(|| json!({}));
        if !env.is_object() {
            *env = json!({});
        }
        if let Some(e) = env.as_object_mut() {
            let secrets = e.entry("secrets").or_insert_with(|| json!({}));
            if !secrets.is_object() {
                *secrets = json!({});
            }
            if let Some(s) = secrets.as_object_mut() {
                s.extend(values);
            }
        }
    }
    missing
}

/// Keys whose string values are credentials wherever they appear in a definition
/// (`clusters`, `storage_providers`; docs/oscar.md, "Credentials in definitions").
const CREDENTIAL_KEYS: &[&str] = &[
    "auth_password",
    "secret_key",
    "access_key",
    "password",
    "token",
    "refresh_token",
    "oidc_refresh_token",
];

/// A definition fit to print: no service token, every credential and secret value
/// replaced by `***` (names kept).
pub fn redacted(def: &Value) -> Value {
    let mut d = def.clone();
    if let Some(m) = d.as_object_mut() {
        m.remove("token");
        if let Some(secrets) = m
            .get_mut("environment")
            .and_then(|e| e.get_mut("secrets"))
            .and_then(Value::as_object_mut)
        {
            for v in secrets.values_mut() {
                *v = json!("***");
            }
        }
        for k in ["clusters", "storage_providers", "federation", "replicas"] {
            if let Some(v) = m.get_mut(k) {
                redact(v);
            }
        }
    }
    d
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if CREDENTIAL_KEYS.contains(&k.as_str())
                    && x.as_str().is_some_and(|s| !s.is_empty())
                {
                    *x = json!("***");
                } else {
                    redact(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact),
        _ => {}
    }
}

/// The `clusters` entries of a definition read from another cluster, without the
/// passwords it carried: an entry in `known` (the target's own) gets those
/// registered credentials, any other keeps its endpoint and user only. Returns the ids
/// whose password was dropped.
pub fn replace_cluster_credentials(
    def: &mut Value,
    known: &BTreeMap<String, Value>,
) -> Vec<String> {
    let mut unknown = Vec::new();
    let Some(clusters) = def.get_mut("clusters").and_then(Value::as_object_mut) else {
        return unknown;
    };
    for (id, entry) in clusters.iter_mut() {
        if let Some(k) = known.get(id) {
            *entry = k.clone();
        } else if let Some(e) = entry.as_object_mut() {
            if e.get("auth_password").is_some_and(|p| !is_zero(p)) {
                unknown.push(id.clone());
            }
            e.remove("auth_password");
        }
    }
    unknown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_non_ascii_value_is_shortened_on_a_char_boundary() {
        // Issue 14: the old `&s[..57]` panicked on JSON text with multi-byte characters
        // (and left a half-copied service behind, as the panic skipped the cleanup).
        let v = Value::String("é".repeat(80));
        let s = short(&v);
        assert!(s.ends_with("..."), "{s}");
        assert_eq!(s.chars().count(), 60);
        assert_eq!(short(&Value::String("ok".into())), "\"ok\"");
    }

    /// A service as a v4.1.2 GET returns it (every non-omitempty field present).
    fn got_41() -> Value {
        json!({
            "name": "yolo", "cluster_id": "edge", "memory": "256Mi", "cpu": "0.2",
            "total_memory": "", "total_cpu": "", "ephemeral_storage_request": "",
            "enable_gpu": false, "enable_sgx": false, "image_prefetch": false,
            "synchronous": {"min_scale": 0, "max_scale": 0}, "log_level": "INFO",
            "image": "img", "alpine": false, "token": "t0k", "file_stage_in": false,
            "input": [{"storage_provider": "minio.default", "path": "yolo/in"}],
            "output": null, "script": "echo\n",
            "expose": {"min_scale": 0, "max_scale": 0, "cpu_threshold": 0, "rewrite_target": false,
                       "default_command": false, "set_auth": false, "health_path": ""},
            "environment": {"variables": {"A": "1"}, "secrets": {"KEY": ""}},
            "annotations": {}, "vo": "",
            "labels": {"oscar_service": "yolo", "owner_name": "oscar", "team": "a"},
            "storage_providers": {"minio": {"default": {"endpoint": "https://m", "verify": true,
                "access_key": "hidden", "secret_key": "hidden", "region": "us-east-1"}}},
            "clusters": {"cloud": {"endpoint": "https://c", "auth_user": "u", "auth_password": "pw", "ssl_verify": true}},
            "owner": "cluster_admin", "namespace": "oscar-svc", "interlink_node_name": "",
            "visibility": "private", "allowed_users": [], "isolation_level": "",
            "bucket_list": null, "mount": {"storage_provider": "", "path": ""},
            "volume_status": {"enabled": false}
        })
    }

    #[test]
    fn bodies_leave_out_server_fields_zero_values_and_unknown_fields() {
        let (b, dropped) = body_for(&got_41(), Api::V4_1, "cloud");
        let mut keys: Vec<&str> = b
            .as_object()
            .expect("obj")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "cluster_id",
                "clusters",
                "cpu",
                "environment",
                "image",
                "input",
                "labels",
                "log_level",
                "memory",
                "name",
                "script",
                "visibility"
            ]
        );
        assert!(dropped.is_empty(), "{dropped:?}");
        assert_eq!(b["labels"], json!({"team": "a"}));
        assert_eq!(b["cluster_id"], "cloud");
        // To 3.6: a 4.1-only field is dropped and named.
        let mut fed = got_41();
        fed["federation"] =
            json!({"group_id": "yolo", "topology": "star", "members": [{"cluster_id": "x"}]});
        let (b, dropped) = body_for(&fed, Api::V3_6, "legacy");
        assert!(b.get("federation").is_none());
        assert_eq!(dropped, ["federation"]);
        // A 3.6 definition to 4.1: replicas and delegation are not 4.1 fields.
        let old = json!({"name": "s", "image": "i", "script": "x", "replicas": [{"cluster_id": "a"}],
                         "delegation": "random", "rescheduler_threshold": 0});
        let (_, dropped) = body_for(&old, Api::V4_1, "c");
        assert_eq!(dropped, ["delegation", "replicas"]);
    }

    /// Issue 11: OSCAR fills cpu/memory and adds its labels, fields continuum did not
    /// set are never a mismatch, one it set that differs is.
    #[test]
    fn verification_compares_only_what_was_set_after_normalising() {
        let sent = json!({"name": "yolo", "image": "img", "script": "echo\r\n",
                          "input": [{"storage_provider": "minio.default", "path": "/in/"}],
                          "labels": {"team": "a"}, "log_level": "info",
                          "environment": {"variables": {"A": "1"}, "secrets": {"KEY": "s3cr3t"}}});
        assert_eq!(mismatch(&expected(&sent, Api::V4_1), &got_41()), None);
        let mut cpu = sent.clone();
        cpu["cpu"] = json!("0.5");
        assert_eq!(
            mismatch(&expected(&cpu, Api::V4_1), &got_41()).as_deref(),
            Some("`cpu` is \"0.2\" there, expected \"0.5\"")
        );
        // 3.6 does not prefix paths: "in" stays "in", which the 4.1 GET does not show.
        let e = mismatch(&expected(&sent, Api::V3_6), &got_41()).expect("path differs");
        assert!(e.contains("input[0].path"), "{e}");
        // Replicas gain url/headers on the server; zero values count as absent.
        let rep = json!({"replicas": [{"type": "oscar", "cluster_id": "a", "priority": 0}]});
        let got = json!({"replicas": [{"type": "oscar", "cluster_id": "a", "service_name": "s",
                                        "url": "", "ssl_verify": false, "headers": null}]});
        assert_eq!(mismatch(&rep, &got), None);
        assert!(mismatch(&json!({"enable_gpu": true}), &json!({"enable_gpu": false})).is_some());
        assert_eq!(mismatch(&json!({"enable_gpu": false}), &json!({})), None);
    }

    #[test]
    fn owner_secrets_and_redaction() {
        let mut b = json!({"name": "s"});
        with_owner(&mut b, &json!({"owner": "cluster_admin"}));
        assert_eq!(b["owner"], "cluster_admin");
        let names = secret_names(&got_41());
        assert_eq!(names, ["KEY"]);
        let mut d = got_41();
        let given = BTreeMap::from([("KEY".to_string(), Secret::new("v"))]);
        assert!(fill_secrets(&mut d, &names, &given).is_empty());
        assert_eq!(d["environment"]["secrets"]["KEY"], "v");
        assert_eq!(
            fill_secrets(&mut d, &["OTHER".to_string()], &BTreeMap::new()),
            ["OTHER"]
        );
        let r = redacted(&d);
        assert!(r.get("token").is_none());
        assert_eq!(r["environment"]["secrets"]["KEY"], "***");
        assert_eq!(r["clusters"]["cloud"]["auth_password"], "***");
        assert_eq!(
            r["storage_providers"]["minio"]["default"]["secret_key"],
            "***"
        );
        assert!(!r.to_string().contains("\"pw\""));
        let mut c = got_41();
        let unknown = replace_cluster_credentials(&mut c, &BTreeMap::new());
        assert_eq!(unknown, ["cloud"]);
        assert!(c["clusters"]["cloud"].get("auth_password").is_none());
        let known = BTreeMap::from([(
            "cloud".to_string(),
            json!({"endpoint": "https://c", "auth_password": "reg"}),
        )]);
        let mut c = got_41();
        assert!(replace_cluster_credentials(&mut c, &known).is_empty());
        assert_eq!(c["clusters"]["cloud"]["auth_password"], "reg");
    }
}
