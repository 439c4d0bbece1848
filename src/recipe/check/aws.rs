//! Validation of a recipe's `aws:` site (offline checks; the region's instance types
//! and images are checked against the API by `aws::provision::validate` before any
//! spend). Instance groups become hosts named `GROUP-INDEX`, added to the host table so
//! `k3s.servers`/`k3s.agents` can name them (or the whole group by its name).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::common::{
    HostTable, check_taint, checked_bastion, checked_labels, checked_user, is_dns_label,
    parse_cidr, v4_mask,
};
use crate::recipe::diag::{Pos, Sink, pos};
use crate::recipe::model::{
    AddressKind, AwsSite, AwsSsh, CloudHost, Firewall, Host, ImageRef, InstanceGroup, VpcChoice,
};
use crate::recipe::paths::resolve_path;
use crate::recipe::raw::{self, AddressKindRaw, ImageSection, RoleHint};

const DEFAULT_SSH_TIMEOUT: u64 = 300;
/// Instances per group: RunInstances takes at most this many per call in practice
/// (account limits are lower); one call per group keeps the call count flat.
const MAX_COUNT: u32 = 1000;
const ARCHITECTURES: &[&str] = &["x86_64", "arm64"];
/// Key types ImportKeyPair accepts (docs/aws.md, "Key pairs").
const IMPORTABLE_KEYS: &[&str] = &["ssh-rsa", "ssh-ed25519"];

/// Group name -> its host names, for `k3s.servers: [GROUP]` references.
pub type Groups = BTreeMap<String, Vec<String>>;

fn ipv4_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    match parse_cidr(s)? {
        (IpAddr::V4(a), l) => Some((a, l)),
        _ => None,
    }
}

fn contains(outer: (Ipv4Addr, u8), inner: (Ipv4Addr, u8)) -> bool {
    let mask = v4_mask(outer.1);
    inner.1 >= outer.1 && (u32::from(inner.0) & mask) == (u32::from(outer.0) & mask)
}

fn is_region(s: &str) -> bool {
    // e.g. eu-west-1, us-gov-west-1, ap-southeast-3
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts[..parts.len() - 1]
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts
            .last()
            .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

fn is_instance_type(s: &str) -> bool {
    s.split_once('.').is_some_and(|(f, size)| {
        !f.is_empty()
            && !size.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && size
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
    })
}

/// Check the site, add its hosts to `hosts` (and role hints), return the model.
pub fn check_site(
    a: &Spanned<raw::AwsSection>,
    path: &Path,
    sink: &mut Sink<'_>,
    hosts: &mut HostTable,
    roles: &mut BTreeMap<String, RoleHint>,
    groups: &mut Groups,
) -> Option<AwsSite> {
    let s = &a.value;
    let file = path.display().to_string();
    let at = |p: Pos| format!("{file}:{}:{}", p.line, p.col);

    let region = s.region.value.trim().to_string();
    if !is_region(&region) {
        sink.error(pos(&s.region), format!("invalid AWS region `{region}`"))
            .help("write a region code such as `eu-west-1`");
    }

    // Network.
    let net = s.network.as_ref().map(|n| &n.value);
    let vpc_cidr = net.and_then(|n| n.vpc_cidr.as_ref());
    let subnet_cidr = net.and_then(|n| n.subnet_cidr.as_ref());
    let vpc = match vpc_cidr {
        None => VpcChoice::Default,
        Some(c) => {
            let v = c.value.trim();
            match ipv4_cidr(v) {
                Some((_, l)) if (16..=28).contains(&l) => {}
                Some(_) => {
                    sink.error(
                        pos(c),
                        format!("VPC CIDR `{v}` must be between /16 and /28"),
                    );
                }
                None => {
                    sink.error(pos(c), format!("invalid VPC CIDR `{v}`"))
                        .help("write an IPv4 block such as `10.20.0.0/16`");
                }
            }
            if subnet_cidr.is_none() {
                sink.error(pos(c), "a created VPC needs `subnet_cidr` for its subnet")
                    .help("add e.g. `subnet_cidr: 10.20.1.0/24` inside the VPC CIDR");
            }
            VpcChoice::Create {
                cidr: v.to_string(),
            }
        }
    };
    if let Some(sc) = subnet_cidr {
        let v = sc.value.trim();
        match (
            ipv4_cidr(v),
            vpc_cidr.and_then(|c| ipv4_cidr(c.value.trim())),
        ) {
            (None, _) => {
                sink.error(pos(sc), format!("invalid subnet CIDR `{v}`"));
            }
            (Some((_, l)), _) if !(16..=28).contains(&l) => {
                sink.error(
                    pos(sc),
                    format!("subnet CIDR `{v}` must be between /16 and /28"),
                );
            }
            (Some(inner), Some(outer)) if !contains(outer, inner) => {
                sink.error(
                    pos(sc),
                    format!(
                        "subnet `{v}` is not inside the VPC CIDR `{}`",
                        vpc_cidr.map(|c| c.value.trim()).unwrap_or_default()
                    ),
                );
            }
            _ => {}
        }
    }
    let availability_zone = net.and_then(|n| n.availability_zone.as_ref()).map(|z| {
        let v = z.value.trim().to_string();
        if !v.starts_with(&region) || v.len() <= region.len() {
            sink.error(
                pos(z),
                format!("availability zone `{v}` is not in region {region}"),
            )
            .help(format!("write e.g. `{region}a`"));
        }
        v
    });

    // SSH.
    let ssh = &s.ssh.value;
    let user = if ssh.user.value.trim().is_empty() {
        sink.error(pos(&ssh.user), "the SSH user is empty")
            .help("the image's default user: `ubuntu` (Ubuntu), `admin` (Debian), `ec2-user` (Amazon Linux)");
        String::new()
    } else {
        checked_user(sink, &ssh.user)
    };
    let key = ssh.key.as_ref().map(|k| {
        let p = resolve_path(path, k.value.trim(), sink.home().as_deref());
        let mut pubkey = p.clone().into_os_string();
        pubkey.push(".pub");
        let pubkey = Path::new(&pubkey);
        match sink.files.read(pubkey) {
            Err(_) => {
                sink.error(
                    pos(k),
                    format!("public key {} does not exist", pubkey.display()),
                )
                .help(
                    "continuum imports KEY.pub as the EC2 key pair; omit `key` to have one generated",
                );
            }
            Ok(text) => {
                let kind = text.split_whitespace().next().unwrap_or_default().to_string();
                if !IMPORTABLE_KEYS.contains(&kind.as_str()) {
                    sink.error(
                        pos(k),
                        format!(
                            "public key {} is `{kind}`: EC2 imports RSA and ED25519 keys only",
                            pubkey.display()
                        ),
                    )
                    .help("use an `ssh-ed25519` or `ssh-rsa` key, or omit `key` to have an ed25519 key generated");
                }
            }
        }
        p
    });
    let bastion = ssh.bastion.as_ref().map(|b| checked_bastion(sink, b));
    let timeout = match &ssh.timeout {
        Some(t) if t.value == 0 => {
            sink.error(pos(t), "the SSH timeout must be at least 1 second");
            DEFAULT_SSH_TIMEOUT
        }
        Some(t) => t.value,
        None => DEFAULT_SSH_TIMEOUT,
    };
    let address = match ssh.address.as_ref().map(|a| a.value) {
        Some(AddressKindRaw::Public) => AddressKind::Public,
        Some(AddressKindRaw::Private) | None => AddressKind::Private,
    };

    // Firewall.
    let fw = s.firewall.as_ref().map(|f| &f.value);
    let mut cidrs = |list: Option<&Vec<Spanned<String>>>| -> Vec<String> {
        list.into_iter()
            .flatten()
            .filter_map(|c| {
                let v = c.value.trim();
                if parse_cidr(v).is_some() {
                    Some(v.to_string())
                } else {
                    sink.error(pos(c), format!("invalid CIDR `{v}`"))
                        .help("write e.g. `203.0.113.0/24` (or `/32` for one address)");
                    None
                }
            })
            .collect()
    };
    let ssh_from = cidrs(fw.map(|f| &f.ssh_from));
    let api_from = cidrs(fw.map(|f| &f.api_from));
    if fw.is_none_or(|f| f.ssh_from.is_empty()) {
        let at_pos = s.firewall.as_ref().map_or(pos(a), pos);
        sink.error(
            at_pos,
            "`aws.firewall.ssh_from` is empty: continuum could not reach the instances",
        )
        .help("list the CIDR(s) continuum connects from, e.g. `ssh_from: [203.0.113.7/32]`");
    }
    let http = fw.and_then(|f| f.http.as_ref()).is_some_and(|h| h.value);

    // Instance groups.
    let mut out_groups = Vec::new();
    if s.instance_groups.value.is_empty() {
        sink.error(
            pos(&s.instance_groups),
            "the AWS site has no instance groups",
        );
    }
    for g in &s.instance_groups.value {
        let g = &g.value;
        let name = g.name.value.trim().to_string();
        if !is_dns_label(&name) || name.len() > 50 {
            sink.error(
                pos(&g.name),
                format!("invalid instance group name `{name}`"),
            )
            .help("lowercase letters, digits and `-` (at most 50): hosts are named GROUP-INDEX");
            continue;
        }
        if groups.contains_key(&name) {
            sink.error(pos(&g.name), format!("duplicate instance group `{name}`"));
            continue;
        }
        let count = g.count.value;
        if count == 0 || count > MAX_COUNT {
            sink.error(
                pos(&g.count),
                format!("instance count {count} is out of range (1..={MAX_COUNT})"),
            )
            .help("remove the group to delete its instances");
        }
        let itype = g.instance_type.value.trim().to_string();
        if !is_instance_type(&itype) {
            sink.error(
                pos(&g.instance_type),
                format!("invalid instance type `{itype}`"),
            )
            .help("write a type such as `t3.medium` or `t4g.small`");
        }
        let image = match &g.image.value {
            ImageSection::Id(id) => {
                let id = id.trim().to_string();
                if !id.starts_with("ami-") || id.len() < 8 {
                    sink.error(pos(&g.image), format!("invalid image id `{id}`"))
                        .help("give an AMI id (`ami-...`) or `{name: PATTERN, owner: ACCOUNT}`");
                }
                ImageRef::Id(id)
            }
            ImageSection::Lookup(l) => {
                if l.name.trim().is_empty() || l.owner.trim().is_empty() {
                    sink.error(pos(&g.image), "an image lookup needs `name` and `owner`");
                }
                if let Some(a) = &l.architecture
                    && !ARCHITECTURES.contains(&a.as_str())
                {
                    sink.error(pos(&g.image), format!("unknown image architecture `{a}`"))
                        .help("expected x86_64 or arm64");
                }
                ImageRef::Lookup {
                    name: l.name.trim().to_string(),
                    owner: l.owner.trim().to_string(),
                    architecture: l.architecture.clone(),
                }
            }
        };
        if let Some(v) = &g.root_volume_gb
            && !(8..=16384).contains(&v.value)
        {
            sink.error(
                pos(v),
                format!("root volume of {} GiB is out of range (8..=16384)", v.value),
            );
        }
        let labels = g
            .labels
            .as_ref()
            .map(|l| checked_labels(sink, &l.value))
            .unwrap_or_default();
        for t in &g.taints {
            check_taint(sink, t);
        }
        let mut names = Vec::new();
        for i in 0..count.min(MAX_COUNT) {
            let host = format!("{name}-{i}");
            if let Some((_, first)) = hosts.get(&host) {
                sink.error(
                    pos(&g.name),
                    format!("instance `{host}` has the name of an inventory host"),
                )
                .help(format!(
                    "inventory host defined at line {}; rename the group",
                    first.line
                ));
                break;
            }
            hosts.insert(
                host.clone(),
                (
                    Host {
                        name: host.clone(),
                        // Known once the instance exists (`aws::provision::resolve`).
                        address: String::new(),
                        port: 22,
                        user: Some(user.clone()),
                        key: key.clone(),
                        bastion: bastion.clone(),
                        labels: labels.clone(),
                        taints: g
                            .taints
                            .iter()
                            .map(|t| t.value.trim().to_string())
                            .collect(),
                        // An instance's external address is its public IP, rendered
                        // by `graph::node_config` (docs/k3s-config.md).
                        node_ip: None,
                        external_ip: None,
                        host_key: None,
                        probed: None,
                        cloud: Some(CloudHost {
                            group: name.clone(),
                            index: i,
                            public_ip: None,
                        }),
                    },
                    pos(&g.name),
                ),
            );
            if let Some(r) = &g.role {
                roles.insert(host.clone(), r.value);
            }
            names.push(host);
        }
        groups.insert(name.clone(), names);
        out_groups.push(InstanceGroup {
            name,
            count,
            instance_type: itype,
            image,
            root_volume_gb: g.root_volume_gb.as_ref().map(|v| v.value),
            spot: g.spot.as_ref().is_some_and(|s| s.value),
            elastic_ip: g.elastic_ip.as_ref().is_some_and(|e| e.value),
            at_type: at(pos(&g.instance_type)),
            at_image: at(pos(&g.image)),
            at_root_volume: at(g.root_volume_gb.as_ref().map_or(pos(&g.name), pos)),
        });
    }
    Some(AwsSite {
        region,
        vpc,
        subnet_cidr: subnet_cidr.map(|c| c.value.trim().to_string()),
        availability_zone,
        ssh: AwsSsh {
            user,
            key,
            address,
            bastion,
            timeout: Duration::from_secs(timeout),
        },
        firewall: Firewall {
            api_from: if api_from.is_empty() {
                ssh_from.clone()
            } else {
                api_from
            },
            ssh_from,
            http,
        },
        groups: out_groups,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_and_types() {
        assert!(is_region("eu-west-1"));
        assert!(is_region("us-gov-west-1"));
        assert!(!is_region("eu-west"));
        assert!(!is_region("EU-west-1"));
        assert!(is_instance_type("t3.medium"));
        assert!(is_instance_type("c7gn.16xlarge"));
        assert!(!is_instance_type("t3"));
    }

    #[test]
    fn keys_ec2_cannot_import_are_refused_at_load_with_their_position() {
        let dir = tempfile::tempdir().expect("tempdir");
        for (kind, ok) in [("ecdsa", false), ("ed25519", true)] {
            let key = dir.path().join(format!("id_{kind}"));
            let out = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", kind, "-N", "", "-f"])
                .arg(&key)
                .output()
                .expect("ssh-keygen");
            assert!(out.status.success(), "{out:?}");
            let recipe = dir.path().join(format!("{kind}.yaml"));
            std::fs::write(
                &recipe,
                format!(
                    "name: k\nk3s:\n  version: v1.31.4+k3s1\n  servers: [g-0]\naws:\n  region: eu-west-1\n  ssh:\n    user: ubuntu\n    key: {}\n  firewall:\n    ssh_from: [203.0.113.7/32]\n  instance_groups:\n    - name: g\n      count: 1\n      instance_type: t3.small\n      image: ami-785db401\n",
                    key.display()
                ),
            )
            .expect("recipe");
            match crate::files::load_recipe(&recipe) {
                Ok(_) => assert!(ok, "{kind} accepted"),
                Err(e) => {
                    assert!(!ok, "{kind}: {e}");
                    let msg = e.to_string();
                    assert!(
                        msg.contains("EC2 imports RSA and ED25519 keys only")
                            && msg.contains(&format!("{}:9:10", recipe.display())),
                        "{msg}"
                    );
                }
            }
        }
    }

    #[test]
    fn subnet_containment() {
        let vpc = ipv4_cidr("10.250.0.0/24").map(|c| (c.0, c.1));
        let sub = ipv4_cidr("10.250.0.64/27");
        assert!(matches!((vpc, sub), (Some(v), Some(s)) if contains(v, s)));
        let out = ipv4_cidr("10.251.0.0/27");
        assert!(matches!((vpc, out), (Some(v), Some(s)) if !contains(v, s)));
    }
}
