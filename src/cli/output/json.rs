//! JSON for machines (`--output json`): one object per line for events, warnings and
//! summaries, one pretty-printed document for reports (status, endpoints, services).
//! Each function returns the text; the caller prints it.

use serde_json::json;

use crate::files::endpoints::Endpoint;
use crate::graph::Plan;
use crate::ops::Event;
use crate::ops::down::DownReport;
use crate::ops::status::StatusReport;
use crate::ops::up::UpReport;
use crate::recipe::Environment;
use crate::state::Credentials;

/// A progress event of `up`, `down` or `nodes remove`, as it happens.
pub(super) fn event(event: &Event) -> String {
    serde_json::to_string(event).unwrap_or_default()
}

pub(super) fn warning(message: &str) -> String {
    json!({"event": "warning", "message": message}).to_string()
}

pub(super) fn validated(env: &Environment) -> String {
    json!({"valid": true, "env": env.name, "servers": env.cluster.servers, "agents": env.cluster.agents}).to_string()
}

pub(super) fn plan(plan: &Plan) -> String {
    json!({"event": "plan", "plan": plan}).to_string()
}

pub(super) fn up_summary(r: &UpReport) -> String {
    json!({"event": "summary", "changed": r.changed(), "results": r.results}).to_string()
}

pub(super) fn down_summary(r: &DownReport) -> String {
    json!({"event": "summary", "results": r.results, "state_deleted": r.state_deleted}).to_string()
}

pub(super) fn status(s: &StatusReport) -> String {
    serde_json::to_string_pretty(s).unwrap_or_default()
}

pub(super) fn endpoints(list: &[Endpoint]) -> String {
    serde_json::to_string_pretty(list).unwrap_or_default()
}

/// One endpoint; its credentials only when `creds` is given (`--reveal`).
pub(super) fn endpoint(e: &Endpoint, creds: Option<&Credentials>) -> String {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(c) = creds {
        v["credentials"] = json!({"oscar_user": c.oscar_user, "oscar_password": c.oscar_password.expose(),
            "minio_access_key": c.minio_access_key, "minio_secret_key": c.minio_secret_key.expose()});
    }
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// A cluster's services without their tokens (service tokens are credentials).
pub(super) fn services(list: &[serde_json::Value]) -> String {
    let cleaned: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            let mut s = s.clone();
            if let Some(m) = s.as_object_mut() {
                m.remove("token");
            }
            s
        })
        .collect();
    serde_json::to_string_pretty(&cleaned).unwrap_or_default()
}

/// Results of `fn copy|move|apply|federate`.
pub(super) fn written(verb: &str, w: &[crate::oscar::functions::Written]) -> String {
    json!({"event": "summary", "operation": verb, "results": w}).to_string()
}

pub(super) fn done(message: &str) -> String {
    json!({"event": "done", "message": message}).to_string()
}
