//! Rendering of the `state` commands' results, as text lines or one JSON document:
//! the environments of a store, one state without its secrets, a lock's holder, a
//! migration.

use serde_json::json;

use crate::ops::statecmd::{Listing, Migrated, Shown};
use crate::statestore::Holder;

pub fn list_text(l: &Listing) -> Vec<String> {
    if l.environments.is_empty() {
        return vec![format!("No environments in {}.", l.location)];
    }
    let mut out = vec![format!("Environments in {}:", l.location)];
    out.extend(l.environments.iter().map(|e| format!("  {e}")));
    out
}

pub fn list_json(l: &Listing) -> String {
    json!({"location": l.location, "environments": l.environments}).to_string()
}

pub fn show_text(s: &Shown) -> Vec<String> {
    let st = &s.state;
    let mut out = vec![
        format!("Environment `{}` ({})", st.env, s.location),
        format!("  serial:    {}", st.serial),
    ];
    if let Some(r) = &st.recipe {
        out.push(format!("  recipe:    {}", r.display()));
    }
    if let Some(i) = &st.cluster.init_server {
        out.push(format!("  first server: {i}"));
    }
    out.push(format!("  hosts:     {}", st.hosts.len()));
    out.push(format!("  resources: {}", st.resources.len()));
    for (id, r) in &st.resources {
        let status = format!("{:?}", r.status).to_lowercase();
        out.push(format!("    {id:<40} {status}"));
    }
    out.push("  (secrets are never shown)".to_string());
    out
}

pub fn show_json(s: &Shown) -> String {
    json!({"location": s.location, "state": s.state}).to_string()
}

pub fn holder_text(h: &Holder) -> String {
    match (&h.record, &h.pid) {
        (Some(r), _) if h.broken => format!(
            "Broke the lock of `{}` in {} held by {}.",
            h.env,
            h.location,
            r.holder()
        ),
        (Some(r), _) => format!(
            "`{}` in {} is locked by {}; if that run is gone, break it with --force.",
            h.env,
            h.location,
            r.holder()
        ),
        (None, Some(pid)) => format!(
            "`{}` ({}) is locked by process {pid} on this machine; the lock frees itself when that process ends.",
            h.env, h.location
        ),
        (None, None) => format!("`{}` in {} is not locked.", h.env, h.location),
    }
}

pub fn holder_json(h: &Holder) -> String {
    json!({
        "env": h.env,
        "location": h.location,
        "locked": h.record.is_some() || h.pid.is_some(),
        "holder": h.record,
        "pid": h.pid,
        "broken": h.broken,
    })
    .to_string()
}

pub fn migrated_text(m: &Migrated) -> String {
    let how = if m.already_there {
        "was already at"
    } else {
        "copied to"
    };
    let source = if m.source_removed {
        "source removed"
    } else {
        "source kept"
    };
    format!(
        "Environment `{}` (serial {}) {how} {} from {}; {source}.",
        m.env, m.serial, m.to, m.from
    )
}

pub fn migrated_json(m: &Migrated) -> String {
    json!({"migrated": m}).to_string()
}
