//! Command-line definitions (clap) and dispatch. Parses arguments, turns them into
//! validated settings, calls `ops`, and hands results to the output layer. No logic
//! about hosts or k3s lives here.

pub mod edge;
pub mod output;
pub mod serverless;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::graph;
use crate::ops::{self, Settings};
use crate::recipe;
use output::{Format, Printer};

/// Provision k3s clusters (and serverless layers) across the cloud-edge continuum.
#[derive(Debug, Parser)]
#[command(name = "continuum", version, about, long_about = None)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// Directory holding per-environment state (default: $XDG_STATE_HOME/continuum).
    #[arg(long, global = true, env = "CONTINUUM_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Output format: human text, or JSON (one event per line while running).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = OutputArg::Text)]
    pub output: OutputArg,
    /// More detail (-v: remote commands in plans, -vv: debug logs).
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors.
    #[arg(long, short = 'q', global = true, conflicts_with = "verbose")]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum OutputArg {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
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
    /// Registered OSCAR endpoints (list, show, remove).
    #[command(subcommand)]
    Endpoints(serverless::EndpointsCmd),
    /// OSCAR functions: list, copy or move between clusters, apply FDL, federate.
    #[command(subcommand)]
    Fn(serverless::FnCmd),
    /// Edit, import and probe inventories (hosts, Raspberry Pis, Jetsons).
    #[command(subcommand)]
    Inventory(edge::InventoryCmd),
    /// Nodes of a running environment (remove one: drain, delete, uninstall).
    #[command(subcommand)]
    Nodes(edge::NodesCmd),
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

#[derive(Debug, Args)]
pub struct ConnArgs {
    /// Resources worked on at once.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..=512))]
    pub concurrency: u16,
    /// Seconds to wait for one SSH connection attempt.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
    /// SSH connection attempts per host (with backoff) before giving up on it.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub connect_attempts: u32,
}

/// Documented exit codes (README.md, "Exit codes").
pub mod exit {
    pub const OK: i32 = 0;
    pub const ERROR: i32 = 1;
    pub const INVALID: i32 = 2;
    pub const PARTIAL: i32 = 3;
    pub const LOCKED: i32 = 4;
    pub const HOST_KEY: i32 = 5;
    /// SIGINT (Ctrl-C), as shells report a process that died of it (128 + 2).
    pub const INTERRUPTED: i32 = 130;
    /// SIGTERM (128 + 15): stopped by a service manager, a CI timeout, `kill`.
    pub const TERMINATED: i32 = 143;
}

/// The signal that cancelled this run (0: none), for its exit code.
static CANCELLED_BY: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

impl Cli {
    pub(crate) fn settings(&self, conn: Option<&ConnArgs>) -> Settings {
        let mut s = Settings::default();
        if let Some(d) = &self.global.state_dir {
            // Absolute: state records paths next to it, and ssh runs with it.
            s.state_dir = crate::files::absolute(d);
        }
        if let Some(c) = conn {
            s.concurrency = usize::from(c.concurrency);
            s.connect_timeout = Duration::from_secs(c.connect_timeout.max(1));
            s.connect_attempts = c.connect_attempts;
        }
        s
    }

    fn printer(&self) -> Printer {
        Printer::new(
            if self.global.output == OutputArg::Json {
                Format::Json
            } else {
                Format::Text
            },
            self.global.quiet,
            self.global.verbose,
        )
    }
}

fn load(printer: &Printer, path: &std::path::Path) -> Result<recipe::Environment> {
    let loaded = crate::files::load_recipe(path)?;
    for w in &loaded.warnings {
        printer.warning(&w.to_string());
    }
    Ok(loaded.env)
}

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let printer = cli.printer();
    match &cli.command {
        Command::Validate { recipe } => {
            let env = load(&printer, recipe)?;
            printer.validated(&env);
        }
        Command::Plan { recipe, refresh } => {
            let env = load(&printer, recipe)?;
            let mut settings = cli.settings(None);
            settings.refresh = refresh.refresh;
            let (_, plan, unreachable) = ops::up::plan(&env, &settings).await?;
            for (h, why) in &unreachable {
                printer.warning(&format!("cannot refresh `{h}` (planned from state): {why}"));
            }
            printer.plan(&env, &plan);
        }
        Command::Graph { recipe, svg } => {
            let env = load(&printer, recipe)?;
            let rg = graph::build(&env)?;
            let dot = graph::to_dot(&rg, &env.name);
            printer.text(&dot);
            if let Some(svg) = svg {
                render_svg(&dot, svg)?;
            }
        }
        Command::Up(args) => {
            let env = load(&printer, &args.recipe)?;
            let mut settings = cli.settings(Some(&args.conn));
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
        }
        Command::Inventory(cmd) => edge::inventory(&cli, &printer, cmd).await?,
        Command::Nodes(cmd) => edge::nodes(&cli, &printer, cmd).await?,
        Command::Status { env, offline } => {
            let report = ops::status::status(env, &cli.settings(None), !offline).await?;
            printer.status(&report);
        }
        Command::Down {
            env,
            forget,
            yes,
            conn,
        } => {
            let settings = cli.settings(Some(conn));
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
            printer.down_summary(env, &report?);
        }
        Command::Endpoints(cmd) => {
            serverless::endpoints_cmd(&cli.settings(None).state_dir, &printer, cmd).await?;
        }
        Command::Fn(cmd) => {
            serverless::fn_cmd(&cli.settings(None).state_dir, &printer, cmd).await?;
        }
    }
    Ok(())
}

/// `up`/`down` without `--yes` and without a terminal to ask on.
#[derive(Debug, thiserror::Error)]
#[error("changes need confirmation: re-run with --yes (no terminal to ask on)")]
pub struct NeedsYes;

/// A token cancelled by SIGINT or SIGTERM: in-flight steps finish (and are recorded),
/// no new one starts, the lock is released on the way out, and the exit code says
/// which signal it was (130 or 143).
pub(crate) fn cancel_on_signals() -> CancellationToken {
    use std::sync::atomic::Ordering;
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(_) => std::future::pending::<()>().await,
            }
        };
        let sig = tokio::select! {
            r = tokio::signal::ctrl_c() => {
                if r.is_err() {
                    std::future::pending::<()>().await;
                }
                2
            }
            () = term => 15,
        };
        CANCELLED_BY.store(sig, Ordering::SeqCst);
        tracing::warn!(
            "{}: finishing in-flight steps, starting no new ones",
            if sig == 15 { "SIGTERM" } else { "interrupt" }
        );
        t.cancel();
    });
    token
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

/// Map an error chain to the documented exit code.
pub fn exit_code(err: &anyhow::Error) -> i32 {
    for cause in err.chain() {
        if let Some(e) = cause.downcast_ref::<ops::OpsError>() {
            return match e {
                _ if e.is_host_key() => exit::HOST_KEY,
                ops::OpsError::State(crate::files::StateError::Locked { .. }) => exit::LOCKED,
                ops::OpsError::Partial { .. } => exit::PARTIAL,
                ops::OpsError::Cloud(crate::aws::provision::ProvisionError::Invalid(_))
                | ops::OpsError::Shrink(ops::shrink::ShrinkError::NoSuchHost { .. }) => {
                    exit::INVALID
                }
                ops::OpsError::Interrupted => {
                    if CANCELLED_BY.load(std::sync::atomic::Ordering::SeqCst) == 15 {
                        exit::TERMINATED
                    } else {
                        exit::INTERRUPTED
                    }
                }
                _ => exit::ERROR,
            };
        }
        if cause.downcast_ref::<recipe::LoadError>().is_some()
            || cause.downcast_ref::<NeedsYes>().is_some()
            || cause
                .downcast_ref::<crate::inventory::InventoryError>()
                .is_some()
        {
            return exit::INVALID;
        }
        if let Some(crate::files::StateError::Locked { .. }) =
            cause.downcast_ref::<crate::files::StateError>()
        {
            return exit::LOCKED;
        }
    }
    exit::ERROR
}
