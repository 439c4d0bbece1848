//! Command-line definitions (clap) and dispatch: the top-level command line, the
//! options several commands share, and which file runs each group of commands
//! (`env`: validate, plan, up, status, down, graph; `serverless`: endpoints, fn;
//! `inventory`; `nodes`; `enroll`). Arguments become validated settings, `ops` does the work,
//! `output` prints; `exit` maps how a run ended to its exit code. No logic about
//! hosts or k3s lives here.

pub mod enroll;
pub mod env;
pub mod exit;
pub mod inventory;
pub mod nodes;
pub mod output;
pub mod serverless;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ops::Settings;
pub use exit::{NeedsYes, exit_code};
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
    #[command(flatten)]
    Env(env::EnvCmd),
    /// Registered OSCAR endpoints (list, show, remove).
    #[command(subcommand)]
    Endpoints(serverless::EndpointsCmd),
    /// OSCAR functions: list, copy or move between clusters, apply FDL, federate.
    #[command(subcommand)]
    Fn(serverless::FnCmd),
    /// Edit, import and probe inventories (hosts, Raspberry Pis, Jetsons).
    #[command(subcommand)]
    Inventory(inventory::InventoryCmd),
    /// Nodes of a running environment (remove one: drain, delete, uninstall).
    #[command(subcommand)]
    Nodes(nodes::NodesCmd),
    /// Pull-based enrolment: first-boot bundles with which devices join by themselves.
    #[command(subcommand)]
    Enroll(enroll::EnrollCmd),
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

/// Run a parsed command line.
pub async fn run(cli: Cli) -> Result<()> {
    let printer = cli.printer();
    match &cli.command {
        Command::Env(cmd) => env::run(&cli, &printer, cmd).await?,
        Command::Inventory(cmd) => inventory::run(&cli, &printer, cmd).await?,
        Command::Nodes(cmd) => nodes::run(&cli, &printer, cmd).await?,
        Command::Enroll(cmd) => enroll::run(&cli, &printer, cmd).await?,
        Command::Endpoints(cmd) => {
            serverless::endpoints_cmd(&cli.settings(None).state_dir, &printer, cmd).await?;
        }
        Command::Fn(cmd) => {
            serverless::fn_cmd(&cli.settings(None).state_dir, &printer, cmd).await?;
        }
    }
    Ok(())
}
