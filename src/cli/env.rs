//! The environment commands: `validate`, `plan`, `up`, `status`, `down`, `graph`. Each
//! loads the recipe (or names an environment in state), calls `ops`, and hands the
//! result to the output layer; confirmation is asked here, on a terminal only.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::exit::{NeedsYes, cancel_on_signals};
use super::output::{self, Format, Printer};
use super::{Cli, ConnArgs};
use crate::graph;
use crate::ops;
use crate::recipe;

#[derive(Debug, Subcommand)]
pub enum EnvCmd {
    /// Check a recipe and its inventory; print warnings.
    Validate { recipe: PathBuf },
    /// Show what `up` would change, and why (-v: the remote commands too).
    Plan {
        recipe: PathBuf,
        #[command(flatten)]
        refresh: RefreshArg,
    },
    /// Create or fix whatever differs from the recipe; nothing else.
    Up(UpArgs),
    /// Every node of an environment: role, arch, version, Ready, last error.
    Status {
        env: String,
        /// Do not contact the cluster; show recorded state only.
        #[arg(long)]
        offline: bool,
    },
    /// Tear an environment down: agents, then servers; remove its kubeconfig context.
    Down {
        env: String,
        /// A device gone for good: drop HOST from state without contacting it and list
        /// what may remain on it. Repeatable.
        #[arg(long, value_name = "HOST")]
        forget: Vec<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Print the resource graph as Graphviz DOT.
    Graph {
        recipe: PathBuf,
        /// Also render SVG to this file (needs Graphviz `dot`).
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
    },
}

/// `--refresh=BOOL` of `plan` and `up`.
#[derive(Debug, Args)]
pub struct RefreshArg {
    /// Read every applied node's facts first (one round trip per host, in parallel) so
    /// drift shows in the plan; `--refresh=false` plans from the state alone.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    pub refresh: bool,
}

#[derive(Debug, Args)]
pub struct UpArgs {
    pub recipe: PathBuf,
    #[command(flatten)]
    pub refresh: RefreshArg,
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Drop the pinned host key of HOST and pin the one it presents now (after a
    /// deliberate reinstall). Repeatable.
    #[arg(long, value_name = "HOST")]
    pub replace_host_key: Vec<String>,
    #[command(flatten)]
    pub conn: ConnArgs,
}

/// Load a recipe, printing its warnings.
fn load(printer: &Printer, path: &std::path::Path) -> Result<recipe::Environment> {
    let loaded = crate::files::load_recipe(path)?;
    for w in &loaded.warnings {
        printer.warning(&w.to_string());
    }
    Ok(loaded.env)
}

/// Run an environment command.
pub async fn run(cli: &Cli, printer: &Printer, cmd: &EnvCmd) -> Result<()> {
    match cmd {
        EnvCmd::Validate { recipe } => {
            let env = load(printer, recipe)?;
            printer.validated(&env);
        }
        EnvCmd::Plan { recipe, refresh } => {
            let env = load(printer, recipe)?;
            let mut settings = cli.settings_for(&env, None)?;
            settings.refresh = refresh.refresh;
            let (_, plan, unreachable) = ops::up::plan(&env, &settings).await?;
            for (h, why) in &unreachable {
                printer.warning(&format!("cannot refresh `{h}` (planned from state): {why}"));
            }
            printer.plan(&env, &plan);
        }
        EnvCmd::Graph { recipe, svg } => {
            let env = load(printer, recipe)?;
            let rg = graph::build(&env)?;
            let dot = graph::to_dot(&rg, &env.name);
            printer.text(&dot);
            if let Some(svg) = svg {
                render_svg(&dot, svg)?;
            }
        }
        EnvCmd::Up(args) => up(cli, printer, args).await?,
        EnvCmd::Status { env, offline } => {
            let report = ops::status::status(env, &cli.settings_env(env, None)?, !offline).await?;
            printer.status(&report);
        }
        EnvCmd::Down {
            env,
            forget,
            yes,
            conn,
        } => {
            let settings = cli.settings_env(env, Some(conn))?;
            let interactive = std::io::stdin().is_terminal() && printer.format() == Format::Text;
            if !yes {
                if !interactive {
                    return Err(anyhow::Error::new(NeedsYes));
                }
                if !output::confirm(&format!(
                    "Destroy environment `{env}` (uninstall k3s on every host)?"
                )) {
                    bail!("cancelled");
                }
            }
            let cancel = cancel_on_signals();
            let reporter = Arc::new(printer.reporter());
            let obs: Arc<dyn ops::Observer> = reporter.clone();
            let report = ops::down::down(env, forget, &settings, obs, &cancel).await;
            reporter.finish();
            let report = report?;
            // The state is gone (or there was none): so is this controller's note of
            // where it was.
            if settings.remote.is_some() && (report.state_deleted || report.results.is_empty()) {
                crate::files::remote_note::remove(&settings.state_dir, env)?;
            }
            printer.down_summary(env, &report);
        }
    }
    Ok(())
}

/// `up`: plan, confirm (or refuse without a terminal unless `--yes`), apply, report.
async fn up(cli: &Cli, printer: &Printer, args: &UpArgs) -> Result<()> {
    let env = load(printer, &args.recipe)?;
    let mut settings = cli.settings_for(&env, Some(&args.conn))?;
    settings.refresh = args.refresh.refresh;
    settings
        .replace_host_keys
        .clone_from(&args.replace_host_key);
    for h in &args.replace_host_key {
        if !env.hosts.contains_key(h) {
            bail!("--replace-host-key {h}: no host `{h}` in the recipe's inventory");
        }
    }
    let interactive = std::io::stdin().is_terminal() && printer.format() == Format::Text;
    if !args.yes && !interactive {
        // Without a terminal there is nobody to confirm: refuse rather than guess.
        let (_, plan, _) = ops::up::plan(&env, &settings).await?;
        if plan.to_change() > 0 {
            printer.plan(&env, &plan);
            return Err(anyhow::Error::new(NeedsYes));
        }
    }
    if let Some(r) = &settings.remote {
        // Before anything runs, so that even after a crash `status ENV` and
        // `down ENV` on this controller find the state without `--state`.
        crate::files::remote_note::write(&settings.state_dir, &env.name, &r.site())?;
    }
    let cancel = cancel_on_signals();
    let reporter = Arc::new(printer.reporter());
    let obs: Arc<dyn ops::Observer> = reporter.clone();
    let yes = args.yes;
    let report = ops::up::up(&env, &settings, obs, &cancel, |plan| {
        printer.plan(&env, plan);
        yes || !interactive || output::confirm("Apply these changes?")
    })
    .await;
    reporter.finish();
    let report = report?;
    printer.up_summary(&report);
    Ok(())
}

/// Render the DOT text with Graphviz and write the SVG atomically (a bare file name
/// lands in the current directory; a failed render leaves no partial file).
fn render_svg(dot: &str, out: &std::path::Path) -> Result<()> {
    use std::io::Write;
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot run Graphviz `dot` (install graphviz for --svg)")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(dot.as_bytes()).context("writing to dot")?;
    }
    let done = child.wait_with_output().context("waiting for dot")?;
    if !done.status.success() {
        bail!(
            "dot failed with {}: {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        );
    }
    crate::files::write_atomic(out, &done.stdout, 0o644)
        .with_context(|| format!("cannot write {}", out.display()))?;
    Ok(())
}
