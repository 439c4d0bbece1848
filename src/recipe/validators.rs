//! Validators for values that reach a shell, an argv or a file on their way out of a
//! recipe or inventory: SSH user names, bastions (`ssh -J`), pinned host keys
//! (known_hosts lines). Pure functions: each returns what is wrong in words a
//! diagnostic can carry, or the normalised value.
//!
//! Why strict: OpenSSH turns a `-J` value into a command line of its own, and a host
//! key is appended to the environment's known_hosts file, so a newline or a shell
//! metacharacter there would be an injection (docs/reliability.md, "Input validation").

use std::net::{IpAddr, Ipv6Addr};

/// Names an environment may not have: the state directory keeps files of its own
/// under them (`endpoints.json` is the OSCAR endpoint catalog), which the environment's
/// state file would overwrite.
pub const RESERVED_ENV_NAMES: &[&str] = &["endpoints"];

/// A POSIX portable user name: letters, digits, `.`, `_`, `-`, not starting with `-`
/// or `.`, at most 32 characters (the length useradd accepts).
/// Split `s3://BUCKET[/PREFIX]` into the bucket and the prefix (no leading or
/// trailing `/`), or say what is wrong. Bucket names follow S3's rules for new
/// buckets: 3-63 lowercase letters, digits, dots and hyphens, starting and ending
/// with a letter or digit.
pub fn s3_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| "expected s3://BUCKET/PREFIX".to_string())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let valid = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && !bucket.starts_with(['-', '.'])
        && !bucket.ends_with(['-', '.']);
    if !valid {
        return Err(
            "the bucket name must be 3-63 lowercase letters, digits, dots or hyphens".into(),
        );
    }
    let prefix = prefix.trim_matches('/');
    if prefix.split('/').any(|p| p == "." || p == "..")
        || prefix.contains("//")
        || prefix.chars().any(char::is_control)
    {
        return Err("the prefix must be plain path segments".into());
    }
    Ok((bucket.to_string(), prefix.to_string()))
}

pub fn is_user_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// A DNS name (RFC 1123 labels) or an IP address, as a host to connect to.
pub fn is_address(s: &str) -> bool {
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    // `10.0.0.256` is a broken IPv4 address, not a DNS name.
    if s.split('.').all(|l| l.chars().all(|c| c.is_ascii_digit())) {
        return false;
    }
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Check a bastion `[user@]host[:port]` (an IPv6 host in brackets: `[fd00::1]:2222`).
pub fn check_jump_spec(s: &str) -> Result<(), String> {
    let (user, host_port) = match s.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, s),
    };
    if let Some(u) = user
        && !is_user_name(u)
    {
        return Err(format!(
            "`{u}` is not a user name (letters, digits, `.`, `_`, `-`; at most 32)"
        ));
    }
    let (host, port) = if let Some(rest) = host_port.strip_prefix('[') {
        let (v6, after) = rest
            .split_once(']')
            .ok_or_else(|| "an IPv6 address in `[` needs its `]`".to_string())?;
        if v6.parse::<Ipv6Addr>().is_err() {
            return Err(format!("`{v6}` is not an IPv6 address"));
        }
        match after {
            "" => return Ok(()),
            p => (
                None,
                Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("unexpected `{p}` after the address"))?,
                ),
            ),
        }
    } else if host_port.parse::<Ipv6Addr>().is_ok() {
        // OpenSSH reads `a::1` as host `a` and port `:1`.
        return Err(format!("write the IPv6 address as `[{host_port}]`"));
    } else {
        match host_port.rsplit_once(':') {
            Some((h, p)) => (Some(h), Some(p)),
            None => (Some(host_port), None),
        }
    };
    if let Some(p) = port
        && !p.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(format!("`{p}` is not a port (1-65535)"));
    }
    match host {
        Some(h) if !is_address(h) => Err(format!("`{h}` is not a DNS name or IP address")),
        _ => Ok(()),
    }
}

/// A Kubernetes qualified name (label and taint keys): `[prefix/]name`, the name at most
/// 63 characters of `[A-Za-z0-9-_.]` starting and ending alphanumeric, the prefix a
/// lowercase DNS subdomain of at most 253 (Kubernetes docs, "Labels and Selectors",
/// "Syntax and character set").
pub fn is_qualified_name(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    let prefix_ok = prefix.is_none_or(|p| {
        p.len() <= 253
            && p.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    });
    name_ok && prefix_ok
}

/// A Kubernetes label value (also a taint's value): empty, or at most 63 characters of
/// `[A-Za-z0-9-_.]` starting and ending alphanumeric.
pub fn is_label_value(v: &str) -> bool {
    v.len() <= 63
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && (v.is_empty()
            || v.starts_with(|c: char| c.is_ascii_alphanumeric())
                && v.ends_with(|c: char| c.is_ascii_alphanumeric()))
}

/// Host key algorithms a pin may use: the ones OpenSSH offers for host keys today
/// (ssh-dss is disabled since OpenSSH 7.0).
const HOST_KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "ssh-rsa",
];

/// Parse a pinned host key (`TYPE BASE64 [comment]`, one line) and return it as
/// known_hosts wants it after the host name: `TYPE BASE64`, comment dropped.
pub fn normalize_host_key(s: &str) -> Result<String, String> {
    let s = s.trim();
    if s.contains(['\n', '\r']) {
        return Err("a host key is one line".into());
    }
    let kind = s.split_whitespace().next().unwrap_or("");
    if !HOST_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "`{kind}` is not a host key type (one of {})",
            HOST_KEY_TYPES.join(", ")
        ));
    }
    let key =
        ssh_key::PublicKey::from_openssh(s).map_err(|e| format!("the key does not parse: {e}"))?;
    let bare = ssh_key::PublicKey::new(key.key_data().clone(), "");
    bare.to_openssh()
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("the key cannot be written back: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIPj0p8M/ZkyJzY318sHM0yPVEHzz9uj0smf6+BqOM6Hr";

    #[test]
    fn user_names_are_posix_portable() {
        for ok in ["ops", "_svc", "pi", "a.b-c_d", "Ubuntu1"] {
            assert!(is_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            "-x",
            ".x",
            "x;y",
            "x y",
            "x$",
            "ü",
            &"a".repeat(33),
            "1abc",
        ] {
            assert!(!is_user_name(bad), "{bad}");
        }
    }

    #[test]
    fn jump_specs_refuse_what_a_shell_would_read() {
        for ok in [
            "gw.example.org",
            "ops@gw.example.org:2222",
            "10.0.0.1",
            "[fd00::1]:22",
            "ops@[fd00::1]",
        ] {
            assert!(check_jump_spec(ok).is_ok(), "{ok}");
        }
        for bad in [
            "x;touch /tmp/pwned;@gw.example.org",
            "ops@:22",
            "host:0",
            "a@b@c",
            "gw.example.org;id",
            "$(id)@gw",
            "ops@gw example",
            "[fd00::1",
            "[nothex]:22",
            "gw\nProxyCommand=sh",
            "fd00::1",
        ] {
            assert!(check_jump_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_keys_parse_and_lose_their_comment() {
        assert_eq!(
            normalize_host_key(&format!("{ED} root@box")).as_deref(),
            Ok(ED)
        );
        assert_eq!(normalize_host_key(&format!("  {ED}\n")).as_deref(), Ok(ED));
        let inj = format!("{ED}\n* {ED}");
        assert!(
            normalize_host_key(&inj)
                .expect_err("refused")
                .contains("one line")
        );
        assert!(
            normalize_host_key("ssh-ed25519 AAAAnotbase64!")
                .expect_err("refused")
                .contains("does not parse")
        );
        assert!(
            normalize_host_key("ssh-dss AAAAB3NzaC1kc3M=")
                .expect_err("refused")
                .contains("not a host key type")
        );
        // The key's own type must match the word before it.
        assert!(normalize_host_key(&ED.replace("ssh-ed25519", "ssh-rsa")).is_err());
    }
}
