//! Validation of a recipe's `serverless:` section (the OSCAR layer, docs/oscar.md) into
//! `crate::recipe::serverless::Serverless`. Every problem is a positioned diagnostic; nothing
//! here touches the network, and the disk only to read the certificate and key
//! `serverless.tls` names.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_saphyr::Spanned;

use super::common::parse_k3s_release;
use crate::recipe::Secret;
use crate::recipe::diag::{Sink, did_you_mean, pos};
use crate::recipe::paths::resolve_path;
use crate::recipe::raw::{ServerlessSection, TlsSection};
use crate::recipe::serverless::{
    COMPONENTS, GivenCredentials, IngressMode, OscarCliTarget, Profile, Serverless, Tier, TlsCert,
    valid_cluster_id,
};
use crate::recipe::serverless::{DEFAULT_OSCAR, OSCAR_RELEASES, OscarRelease};

const DEFAULT_READINESS_TIMEOUT: u64 = 600;

/// The first k3s release whose packaged Traefik is v3, the chart that has the Gateway
/// API values `ingress: gateway` sets (docs/k3s-config.md, "Traefik and the Gateway API").
pub const GATEWAY_MIN_K3S: (u64, u64, u64) = (1, 32, 2);

/// The first k3s release of each minor whose helm-controller reads chart values from
/// Secrets (`valuesSecrets`, helm-controller v0.16.7 and later); every minor after the
/// last one listed has it (docs/oscar.md, "Secrets").
pub const VALUES_SECRETS_MIN_K3S: &[(u64, u64, u64)] = &[(1, 30, 12), (1, 31, 8), (1, 32, 4)];

/// Whether k3s `v` (major, minor, patch) reads HelmChart values from Secrets.
pub fn k3s_has_values_secrets(v: (u64, u64, u64)) -> bool {
    let (major, minor, _) = v;
    if let Some(min) = VALUES_SECRETS_MIN_K3S
        .iter()
        .find(|(ma, mi, _)| (*ma, *mi) == (major, minor))
    {
        return v >= *min;
    }
    VALUES_SECRETS_MIN_K3S
        .last()
        .is_some_and(|&(ma, mi, _)| (major, minor) > (ma, mi))
}

/// Chart values continuum sets from `serverless.credentials`, refused in `values`
/// (they would sit in a HelmChart's `valuesContent`).
const CREDENTIAL_VALUES: &[(&str, &[&str])] = &[
    ("minio", &["rootUser", "rootPassword", "existingSecret"]),
    (
        "oscar",
        &["authUser", "authPass", "minIO.accessKey", "minIO.secretKey"],
    ),
];

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
    let oscar = match &s.oscar_version {
        Some(v) => OscarRelease::find(&v.value).unwrap_or_else(|| {
            let names: Vec<&str> = OSCAR_RELEASES.iter().map(|r| r.version).collect();
            sink.error(
                pos(v),
                format!("continuum does not install OSCAR `{}`", v.value.trim()),
            )
            .help(format!(
                "supported: {} (a minor alone, e.g. `3.6`, means its pinned patch); docs/oscar.md, \"Versions\"",
                names.join(", ")
            ));
            DEFAULT_OSCAR
        }),
        None => DEFAULT_OSCAR,
    };
    let tls = s
        .tls
        .as_ref()
        .and_then(|t| read_tls(&t.value, recipe, sink));
    if let Some(i) = &s.ingress
        && ingress == IngressMode::Gateway
    {
        check_gateway_k3s(i, k3s_version, sink);
        check_gateway_oscar(i, oscar, s.oscar_version.as_ref(), sink);
        if s.tls.is_none() {
            sink.error(pos(i), "`ingress: gateway` needs `serverless.tls`")
                .help("a Gateway's HTTPS listener serves only the certificate it references (Gateway API `certificateRefs`); give `tls: {cert: FILE, key: FILE}` (PEM), or use `ingress: nginx`, which serves its own (docs/oscar.md, \"Gateway\")");
        }
    }
    let values_secrets = parse_k3s_release(k3s_version).is_some_and(k3s_has_values_secrets);
    if !values_secrets && parse_k3s_release(k3s_version).is_some() {
        let firsts: Vec<String> = VALUES_SECRETS_MIN_K3S
            .iter()
            .map(|(ma, mi, pa)| format!("v{ma}.{mi}.{pa}"))
            .collect();
        let next_minor = VALUES_SECRETS_MIN_K3S
            .last()
            .map_or(0, |&(_, mi, _)| mi + 1);
        sink.warning(
            pos(&s.profile),
            format!(
                "k3s {k3s_version} cannot read chart values from Secrets: the OSCAR password and MinIO's secret key will sit in the `oscar` HelmChart's valuesContent in kube-system"
            ),
        )
        .help(format!(
            "pin a k3s release whose helm-controller has `valuesSecrets` ({} or later within those minors, any v1.{next_minor} or later) to keep them in a Secret (docs/oscar.md, \"Secrets\")",
            firsts.join(", ")
        ));
    }
    let endpoint = match &s.endpoint {
        Some(e) => {
            let v = e.value.trim().trim_end_matches('/').to_string();
            match url::Url::parse(&v) {
                Ok(u) if u.scheme() == "https" && u.host().is_some() => {}
                Ok(u) if u.scheme() == "http" && u.host().is_some() => {
                    sink.error(
                        pos(e),
                        format!("the serverless endpoint `{v}` is plain http"),
                    )
                    .help("OSCAR is served over https (Basic auth must not cross the network in clear): give an https:// URL (docs/oscar.md, \"TLS\")");
                }
                _ => {
                    sink.error(pos(e), format!("invalid serverless endpoint `{v}`"))
                        .help("give the URL users reach OSCAR by, e.g. https://oscar.example.org");
                }
            }
            v
        }
        None => format!("https://{}", bracket(api_endpoint)),
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
            } else if let Some(key) = credential_value(k, &val.value) {
                sink.error(
                    pos(val),
                    format!("`values.{k}` sets `{key}`, which continuum sets from the layer's credentials"),
                )
                .help("give credentials in `serverless.credentials`: continuum keeps them in Secrets, out of HelmChart values (docs/oscar.md, \"Secrets\")");
            } else {
                values.insert(k.clone(), val.value.clone());
            }
        }
    }
    // The ingress controller's own certificate is self-signed: only a certificate the
    // recipe gives can be verified (docs/oscar.md, "TLS").
    let verifiable = tls.is_some();
    let oscar_cli = match &s.oscar_cli {
        Some(o) => {
            if let Some(v) = &o.value.ssl_verify
                && v.value
                && s.tls.is_none()
            {
                sink.warning(
                    pos(v),
                    "`ssl_verify: true` without `serverless.tls`: the ingress serves its own self-signed certificate, which clients cannot verify",
                )
                .help("give `serverless.tls: {cert, key}`, or leave ssl_verify out (it then follows `tls`)");
            }
            OscarCliTarget {
                path: o
                    .value
                    .path
                    .as_ref()
                    .map(|p| resolve_path(recipe, &p.value, sink.home().as_deref())),
                set_default: o.value.set_default.as_ref().is_some_and(|b| b.value),
                ssl_verify: o.value.ssl_verify.as_ref().map_or(verifiable, |b| b.value),
            }
        }
        None => OscarCliTarget {
            path: None,
            set_default: false,
            ssl_verify: verifiable,
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
        oscar,
        resource_manager: s.resource_manager.as_ref().is_none_or(|b| b.value),
        rescheduler: s.rescheduler.as_ref().is_some_and(|b| b.value),
        tls,
        values_secrets,
    }
}

/// The first key of `CREDENTIAL_VALUES` that `values` (of `component`) sets.
fn credential_value(component: &str, values: &serde_json::Value) -> Option<String> {
    let (_, keys) = CREDENTIAL_VALUES.iter().find(|(c, _)| *c == component)?;
    keys.iter()
        .find(|k| {
            k.split('.')
                .try_fold(values, |v, part| v.get(part))
                .is_some()
        })
        .map(|k| (*k).to_string())
}

/// Read `serverless.tls`: both files must hold PEM (a certificate, a private key).
fn read_tls(t: &TlsSection, recipe: &Path, sink: &mut Sink<'_>) -> Option<TlsCert> {
    let mut read = |at: &Spanned<String>, what: &str, marker: &dyn Fn(&str) -> bool| {
        let path = resolve_path(recipe, at.value.trim(), sink.home().as_deref());
        match sink.files.read(&path) {
            Ok(text) if marker(&text) => Some((path, text)),
            Ok(_) => {
                sink.error(
                    pos(at),
                    format!("`{}` holds no PEM {what}", path.display()),
                )
                .help("give PEM files: the certificate chain (`-----BEGIN CERTIFICATE-----`) and its private key (`-----BEGIN ... PRIVATE KEY-----`)");
                None
            }
            Err(e) => {
                sink.error(
                    pos(at),
                    format!("cannot read the TLS {what} `{}`: {e}", path.display()),
                );
                None
            }
        }
    };
    let cert = read(&t.cert, "certificate", &|s: &str| {
        s.contains("-----BEGIN CERTIFICATE-----") && s.contains("-----END CERTIFICATE-----")
    });
    let key = read(&t.key, "private key", &|s: &str| {
        s.lines()
            .any(|l| l.starts_with("-----BEGIN ") && l.trim_end().ends_with("PRIVATE KEY-----"))
    });
    let ((cert_path, cert_pem), (key_path, key_pem)) = (cert?, key?);
    Some(TlsCert {
        cert_path,
        key_path,
        cert_pem,
        key_pem: Secret::new(key_pem),
    })
}

/// `ingress: gateway` renders the chart's HTTPRoute, which charts before 4.0.0 lack.
fn check_gateway_oscar(
    at: &Spanned<String>,
    oscar: OscarRelease,
    named: Option<&Spanned<String>>,
    sink: &mut Sink<'_>,
) {
    if oscar.has_httproute() {
        return;
    }
    let d = sink.error(
        pos(at),
        format!(
            "`ingress: gateway` needs OSCAR 4.0 or later (the chart's HTTPRoute); the recipe installs OSCAR {}",
            oscar.version
        ),
    );
    match named {
        Some(v) => d.help(format!(
            "use `ingress: nginx` with OSCAR {}, or drop `oscar_version` (line {})",
            oscar.version,
            pos(v).line
        )),
        None => d.help("use `ingress: nginx`"),
    };
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
