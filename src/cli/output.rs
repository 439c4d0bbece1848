//! The output layer: the only place that writes to stdout/stderr. Text for people
//! (progress bars on a terminal, plain lines otherwise) or JSON for machines (one
//! object per line while running, one document for reports).

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use serde_json::json;

use crate::graph::{Action, Plan};
use crate::ops::down::DownReport;
use crate::ops::status::StatusReport;
use crate::ops::up::UpReport;
use crate::ops::{Event, Observer};
use crate::recipe::Environment;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

/// Prints results and diagnostics in the chosen format.
#[derive(Debug, Clone)]
pub struct Printer {
    format: Format,
    quiet: bool,
    verbose: u8,
}

fn out(s: &str) {
    let mut o = std::io::stdout().lock();
    let _ = writeln!(o, "{s}");
}

fn err(s: &str) {
    let mut e = std::io::stderr().lock();
    let _ = writeln!(e, "{s}");
}

fn symbol(a: Action) -> &'static str {
    match a {
        Action::Create => "+",
        Action::Update => "~",
        Action::Delete => "-",
        Action::NoOp => " ",
    }
}

impl Printer {
    pub fn new(format: Format, quiet: bool, verbose: u8) -> Self {
        Printer {
            format,
            quiet,
            verbose,
        }
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn warning(&self, msg: &str) {
        match self.format {
            Format::Json => out(&json!({"event": "warning", "message": msg}).to_string()),
            Format::Text => err(msg),
        }
    }

    /// Raw text to stdout (DOT output).
    pub fn text(&self, s: &str) {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(s.as_bytes());
    }

    pub fn validated(&self, env: &Environment) {
        match self.format {
            Format::Json => out(&json!({"valid": true, "env": env.name, "servers": env.cluster.servers, "agents": env.cluster.agents}).to_string()),
            Format::Text if !self.quiet => out(&format!(
                "{}: valid ({} server(s), {} agent(s), k3s {})",
                env.recipe_path.display(),
                env.cluster.servers.len(),
                env.cluster.agents.len(),
                env.cluster.version
            )),
            Format::Text => {}
        }
    }

    pub fn plan(&self, env: &Environment, plan: &Plan) {
        if self.format == Format::Json {
            out(&json!({"event": "plan", "plan": plan}).to_string());
            return;
        }
        if self.quiet {
            return;
        }
        let mut lines = Vec::new();
        for c in plan.changes.iter().filter(|c| c.action != Action::NoOp) {
            lines.push(format!("  {} {:<40} {}", symbol(c.action), c.id, c.reason));
            if self.verbose > 0 {
                for cmd in remote_commands(env, c) {
                    lines.push(format!("        $ {cmd}"));
                }
            }
        }
        if !lines.is_empty() {
            out(&format!("Plan for environment `{}`:", plan.env));
            for l in lines {
                out(&l);
            }
        }
        if let Some(u) = &plan.upgrade {
            out(&format!(
                "Upgrade {} -> {}, in this order:",
                u.from.join(", "),
                u.to
            ));
            if !u.servers.is_empty() {
                out(&format!(
                    "  servers one at a time, each Ready at {} before the next: {}",
                    u.to,
                    u.servers.join(" -> ")
                ));
            }
            for (i, b) in u.agent_batches.iter().enumerate() {
                out(&format!(
                    "  agent batch {}{}: {}",
                    i + 1,
                    if u.drain { " (drained first)" } else { "" },
                    b.join(", ")
                ));
            }
        }
        out(&format!(
            "Plan: {} to create, {} to update, {} to delete, {} unchanged ({} to change).",
            plan.count(Action::Create),
            plan.count(Action::Update),
            plan.count(Action::Delete),
            plan.count(Action::NoOp),
            plan.to_change()
        ));
    }

    pub fn up_summary(&self, r: &UpReport) {
        match self.format {
            Format::Json => out(
                &json!({"event": "summary", "changed": r.changed(), "results": r.results})
                    .to_string(),
            ),
            Format::Text if self.quiet => {}
            Format::Text => {
                if r.results.is_empty() {
                    out("Nothing to do: 0 to change.");
                } else {
                    let tolerated = r
                        .results
                        .iter()
                        .filter(|x| x.outcome == "tolerated")
                        .count();
                    out(&format!(
                        "Applied: {} resource(s) processed, {} changed on hosts{}.",
                        r.results.len(),
                        r.changed(),
                        if tolerated > 0 {
                            format!(", {tolerated} offline (within k3s.allow_unavailable)")
                        } else {
                            String::new()
                        }
                    ));
                }
            }
        }
    }

    pub fn down_summary(&self, env: &str, r: &DownReport) {
        match self.format {
            Format::Json => out(&json!({"event": "summary", "results": r.results, "state_deleted": r.state_deleted}).to_string()),
            Format::Text if self.quiet => {}
            Format::Text => {
                if r.results.is_empty() && !r.state_deleted {
                    out(&format!("Environment `{env}` has no state: nothing to destroy."));
                } else {
                    out(&format!("Destroyed environment `{env}`: {} resource(s) removed.", r.results.len()));
                }
            }
        }
    }

    pub fn status(&self, s: &StatusReport) {
        if self.format == Format::Json {
            out(&serde_json::to_string_pretty(s).unwrap_or_default());
            return;
        }
        out(&format!(
            "Environment `{}`  API {}  context {}",
            s.env,
            s.api.as_deref().unwrap_or("-"),
            s.kubeconfig_context.as_deref().unwrap_or("-")
        ));
        if let Some(e) = &s.live_error {
            out(&format!("(live data unavailable: {e})"));
        }
        let header = [
            "HOST",
            "ROLE",
            "ADDRESS",
            "ARCH",
            "VERSION",
            "READY",
            "STATE",
            "LAST ERROR",
        ];
        let rows: Vec<[String; 8]> = s
            .nodes
            .iter()
            .map(|n| {
                [
                    n.host.clone(),
                    n.role.clone(),
                    n.address.clone(),
                    n.arch.clone().unwrap_or_else(|| "-".into()),
                    n.version.clone().unwrap_or_else(|| "-".into()),
                    n.ready.clone().unwrap_or_else(|| "-".into()),
                    format!("{:?}", n.state).to_lowercase(),
                    n.last_error.as_deref().map_or("-".into(), |e| {
                        e.lines().next().unwrap_or("").chars().take(60).collect()
                    }),
                ]
            })
            .collect();
        let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
        out(&table(&header, &rows));
        if let Some(a) = &s.aws {
            let ids: Vec<String> = a
                .resources
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            out(&format!(
                "AWS {}: {}",
                a.region,
                if ids.is_empty() {
                    "-".to_string()
                } else {
                    ids.join(", ")
                }
            ));
            if let Some(e) = &a.live_error {
                out(&format!("(live instance data unavailable: {e})"));
            }
            if !a.instances.is_empty() {
                let rows: Vec<Vec<String>> = a
                    .instances
                    .iter()
                    .map(|i| {
                        vec![
                            i.host.clone(),
                            i.group.clone(),
                            i.id.clone(),
                            i.state.clone(),
                            i.private_ip.clone().unwrap_or_else(|| "-".into()),
                            i.public_ip.clone().unwrap_or_else(|| "-".into()),
                        ]
                    })
                    .collect();
                out(&table(
                    &[
                        "INSTANCE HOST",
                        "GROUP",
                        "ID",
                        "STATE",
                        "PRIVATE IP",
                        "PUBLIC IP",
                    ],
                    &rows,
                ));
            }
        }
        // OSCAR endpoints (issue 4).
        for e in &s.endpoints {
            out(&format!(
                "OSCAR endpoint `{}` ({}) {}  health: {}",
                e.name,
                e.tier,
                e.oscar_url,
                e.health.as_deref().unwrap_or("-")
            ));
        }
    }

    /// A progress observer for `up`/`down`.
    pub fn reporter(&self) -> Reporter {
        let tty = std::io::stderr().is_terminal();
        Reporter {
            format: self.format,
            quiet: self.quiet,
            multi: (tty && self.format == Format::Text && !self.quiet).then(MultiProgress::new),
            bars: Mutex::new(HashMap::new()),
        }
    }
}

fn remote_commands(env: &Environment, c: &crate::graph::Change) -> Vec<String> {
    use crate::recipe::Role;
    match (c.action, c.role) {
        (Action::Delete, Some(Role::Agent | Role::Server)) => vec![
            crate::k3s::device::DRAIN_DESCRIPTION.to_string(),
            format!(
                "k3s kubectl delete node {} (on the first server)",
                c.host.as_deref().unwrap_or("?")
            ),
            crate::k3s::UNINSTALL_DESCRIPTION.to_string(),
        ],
        (_, Some(role)) => crate::k3s::describe_apply(&crate::k3s::NodeSpec {
            role,
            version: &env.cluster.version,
            install: &env.cluster.install,
            config: String::new(),
            live_keys_only: false,
        }),
        _ if c.id == crate::graph::CLUSTER_READY => vec![
            "k3s kubectl get --raw /readyz".into(),
            "k3s kubectl get nodes -o json (until every node is Ready)".into(),
            "k3s kubectl -n kube-system get deployment coredns -o json".into(),
        ],
        _ if c.id.starts_with("device-prep/") || c.id.starts_with("gpu-runtime/") => {
            let device = c
                .host
                .as_ref()
                .and_then(|h| env.hosts.get(h))
                .and_then(|h| h.probed.as_deref())
                .and_then(crate::inventory::probe::Facts::device);
            crate::k3s::device::describe(&c.id, device)
        }
        _ if c.id == crate::graph::KUBECONFIG => vec![format!(
            "cat {} (as root), merged locally",
            crate::k3s::KUBECONFIG_PATH
        )],
        _ if c.id == crate::graph::SERVERLESS => vec![
            format!(
                "write {}/{}*.yaml (as root, 0600, from stdin; only files that differ)",
                crate::render::oscar::MANIFESTS_DIR,
                crate::render::oscar::FILE_PREFIX
            ),
            "GET /health, GET /system/info at the OSCAR endpoint (until ready)".into(),
        ],
        _ if c.id == crate::graph::ENDPOINT => {
            vec!["update the endpoint catalog and the oscar-cli config (0600), locally".into()]
        }
        _ => Vec::new(),
    }
}

/// Ask a yes/no question on the terminal.
pub fn confirm(question: &str) -> bool {
    let mut e = std::io::stderr().lock();
    let _ = write!(e, "{question} Only 'yes' is accepted: ");
    let _ = e.flush();
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok() && answer.trim() == "yes"
}

/// Renders progress events.
pub struct Reporter {
    format: Format,
    quiet: bool,
    multi: Option<MultiProgress>,
    bars: Mutex<HashMap<String, ProgressBar>>,
}

impl Reporter {
    pub fn finish(&self) {
        if let Ok(mut bars) = self.bars.lock() {
            for (_, b) in bars.drain() {
                if !b.is_finished() {
                    b.finish_and_clear();
                }
            }
        }
    }

    fn bar(&self, id: &str) -> Option<ProgressBar> {
        let multi = self.multi.as_ref()?;
        let mut bars = self.bars.lock().ok()?;
        Some(
            bars.entry(id.to_string())
                .or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(
                        ProgressStyle::with_template("{spinner} {prefix:<32} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    b.set_prefix(id.to_string());
                    b.enable_steady_tick(Duration::from_millis(120));
                    b
                })
                .clone(),
        )
    }
}

impl Observer for Reporter {
    fn event(&self, event: Event) {
        if self.format == Format::Json {
            out(&serde_json::to_string(&event).unwrap_or_default());
            return;
        }
        let failed_line = |id: &str, error: &str| format!("✗ {id}: {error}");
        if let Some(bar) = match &event {
            Event::Started { id, .. }
            | Event::Progress { id, .. }
            | Event::Finished { id, .. }
            | Event::Failed { id, .. }
            | Event::Skipped { id, .. }
            | Event::Cancelled { id } => self.bar(id),
            Event::Warning { .. } => None,
        } {
            match &event {
                Event::Started { action, .. } => {
                    bar.set_message(format!("{action:?}").to_lowercase())
                }
                Event::Progress { message, .. } => bar.set_message(message.clone()),
                Event::Finished { summary, .. } => bar.finish_with_message(format!("✓ {summary}")),
                Event::Failed { error, .. } => {
                    bar.finish_with_message(format!("✗ {}", error.lines().next().unwrap_or("")))
                }
                Event::Skipped { because, .. } => {
                    bar.finish_with_message(format!("skipped ({because})"))
                }
                Event::Cancelled { .. } => bar.finish_with_message("cancelled"),
                Event::Warning { .. } => {}
            }
            return;
        }
        let line = match &event {
            Event::Started { id, action } if !self.quiet => {
                format!("{id}: {}", format!("{action:?}").to_lowercase())
            }
            Event::Progress { id, message } if !self.quiet => format!("{id}: {message}"),
            Event::Finished { id, summary, .. } if !self.quiet => format!("{id}: done ({summary})"),
            Event::Failed { id, error } => failed_line(id, error),
            Event::Skipped { id, because } => format!("{id}: skipped ({because})"),
            Event::Cancelled { id } if !self.quiet => format!("{id}: cancelled"),
            Event::Warning { message } => format!("warning: {message}"),
            _ => return,
        };
        err(&line);
    }
}

/// Left-aligned columns.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(head.iter().map(|h| (*h).to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

// ---- serverless layer output (issue 4): endpoints and functions ----

impl Printer {
    /// `continuum endpoints list`.
    pub fn endpoints(&self, list: &[crate::registry::endpoints::Endpoint]) {
        if self.format == Format::Json {
            out(&serde_json::to_string_pretty(list).unwrap_or_default());
            return;
        }
        if list.is_empty() {
            out("No endpoints registered.");
            return;
        }
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|e| {
                vec![
                    e.name.clone(),
                    e.tier.to_string(),
                    e.arch.clone(),
                    if e.gpu { "yes".into() } else { "no".into() },
                    e.oscar_url.clone(),
                    e.minio_url.clone(),
                    e.kube_context.clone(),
                    e.env.clone(),
                ]
            })
            .collect();
        out(&table(
            &[
                "NAME", "TIER", "ARCH", "GPU", "OSCAR", "MINIO", "CONTEXT", "ENV",
            ],
            &rows,
        ));
    }

    /// `continuum endpoints show NAME [--reveal]`: secrets only when `creds` is given.
    pub fn endpoint(
        &self,
        e: &crate::registry::endpoints::Endpoint,
        creds: Option<&crate::state::Credentials>,
    ) {
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
        if self.format == Format::Json {
            let mut v = serde_json::to_value(e).unwrap_or_default();
            if creds.is_some() {
                v["credentials"] = json!({"oscar_user": user, "oscar_password": pass,
                    "minio_access_key": key, "minio_secret_key": secret});
            }
            out(&serde_json::to_string_pretty(&v).unwrap_or_default());
            return;
        }
        for (k, v) in [
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
        ] {
            out(&format!("{k:<17} {v}"));
        }
    }

    /// `continuum fn list --cluster C`.
    pub fn services(&self, cluster: &str, list: &[serde_json::Value]) {
        if self.format == Format::Json {
            // Service tokens are credentials: never listed.
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
            out(&serde_json::to_string_pretty(&cleaned).unwrap_or_default());
            return;
        }
        if list.is_empty() {
            out(&format!("No services on cluster `{cluster}`."));
            return;
        }
        let field = |s: &serde_json::Value, k: &str| {
            s.get(k)
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .unwrap_or_else(|| "-".into())
        };
        let rows: Vec<Vec<String>> = list
            .iter()
            .map(|s| {
                vec![
                    field(s, "name"),
                    field(s, "image"),
                    field(s, "cpu"),
                    field(s, "memory"),
                ]
            })
            .collect();
        out(&table(&["NAME", "IMAGE", "CPU", "MEMORY"], &rows));
    }

    /// Results of `fn copy|move|apply|federate`.
    pub fn written(&self, verb: &str, w: &[crate::oscar::functions::Written]) {
        if self.format == Format::Json {
            out(&json!({"event": "summary", "operation": verb, "results": w}).to_string());
            return;
        }
        if self.quiet {
            return;
        }
        for r in w {
            out(&format!(
                "{verb}: `{}` {} on `{}` (verified)",
                r.service, r.action, r.cluster
            ));
        }
    }

    /// A one-line confirmation (text) or event (JSON).
    pub fn done(&self, message: &str) {
        match self.format {
            Format::Json => out(&json!({"event": "done", "message": message}).to_string()),
            Format::Text if !self.quiet => out(message),
            Format::Text => {}
        }
    }
}
