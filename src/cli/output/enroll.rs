//! Output of the `enroll` commands: the bundle written, the token revoked, the pools
//! list; text for people, one JSON document for machines. The token's secret is never
//! in any of it (the reports carry only its id).

use serde_json::json;

use super::tables;
use crate::ops::enroll::{BundleReport, PoolRow, RevokeReport};

pub(super) fn bundle_text(r: &BundleReport) -> Vec<String> {
    let labels: Vec<String> = r.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    vec![
        format!(
            "Wrote the enrolment bundle of pool `{}` ({}) to {}:",
            r.pool,
            r.env,
            r.dir.display()
        ),
        format!("  {}", r.files.join(", ")),
        format!(
            "  token {} expires {}; labels {}; k3s for {} ({} install)",
            r.token_id,
            r.expires_text,
            labels.join(", "),
            r.arch,
            r.install
        ),
        format!(
            "The directory is a SECRET until then (it holds the join token). Revoke early with `continuum enroll revoke {} --pool {}`.",
            r.env, r.pool
        ),
    ]
}

pub(super) fn bundle_json(r: &BundleReport) -> String {
    serde_json::to_string_pretty(r).unwrap_or_default()
}

pub(super) fn revoke_text(r: &RevokeReport) -> String {
    if r.deleted {
        format!(
            "Revoked pool `{}` of `{}`: token {} deleted; devices that already joined stay.",
            r.pool, r.env, r.token_id
        )
    } else {
        format!(
            "Pool `{}` of `{}` is revoked: token {} was already gone.",
            r.pool, r.env, r.token_id
        )
    }
}

pub(super) fn revoke_json(r: &RevokeReport) -> String {
    json!({"event": "revoked", "env": r.env, "pool": r.pool, "token_id": r.token_id,
        "deleted": r.deleted})
    .to_string()
}

pub(super) fn pools_text(rows: &[PoolRow]) -> String {
    if rows.is_empty() {
        return "No enrolment pools.".into();
    }
    tables::table(
        &[
            "POOL",
            "TOKEN",
            "CONDITION",
            "EXPIRES",
            "ARCH",
            "INSTALL",
            "LABELS",
        ],
        &rows
            .iter()
            .map(|p| {
                vec![
                    p.pool.clone(),
                    p.token_id.clone(),
                    p.condition.clone(),
                    p.expires_text.clone(),
                    p.arch.clone(),
                    p.install.clone(),
                    p.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect::<Vec<_>>(),
    )
}

pub(super) fn pools_json(rows: &[PoolRow]) -> String {
    serde_json::to_string_pretty(rows).unwrap_or_default()
}
