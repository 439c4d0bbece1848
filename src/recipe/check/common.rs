//! What the section checks share: the host table they fill, k3s release tags, and the
//! checks of values several sections accept (host and group names, SSH users,
//! bastions, node labels and taints, CIDRs). Each check reports at the value's own
//! position and returns the value as given; the value rules are `recipe::validators`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde_saphyr::Spanned;

use crate::recipe::diag::{Pos, Sink, pos};
use crate::recipe::model::Host;
use crate::recipe::validators;

const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// Host name -> the host and where it was defined (the name's position).
pub type HostTable = BTreeMap<String, (Host, Pos)>;

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

/// A DNS label as Kubernetes node names use it: lowercase alphanumerics and `-`, at
/// most 63, not starting or ending with `-`.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A name an environment may have: a DNS label that is not reserved
/// (`validators::RESERVED_ENV_NAMES`). What the state directory and an S3 prefix
/// list as environments.
pub fn is_env_name(s: &str) -> bool {
    is_dns_label(s) && !crate::recipe::validators::RESERVED_ENV_NAMES.contains(&s)
}

/// Check a bastion at its position; the value as given.
pub fn checked_bastion(sink: &mut Sink<'_>, b: &Spanned<String>) -> String {
    let v = b.value.trim().to_string();
    if let Err(why) = validators::check_jump_spec(&v) {
        sink.error(
            pos(b),
            format!("invalid bastion `{}`: {why}", v.escape_debug()),
        )
        .help("write `[user@]host[:port]` (an IPv6 host as `[addr]`)");
    }
    v
}

/// Check an SSH user name at its position; the value as given.
pub fn checked_user(sink: &mut Sink<'_>, u: &Spanned<String>) -> String {
    let v = u.value.trim().to_string();
    if !validators::is_user_name(&v) {
        sink.error(pos(u), format!("invalid SSH user `{}`", v.escape_debug()))
            .help("a POSIX user name: letters, digits, `.`, `_`, `-`, starting with a letter or `_`, at most 32 characters");
    }
    v
}

/// Check every label (each reported at its own value) and return them plain.
pub fn checked_labels(
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
    if !validators::is_qualified_name(key) {
        sink.error(at, format!("invalid node label key `{}`", key.escape_debug()))
            .help("keys are `[prefix/]name`, name at most 63 characters of [A-Za-z0-9-_.], prefix a lowercase DNS name");
    }
    if !validators::is_label_value(value) {
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

/// Check a taint `key[=value]:Effect` at its position.
pub fn check_taint(sink: &mut Sink<'_>, t: &Spanned<String>) {
    let v = t.value.trim();
    let ok = v.rsplit_once(':').is_some_and(|(kv, effect)| {
        let (key, value) = kv.split_once('=').unwrap_or((kv, ""));
        TAINT_EFFECTS.contains(&effect)
            && validators::is_qualified_name(key)
            && validators::is_label_value(value)
    });
    if !ok {
        sink.error(pos(t), format!("invalid taint `{}`", v.escape_debug()))
            .help("write `key=value:Effect` or `key:Effect` with Effect one of NoSchedule, PreferNoSchedule, NoExecute");
    }
}

/// An address block `ADDR/LEN` (IPv4 or IPv6), the length within the family's.
pub fn parse_cidr(s: &str) -> Option<(IpAddr, u8)> {
    let (ip, len) = s.split_once('/')?;
    let ip: IpAddr = ip.parse().ok()?;
    let len: u8 = len.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Network mask of an IPv4 prefix length (0..=32).
pub fn v4_mask(len: u8) -> u32 {
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
}
