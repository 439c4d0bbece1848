//! The nodes commands: `continuum nodes remove` takes one host out of a running
//! environment through `ops::shrink`, asking first on a terminal.

use std::io::IsTerminal;
use std::sync::Arc;

use anyhow::Result;
use clap::Subcommand;

use super::exit::{NeedsYes, cancel_on_signals};
use super::output::{self, Format, Printer};
use super::{Cli, ConnArgs};
use crate::ops;

#[derive(Debug, Subcommand)]
pub enum NodesCmd {
    /// Take HOST out of ENV: drain, delete its Node, uninstall k3s, drop it from the
    /// inventory; other nodes are untouched (servers only while etcd keeps quorum).
    Remove {
        env: String,
        host: String,
        /// The device is gone for good: do not contact it; delete its Node object
        /// through a server when one answers, drop it from the inventory and state, and
        /// list what may remain on it.
        #[arg(long)]
        forget: bool,
        #[arg(long, short = 'y')]
        yes: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

/// Run a nodes command.
pub async fn run(cli: &Cli, printer: &Printer, cmd: &NodesCmd) -> Result<()> {
    match cmd {
        NodesCmd::Remove {
            env,
            host,
            forget,
            yes,
            conn,
        } => {
            let settings = cli.settings_env(env, Some(conn))?;
            let interactive = std::io::stdin().is_terminal() && printer.format() == Format::Text;
            if !yes && !interactive {
                return Err(anyhow::Error::new(NeedsYes));
            }
            let cancel = cancel_on_signals();
            let reporter = Arc::new(printer.reporter());
            let obs: Arc<dyn ops::Observer> = reporter.clone();
            let yes = *yes;
            let report =
                ops::shrink::remove_node(env, host, *forget, &settings, obs, &cancel, |plan| {
                    yes || output::confirm(&format!(
                        "Remove `{host}` from `{env}` ({} change(s))?",
                        plan.to_change()
                    ))
                })
                .await;
            reporter.finish();
            printer.up_summary(&report?);
        }
    }
    Ok(())
}
