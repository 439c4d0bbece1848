//! The enrolment commands (issue 15, docs/enrolment.md): `continuum enroll bundle`
//! writes a pool's first-boot files, `enroll revoke` deletes the pool's token,
//! `enroll list` shows the pools. Arguments become an `ops::enroll::PoolRequest`;
//! `ops::enroll` does the work and `output` prints.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

use super::exit::until_signal;
use super::output::Printer;
use super::{Cli, ConnArgs};
use crate::ops::enroll::{self, InstallChoice, PoolRequest};

#[derive(Debug, Subcommand)]
pub enum EnrollCmd {
    /// Write first-boot files (cloud-init user-data, a script with a systemd unit, the
    /// Raspberry Pi cmdline words) that join devices to ENV's cluster by themselves
    /// with a time-limited token and the pool's labels. The directory is a secret
    /// until the token expires.
    Bundle {
        env: String,
        /// The pool's name (becomes the label continuum.io/pool=NAME).
        #[arg(long)]
        pool: String,
        /// Directory to write (created 0700; must be new or empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// A label the pool's nodes register with (repeatable).
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// How long the token lets devices join (s, m, h, d; e.g. 30m, 24h, 7d).
        #[arg(long, default_value = "24h", value_name = "DURATION")]
        ttl: String,
        /// Architecture of the devices (amd64, arm64, arm; default: the first server's).
        #[arg(long)]
        arch: Option<String>,
        /// Install k3s from the bundle's own files (the recipe's install bundle).
        #[arg(long, conflicts_with = "online")]
        airgap: bool,
        /// Install k3s online through the install script, version pinned.
        #[arg(long)]
        online: bool,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// Delete the pool's token on the server so no further device can join with it
    /// (devices that joined stay). Revoking twice is fine.
    Revoke {
        env: String,
        #[arg(long)]
        pool: String,
        #[command(flatten)]
        conn: ConnArgs,
    },
    /// The environment's pools: token id, active/expired/revoked, labels.
    List { env: String },
}

/// Run an enroll command.
pub async fn run(cli: &Cli, printer: &Printer, cmd: &EnrollCmd) -> Result<()> {
    match cmd {
        EnrollCmd::Bundle {
            env,
            pool,
            out,
            labels,
            ttl,
            arch,
            airgap,
            online,
            conn,
        } => {
            let settings = cli.settings_env(env, Some(conn))?;
            let req = PoolRequest {
                pool: pool.clone(),
                labels: labels.clone(),
                ttl: enroll::parse_ttl(ttl)?,
                arch: arch.clone(),
                install: if *airgap {
                    InstallChoice::Airgap
                } else if *online {
                    InstallChoice::Online
                } else {
                    InstallChoice::Recipe
                },
                out: out.clone(),
            };
            let report = until_signal(enroll::bundle(env, &req, &settings)).await?;
            printer.enroll_bundle(&report);
        }
        EnrollCmd::Revoke { env, pool, conn } => {
            let settings = cli.settings_env(env, Some(conn))?;
            let report = until_signal(enroll::revoke(env, pool, &settings)).await?;
            printer.enroll_revoke(&report);
        }
        EnrollCmd::List { env } => {
            let rows = enroll::list(env, &cli.settings_env(env, None)?)?;
            printer.pools(&rows);
        }
    }
    Ok(())
}
