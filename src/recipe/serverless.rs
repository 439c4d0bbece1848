//! Validation of a recipe's `serverless:` section (the OSCAR layer, issue 4) into
//! `crate::serverless::Serverless`. Every problem is a positioned diagnostic; nothing
//! here touches the network or the disk beyond resolving paths.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::diag::{Pos, Sink, did_you_mean};
use super::load::{parse_k3s_release, resolve_path};
use super::raw::ServerlessSection;
use crate::serverless::{
    COMPONENTS, GivenCredentials, IngressMode, OscarCliTarget, Profile, Serverless, Tier,
    valid_cluster_id,
};
use crate::state::Secret;

const DEFAULT_READINESS_TIMEOUT: u64 = 600;

/// The first k3s release whose packaged Traefik is v3, the chart that has the Gateway
/// API values `ingress: gateway` sets (docs/k3s-config.md, "Traefik and the Gateway API").
pub const GATEWAY_MIN_K3S: (u64, u64, u64) = (1, 32, 2);

fn pos<T>(s: &Spanned<T>) -> Pos {
    Pos::of(&s.referenced)
}

fn one_of<T: Copy>(
    sink: &mut Sink<'_>,
    v: &Spanned<String>,
    what: &str,
    table: &[(&str, T)],
    fallback: T,
) -> T {
    let word = v.value.trim();
    if let Some((_, t)) = table.iter().find(|(n, _)| *n == word) {
        return *t;
    }
    let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
    let d = sink.error(pos(v), format!("unknown {what} `{word}`"));
    match did_you_mean(word, names.iter().copied()) {
        Some(s) => d.help(format!("did you mean `{s}`?")),
        None => d.help(format!("expected one of: {}", names.join(", "))),
    };
    fallback
}

/// Validate `serverless:`; `api_endpoint` is the default OSCAR host, `k3s_version` the
/// recipe's pin (an unparsable pin is reported by the caller).
pub fn check(
    s: &ServerlessSection,
    env: &str,
    api_endpoint: &str,
    k3s_version: &str,
    recipe: &Path,
    sink: &mut Sink<'_>,
) -> Serverless {
    let profile = one_of(
        sink,
        &s.profile,
        "serverless profile",
        &[("cloud", Profile::Cloud), ("edge", Profile::Edge)],
        Profile::Cloud,
    );
    let tier = match &s.tier {
        Some(t) => one_of(
            sink,
            t,
            "site tier",
            &[("cloud", Tier::Cloud), ("edge", Tier::Edge)],
            Tier::Cloud,
        ),
        None => match profile {
            Profile::Cloud => Tier::Cloud,
            Profile::Edge => Tier::Edge,
        },
    };
    let ingress = match &s.ingress {
        Some(i) => one_of(
            sink,
            i,
            "ingress mode",
            &[
                ("nginx", IngressMode::Nginx),
                ("gateway", IngressMode::Gateway),
            ],
            IngressMode::Nginx,
        ),
        None => IngressMode::Nginx,
    };
    if let Some(i) = &s.ingress
        && ingress == IngressMode::Gateway
    {
        check_gateway_k3s(i, k3s_version, sink);
    }
    let endpoint = match &s.endpoint {
        Some(e) => {
            let v = e.value.trim().trim_end_matches('/').to_string();
            match url::Url::parse(&v) {
                Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host().is_some() => {}
                _ => {
                    sink.error(pos(e), format!("invalid serverless endpoint `{v}`"))
                        .help("give the URL users reach OSCAR by, e.g. https://oscar.example.org");
                }
            }
            v
        }
        None => format!("http://{}", bracket(api_endpoint)),
    };
    let cluster_id = match &s.cluster_id {
        Some(c) => {
            let v = c.value.trim().to_string();
            if !valid_cluster_id(&v) {
                sink.error(pos(c), format!("invalid cluster_id `{v}`"))
                    .help("use letters, digits, `-`, `_` or `.` (at most 63)");
            }
            v
        }
        None => env.to_string(),
    };
    let readiness = match &s.readiness_timeout {
        Some(t) if t.value == 0 => {
            sink.error(pos(t), "readiness_timeout must be at least 1 second");
            DEFAULT_READINESS_TIMEOUT
        }
        Some(t) => t.value,
        None => DEFAULT_READINESS_TIMEOUT,
    };
    let mut credentials = GivenCredentials::default();
    if let Some(c) = &s.credentials {
        let c = &c.value;
        let mut secret = |v: &Option<Spanned<String>>, what: &str| -> Option<String> {
            let v = v.as_ref()?;
            if v.value.is_empty() {
                sink.error(pos(v), format!("{what} is empty"))
                    .help("leave it out to have continuum generate one");
                return None;
            }
            Some(v.value.clone())
        };
        credentials.oscar_user = secret(&c.oscar_user, "oscar_user");
        credentials.oscar_password = secret(&c.oscar_password, "oscar_password").map(Secret::new);
        credentials.minio_access_key = secret(&c.minio_access_key, "minio_access_key");
        credentials.minio_secret_key =
            secret(&c.minio_secret_key, "minio_secret_key").map(Secret::new);
        if let Some(k) = &c.minio_secret_key
            && k.value.len() < 8
            && !k.value.is_empty()
        {
            sink.error(pos(k), "minio_secret_key must have at least 8 characters")
                .help("MinIO refuses shorter root passwords");
        }
    }
    let mut values = BTreeMap::new();
    if let Some(v) = &s.values {
        for (k, val) in &v.value {
            if !COMPONENTS.contains(&k.as_str()) {
                let d = sink.error(pos(val), format!("no serverless component `{k}`"));
                match did_you_mean(k, COMPONENTS.iter().copied()) {
                    Some(s) => d.help(format!("did you mean `{s}`?")),
                    None => d.help(format!("expected one of: {}", COMPONENTS.join(", "))),
                };
            } else if !val.value.is_object() {
                sink.error(pos(val), format!("values for `{k}` must be a mapping"));
            } else {
                values.insert(k.clone(), val.value.clone());
            }
        }
    }
    let oscar_cli = match &s.oscar_cli {
        Some(o) => OscarCliTarget {
            path: o
                .value
                .path
                .as_ref()
                .map(|p| resolve_path(recipe, &p.value)),
            set_default: o.value.set_default.as_ref().is_some_and(|b| b.value),
            ssl_verify: o.value.ssl_verify.as_ref().is_none_or(|b| b.value),
        },
        None => OscarCliTarget {
            path: None,
            set_default: false,
            ssl_verify: true,
        },
    };
    Serverless {
        profile,
        tier,
        ingress,
        endpoint,
        cluster_id,
        knative: s
            .knative
            .as_ref()
            .map_or(profile == Profile::Cloud, |k| k.value),
        gpu: s.gpu.as_ref().map(|g| g.value),
        readiness_timeout: Duration::from_secs(readiness),
        credentials,
        values,
        oscar_cli,
        // Set by the caller, which knows the cluster's `disable` list.
        servicelb: true,
    }
}

/// `ingress: gateway` sets Traefik v3 chart values, which older k3s releases lack.
fn check_gateway_k3s(at: &Spanned<String>, k3s_version: &str, sink: &mut Sink<'_>) {
    let Some(v) = parse_k3s_release(k3s_version) else {
        return;
    };
    if v < GATEWAY_MIN_K3S {
        let (major, minor, patch) = GATEWAY_MIN_K3S;
        sink.error(
            pos(at),
            format!(
                "`ingress: gateway` needs k3s v{major}.{minor}.{patch} or later (Traefik v3); the recipe pins {k3s_version}"
            ),
        )
        .help(format!(
            "pin `k3s.version` to v{major}.{minor}.{patch}+k3s1 or later, or use `ingress: nginx`"
        ));
    }
}

fn bracket(addr: &str) -> String {
    if addr.contains(':') {
        format!("[{addr}]")
    } else {
        addr.to_string()
    }
}
