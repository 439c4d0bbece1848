//! The serverless layer as a recipe asks for it (docs/oscar.md): profile and tier,
//! ingress mode, given credentials, oscar-cli targets, TLS, chart value overrides, and
//! the table of installable OSCAR releases (the only place their versions are pinned).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::recipe::Secret;

/// MinIO's S3 API NodePort (its console is the next port).
pub const MINIO_NODE_PORT: u16 = 30300;

/// Components whose chart values a recipe may override (`serverless.values.NAME`).
pub const COMPONENTS: &[&str] = &["minio", "nfs", "ingress", "knative", "oscar"];

/// OSCAR refuses longer service names (the `max=39` binding of `types.Service.Name`;
/// docs/oscar.md, "Writes").
pub const MAX_SERVICE_NAME: usize = 39;

/// Whether `name` can name an OSCAR service: OSCAR checks only its length, but it names
/// Kubernetes Services (and Knative Services) after it, which must be RFC 1035 labels:
/// lowercase letters, digits and `-`, starting with a letter and ending with a letter
/// or digit (docs/oscar.md, "Service names").
pub fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_SERVICE_NAME
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// Which set of defaults the layer is rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// Full layer: Knative, larger requests, resource manager.
    Cloud,
    /// Small requests, Knative optional: a Raspberry Pi or Jetson.
    Edge,
}

/// Site tier recorded in the endpoint registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Edge,
    Cloud,
}

impl std::fmt::Display for Tier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Tier::Edge => "edge",
            Tier::Cloud => "cloud",
        })
    }
}

/// How OSCAR is exposed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IngressMode {
    /// ingress-nginx (OSCAR's ingress class is hard-coded to nginx); traefik disabled.
    Nginx,
    /// k3s's traefik with its Gateway API provider; OSCAR renders an HTTPRoute.
    Gateway,
}

/// Credentials the recipe gave (the rest are generated).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GivenCredentials {
    pub oscar_user: Option<String>,
    pub oscar_password: Option<Secret>,
    pub minio_access_key: Option<String>,
    pub minio_secret_key: Option<Secret>,
}

/// Where the cluster's oscar-cli entry goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OscarCliTarget {
    /// `None`: ~/.oscar-cli/config.yaml.
    pub path: Option<PathBuf>,
    pub set_default: bool,
    pub ssl_verify: bool,
}

/// The validated `serverless:` section of a recipe.
#[derive(Debug, Clone, PartialEq)]
pub struct Serverless {
    pub profile: Profile,
    pub tier: Tier,
    pub ingress: IngressMode,
    /// URL users reach OSCAR by (no trailing slash).
    pub endpoint: String,
    pub cluster_id: String,
    pub knative: bool,
    pub gpu: Option<bool>,
    pub readiness_timeout: Duration,
    pub credentials: GivenCredentials,
    /// Chart value overrides per component, merged over the profile's values.
    pub values: BTreeMap<String, serde_json::Value>,
    pub oscar_cli: OscarCliTarget,
    /// k3s's servicelb is on (LoadBalancer services get host ports); without it the
    /// ingress controller binds host ports itself.
    pub servicelb: bool,
    /// The OSCAR release installed (`serverless.oscar_version`; docs/oscar.md, "Versions").
    pub oscar: OscarRelease,
    /// OSCAR's resource manager: jobs of services with replicas or federation members
    /// are delegated when the cluster cannot schedule them (docs/oscar.md,
    /// "Resource manager").
    pub resource_manager: bool,
    /// OSCAR's rescheduler: jobs pending longer than its threshold are delegated.
    pub rescheduler: bool,
    /// The certificate the ingress serves; `None`: the controller's own (docs/oscar.md,
    /// "TLS").
    pub tls: Option<TlsCert>,
    /// The pinned k3s's helm-controller reads chart values from Secrets
    /// (`valuesSecrets`; docs/oscar.md, "Secrets").
    pub values_secrets: bool,
}

/// A certificate and key given by the recipe (`serverless.tls`), read at load time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCert {
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// PEM: the certificate chain.
    pub cert_pem: String,
    /// PEM: the private key.
    pub key_pem: Secret,
}

impl Serverless {
    /// MinIO's S3 API as users reach it: the NodePort on the OSCAR host.
    pub fn minio_url(&self) -> String {
        let host = url::Url::parse(&self.endpoint)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        format!("http://{host}:{}", MINIO_NODE_PORT)
    }
}

/// A cluster id usable in oscar-cli and the registry.
pub fn valid_cluster_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// One installable OSCAR release: the chart installed for it and the manager image
/// tag pinned with it (docs/oscar.md, "Installed versions").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OscarRelease {
    /// The OSCAR version, as `/system/info` reports it.
    pub version: &'static str,
    /// Version of grycap's `oscar` chart.
    pub chart: &'static str,
    /// `image.tag`, always set: chart 4.1.2 defaults it to "latest".
    pub image_tag: &'static str,
}

/// The OSCAR releases continuum installs, newest (the default) first.
pub const OSCAR_RELEASES: &[OscarRelease] = &[
    OscarRelease {
        version: "4.1.2",
        chart: "4.1.2",
        image_tag: "4.1.2",
    },
    OscarRelease {
        version: "3.6.4",
        chart: "3.6.4",
        image_tag: "3.6.4",
    },
];

/// The release installed when the recipe names none.
pub const DEFAULT_OSCAR: OscarRelease = OSCAR_RELEASES[0];

impl OscarRelease {
    /// The release a recipe names: `4.1.2`, `v4.1.2` or the minor alone (`4.1`), which
    /// means the newest pinned patch of it.
    pub fn find(name: &str) -> Option<OscarRelease> {
        let name = name.trim();
        let name = name.strip_prefix('v').unwrap_or(name);
        OSCAR_RELEASES.iter().copied().find(|r| {
            r.version == name
                || r.version
                    .strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with('.') && rest[1..].parse::<u64>().is_ok())
        })
    }

    fn chart_major(&self) -> u64 {
        self.chart
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// The chart renders an HTTPRoute (`httproute.*`, `exposedServices.routeKind`):
    /// charts 4.0.0 and later.
    pub fn has_httproute(&self) -> bool {
        self.chart_major() >= 4
    }
}
