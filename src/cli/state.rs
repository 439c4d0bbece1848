//! The `state` command group: `list`, `show`, `unlock`, `migrate` (docs/state.md).
//! Each works on the local state directory or on `--state s3://...`; `ops::statecmd`
//! does the work and `output` prints.

use anyhow::Result;
use clap::Subcommand;

use super::Cli;
use super::output::Printer;
use crate::ops;
use crate::statestore::Location;

#[derive(Debug, Subcommand)]
pub enum StateCmd {
    /// Environments with state in the state directory, or at --state.
    List,
    /// An environment's recorded state, with every secret left out (needs no key).
    Show { env: String },
    /// Show who holds an environment's lock; --force breaks an S3 lock (a local lock
    /// frees itself when its process ends).
    Unlock {
        env: String,
        /// Break the lock shown (only when that run is gone: two runs on one
        /// environment can undo each other's work).
        #[arg(long)]
        force: bool,
    },
    /// Move an environment's state between stores: directories or s3:// URLs. Takes
    /// both locks, copies, reads the copy back, then removes the source. Safe to run
    /// again after an interruption.
    Migrate {
        env: String,
        /// Where the state is now (a directory or s3://BUCKET/PREFIX).
        #[arg(long, value_name = "DIR_OR_URL")]
        from: String,
        /// Where it goes (a directory or s3://BUCKET/PREFIX).
        #[arg(long, value_name = "DIR_OR_URL")]
        to: String,
        /// Leave the source in place after the copy is verified.
        #[arg(long)]
        keep_source: bool,
    },
}

pub fn run(cli: &Cli, printer: &Printer, cmd: &StateCmd) -> Result<()> {
    let settings = cli.settings(None)?;
    match cmd {
        StateCmd::List => printer.state_list(&ops::statecmd::list(&settings)?),
        StateCmd::Show { env } => printer.state_show(&ops::statecmd::show(env, &settings)?),
        StateCmd::Unlock { env, force } => {
            printer.state_holder(&ops::statecmd::unlock(env, *force, &settings)?);
        }
        StateCmd::Migrate {
            env,
            from,
            to,
            keep_source,
        } => {
            let with_options = |text: &str| -> Result<Location> {
                Ok(match Location::parse(text)? {
                    Location::S3(r) => Location::S3(cli.remote_options(r)),
                    dir => dir,
                })
            };
            let (from, to) = (with_options(from)?, with_options(to)?);
            // A signal stops the migration between its steps, with both locks released
            // (`ops::statecmd::migrate`), instead of ending the process with them held.
            let cancel = super::exit::cancel_on_signals();
            let r = ops::statecmd::migrate(
                env,
                &from,
                &to,
                *keep_source,
                &settings.state_dir,
                &|| cancel.is_cancelled(),
            )?;
            printer.migrated(&r);
        }
    }
    Ok(())
}
