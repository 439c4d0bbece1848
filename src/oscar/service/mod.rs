//! The OSCAR service definition as each API version takes and returns it
//! (docs/oscar.md, "Versions", "Answers" and "Writes"). This file holds the shapes:
//! the field names of `types.Service` per version and the body continuum sends
//! (server-set fields and fields the target version lacks left out); `verify` holds
//! what OSCAR fills in on a write (so that a verification compares only what
//! continuum set); `secrets` holds secrets, the credentials in a definition and
//! redaction (docs/oscar.md, "Credentials in definitions").
//!
//! Pure: no I/O. Definitions stay `serde_json::Value`, so fields continuum does not
//! know survive a read and are never a reason to fail.

mod secrets;
mod verify;

use serde_json::{Map, Value, json};

use super::client::Api;
pub use secrets::{fill_secrets, redacted, replace_cluster_credentials, secret_names};
pub use verify::{expected, mismatch};

/// JSON names of `types.Service` at OSCAR v4.1.2 (docs/oscar.md, "Versions").
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

/// JSON names of `types.Service` at OSCAR v3.6.4 (docs/oscar.md, "Versions" and
/// "Published spec").
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

/// Labels OSCAR sets on every write (`checkValues`; `owner_name` in 4.1's create
/// handler; docs/oscar.md, "Writes"): never sent, never compared.
pub const SERVER_LABELS: &[&str] = &[
    "oscar_service",
    "applicationId",
    "queue",
    "oscar.grycap/user-service",
    "owner_name",
];

/// Annotations a 4.1 coordinator puts on the copies it pushes (docs/oscar.md,
/// "Federation (4.1)"): they make a service a worker of another cluster's federation,
/// which a copy is not. Never sent.
pub const WORKER_ANNOTATIONS: &[&str] = &[
    "oscar.grycap/origin-cluster",
    "oscar.grycap/origin-service",
    "oscar.grycap/federation-worker",
];

/// The secret key 4.1 requires on a federated service (`RefreshTokenSecretKey`;
/// docs/oscar.md, "Federation (4.1)").
pub const REFRESH_TOKEN: &str = "refresh_token";

/// The JSON names of `types.Service` in the version `api` stands for.
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
/// (`checkValues`; docs/oscar.md, "Writes"): it describes the source's own MinIO and
/// is the server's to set.
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

/// Send the owner the target stored back with a PUT: with Basic auth OSCAR's update
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Secret;
    use std::collections::BTreeMap;

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

    /// OSCAR fills cpu/memory and adds its labels (docs/oscar.md, "Writes"): fields
    /// continuum did not set are never a mismatch, one it set that differs is.
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
