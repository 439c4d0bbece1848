//! CLI handlers of `continuum endpoints ...` and `continuum fn ...` (docs/oscar.md): parse
//! into values, resolve clusters (every one before the first request), call
//! `oscar::functions`, hand results to the output layer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};

use super::output::Printer;
use crate::files::StateError;
use crate::files::endpoints;
use crate::files::oscar_cli;
use crate::ops::Settings;
use crate::oscar::client::Oscar;
use crate::oscar::{fdl, functions, service};
use crate::state::Secret;
use crate::state::State;

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
    /// Redeploy SERVICE on another cluster (POST or PUT, then verify). Other
    /// clusters' passwords in the definition are not copied; secrets must be given
    /// again with --secrets.
    Copy(CopyArgs),
    /// Copy, then delete at the source once the target is verified.
    Move(CopyArgs),
    /// Apply an oscar-cli FDL file (script paths are inlined).
    Apply {
        fdl: PathBuf,
        #[command(flatten)]
        oscar: OscarCliArg,
    },
    /// Federate SERVICE over clusters: from OSCAR 4.1 the `federation` block goes to
    /// the first member, which pushes the others' copies (needs `refresh_token` in
    /// --secrets); before 4.1 every member gets `replicas` + `delegation`.
    Federate {
        service: String,
        /// Member clusters, comma-separated; the first coordinates. The definition
        /// comes from the first that has the service.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// static, random, load-based or topsis.
        #[arg(long, default_value = "load-based")]
        delegation: String,
        /// none, star or mesh (4.1+).
        #[arg(long, default_value = "mesh")]
        topology: String,
        /// YAML mapping NAME: VALUE of the service's secrets (and `refresh_token`).
        #[arg(long, value_name = "FILE")]
        secrets: Option<PathBuf>,
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
    /// YAML mapping NAME: VALUE of the service's secrets (OSCAR returns them blank).
    #[arg(long, value_name = "FILE")]
    pub secrets: Option<PathBuf>,
    #[command(flatten)]
    pub oscar: OscarCliArg,
}

/// Secret values from a YAML (or JSON) mapping `NAME: VALUE`; never from argv.
fn read_secrets(path: Option<&Path>, printer: &Printer) -> Result<BTreeMap<String, Secret>> {
    let Some(path) = path else {
        return Ok(BTreeMap::new());
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read secrets file {}", path.display()))?;
    let doc: serde_json::Value = serde_saphyr::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "secrets file {} is not valid YAML: {}",
            path.display(),
            e.without_snippet()
        )
    })?;
    let Some(map) = doc.as_object() else {
        bail!(
            "secrets file {} must be a mapping NAME: VALUE",
            path.display()
        );
    };
    let mut out = BTreeMap::new();
    for (k, v) in map {
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => bail!("secrets file {}: `{k}` must be a string", path.display()),
        };
        out.insert(k.clone(), Secret::new(value));
    }
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            printer.warning(&format!(
                "secrets file {} is readable by others (mode {:o}): chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            ));
        }
    }
    Ok(out)
}

fn print_written(printer: &Printer, verb: &str, w: &[functions::Written]) {
    for n in w.iter().flat_map(|w| &w.notes) {
        printer.warning(n);
    }
    printer.written(verb, w);
}

/// The state of `env` wherever `settings` put it (`--state`, else the directory).
fn load_state(settings: &Settings, env: &str) -> Result<Option<State>, StateError> {
    crate::statestore::Store::open(&settings.state_dir, settings.remote.as_ref(), env)?.load()
}

fn resolver(settings: &Settings, arg: &OscarCliArg) -> impl Fn(&str) -> Result<Oscar> {
    let cli = arg
        .oscar_cli_config
        .clone()
        .unwrap_or_else(oscar_cli::default_path);
    let settings = settings.clone();
    let timeout = Duration::from_secs(arg.request_timeout.max(1));
    move |name: &str| {
        let t = endpoints::resolve_with(&settings.state_dir, &cli, name, &|env| {
            load_state(&settings, env)
        })?;
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

pub async fn endpoints_cmd(
    settings: &Settings,
    printer: &Printer,
    cmd: &EndpointsCmd,
) -> Result<()> {
    let state_dir = settings.state_dir.as_path();
    match cmd {
        EndpointsCmd::List => printer.endpoints(&endpoints::list(state_dir)?),
        EndpointsCmd::Show { name, reveal } => {
            let Some(e) = endpoints::get(state_dir, name)? else {
                bail!("no endpoint `{name}` is registered (see `continuum endpoints list`)");
            };
            let creds = if *reveal {
                let st = load_state(settings, &e.env)?;
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

pub async fn fn_cmd(settings: &Settings, printer: &Printer, cmd: &FnCmd) -> Result<()> {
    match cmd {
        FnCmd::List { cluster, oscar } => {
            let c = resolver(settings, oscar)(cluster)?;
            // Passwords, tokens and secret values are never printed.
            let list: Vec<serde_json::Value> = c
                .list_services()
                .await?
                .iter()
                .map(service::redacted)
                .collect();
            printer.services(cluster, &list);
        }
        FnCmd::Copy(a) | FnCmd::Move(a) => {
            functions::check_name(&a.service)?;
            let r = resolver(settings, &a.oscar);
            let (from, to) = (r(&a.from)?, r(&a.to)?);
            let secrets = read_secrets(a.secrets.as_deref(), printer)?;
            if matches!(cmd, FnCmd::Move(_)) {
                let w = functions::move_service(&from, &to, &a.service, &secrets).await?;
                print_written(printer, "moved", &[w]);
            } else {
                let w = functions::copy(&from, &to, &a.service, &secrets).await?;
                print_written(printer, "copied", &[w]);
            }
        }
        FnCmd::Apply { fdl, oscar } => {
            let services = fdl::load(fdl)?;
            let r = resolver(settings, oscar);
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
            print_written(printer, "applied", &w);
        }
        FnCmd::Federate {
            service,
            members,
            delegation,
            topology,
            secrets,
            oscar,
        } => {
            functions::check_name(service)?;
            let r = resolver(settings, oscar);
            let members = members
                .iter()
                .map(|m| r(m.trim()))
                .collect::<Result<Vec<_>>>()?;
            let secrets = read_secrets(secrets.as_deref(), printer)?;
            let opts = functions::FederateOptions {
                delegation,
                topology,
                secrets: &secrets,
            };
            let w = functions::federate(&members, service, &opts).await?;
            print_written(printer, "federated", &w);
        }
    }
    Ok(())
}
