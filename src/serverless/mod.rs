//! The OSCAR serverless layer (docs/oscar.md): the validated recipe model of it,
//! credentials, manifest rendering (`manifests`), readiness over HTTP, the OSCAR API
//! client (`client`), service definitions per API version (`service`), oscar-cli FDL
//! (`fdl`) and function redeployment (`functions`).
//!
//! Invariants: chart versions are pinned in one table (`manifests::CHARTS`, OSCAR's per
//! release in `manifests::OSCAR_RELEASES`);
//! credentials are generated with the OS CSPRNG unless the recipe gives them and live
//! only in the 0600 state file, the 0600 manifests on the server and the 0600
//! oscar-cli config; nothing here prints.

pub mod client;
pub mod fdl;
pub mod functions;
pub mod manifests;
pub mod removal;
pub mod service;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::state::Secret;

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
    pub oscar: manifests::OscarRelease,
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
        format!("http://{host}:{}", manifests::MINIO_NODE_PORT)
    }
}

/// The credentials in force for a cluster (kept in the state file, 0600).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    pub oscar_user: String,
    pub oscar_password: Secret,
    pub minio_access_key: String,
    pub minio_secret_key: Secret,
}

impl Credentials {
    /// The given credentials, with a CSPRNG value for every missing one; values
    /// already recorded (`previous`) are kept so a re-run does not rotate them.
    pub fn resolve(
        given: &GivenCredentials,
        previous: Option<&Credentials>,
        random: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<Credentials, String> {
        let prev = previous.cloned().unwrap_or_default();
        let pick = |g: Option<&str>, p: &str, r: &mut dyn FnMut() -> Result<String, String>| match (
            g, p,
        ) {
            (Some(g), _) => Ok(g.to_string()),
            (None, p) if !p.is_empty() => Ok(p.to_string()),
            _ => r(),
        };
        let oscar_user = given.oscar_user.clone().unwrap_or_else(|| {
            if prev.oscar_user.is_empty() {
                "oscar".into()
            } else {
                prev.oscar_user.clone()
            }
        });
        let oscar_password = Secret::new(pick(
            given.oscar_password.as_ref().map(Secret::expose),
            prev.oscar_password.expose(),
            random,
        )?);
        let mut short = || random().map(|s| s.chars().take(20).collect::<String>());
        let minio_access_key = pick(
            given.minio_access_key.as_deref(),
            &prev.minio_access_key,
            &mut short,
        )?;
        let minio_secret_key = Secret::new(pick(
            given.minio_secret_key.as_ref().map(Secret::expose),
            prev.minio_secret_key.expose(),
            random,
        )?);
        Ok(Credentials {
            oscar_user,
            oscar_password,
            minio_access_key,
            minio_secret_key,
        })
    }
}

/// A cluster id usable in oscar-cli and the registry.
pub fn valid_cluster_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// Why the layer is not ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error(
        "OSCAR on cluster `{cluster}` is not ready after {secs} s: {component} ({url}) {detail}"
    )]
    Timeout {
        cluster: String,
        component: String,
        url: String,
        secs: u64,
        detail: String,
    },
}

/// Wait until `/health` and then `/system/info` answer through the user-facing
/// endpoint; the error names the component that did not.
pub async fn wait_ready(
    cluster: &str,
    oscar: &client::Oscar,
    timeout: Duration,
    version: Option<&str>,
) -> Result<client::SystemInfo, ReadyError> {
    let start = Instant::now();
    let mut health_ok = false;
    let same = |a: &str, b: &str| a.trim_start_matches('v') == b.trim_start_matches('v');
    loop {
        let (component, path, result) = if health_ok {
            let r = oscar.system_info().await;
            ("OSCAR manager /system/info", "/system/info", r.map(Some))
        } else {
            let r = oscar.health().await.map(|()| None);
            ("OSCAR manager /health", "/health", r)
        };
        match result {
            // After a version change the previous manager answers until the new one
            // has rolled out: only the installed version counts as ready.
            Ok(Some(info)) if version.is_some_and(|v| !same(v, &info.version)) => {
                if start.elapsed() >= timeout {
                    return Err(ReadyError::Timeout {
                        cluster: cluster.to_string(),
                        component: component.to_string(),
                        url: format!("{}{path}", oscar.base()),
                        secs: start.elapsed().as_secs(),
                        detail: format!(
                            "OSCAR answers as version {}, the recipe installs {}",
                            info.version,
                            version.unwrap_or_default()
                        ),
                    });
                }
            }
            Ok(Some(info)) => return Ok(info),
            Ok(None) => {
                health_ok = true;
                continue;
            }
            Err(e) => {
                // Even a 401 is retried until the timeout: right after a password
                // change the previous manager answers until the new one rolls out.
                if start.elapsed() >= timeout {
                    return Err(ReadyError::Timeout {
                        cluster: cluster.to_string(),
                        component: component.to_string(),
                        url: format!("{}{path}", oscar.base()),
                        secs: start.elapsed().as_secs(),
                        detail: format!("last answer: {e}"),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The layer's two graph resources: `serverless` (manifests + readiness) and
/// `endpoint` (catalog + oscar-cli). Pure: the hash covers the manifests rendered with
/// placeholder credentials plus a digest of the credentials the recipe gives, so a
/// converged layer plans as no-op and a changed value or given password as update.
pub fn resources(
    env: &crate::recipe::Environment,
    s: &Serverless,
) -> (crate::graph::Resource, crate::graph::Resource) {
    use serde_json::json;
    let init = Some(env.cluster.init_server().to_string());
    let manifests = match manifests::digests(&env.name, s) {
        Ok(d) => json!(d),
        // Reported by the step, which renders again.
        Err(e) => json!({"error": e.to_string()}),
    };
    let charts: BTreeMap<&str, &str> = manifests::charts(s)
        .iter()
        .map(|c| (c.chart, c.version))
        .collect();
    let given = &s.credentials;
    let given_digest = crate::k3s::sha256_hex(
        format!(
            "{:?}\0{:?}\0{:?}\0{:?}",
            given.oscar_user,
            given.oscar_password.as_ref().map(Secret::expose),
            given.minio_access_key,
            given.minio_secret_key.as_ref().map(Secret::expose)
        )
        .as_bytes(),
    );
    let sl_attrs: BTreeMap<String, serde_json::Value> = [
        ("profile".to_string(), json!(s.profile)),
        ("ingress".to_string(), json!(s.ingress)),
        ("knative".to_string(), json!(s.knative)),
        ("oscar_version".to_string(), json!(s.oscar.version)),
        ("endpoint".to_string(), json!(s.endpoint)),
        ("charts".to_string(), json!(charts)),
        ("manifests".to_string(), manifests),
    ]
    .into();
    let sl_hash = crate::graph::hash_of(&[&json!(sl_attrs), &json!(given_digest)]);
    let ep_attrs: BTreeMap<String, serde_json::Value> = [
        ("cluster_id".to_string(), json!(s.cluster_id)),
        ("oscar_url".to_string(), json!(s.endpoint)),
        ("minio_url".to_string(), json!(s.minio_url())),
        ("context".to_string(), json!(env.kubeconfig.context)),
        ("tier".to_string(), json!(s.tier)),
        ("gpu".to_string(), json!(s.gpu)),
        (
            "oscar_cli".to_string(),
            json!(s.oscar_cli.path.as_ref().map(|p| p.display().to_string())),
        ),
        ("set_default".to_string(), json!(s.oscar_cli.set_default)),
        ("ssl_verify".to_string(), json!(s.oscar_cli.ssl_verify)),
        // The catalog records the version OSCAR reports: a new release re-registers.
        ("oscar_version".to_string(), json!(s.oscar.version)),
    ]
    .into();
    let ep_hash = crate::graph::hash_of(&[&json!(ep_attrs), &json!(given_digest)]);
    (
        crate::graph::Resource {
            id: crate::graph::SERVERLESS.into(),
            kind: crate::graph::Kind::Serverless,
            host: init.clone(),
            attrs: sl_attrs,
            hash: sl_hash,
        },
        crate::graph::Resource {
            id: crate::graph::ENDPOINT.into(),
            kind: crate::graph::Kind::Endpoint,
            host: init,
            attrs: ep_attrs,
            hash: ep_hash,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_kept_and_given_ones_win() {
        let mut n = 0;
        let mut rnd = || {
            n += 1;
            Ok(format!("{n:0>40}"))
        };
        let c = Credentials::resolve(&GivenCredentials::default(), None, &mut rnd).expect("c");
        assert_eq!(c.oscar_user, "oscar");
        assert_eq!(c.minio_access_key.len(), 20);
        assert_ne!(c.oscar_password, c.minio_secret_key);
        let again =
            Credentials::resolve(&GivenCredentials::default(), Some(&c), &mut rnd).expect("again");
        assert_eq!(again, c, "a re-run keeps generated secrets");
        let given = GivenCredentials {
            oscar_password: Some(Secret::new("given-pass")),
            ..GivenCredentials::default()
        };
        let g = Credentials::resolve(&given, Some(&c), &mut rnd).expect("g");
        assert_eq!(g.oscar_password.expose(), "given-pass");
        assert_eq!(g.minio_secret_key, c.minio_secret_key);
    }

    #[test]
    fn layer_resources_follow_cluster_ready_and_plan_as_no_op_once_applied() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::recipe::load_recipe(&dir.join("farm-oscar.yaml"))
            .expect("example")
            .env;
        let rg = crate::graph::build(&env).expect("graph");
        let ix = |id: &str| rg.index[id];
        let g = &rg.graph;
        assert!(g.contains_edge(
            ix(crate::graph::CLUSTER_READY),
            ix(crate::graph::SERVERLESS)
        ));
        assert!(g.contains_edge(ix(crate::graph::SERVERLESS), ix(crate::graph::ENDPOINT)));
        assert!(g.contains_edge(ix(crate::graph::KUBECONFIG), ix(crate::graph::ENDPOINT)));
        let state = crate::graph::applied_state(&env.name, &rg);
        let plan = crate::graph::plan(&env, &rg, Some(&state));
        assert_eq!(plan.to_change(), 0, "{plan:?}");
        // A changed value re-renders the manifests: the layer is updated, nothing else.
        let mut env2 = env.clone();
        if let Some(s) = env2.serverless.as_mut() {
            s.values.insert(
                "minio".into(),
                serde_json::json!({"persistence": {"size": "4Gi"}}),
            );
        }
        let rg2 = crate::graph::build(&env2).expect("graph");
        let plan = crate::graph::plan(&env2, &rg2, Some(&state));
        assert_eq!(plan.to_change(), 1, "{plan:?}");
        assert_eq!(
            plan.get(crate::graph::SERVERLESS).map(|c| c.action),
            Some(crate::graph::Action::Update)
        );
        // Without a serverless section there is no layer in the graph.
        let plain = crate::recipe::load_recipe(&dir.join("farm-edge.yaml"))
            .expect("farm-edge")
            .env;
        let rg = crate::graph::build(&plain).expect("graph");
        assert!(!rg.index.contains_key(crate::graph::SERVERLESS));
    }
}
