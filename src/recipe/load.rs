//! Loading and validating recipes and inventories.
//!
//! Invariant: `load_recipe` either returns a fully validated `Environment` (plus
//! warnings) or every problem it found, each with file:line:col. It never panics on
//! input and has no side effects besides reading the two files (and checking that
//! referenced local paths exist).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::Files;
use super::diag::{Diagnostic, Pos, Severity, Sink, did_you_mean};
use super::model::{Cluster, Environment, Host, Images, Install, KubeconfigTarget, Share, Upgrade};
use super::raw::{self, InstallSource, RoleHint};
use super::validators::is_address;

/// Default online install script (docs/k3s.md, "Install script").
pub const DEFAULT_SCRIPT_URL: &str = "https://get.k3s.io";
const DEFAULT_READINESS_TIMEOUT: u64 = 300;
const FLANNEL_BACKENDS: &[&str] = &["vxlan", "host-gw", "wireguard-native", "none"];
const DISABLE_ITEMS: &[&str] = &[
    "traefik",
    "servicelb",
    "local-storage",
    "metrics-server",
    "coredns",
];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Why a recipe could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render(.0))]
    Invalid(Vec<Diagnostic>),
}

fn render(diags: &[Diagnostic]) -> String {
    let errors = diags
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .count();
    let mut out = String::new();
    for d in diags.iter().filter(|d| d.severity == Severity::Error) {
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out.push_str(&format!("{errors} error(s) in the recipe or inventory"));
    out
}

/// A validated environment and the warnings found on the way.
#[derive(Debug)]
pub struct Loaded {
    pub env: Environment,
    pub warnings: Vec<Diagnostic>,
}

pub(super) fn pos<T>(s: &Spanned<T>) -> Pos {
    Pos::of(&s.referenced)
}

/// A count (`3`) or a percentage (`"25%"`, 0-100) of nodes; `None` after an error.
fn share(sink: &mut Sink, v: &Spanned<raw::CountOrPercent>, field: &str) -> Option<Share> {
    match &v.value {
        raw::CountOrPercent::Count(n) => {
            Some(Share::Count(usize::try_from(*n).unwrap_or(usize::MAX)))
        }
        raw::CountOrPercent::Text(t) => {
            let p = t
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u8>().ok())
                .filter(|p| *p <= 100);
            if p.is_none() {
                sink.error(
                    pos(v),
                    format!("invalid {field} `{t}`: expected a number of agents or a percentage"),
                )
                .help(format!(
                    "for example `{field}: 1` or `{field}: \"25%\"` (0% to 100%)"
                ));
            }
            p.map(Share::Percent)
        }
    }
}

fn read(files: &dyn Files, path: &Path) -> Result<String, LoadError> {
    files.read(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Parse YAML text into `T`, turning a serde error into a positioned diagnostic.
fn parse<T: serde::de::DeserializeOwned>(
    files: &dyn Files,
    file: &Path,
    text: &str,
) -> Result<T, LoadError> {
    serde_saphyr::from_str::<T>(text).map_err(|e| {
        let p = e
            .location()
            .map(|l| Pos::of(&l))
            .unwrap_or(Pos { line: 1, col: 1 });
        let mut sink = Sink::new(file, files);
        let message = e.without_snippet().to_string();
        let message = message
            .lines()
            .next()
            .unwrap_or("invalid YAML")
            .trim()
            .trim_start_matches("error: ")
            .to_string();
        // The position is already in the `file:line:col:` prefix; do not repeat it.
        let suffix = format!(" at line {}, column {}", p.line, p.col);
        let message = message
            .strip_suffix(&suffix)
            .map_or(message.clone(), str::to_string);
        let d = sink.error(p, message);
        if d.message.contains("unknown field") {
            d.help("remove the key or check its spelling against the documented schema");
        }
        LoadError::Invalid(sink.items)
    })
}

/// Resolve `p` relative to the directory of `base` (a file), expanding `~/`.
pub fn resolve_path(base: &Path, p: &str, home: Option<&Path>) -> PathBuf {
    let expanded = expand_home(p, home);
    let joined = if expanded.is_absolute() {
        expanded
    } else {
        base.parent().unwrap_or(Path::new(".")).join(expanded)
    };
    normalize(&joined)
}

/// Remove `.` and `name/..` components lexically (no symlink resolution).
fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if matches!(out.last(), Some(Component::Normal(_))) => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}

/// Expand a leading `~/` to the home directory.
pub fn expand_home(p: &str, home: Option<&Path>) -> PathBuf {
    match (p.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(p),
    }
}

/// Load a recipe and the inventory it names (and its AWS site's hosts).
pub fn load_recipe(path: &Path, files: &dyn Files) -> Result<Loaded, LoadError> {
    let text = read(files, path)?;
    let recipe: raw::RecipeFile = parse(files, path, &text)?;
    let mut all = Vec::new();
    let (mut hosts, mut roles, inv_path) = match &recipe.inventory {
        Some(inv) => {
            let inv_path = resolve_path(path, &inv.value, files.home().as_deref());
            let inv_text = match files.read(&inv_path) {
                Ok(t) => t,
                Err(e) => {
                    let mut sink = Sink::new(path, files);
                    sink.error(
                        pos(inv),
                        format!("cannot read inventory {}: {e}", inv_path.display()),
                    )
                    .help("the inventory path is relative to the recipe file");
                    return Err(LoadError::Invalid(sink.items));
                }
            };
            let inventory: raw::InventoryFile = parse(files, &inv_path, &inv_text)?;
            let mut inv_sink = Sink::new(&inv_path, files);
            let (hosts, roles) = check_inventory(&inventory, &inv_path, &mut inv_sink);
            all.extend(inv_sink.items);
            (hosts, roles, inv_path)
        }
        None => (HostTable::new(), BTreeMap::new(), path.to_path_buf()),
    };
    let mut sink = Sink::new(path, files);
    let mut groups = super::aws::Groups::new();
    let site = recipe.aws.as_ref().and_then(|a| {
        super::aws::check_site(a, path, &mut sink, &mut hosts, &mut roles, &mut groups)
    });
    if recipe.inventory.is_none() && recipe.aws.is_none() {
        sink.error(pos(&recipe.name), "the recipe has no hosts")
            .help("name an inventory (`inventory: ../inventories/farm.yaml`) or declare an `aws:` site");
    }
    let env = check_recipe(&recipe, path, &inv_path, hosts, &roles, &groups, &mut sink);

    all.extend(sink.items);
    if all.iter().any(|d| d.severity == Severity::Error) {
        return Err(LoadError::Invalid(all));
    }
    match env {
        Some(mut env) => {
            env.aws = site;
            Ok(Loaded { env, warnings: all })
        }
        None => Err(LoadError::Invalid(all)),
    }
}

/// Load and validate an inventory on its own (for `inventory` commands).
pub fn load_inventory(
    path: &Path,
    files: &dyn Files,
) -> Result<(BTreeMap<String, Host>, Vec<Diagnostic>), LoadError> {
    let text = read(files, path)?;
    let inventory: raw::InventoryFile = parse(files, path, &text)?;
    let mut sink = Sink::new(path, files);
    let (hosts, _) = check_inventory(&inventory, path, &mut sink);
    if sink.has_errors() {
        return Err(LoadError::Invalid(sink.items));
    }
    Ok((
        hosts.into_iter().map(|(k, (h, _))| (k, h)).collect(),
        sink.items,
    ))
}

pub(super) type HostTable = BTreeMap<String, (Host, Pos)>;

/// The `probed:` block of a host entry (issue 5), as written by `inventory probe`.
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

/// Role hints of an inventory's hosts (for `inventory list`).
pub fn inventory_roles(
    path: &Path,
    files: &dyn Files,
) -> Result<BTreeMap<String, String>, LoadError> {
    let text = read(files, path)?;
    let inventory: raw::InventoryFile = parse(files, path, &text)?;
    Ok(inventory
        .hosts
        .value
        .iter()
        .filter_map(|h| {
            h.role.as_ref().map(|r| {
                let role = match r.value {
                    RoleHint::Server => "server",
                    RoleHint::Agent => "agent",
                };
                (h.name.value.trim().to_string(), role.to_string())
            })
        })
        .collect())
}

fn check_inventory(
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
            super::validators::normalize_host_key(&k.value)
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

#[allow(clippy::too_many_lines)]
fn check_recipe(
    r: &raw::RecipeFile,
    path: &Path,
    inv_path: &Path,
    hosts: HostTable,
    roles: &BTreeMap<String, RoleHint>,
    groups: &super::aws::Groups,
    sink: &mut Sink<'_>,
) -> Option<Environment> {
    let name = r.name.value.trim();
    if !is_dns_label(name) {
        sink.error(pos(&r.name), format!("invalid environment name `{name}`"))
            .help("use lowercase letters, digits and `-` (at most 63); it names the state file and kube context");
    }
    let k = &r.k3s.value;

    // Version pin: vMAJOR.MINOR.PATCH(-rcN)?+k3sN
    let version = k.version.value.trim().to_string();
    match parse_k3s_version(&version) {
        None => {
            sink.error(pos(&k.version), format!("invalid k3s version `{version}`"))
                .help("pin a release such as `v1.31.4+k3s1` (see the k3s releases page)");
        }
        Some((1, minor)) if minor < 28 => {
            sink.warning(
                pos(&k.version),
                format!("k3s {version} is out of upstream support"),
            );
        }
        Some((major, _)) if major != 1 => {
            sink.error(
                pos(&k.version),
                format!("unsupported k3s major version in `{version}`"),
            );
        }
        Some(_) => {}
    }

    // Install source.
    let install = match &k.install {
        None => Install::Online {
            script_url: DEFAULT_SCRIPT_URL.to_string(),
        },
        Some(i) => check_install(&i.value, path, sink),
    };

    // Servers and agents.
    let host_names: Vec<&str> = hosts
        .keys()
        .map(String::as_str)
        .chain(groups.keys().map(String::as_str))
        .collect();
    let mut seen: BTreeMap<String, Pos> = BTreeMap::new();
    let mut pick = |list: &Spanned<Vec<Spanned<String>>>,
                    what: &str,
                    sink: &mut Sink<'_>|
     -> Vec<String> {
        let mut out = Vec::new();
        let mut names: Vec<(&str, Pos)> = Vec::new();
        for n in &list.value {
            match groups.get(n.value.trim()) {
                // An instance group stands for all its hosts.
                Some(members) => names.extend(members.iter().map(|m| (m.as_str(), pos(n)))),
                None => names.push((n.value.trim(), pos(n))),
            }
        }
        for (name, at) in names {
            if !hosts.contains_key(name) {
                let d = sink.error(
                        at,
                        if groups.is_empty() {
                            format!(
                                "{what} `{name}` is not a host of the inventory {}",
                                inv_path.display()
                            )
                        } else {
                            format!(
                                "{what} `{name}` is neither an inventory host nor an AWS instance group or instance"
                            )
                        },
                    );
                if let Some(s) = did_you_mean(name, host_names.iter().copied()) {
                    d.help(format!("did you mean `{s}`?"));
                }
                continue;
            }
            if let Some(first) = seen.get(name) {
                sink.error(at, format!("host `{name}` is listed twice"))
                    .help(format!("first listed at line {}", first.line));
                continue;
            }
            seen.insert(name.to_string(), at);
            out.push(name.to_string());
        }
        out
    };
    let servers = match &k.servers {
        Some(list) => pick(list, "server", sink),
        None => roles
            .iter()
            .filter(|(_, r)| **r == RoleHint::Server)
            .map(|(n, _)| n.clone())
            .collect(),
    };
    let agents = match &k.agents {
        Some(list) => pick(list, "agent", sink),
        None => hosts
            .keys()
            .filter(|h| !servers.contains(h))
            .cloned()
            .collect(),
    };
    if servers.is_empty() && !sink.has_errors() {
        let at = k.servers.as_ref().map_or(pos(&r.k3s), pos);
        sink.error(at, "the cluster has no server").help(
            "list at least one inventory host under `k3s.servers`, or give a host `role: server`",
        );
    }

    // HA rules: embedded etcd needs an odd number (>= 3) of servers.
    let ha = match &k.ha {
        Some(h) => {
            if h.value && servers.len() < 3 {
                sink.error(
                    pos(h),
                    format!(
                        "HA needs at least 3 servers for etcd quorum; {} given",
                        servers.len()
                    ),
                )
                .help("list 3 (or 5) servers, or set `ha: false` with a single server");
            } else if h.value && servers.len() % 2 == 0 {
                sink.warning(
                    pos(h),
                    format!(
                        "{} servers: an even number adds no fault tolerance to etcd",
                        servers.len()
                    ),
                );
            } else if !h.value && servers.len() > 1 {
                sink.error(pos(h), "several servers need HA (embedded etcd)")
                    .help("set `ha: true` with an odd number of servers, or keep one server");
            }
            h.value
        }
        None => {
            if servers.len() == 2 {
                let at = k.servers.as_ref().map_or(pos(&r.k3s), pos);
                sink.error(
                    at,
                    "2 servers cannot keep etcd quorum (losing either stops the cluster)",
                )
                .help("use 1 server, or 3 with `ha: true`");
            } else if servers.len() > 2 && servers.len() % 2 == 0 {
                let at = k.servers.as_ref().map_or(pos(&r.k3s), pos);
                sink.warning(
                    at,
                    format!(
                        "{} servers: an even number adds no fault tolerance to etcd",
                        servers.len()
                    ),
                );
            }
            servers.len() >= 3
        }
    };

    let flannel_backend = match &k.flannel_backend {
        None => "vxlan".to_string(),
        Some(f) => {
            let v = f.value.trim();
            if !FLANNEL_BACKENDS.contains(&v) {
                let d = sink.error(pos(f), format!("unknown flannel backend `{v}`"));
                match v {
                    "wireguard" | "ipsec" => {
                        d.help("removed in k3s 1.26; use `wireguard-native`");
                    }
                    _ => {
                        d.help(format!("expected one of: {}", FLANNEL_BACKENDS.join(", ")));
                    }
                }
            }
            v.to_string()
        }
    };
    let mut disable = Vec::new();
    for d in &k.disable {
        let v = d.value.trim();
        if DISABLE_ITEMS.contains(&v) {
            if disable.iter().any(|x| x == v) {
                sink.warning(pos(d), format!("`{v}` is disabled twice"));
            } else {
                disable.push(v.to_string());
            }
        } else {
            let diag = sink.error(
                pos(d),
                format!("k3s has no packaged component `{v}` to disable"),
            );
            match did_you_mean(v, DISABLE_ITEMS.iter().copied()) {
                Some(s) => diag.help(format!("did you mean `{s}`?")),
                None => diag.help(format!("expected one of: {}", DISABLE_ITEMS.join(", "))),
            };
        }
    }
    let cluster_cidr = k.cluster_cidr.as_ref().and_then(|c| check_cidr(sink, c));
    let service_cidr = k.service_cidr.as_ref().and_then(|c| check_cidr(sink, c));
    if let (Some(a), Some(b), Some(sc)) = (&cluster_cidr, &service_cidr, &k.service_cidr)
        && cidrs_overlap(a, b)
    {
        sink.error(
            pos(sc),
            format!("service CIDR {b} overlaps the cluster CIDR {a}"),
        );
    }
    let mut tls_san = Vec::new();
    for s in &k.tls_san {
        if !is_address(s.value.trim()) {
            sink.error(pos(s), format!("invalid tls_san entry `{}`", s.value));
        }
        tls_san.push(s.value.trim().to_string());
    }
    let node_labels = k
        .node_labels
        .as_ref()
        .map(|l| checked_labels(sink, &l.value))
        .unwrap_or_default();
    for t in &k.node_taints {
        check_taint(sink, t);
    }
    let extra_config = k
        .extra_config
        .as_ref()
        .map(|e| super::extra::check(&e.value, sink))
        .unwrap_or_default();
    let readiness_timeout = match &k.readiness_timeout {
        Some(t) if t.value == 0 => {
            sink.error(pos(t), "readiness_timeout must be at least 1 second");
            DEFAULT_READINESS_TIMEOUT
        }
        Some(t) => t.value,
        None => DEFAULT_READINESS_TIMEOUT,
    };

    let allow_unavailable = k
        .allow_unavailable
        .as_ref()
        .and_then(|a| share(sink, a, "allow_unavailable"));
    let upgrade = {
        let u = k.upgrade.as_ref();
        let mut up = Upgrade::default();
        if let Some(b) = u.and_then(|u| u.agent_batch.as_ref()) {
            match share(sink, b, "agent_batch") {
                Some(Share::Count(0) | Share::Percent(0)) => {
                    sink.error(
                        pos(b),
                        "agent_batch must upgrade at least one agent at a time",
                    );
                }
                Some(s) => up.agent_batch = s,
                None => {}
            }
        }
        if let Some(d) = u.and_then(|u| u.drain.as_ref()) {
            up.drain = d.value;
        }
        up
    };

    let kubeconfig = KubeconfigTarget {
        path: r
            .kubeconfig
            .as_ref()
            .and_then(|k| k.path.as_ref())
            .map(|p| resolve_path(path, &p.value, sink.home().as_deref())),
        context: match r.kubeconfig.as_ref().and_then(|k| k.context.as_ref()) {
            Some(c) if c.value.trim().is_empty() => {
                sink.error(pos(c), "the kubeconfig context name is empty");
                name.to_string()
            }
            Some(c) => c.value.trim().to_string(),
            None => name.to_string(),
        },
    };

    let api_endpoint = match &k.api_endpoint {
        Some(a) => {
            if !is_address(a.value.trim()) {
                sink.error(pos(a), format!("invalid api_endpoint `{}`", a.value))
                    .help(
                        "give the host name or address of the API server, without scheme or port",
                    );
            }
            a.value.trim().to_string()
        }
        None => servers
            .first()
            .and_then(|s| hosts.get(s))
            .map(|(h, _)| h.address.clone())
            .unwrap_or_default(),
    };

    // The OSCAR serverless layer (issue 4); OSCAR's ingress is nginx-class, so the
    // nginx mode needs k3s's bundled traefik off (docs/oscar.md, "Ingress").
    let mut serverless = r.serverless.as_ref().map(|s| {
        super::check_serverless::check(&s.value, name, &api_endpoint, &version, path, sink)
    });
    if let Some(s) = serverless.as_mut() {
        s.servicelb = !disable.iter().any(|d| d == "servicelb");
        // Traefik's Gateway is reached through its LoadBalancer Service, which only
        // servicelb gives host ports (nginx mode falls back to host ports itself).
        if !s.servicelb
            && s.ingress == crate::recipe::serverless::IngressMode::Gateway
            && let Some(raw) = r.serverless.as_ref()
        {
            let at = raw.value.ingress.as_ref().map_or_else(|| pos(raw), pos);
            sink.error(at, "`ingress: gateway` cannot be reached with servicelb disabled")
                .help("Traefik's Gateway listens behind a LoadBalancer Service, and without k3s's servicelb nothing gives it host ports: keep servicelb, or use `ingress: nginx` (docs/oscar.md, \"Gateway\")");
        }
    }
    if let Some(s) = &serverless
        && s.ingress == crate::recipe::serverless::IngressMode::Nginx
        && !disable.iter().any(|d| d == "traefik")
    {
        disable.push("traefik".to_string());
    }

    if sink.has_errors() {
        return None;
    }
    let used: BTreeSet<&String> = servers.iter().chain(agents.iter()).collect();
    let hosts = hosts
        .into_iter()
        .filter(|(n, _)| used.contains(n))
        .map(|(n, (h, _))| (n, h))
        .collect();
    Some(Environment {
        aws: None,
        name: name.to_string(),
        recipe_path: path.to_path_buf(),
        inventory_path: inv_path.to_path_buf(),
        hosts,
        cluster: Cluster {
            version,
            install,
            servers,
            agents,
            ha,
            flannel_backend,
            disable,
            cluster_cidr,
            service_cidr,
            tls_san,
            node_labels,
            node_taints: k
                .node_taints
                .iter()
                .map(|t| t.value.trim().to_string())
                .collect(),
            api_endpoint,
            readiness_timeout: Duration::from_secs(readiness_timeout),
            extra_config,
            nvidia_default_runtime: k.nvidia_default_runtime.as_ref().is_some_and(|v| v.value),
            allow_unavailable,
            upgrade,
        },
        kubeconfig,
        serverless,
    })
}

fn check_install(i: &raw::InstallSection, path: &Path, sink: &mut Sink<'_>) -> Install {
    match i.source.value {
        InstallSource::Online => {
            if let Some(b) = &i.bundle {
                sink.error(pos(b), "`bundle` is only used with `source: bundle`");
            }
            let url = i
                .script_url
                .as_ref()
                .map_or(DEFAULT_SCRIPT_URL.to_string(), |u| {
                    u.value.trim().to_string()
                });
            if let Some(u) = &i.script_url {
                match url::Url::parse(&url) {
                    Ok(parsed) if parsed.scheme() == "https" => {}
                    Ok(_) => {
                        sink.error(pos(u), "the install script must be fetched over https");
                    }
                    Err(e) => {
                        sink.error(pos(u), format!("invalid script_url: {e}"));
                    }
                }
            }
            if let Some(im) = &i.images {
                sink.error(pos(im), "`images` is only used with `source: bundle`")
                    .help("online installs pull the system images from their registry");
            }
            Install::Online { script_url: url }
        }
        InstallSource::Bundle => {
            if let Some(u) = &i.script_url {
                sink.error(pos(u), "`script_url` is only used with `source: online`");
            }
            let Some(b) = &i.bundle else {
                sink.error(
                    pos(&i.source),
                    "`source: bundle` needs a `bundle` directory",
                )
                .help("point `bundle:` at a directory with install.sh and k3s / k3s-arm64");
                return Install::Bundle {
                    dir: PathBuf::new(),
                    images: Images::Bundle,
                };
            };
            let dir = resolve_path(path, &b.value, sink.home().as_deref());
            if !dir.is_dir() {
                sink.error(
                    pos(b),
                    format!("bundle directory {} does not exist", dir.display()),
                );
            } else {
                if !dir.join("install.sh").is_file() {
                    sink.error(
                        pos(b),
                        format!("bundle {} has no install.sh", dir.display()),
                    )
                    .help("save https://get.k3s.io as install.sh in the bundle");
                }
                if !dir.join("k3s").is_file() && !dir.join("k3s-arm64").is_file() {
                    sink.error(
                        pos(b),
                        format!("bundle {} has no k3s binary", dir.display()),
                    )
                    .help("add `k3s` (amd64) and/or `k3s-arm64` from the k3s release");
                }
            }
            let images = match i.images.as_ref().map(|v| v.value) {
                Some(raw::ImagesSource::Registry) => Images::Registry,
                _ => Images::Bundle,
            };
            Install::Bundle { dir, images }
        }
    }
}

/// `(major, minor)` of a k3s release tag such as `v1.31.4+k3s1` or `v1.32.0-rc1+k3s1`.
pub fn parse_k3s_version(v: &str) -> Option<(u64, u64)> {
    parse_k3s_release(v).map(|(major, minor, _)| (major, minor))
}

/// `(major, minor, patch)` of a k3s release tag; a release candidate counts as its
/// release (`v1.32.2-rc1+k3s1` is `(1, 32, 2)`).
pub fn parse_k3s_release(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.strip_prefix('v')?;
    let (core, build) = rest.split_once('+')?;
    let n = build.strip_prefix("k3s")?;
    if n.is_empty() || !n.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let core = match core.split_once('-') {
        Some((c, pre)) if !pre.is_empty() && pre.chars().all(|c| c.is_ascii_alphanumeric()) => c,
        Some(_) => return None,
        None => core,
    };
    let mut parts = core.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(Some(major)), Some(Some(minor)), Some(Some(patch)), None) => {
            Some((major, minor, patch))
        }
        _ => None,
    }
}

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Check a bastion at its position; the value as given.
pub(super) fn checked_bastion(sink: &mut Sink<'_>, b: &Spanned<String>) -> String {
    let v = b.value.trim().to_string();
    if let Err(why) = super::validators::check_jump_spec(&v) {
        sink.error(
            pos(b),
            format!("invalid bastion `{}`: {why}", v.escape_debug()),
        )
        .help("write `[user@]host[:port]` (an IPv6 host as `[addr]`)");
    }
    v
}

/// Check an SSH user name at its position; the value as given.
pub(super) fn checked_user(sink: &mut Sink<'_>, u: &Spanned<String>) -> String {
    let v = u.value.trim().to_string();
    if !super::validators::is_user_name(&v) {
        sink.error(pos(u), format!("invalid SSH user `{}`", v.escape_debug()))
            .help("a POSIX user name: letters, digits, `.`, `_`, `-`, starting with a letter or `_`, at most 32 characters");
    }
    v
}

/// Check every label (each reported at its own value) and return them plain.
pub(super) fn checked_labels(
    sink: &mut Sink<'_>,
    labels: &BTreeMap<String, Spanned<String>>,
) -> BTreeMap<String, String> {
    for (k, v) in labels {
        check_label(sink, pos(v), k, &v.value);
    }
    labels
        .iter()
        .map(|(k, v)| (k.clone(), v.value.clone()))
        .collect()
}

fn check_label(sink: &mut Sink<'_>, at: Pos, key: &str, value: &str) {
    if !super::validators::is_qualified_name(key) {
        sink.error(at, format!("invalid node label key `{}`", key.escape_debug()))
            .help("keys are `[prefix/]name`, name at most 63 characters of [A-Za-z0-9-_.], prefix a lowercase DNS name");
    }
    if !super::validators::is_label_value(value) {
        sink.error(
            at,
            format!(
                "invalid value `{}` for node label `{}`",
                value.escape_debug(),
                key.escape_debug()
            ),
        )
        .help(
            "values are at most 63 characters of [A-Za-z0-9-_.], starting and ending alphanumeric",
        );
    }
}

pub(super) fn check_taint(sink: &mut Sink<'_>, t: &Spanned<String>) {
    let v = t.value.trim();
    let ok = v.rsplit_once(':').is_some_and(|(kv, effect)| {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        TAINT_EFFECTS.contains(&effect)
            && super::validators::is_qualified_name(key)
            && super::validators::is_label_value(value)
    });
    if !ok {
        sink.error(pos(t), format!("invalid taint `{}`", v.escape_debug()))
            .help("write `key=value:Effect` or `key:Effect` with Effect one of NoSchedule, PreferNoSchedule, NoExecute");
    }
}

fn check_cidr(sink: &mut Sink<'_>, c: &Spanned<String>) -> Option<String> {
    let v = c.value.trim();
    if parse_cidr(v).is_some() {
        Some(v.to_string())
    } else {
        sink.error(pos(c), format!("invalid CIDR `{v}`"))
            .help("write e.g. `10.42.0.0/16`");
        None
    }
}

pub(super) fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn cidrs_overlap(a: &str, b: &str) -> bool {
    let (Some((IpAddr::V4(a), la)), Some((IpAddr::V4(b), lb))) = (parse_cidr(a), parse_cidr(b))
    else {
        return false;
    };
    let mask = v4_mask(la.min(lb));
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

/// Network mask of an IPv4 prefix length (0..=32).
pub(super) fn v4_mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len.min(32)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(parse_k3s_version("v1.31.4+k3s1"), Some((1, 31)));
        assert_eq!(parse_k3s_version("v1.32.0-rc1+k3s1"), Some((1, 32)));
        assert_eq!(parse_k3s_version("1.31.4+k3s1"), None);
        assert_eq!(parse_k3s_version("v1.31+k3s1"), None);
        assert_eq!(parse_k3s_version("v1.31.4"), None);
        assert_eq!(parse_k3s_version("latest"), None);
        assert_eq!(parse_k3s_version("v1.31.4.1+k3s1"), None);
        assert_eq!(parse_k3s_release("v1.32.2+k3s1"), Some((1, 32, 2)));
        assert_eq!(parse_k3s_release("v1.32.2-rc1+k3s1"), Some((1, 32, 2)));
        assert!(parse_k3s_release("v1.32.1+k3s2") < parse_k3s_release("v1.32.2+k3s1"));
        assert_eq!(parse_k3s_release("v1.x.2+k3s1"), None);
    }

    #[test]
    fn cidr_overlap() {
        assert!(cidrs_overlap("10.42.0.0/16", "10.42.128.0/17"));
        assert!(!cidrs_overlap("10.42.0.0/16", "10.43.0.0/16"));
    }
}
