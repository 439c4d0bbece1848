//! Text for people: the lines of plans, summaries, status and endpoint reports, and the
//! plain line of each progress event when no progress bar shows it. Each function
//! returns the lines; the caller prints them (one `println` each).

use super::tables;
use crate::files::endpoints::Endpoint;
use crate::graph::{Action, Plan};
use crate::ops::Event;
use crate::ops::down::DownReport;
use crate::ops::status::StatusReport;
use crate::ops::up::UpReport;
use crate::recipe::Environment;
use crate::state::Credentials;

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Delete => "-",
        Action::Replace => "-/+",
        Action::Refused => "!",
        Action::NoOp => " ",
    }
}

pub(super) fn validated(env: &Environment) -> String {
    format!(
        "{}: valid ({} server(s), {} agent(s), k3s {})",
        env.recipe_path.display(),
        env.cluster.servers.len(),
        env.cluster.agents.len(),
        env.cluster.version
    )
}

/// The changes (with their remote commands when `verbose`), the upgrade order, the
/// counts.
pub(super) fn plan(env: &Environment, plan: &Plan, verbose: u8) -> Vec<String> {
    let mut out = Vec::new();
    let mut lines = Vec::new();
    for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
        lines.push(format!("  {} {:<40} {}", symbol(c.action), c.id, c.reason));
        if verbose > 0 {
            for cmd in crate::ops::kinds::describe(env, c) {
                lines.push(format!("        $ {cmd}"));
            }
        }
    }
    if !lines.is_empty() {
        out.push(format!("Plan for environment `{}`:", plan.env));
        out.extend(lines);
    }
    if let Some(u) = &plan.upgrade {
        out.push(format!(
            "Upgrade {} -> {}, in this order:",
            u.from.join(", "),
            u.to
        ));
        if !u.servers.is_empty() {
            out.push(format!(
                "  servers one at a time, each Ready at {} before the next: {}",
                u.to,
                u.servers.join(" -> ")
            ));
        }
        for (i, b) in u.agent_batches.iter().enumerate() {
            out.push(format!(
                "  agent batch {}{}: {}",
                i + 1,
                if u.drain { " (drained first)" } else { "" },
                b.join(", ")
            ));
        }
    }
    let replace = match plan.count(Action::Replace) {
        0 => String::new(),
        n => format!(", {n} to replace"),
    };
    out.push(format!(
        "Plan: {} to create{replace}, {} to update, {} to delete, {} unchanged ({} to change).",
        plan.count(Action::Create),
        plan.count(Action::Update),
        plan.count(Action::Delete),
        plan.count(Action::NoOp),
        plan.to_change()
    ));
    let refused = plan.refused().len();
    if refused > 0 {
        out.push(format!(
            "{refused} change(s) refused (`!`): they cannot be made in place, and `up` changes nothing while the recipe asks for them."
        ));
    }
    out
}

pub(super) fn up_summary(r: &UpReport) -> String {
    if r.results.is_empty() {
        return "Nothing to do: 0 to change.".to_string();
    }
    let tolerated = r
        .results
        .iter()
        .filter(|x| x.outcome == "tolerated")
        .count();
    format!(
        "Applied: {} resource(s) processed, {} changed on hosts{}.",
        r.results.len(),
        r.changed(),
        if tolerated > 0 {
            format!(", {tolerated} offline (within k3s.allow_unavailable)")
        } else {
            String::new()
        }
    )
}

pub(super) fn down_summary(env: &str, r: &DownReport) -> String {
    if r.results.is_empty() && !r.state_deleted {
        format!("Environment `{env}` has no state: nothing to destroy.")
    } else {
        format!(
            "Destroyed environment `{env}`: {} resource(s) removed.",
            r.results.len()
        )
    }
}

/// The environment's header, its nodes, its AWS resources, its OSCAR endpoints.
pub(super) fn status(s: &StatusReport) -> Vec<String> {
    let mut out = vec![format!(
        "Environment `{}`  API {}  context {}",
        s.env,
        s.api.as_deref().unwrap_or("-"),
        s.kubeconfig_context.as_deref().unwrap_or("-")
    )];
    if let Some(e) = &s.live_error {
        out.push(format!("(live data unavailable: {e})"));
    }
    out.push(tables::status_nodes(s));
    if !s.enrolled.is_empty() {
        out.push("Enrolled through pools (not in the recipe):".into());
        out.push(tables::table(
            &["NODE", "POOL", "ARCH", "VERSION", "READY"],
            &s.enrolled
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.pool.clone(),
                        n.arch.clone(),
                        n.version.clone(),
                        n.ready.clone(),
                    ]
                })
                .collect::<Vec<_>>(),
        ));
    }
    if let Some(a) = &s.aws {
        let ids: Vec<String> = a
            .resources
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        out.push(format!(
            "AWS {}: {}",
            a.region,
            if ids.is_empty() {
                "-".to_string()
            } else {
                ids.join(", ")
            }
        ));
        if let Some(e) = &a.live_error {
            out.push(format!("(live instance data unavailable: {e})"));
        }
        if !a.instances.is_empty() {
            out.push(tables::aws_instances(a));
        }
    }
    for e in &s.endpoints {
        out.push(format!(
            "OSCAR endpoint `{}` ({}) {}  health: {}",
            e.name,
            e.tier,
            e.oscar_url,
            e.health.as_deref().unwrap_or("-")
        ));
    }
    out
}

pub(super) fn endpoints(list: &[Endpoint]) -> String {
    if list.is_empty() {
        return "No endpoints registered.".to_string();
    }
    tables::endpoints(list)
}

/// One endpoint as `key value` lines; its credentials masked unless `creds` is given.
pub(super) fn endpoint(e: &Endpoint, creds: Option<&Credentials>) -> Vec<String> {
    let hidden = "*** (use --reveal)";
    let (user, pass, key, secret) = match creds {
        Some(c) => (
            c.oscar_user.clone(),
            c.oscar_password.expose().to_string(),
            c.minio_access_key.clone(),
            c.minio_secret_key.expose().to_string(),
        ),
        None => (
            hidden.to_string(),
            hidden.to_string(),
            hidden.to_string(),
            hidden.to_string(),
        ),
    };
    [
        ("name", e.name.clone()),
        ("environment", e.env.clone()),
        ("tier", e.tier.to_string()),
        ("architecture", e.arch.clone()),
        ("gpu", e.gpu.to_string()),
        ("oscar", e.oscar_url.clone()),
        ("oscar version", e.oscar_version.clone()),
        ("minio", e.minio_url.clone()),
        ("kube context", e.kube_context.clone()),
        ("oscar-cli config", e.oscar_cli_config.display().to_string()),
        ("oscar user", user),
        ("oscar password", pass),
        ("minio access key", key),
        ("minio secret key", secret),
    ]
    .into_iter()
    .map(|(k, v)| format!("{k:<17} {v}"))
    .collect()
}

pub(super) fn services(cluster: &str, list: &[serde_json::Value]) -> String {
    if list.is_empty() {
        return format!("No services on cluster `{cluster}`.");
    }
    tables::services(list)
}

/// Results of `fn copy|move|apply|federate`, one line per service.
pub(super) fn written(verb: &str, w: &[crate::oscar::functions::Written]) -> Vec<String> {
    w.iter()
        .map(|r| {
            format!(
                "{verb}: `{}` {} on `{}` (verified)",
                r.service, r.action, r.cluster
            )
        })
        .collect()
}

/// The plain line of a progress event (`None`: not shown, as routine events are
/// under `--quiet`).
pub(super) fn event(event: &Event, quiet: bool) -> Option<String> {
    Some(match event {
        Event::Started { id, action } if !quiet => {
            format!("{id}: {}", format!("{action:?}").to_lowercase())
        }
        Event::Progress { id, message } if !quiet => format!("{id}: {message}"),
        Event::Finished { id, summary, .. } if !quiet => format!("{id}: done ({summary})"),
        Event::Failed { id, error } => format!("✗ {id}: {error}"),
        Event::Skipped { id, because } => format!("{id}: skipped ({because})"),
        Event::Cancelled { id } if !quiet => format!("{id}: cancelled"),
        Event::Warning { message } => format!("warning: {message}"),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiet_keeps_failures_skips_and_warnings_only() {
        let id = || "k3s-agent/a1".to_string();
        let events = [
            Event::Started {
                id: id(),
                action: Action::Create,
            },
            Event::Progress {
                id: id(),
                message: "uploading".into(),
            },
            Event::Finished {
                id: id(),
                changed: true,
                summary: "installed".into(),
            },
            Event::Failed {
                id: id(),
                error: "exit 1".into(),
            },
            Event::Skipped {
                id: id(),
                because: "server failed".into(),
            },
            Event::Cancelled { id: id() },
            Event::Warning {
                message: "slow".into(),
            },
        ];
        let loud: Vec<Option<String>> = events.iter().map(|e| event(e, false)).collect();
        assert_eq!(
            loud,
            [
                Some("k3s-agent/a1: create".to_string()),
                Some("k3s-agent/a1: uploading".to_string()),
                Some("k3s-agent/a1: done (installed)".to_string()),
                Some("✗ k3s-agent/a1: exit 1".to_string()),
                Some("k3s-agent/a1: skipped (server failed)".to_string()),
                Some("k3s-agent/a1: cancelled".to_string()),
                Some("warning: slow".to_string()),
            ]
        );
        let quiet: Vec<bool> = events.iter().map(|e| event(e, true).is_some()).collect();
        assert_eq!(quiet, [false, false, false, true, true, false, true]);
    }
}
