//! The inventory's checks: each host entry (name, address and port, SSH user, key and
//! bastion, labels, taints, pinned host key, k3s addresses, the `probed:` block), the
//! inventory's `defaults:` filling what an entry leaves out. The result is the host
//! table the recipe's checks pick servers and agents from, plus each host's role hint.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_saphyr::Spanned;

use super::common::{
    HostTable, check_taint, checked_bastion, checked_labels, checked_user, is_dns_label,
};
use crate::recipe::diag::{Pos, Sink, pos};
use crate::recipe::model::Host;
use crate::recipe::paths::resolve_path;
use crate::recipe::raw::{self, RoleHint};
use crate::recipe::validators::{self, is_address};

/// Check every host entry; the host table and the role hints (`role:`) found.
pub fn check_inventory(
    inv: &raw::InventoryFile,
    path: &Path,
    sink: &mut Sink<'_>,
) -> (HostTable, BTreeMap<String, RoleHint>) {
    let defaults = inv.defaults.as_ref();
    let mut hosts: HostTable = BTreeMap::new();
    let mut roles = BTreeMap::new();
    let mut addresses: BTreeMap<(String, u16), (String, Pos)> = BTreeMap::new();
    let mut missing_keys: BTreeSet<PathBuf> = BTreeSet::new();
    if inv.hosts.value.is_empty() {
        sink.error(pos(&inv.hosts), "the inventory lists no hosts");
    }
    for entry in &inv.hosts.value {
        let h = entry;
        let name = h.name.value.trim();
        if !is_dns_label(name) {
            sink.error(pos(&h.name), format!("invalid host name `{name}`"))
                .help("use lowercase letters, digits and `-` (at most 63), as for a Kubernetes node name");
        }
        if let Some((_, first)) = hosts.get(name) {
            sink.error(pos(&h.name), format!("duplicate host name `{name}`"))
                .help(format!("first defined at line {}", first.line));
            continue;
        }
        let address = h.address.value.trim().to_string();
        if !is_address(&address) {
            sink.error(
                pos(&h.address),
                format!("invalid address `{address}` for host `{name}`"),
            )
            .help("give an IPv4/IPv6 address or a DNS name");
        }
        let port = match h.port.as_ref().or(defaults.and_then(|d| d.port.as_ref())) {
            Some(p) if p.value == 0 => {
                sink.error(pos(p), "port 0 is not a valid SSH port");
                22
            }
            Some(p) => p.value,
            None => 22,
        };
        if let Some((other, _)) = addresses.get(&(address.clone(), port)) {
            sink.error(
                pos(&h.address),
                format!(
                    "host `{name}` has the same address and port as `{other}` ({address}:{port})"
                ),
            );
        } else {
            addresses.insert((address.clone(), port), (name.to_string(), pos(&h.name)));
        }
        let user = h
            .user
            .as_ref()
            .or(defaults.and_then(|d| d.user.as_ref()))
            .map(|u| checked_user(sink, u));
        let key = h
            .key
            .as_ref()
            .or(defaults.and_then(|d| d.key.as_ref()))
            .map(|k| {
                let p = resolve_path(path, &k.value, sink.home().as_deref());
                // A warning, not an error: the inventory may be planned on another machine.
                if !sink.files.exists(&p) && missing_keys.insert(p.clone()) {
                    sink.warning(
                        pos(k),
                        format!("SSH key file {} does not exist here", p.display()),
                    )
                    .help("key paths are relative to the inventory file; `~/` is expanded");
                }
                p
            });
        let bastion = h
            .bastion
            .as_ref()
            .or(defaults.and_then(|d| d.bastion.as_ref()))
            .map(|b| checked_bastion(sink, b));
        let labels = h.labels.as_ref().map(|l| checked_labels(sink, &l.value));
        for t in &h.taints {
            check_taint(sink, t);
        }
        let host_key = h.host_key.as_ref().and_then(|k| {
            validators::normalize_host_key(&k.value)
                .map_err(|why| {
                    sink.error(pos(k), format!("invalid host_key: {why}"))
                        .help("give the host's public key as in known_hosts: `ssh-ed25519 AAAA...` (`ssh-keyscan HOST` prints it)");
                })
                .ok()
        });
        if let Some(r) = &h.role {
            roles.insert(name.to_string(), r.value);
        }
        hosts.insert(
            name.to_string(),
            (
                Host {
                    name: name.to_string(),
                    address,
                    port,
                    user,
                    key,
                    bastion,
                    labels: labels.unwrap_or_default(),
                    taints: h.taints.iter().map(|t| t.value.clone()).collect(),
                    node_ip: checked_ip(sink, h.node_ip.as_ref(), "node_ip", name),
                    external_ip: checked_ip(sink, h.external_ip.as_ref(), "external_ip", name),
                    host_key,
                    cloud: None,
                    probed: checked_probed(sink, h).map(Box::new),
                },
                pos(&h.name),
            ),
        );
    }
    (hosts, roles)
}

/// The `probed:` block of a host entry, as written by `inventory probe`.
fn checked_probed(sink: &mut Sink<'_>, h: &raw::HostEntry) -> Option<crate::recipe::device::Facts> {
    let p = h.probed.as_ref()?;
    match serde_json::from_value(p.value.clone()) {
        Ok(f) => Some(f),
        Err(e) => {
            sink.error(pos(p), format!("invalid `probed` block: {e}"))
                .help("it is written by `continuum inventory probe`; delete it and probe again");
            None
        }
    }
}

/// A per-host address for k3s (`node_ip`, `external_ip`): an IP address, not a name.
fn checked_ip(
    sink: &mut Sink<'_>,
    v: Option<&Spanned<String>>,
    field: &str,
    host: &str,
) -> Option<String> {
    let v = v?;
    match v.value.trim().parse::<IpAddr>() {
        Ok(ip) => Some(ip.to_string()),
        Err(_) => {
            sink.error(
                pos(v),
                format!("invalid {field} `{}` for host `{host}`", v.value.trim()),
            )
            .help("give one IPv4 or IPv6 address (k3s takes no DNS name here)");
            None
        }
    }
}
