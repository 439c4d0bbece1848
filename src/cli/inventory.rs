//! The inventory commands: `continuum inventory add|remove|list|import|probe`.
//! Parses, calls `inventory`/`ops`, hands text (tables from `output::tables`) or JSON
//! to the output layer (`Printer::text`); no logic about hosts here.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Result, bail};
use clap::{Args, Subcommand};

use super::output::{Format, Printer, tables};
use super::{Cli, ConnArgs};
use crate::files::inventory::{self, edit::NewHost};
use crate::ops;

#[derive(Debug, Subcommand)]
pub enum InventoryCmd {
    /// Add a host (comments and order of the file are kept).
    Add(AddArgs),
    /// Remove a host from the inventory (a later `up` shrinks the cluster).
    Remove { inventory: PathBuf, name: String },
    /// List the hosts, with what the last probe found.
    List { inventory: PathBuf },
    /// Import an Ansible inventory (YAML or INI, k3s-ansible groups server/agent).
    Import {
        /// The Ansible inventory.
        source: PathBuf,
        /// The continuum inventory to create or extend.
        inventory: PathBuf,
    },
    /// Probe hosts over SSH (arch, OS, cgroups, Pi/Jetson model, toolkit); store the
    /// result in the inventory and flag problems.
    Probe {
        inventory: PathBuf,
        /// Only these hosts (default: all).
        #[arg(long = "host", value_name = "NAME")]
        hosts: Vec<String>,
        #[command(flatten)]
        conn: ConnArgs,
    },
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The inventory file (created when missing).
    pub inventory: PathBuf,
    /// Host (node) name: a lowercase DNS label.
    pub name: String,
    /// Address (IP or DNS name) SSH connects to.
    #[arg(long = "host", value_name = "ADDRESS")]
    pub address: String,
    /// SSH port (default: the inventory's default, else 22).
    #[arg(long)]
    pub port: Option<u16>,
    /// SSH user (default: the inventory's default).
    #[arg(long)]
    pub user: Option<String>,
    /// SSH private key file.
    #[arg(long)]
    pub key: Option<String>,
    /// ProxyJump host, `[user@]host[:port]`.
    #[arg(long)]
    pub bastion: Option<String>,
    /// Role hint used when the recipe lists no servers.
    #[arg(long, value_parser = ["server", "agent"])]
    pub role: Option<String>,
    /// Node label `KEY=VALUE` (repeatable).
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// First contact: read the login password from stdin, connect once, install the
    /// public key of `--key` (or the inventory's default key), pin the host key. The
    /// password is never stored.
    #[arg(long)]
    pub password_stdin: bool,
    /// Seconds to wait for the first-contact connection.
    #[arg(long, default_value_t = 10, value_name = "SECS")]
    pub connect_timeout: u64,
}

/// One line (or block) of text to stdout, newline-terminated.
fn say(printer: &Printer, s: &str) {
    printer.text(&format!("{}\n", s.trim_end_matches('\n')));
}

fn json_or(
    printer: &Printer,
    v: &impl serde::Serialize,
    text: impl FnOnce() -> String,
) -> Result<()> {
    if printer.format() == Format::Json {
        say(printer, &serde_json::to_string(v)?);
    } else {
        say(printer, &text());
    }
    Ok(())
}

/// Run an inventory command.
pub async fn run(cli: &Cli, printer: &Printer, cmd: &InventoryCmd) -> Result<()> {
    match cmd {
        InventoryCmd::Add(a) => {
            let mut labels = BTreeMap::new();
            for l in &a.labels {
                let Some((k, v)) = l.split_once('=') else {
                    bail!("--label {l}: expected KEY=VALUE");
                };
                labels.insert(k.to_string(), v.to_string());
            }
            let mut host = NewHost {
                name: a.name.clone(),
                address: a.address.clone(),
                port: a.port,
                user: a.user.clone(),
                key: a.key.clone(),
                bastion: a.bastion.clone(),
                role: a.role.clone(),
                labels,
                host_key: None,
            };
            if a.password_stdin {
                // Refuse a duplicate before the host is touched.
                if inventory::edit::names(&inventory::read(&a.inventory).unwrap_or_default())
                    .unwrap_or_default()
                    .contains(&a.name)
                {
                    return Err(inventory::InventoryError::Exists(a.name.clone()).into());
                }
                let c = first_contact(a).await?;
                say(
                    printer,
                    &format!(
                        "first contact with {}: host key {} pinned; public key {}",
                        a.address,
                        c.fingerprint,
                        if c.installed {
                            "installed"
                        } else {
                            "was already installed"
                        }
                    ),
                );
                host.host_key = Some(c.host_key);
            }
            inventory::add(&a.inventory, &host)?;
            say(
                printer,
                &format!("added `{}` to {}", a.name, a.inventory.display()),
            );
        }
        InventoryCmd::Remove {
            inventory: inv,
            name,
        } => {
            inventory::remove(inv, name)?;
            say(
                printer,
                &format!(
                    "removed `{name}` from {} (the next `up` drains and uninstalls it)",
                    inv.display()
                ),
            );
        }
        InventoryCmd::List { inventory: inv } => {
            let rows = inventory::list(inv)?;
            json_or(printer, &rows, || tables::inventory(&rows))?;
        }
        InventoryCmd::Import {
            source,
            inventory: inv,
        } => {
            let (added, skipped) = inventory::import(source, inv)?;
            let mut msg = format!("imported {} host(s) into {}", added.len(), inv.display());
            if !skipped.is_empty() {
                msg.push_str(&format!(" (already there, kept: {})", skipped.join(", ")));
            }
            say(printer, &msg);
        }
        InventoryCmd::Probe {
            inventory: inv,
            hosts,
            conn,
        } => {
            let rows =
                ops::inventory::probe_inventory(inv, hosts, &cli.settings(Some(conn))?).await?;
            json_or(printer, &rows, || tables::probe(&rows))?;
            if rows.iter().any(|r| r.error.is_some()) {
                bail!("some hosts could not be probed (see the table)");
            }
        }
    }
    Ok(())
}

/// Read the password from stdin and make first contact (blocking ssh2 off the runtime).
async fn first_contact(a: &AddArgs) -> Result<crate::ssh::firstcontact::Contacted> {
    if a.bastion.is_some() {
        bail!(
            "--password-stdin cannot go through a bastion; make first contact from a host that reaches {}",
            a.address
        );
    }
    let (d_user, d_port, d_key) = inventory::defaults(&a.inventory);
    let Some(user) = a.user.clone().or(d_user) else {
        bail!("--password-stdin needs --user (or `defaults: {{user: ...}}` in the inventory)");
    };
    let key = match &a.key {
        Some(k) => crate::recipe::paths::resolve_path(&a.inventory, k, dirs::home_dir().as_deref()),
        None => d_key.unwrap_or_else(|| {
            crate::recipe::paths::expand_home("~/.ssh/id_ed25519", dirs::home_dir().as_deref())
        }),
    };
    let mut password = String::new();
    std::io::stdin().read_line(&mut password)?;
    let password = password.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("--password-stdin: no password on stdin");
    }
    let target = crate::ssh::firstcontact::Target {
        address: a.address.clone(),
        port: a.port.or(d_port).unwrap_or(22),
        user,
        key,
        timeout: std::time::Duration::from_secs(a.connect_timeout.max(1)),
    };
    let c = tokio::task::spawn_blocking(move || {
        crate::ssh::firstcontact::first_contact(&target, &password)
    })
    .await??;
    Ok(c)
}
