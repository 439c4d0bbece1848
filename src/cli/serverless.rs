//! CLI handlers of `continuum endpoints ...` and `continuum fn ...` (issue 4): parse
//! into values, resolve clusters (every one before the first request), call
//! `serverless::functions`, hand results to the output layer.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::output::Printer;
use crate::registry::endpoints;
use crate::registry::oscar_cli;
use crate::serverless::client::Oscar;
use crate::serverless::{fdl, functions};
use crate::state::Store;

/// Where clusters not installed by continuum are looked up.
#[derive(Debug, Args)]
pub struct OscarCliArg {
    /// oscar-cli config to read clusters from (default ~/.oscar-cli/config.yaml).
    #[arg(long, env = "CONTINUUM_OSCAR_CLI_CONFIG", value_name = "FILE")]
    pub oscar_cli_config: Option<PathBuf>,
    /// Seconds to wait for one OSCAR API request.
    #[arg(long, default_value_t = 15, value_name = "SECS")]
    pub request_timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum EndpointsCmd {
    /// Registered OSCAR clusters: URL, MinIO, kube context, tier, arch, GPU.
    List,
    /// One endpoint; credentials only with --reveal.
    Show {
        name: String,
        /// Print the OSCAR and MinIO credentials.
        #[arg(long)]
        reveal: bool,
    },
    /// Forget an endpoint (catalog and oscar-cli entry); the cluster is untouched.
    Remove { name: String },
}

#[derive(Debug, Subcommand)]
pub enum FnCmd {
    /// Services on a cluster.
    List {
        #[arg(long)]
        cluster: String,
        #[command(flatten)]
        oscar: OscarCliArg,
    },
    /// Redeploy SERVICE on another cluster (POST or PUT, then verify).
    Copy(CopyArgs),
    /// Copy, then delete at the source once the target is verified.
    Move(CopyArgs),
    /// Apply an oscar-cli FDL file (script paths are inlined).
    Apply {
        fdl: PathBuf,
        #[command(flatten)]
        oscar: OscarCliArg,
    },
    /// Federate SERVICE over clusters (v4.1 `federation`, legacy `replicas` before).
    Federate {
        service: String,
        /// Member clusters, comma-separated; the first with the service is the origin.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// static, random, load-based or topsis (4.1+).
        #[arg(long, default_value = "load-based")]
        delegation: String,
        /// none, star or mesh (4.1+).
        #[arg(long, default_value = "mesh")]
        topology: String,
        #[command(flatten)]
        oscar: OscarCliArg,
    },
}

#[derive(Debug, Args)]
pub struct CopyArgs {
    pub service: String,
    #[arg(long)]
    pub from: String,
    #[arg(long)]
    pub to: String,
    #[command(flatten)]
    pub oscar: OscarCliArg,
}

fn resolver(state_dir: &Path, arg: &OscarCliArg) -> impl Fn(&str) -> Result<Oscar> {
    let cli = arg
        .oscar_cli_config
        .clone()
        .unwrap_or_else(oscar_cli::default_path);
    let dir = state_dir.to_path_buf();
    let timeout = Duration::from_secs(arg.request_timeout.max(1));
    move |name: &str| {
        let t = endpoints::resolve(&dir, &cli, name)?;
        Ok(Oscar::new(
            &t.name,
            &t.url,
            &t.user,
            t.password,
            t.ssl_verify,
            timeout,
        )?)
    }
}

pub async fn endpoints_cmd(state_dir: &Path, printer: &Printer, cmd: &EndpointsCmd) -> Result<()> {
    match cmd {
        EndpointsCmd::List => printer.endpoints(&endpoints::list(state_dir)?),
        EndpointsCmd::Show { name, reveal } => {
            let Some(e) = endpoints::get(state_dir, name)? else {
                bail!("no endpoint `{name}` is registered (see `continuum endpoints list`)");
            };
            let creds = if *reveal {
                let st = Store::new(state_dir, &e.env).load()?;
                Some(st.and_then(|s| s.serverless).with_context(|| {
                    format!("environment `{}` has no OSCAR credentials in state", e.env)
                })?)
            } else {
                None
            };
            printer.endpoint(&e, creds.as_ref());
        }
        EndpointsCmd::Remove { name } => match endpoints::remove(state_dir, name)? {
            Some(e) => printer.done(&format!(
                "Removed endpoint `{name}` (and its entry in {}).",
                e.oscar_cli_config.display()
            )),
            None => bail!("no endpoint `{name}` is registered"),
        },
    }
    Ok(())
}

pub async fn fn_cmd(state_dir: &Path, printer: &Printer, cmd: &FnCmd) -> Result<()> {
    match cmd {
        FnCmd::List { cluster, oscar } => {
            let c = resolver(state_dir, oscar)(cluster)?;
            printer.services(cluster, &c.list_services().await?);
        }
        FnCmd::Copy(a) | FnCmd::Move(a) => {
            functions::check_name(&a.service)?;
            let r = resolver(state_dir, &a.oscar);
            let (from, to) = (r(&a.from)?, r(&a.to)?);
            if matches!(cmd, FnCmd::Move(_)) {
                let w = functions::move_service(&from, &to, &a.service).await?;
                printer.written("moved", &[w]);
            } else {
                let w = functions::copy(&from, &to, &a.service).await?;
                printer.written("copied", &[w]);
            }
        }
        FnCmd::Apply { fdl, oscar } => {
            let services = fdl::load(fdl)?;
            let r = resolver(state_dir, oscar);
            let mut clusters = Vec::new();
            for s in &services {
                clusters.push(r(&s.cluster).with_context(|| {
                    format!(
                        "{}:{}: service `{}` names cluster `{}`",
                        fdl.display(),
                        s.line,
                        s.name,
                        s.cluster
                    )
                })?);
            }
            let w = functions::apply(&services, &clusters).await?;
            printer.written("applied", &w);
        }
        FnCmd::Federate {
            service,
            members,
            delegation,
            topology,
            oscar,
        } => {
            functions::check_name(service)?;
            let r = resolver(state_dir, oscar);
            let members = members
                .iter()
                .map(|m| r(m.trim()))
                .collect::<Result<Vec<_>>>()?;
            let w = functions::federate(&members, service, delegation, topology).await?;
            printer.written("federated", &w);
        }
    }
    Ok(())
}
