//! Secrets and credentials in a service definition (docs/oscar.md, "Credentials in
//! definitions"): the secrets' names and their values given again (a GET returns them
//! blank), other clusters' passwords replaced, and a definition fit to print with
//! every credential and secret value redacted.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::is_zero;
use crate::state::Secret;

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
