//! The recipe's own sections: the environment name, `k3s:` (version pin, install
//! source, servers and agents picked from the host table, HA, networking, labels,
//! taints, `extra_config`, upgrade pacing), `kubeconfig:`, and how `serverless:`
//! bears on the cluster (the ingress mode needs traefik or servicelb as
//! docs/oscar.md, "Ingress" and "Gateway", says). Builds the `Environment`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Spanned;

use super::common::{
    HostTable, check_taint, checked_labels, is_dns_label, parse_cidr, parse_k3s_version, v4_mask,
};
use crate::recipe::diag::{Pos, Sink, did_you_mean, pos};
use crate::recipe::model::{
    Cluster, Environment, Images, Install, KubeconfigTarget, Share, Upgrade,
};
use crate::recipe::paths::resolve_path;
use crate::recipe::raw::{self, InstallSource, RoleHint};
use crate::recipe::validators::is_address;

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

/// Check the recipe's sections against the host table (the inventory's hosts and the
/// AWS site's instances); the environment when nothing was wrong.
#[allow(clippy::too_many_lines)]
pub fn check_recipe(
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
    } else if crate::recipe::validators::RESERVED_ENV_NAMES.contains(&name) {
        sink.error(pos(&r.name), format!("environment name `{name}` is reserved"))
            .help("the state directory's file of that name is continuum's catalog of OSCAR endpoints; choose another name");
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

    // The OSCAR serverless layer; OSCAR's ingress is nginx-class, so the
    // nginx mode needs k3s's bundled traefik off (docs/oscar.md, "Ingress").
    let mut serverless = r
        .serverless
        .as_ref()
        .map(|s| super::serverless::check(&s.value, name, &api_endpoint, &version, path, sink));
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
        state: None,
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

/// `k3s.install`: the online script (https only) or a bundle directory with the
/// script and binaries.
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
            if !sink.files.is_dir(&dir) {
                sink.error(
                    pos(b),
                    format!("bundle directory {} does not exist", dir.display()),
                );
            } else {
                if !sink.files.is_file(&dir.join("install.sh")) {
                    sink.error(
                        pos(b),
                        format!("bundle {} has no install.sh", dir.display()),
                    )
                    .help("save https://get.k3s.io as install.sh in the bundle");
                }
                if !sink.files.is_file(&dir.join("k3s"))
                    && !sink.files.is_file(&dir.join("k3s-arm64"))
                {
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

/// A CIDR of the cluster's networks, reported at its position when invalid.
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

/// Whether two IPv4 blocks share addresses (IPv6 blocks are not compared).
fn cidrs_overlap(a: &str, b: &str) -> bool {
    let (Some((IpAddr::V4(a), la)), Some((IpAddr::V4(b), lb))) = (parse_cidr(a), parse_cidr(b))
    else {
        return false;
    };
    let mask = v4_mask(la.min(lb));
    (u32::from(a) & mask) == (u32::from(b) & mask)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_overlap() {
        assert!(cidrs_overlap("10.42.0.0/16", "10.42.128.0/17"));
        assert!(!cidrs_overlap("10.42.0.0/16", "10.43.0.0/16"));
    }
}
