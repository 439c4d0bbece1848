//! What `enroll bundle` is asked for, checked before anything happens: the pool's
//! name and labels (as Kubernetes accepts them, plus `continuum.io/pool=NAME`), the
//! token's TTL, and the UTC text of a time for reports and the bundle's README.

use std::collections::BTreeMap;
use std::time::Duration;

use super::EnrollError;
use crate::recipe::validators;

/// The label every node of a pool registers with; `status` finds enrolled nodes by it.
pub const POOL_LABEL: &str = "continuum.io/pool";

/// The longest TTL k3s can take: `--ttl` is a Go `time.Duration`, an int64 count of
/// nanoseconds (at most about 292 years; Go's `time` package documentation).
pub const MAX_TTL_SECS: u64 = i64::MAX as u64 / 1_000_000_000;

/// Parse `--ttl`: a positive number of `s`, `m`, `h` or `d` (several may follow each
/// other: `1h30m`). Zero, which would make k3s's token never expire, is refused, and
/// so is more than k3s's duration can hold (`MAX_TTL_SECS`), which k3s would refuse
/// only after continuum connected to the server.
pub fn parse_ttl(text: &str) -> Result<Duration, EnrollError> {
    let bad = || EnrollError::Ttl(text.to_string());
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 || total > MAX_TTL_SECS {
        return Err(bad());
    }
    Ok(Duration::from_secs(total))
}

/// The pool's labels: each `key=value` checked as Kubernetes does, plus
/// `continuum.io/pool=NAME`, which a user may not set.
pub fn pool_labels(pool: &str, given: &[String]) -> Result<BTreeMap<String, String>, EnrollError> {
    let ok_name = !pool.is_empty()
        && pool.len() <= 63
        && pool
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !pool.starts_with('-')
        && !pool.ends_with('-');
    if !ok_name {
        return Err(EnrollError::PoolName(pool.to_string()));
    }
    let mut labels = BTreeMap::new();
    for l in given {
        let bad = |why: &str| EnrollError::Label {
            pool: pool.to_string(),
            label: l.clone(),
            why: why.to_string(),
        };
        let (k, v) = l.split_once('=').ok_or_else(|| bad("expected key=value"))?;
        if !validators::is_qualified_name(k) {
            return Err(bad("the key is not a Kubernetes label key"));
        }
        if !validators::is_label_value(v) {
            return Err(bad(
                "the value is not a Kubernetes label value (at most 63 of [A-Za-z0-9-_.])",
            ));
        }
        if k == POOL_LABEL {
            return Err(bad("continuum sets this label to the pool's name itself"));
        }
        if labels.insert(k.to_string(), v.to_string()).is_some() {
            return Err(bad("the key is given twice"));
        }
    }
    labels.insert(POOL_LABEL.to_string(), pool.to_string());
    Ok(labels)
}

/// `YYYY-MM-DD HH:MM UTC` of seconds since the Unix epoch.
pub fn utc_text(secs: u64) -> String {
    let (y, m, d, rem) = crate::state::shared::civil(secs);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        rem / 3600,
        (rem % 3600) / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_accepts_positive_durations_only() {
        assert_eq!(parse_ttl("24h").ok(), Some(Duration::from_secs(86_400)));
        assert_eq!(parse_ttl("1h30m").ok(), Some(Duration::from_secs(5_400)));
        assert_eq!(parse_ttl("7d").ok(), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_ttl("45s").ok(), Some(Duration::from_secs(45)));
        assert_eq!(
            parse_ttl("106751d").ok(),
            Some(Duration::from_secs(106_751 * 86_400))
        );
        for bad in [
            "",
            "0",
            "0s",
            "24",
            "h",
            "-1h",
            "1.5h",
            "1w",
            "99999999999999999999d",
            // Fits in u64 seconds, not in Go's int64 nanoseconds.
            "106752d",
            "213503982334600d",
        ] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn labels_are_checked_and_the_pool_label_is_added() {
        let l = pool_labels(
            "field-1",
            &["site=north".into(), "example.com/tier=edge".into()],
        )
        .expect("labels");
        assert_eq!(l.get(POOL_LABEL).map(String::as_str), Some("field-1"));
        assert_eq!(l.len(), 3);
        for (pool, label) in [
            ("Field", "a=b"),
            ("-x", "a=b"),
            ("ok", "novalue"),
            ("ok", "a=b c"),
            ("ok", "bad key=x"),
            ("ok", "continuum.io/pool=other"),
        ] {
            assert!(
                pool_labels(pool, &[label.into()]).is_err(),
                "{pool} {label}"
            );
        }
        assert!(pool_labels("ok", &["a=1".into(), "a=2".into()]).is_err());
    }

    #[test]
    fn utc_text_is_the_civil_date() {
        assert_eq!(utc_text(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc_text(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc_text(1_796_135_400), "2026-12-01 14:30 UTC");
    }
}
