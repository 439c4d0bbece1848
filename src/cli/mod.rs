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
pub mod state;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::ops::Settings;
use crate::statestore::{Location, Remote};
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
    /// Where environments' state lives: s3://BUCKET/PREFIX (shared by a team; see
    /// docs/state.md) or a directory (same as --state-dir).
    #[arg(long, global = true, env = "CONTINUUM_STATE", value_name = "URL")]
    pub state: Option<String>,
    /// S3 endpoint for --state (MinIO, ...); default: the SDK's (AWS_ENDPOINT_URL_S3).
    #[arg(
        long,
        global = true,
        env = "CONTINUUM_STATE_ENDPOINT",
        value_name = "URL"
    )]
    pub state_endpoint: Option<String>,
    /// Path-style S3 addressing for --state (default: on with --state-endpoint).
    #[arg(long, global = true, env = "CONTINUUM_STATE_PATH_STYLE", value_name = "BOOL", action = clap::ArgAction::Set)]
    pub state_path_style: Option<bool>,
    /// Region of the --state bucket (default: AWS_REGION, else us-east-1).
    #[arg(
        long,
        global = true,
        env = "CONTINUUM_STATE_REGION",
        value_name = "REGION"
    )]
    pub state_region: Option<String>,
    /// age identity file that decrypts the secrets in --state (the team's key).
    #[arg(
        long,
        global = true,
        env = "CONTINUUM_AGE_IDENTITY",
        value_name = "FILE"
    )]
    pub state_identity: Option<PathBuf>,
    /// More age recipients (age1...) the secrets in --state are encrypted to.
    #[arg(
        long,
        global = true,
        env = "CONTINUUM_AGE_RECIPIENTS",
        value_name = "AGE1",
        value_delimiter = ','
    )]
    pub state_recipient: Vec<String>,
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
    /// Environments' state: list, show, unlock, migrate between stores.
    #[command(subcommand)]
    State(state::StateCmd),
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
    pub(crate) fn settings(&self, conn: Option<&ConnArgs>) -> Result<Settings> {
        let mut s = Settings::default();
        if let Some(d) = &self.global.state_dir {
            // Absolute: state records paths next to it, and ssh runs with it.
            s.state_dir = crate::files::absolute(d);
        }
        match self
            .global
            .state
            .as_deref()
            .map(Location::parse)
            .transpose()?
        {
            Some(Location::S3(r)) => s.remote = Some(self.remote_options(r)),
            Some(Location::Dir(d)) => s.state_dir = d,
            None => {}
        }
        if let Some(c) = conn {
            s.concurrency = usize::from(c.concurrency);
            s.connect_timeout = Duration::from_secs(c.connect_timeout.max(1));
            s.connect_attempts = c.connect_attempts;
        }
        Ok(s)
    }

    /// The settings of a command that loaded `env`'s recipe: a recipe's `state:`
    /// applies unless `--state` (or `CONTINUUM_STATE`) says otherwise; the flags'
    /// endpoint, path style and region win over the recipe's.
    pub(crate) fn settings_for(
        &self,
        env: &crate::recipe::Environment,
        conn: Option<&ConnArgs>,
    ) -> Result<Settings> {
        let mut s = self.settings(conn)?;
        if self.global.state.is_none()
            && let Some(site) = &env.state
        {
            self.apply_site(&mut s, site);
        }
        Ok(s)
    }

    /// The settings of a command that names only an environment: `--state` (or
    /// `CONTINUUM_STATE`), else the note an `up` left of where the state is
    /// (`files::remote_note`), else the local state directory.
    pub(crate) fn settings_env(&self, env: &str, conn: Option<&ConnArgs>) -> Result<Settings> {
        let mut s = self.settings(conn)?;
        if self.global.state.is_none()
            && let Some(site) = crate::files::remote_note::read(&s.state_dir, env)?
        {
            self.apply_site(&mut s, &site);
        }
        Ok(s)
    }

    /// State in `site` (a recipe's `state:` or a note of one); the flags' endpoint,
    /// path style and region win over the site's.
    fn apply_site(&self, s: &mut Settings, site: &crate::recipe::StateSite) {
        s.remote = Some(self.remote_options(Remote::from_site(site)));
    }

    /// The global flags applied to an S3 location (parsed from `--state`, or a
    /// site's): an endpoint, path style or region given as a flag wins over the
    /// location's own; an endpoint flag alone turns path-style addressing on.
    pub(crate) fn remote_options(&self, mut r: Remote) -> Remote {
        let g = &self.global;
        if let Some(e) = &g.state_endpoint {
            r.endpoint = Some(e.clone());
        }
        if let Some(p) = g.state_path_style {
            r.path_style = p;
        } else if g.state_endpoint.is_some() {
            r.path_style = true;
        }
        if let Some(region) = &g.state_region {
            r.region = Some(region.clone());
        }
        r.identity = g.state_identity.as_deref().map(crate::files::absolute);
        r.recipients = g
            .state_recipient
            .iter()
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect();
        r.command = self.command_name().to_string();
        r
    }

    /// The command, as a lock records it.
    fn command_name(&self) -> &'static str {
        match &self.command {
            Command::Env(env::EnvCmd::Up(_)) => "up",
            Command::Env(env::EnvCmd::Down { .. }) => "down",
            Command::Nodes(_) => "nodes remove",
            Command::State(_) => "state migrate",
            Command::Enroll(enroll::EnrollCmd::Bundle { .. }) => "enroll bundle",
            Command::Enroll(enroll::EnrollCmd::Revoke { .. }) => "enroll revoke",
            _ => "continuum",
        }
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
        Command::State(cmd) => state::run(&cli, &printer, cmd)?,
        Command::Endpoints(cmd) => {
            serverless::endpoints_cmd(&cli.settings(None)?, &printer, cmd).await?;
        }
        Command::Fn(cmd) => {
            serverless::fn_cmd(&cli.settings(None)?, &printer, cmd).await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    /// Where S3 state is reached: a flag's endpoint, path style or region wins over the
    /// location's (a recipe's `state:` or the note `up` leaves); an endpoint turns
    /// path-style addressing on unless told otherwise.
    #[test]
    fn state_flags_win_over_the_site() {
        let site = crate::recipe::StateSite {
            url: "s3://team-state/envs".into(),
            bucket: "team-state".into(),
            prefix: "envs".into(),
            endpoint: Some("http://site:9000".into()),
            path_style: None,
            region: Some("eu-west-1".into()),
        };
        let remote = |args: &[&str], site: &crate::recipe::StateSite| {
            let mut argv = vec!["continuum"];
            argv.extend_from_slice(args);
            argv.extend(["status", "farm"]);
            let cli = super::Cli::try_parse_from(argv).expect("parse");
            let mut s = crate::ops::Settings::default();
            cli.apply_site(&mut s, site);
            s.remote.expect("remote")
        };
        let r = remote(&[], &site);
        assert_eq!(r.endpoint.as_deref(), Some("http://site:9000"));
        assert!(r.path_style);
        assert_eq!(r.region.as_deref(), Some("eu-west-1"));

        let r = remote(
            &[
                "--state-endpoint",
                "http://flag:9000",
                "--state-region",
                "us-east-2",
            ],
            &site,
        );
        assert_eq!(r.endpoint.as_deref(), Some("http://flag:9000"));
        assert!(r.path_style);
        assert_eq!(r.region.as_deref(), Some("us-east-2"));

        let r = remote(&["--state-path-style", "false"], &site);
        assert!(!r.path_style);
        assert_eq!(r.endpoint.as_deref(), Some("http://site:9000"));

        let aws = crate::recipe::StateSite {
            endpoint: None,
            region: None,
            ..site.clone()
        };
        let r = remote(&[], &aws);
        assert!(r.endpoint.is_none() && !r.path_style && r.region.is_none());
        let parsed = super::Remote::parse("s3://team-state/envs").expect("url");
        let cli = super::Cli::try_parse_from(["continuum", "status", "farm"]).expect("parse");
        let r = cli.remote_options(parsed);
        assert!(r.endpoint.is_none() && !r.path_style && r.region.is_none());
    }

    /// The lock record names the command that holds it (`state unlock` shows it to
    /// whoever is refused), enrolment included.
    #[test]
    fn locking_commands_are_named_in_the_lock() {
        for (args, name) in [
            (
                &[
                    "continuum",
                    "enroll",
                    "bundle",
                    "farm",
                    "--pool",
                    "p",
                    "--out",
                    "d",
                ][..],
                "enroll bundle",
            ),
            (
                &["continuum", "enroll", "revoke", "farm", "--pool", "p"][..],
                "enroll revoke",
            ),
            (
                &[
                    "continuum",
                    "state",
                    "migrate",
                    "farm",
                    "--from",
                    "a",
                    "--to",
                    "b",
                ][..],
                "state migrate",
            ),
        ] {
            let cli = super::Cli::try_parse_from(args).expect("parse");
            assert_eq!(cli.command_name(), name, "{args:?}");
        }
    }
}
