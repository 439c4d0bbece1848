//! Rendering the OSCAR layer as k3s auto-deploy manifests (docs/oscar.md) from the tera
//! templates in templates/oscar/: namespaces, the layer's Secrets, one HelmChart per
//! component, Traefik's Gateway (gateway mode) and KnativeServing.
//!
//! Invariants: every chart version is pinned in `CHARTS` (OSCAR's per release in
//! `OSCAR_RELEASES`) and nowhere else; the output is a pure function of (environment,
//! recipe section, credentials), so its hash is a faithful idempotency key; manifest
//! file names are RFC 1123 and start with `continuum-oscar-` so the layer's files can be
//! found and removed as a set; passwords appear only in the Secrets manifest, never in
//! a HelmChart's `valuesContent`, unless the pinned k3s's helm-controller cannot read
//! values from Secrets (then only the OSCAR chart's, see docs/oscar.md, "Secrets").

use std::collections::BTreeMap;

use base64::Engine as _;
use serde_json::{Value, json};

pub use crate::recipe::serverless::{DEFAULT_OSCAR, MINIO_NODE_PORT, OSCAR_RELEASES, OscarRelease};
use crate::recipe::serverless::{IngressMode, Profile, Serverless};
use crate::state::Credentials;

/// Directory k3s applies manifests from.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// Prefix of every manifest file continuum writes for the layer.
pub const FILE_PREFIX: &str = "continuum-oscar-";
/// Knative Serving version the operator installs.
pub const KNATIVE_SERVING_VERSION: &str = "1.17";
/// Secret (namespace `minio`) the MinIO chart reads its root credentials from
/// (`existingSecret`, keys `rootUser` and `rootPassword`).
pub const MINIO_ROOT_SECRET: &str = "continuum-minio-root";
/// Secret (namespace `kube-system`) the OSCAR HelmChart reads its credential values
/// from (`valuesSecrets`), and its key.
pub const OSCAR_VALUES_SECRET: &str = "continuum-oscar-values";
pub const OSCAR_VALUES_KEY: &str = "values.yaml";
/// `kubernetes.io/tls` Secret with the recipe's certificate (`serverless.tls`).
pub const TLS_SECRET: &str = "continuum-oscar-tls";
/// The Gateway (namespace `kube-system`) OSCAR's HTTPRoute attaches to in gateway mode.
pub const GATEWAY_NAME: &str = "continuum-oscar";
/// Traefik's `websecure` entry point: the port a Gateway listener must name to be
/// served on it (the traefik chart's `ports.websecure.port`).
pub const TRAEFIK_WEBSECURE_PORT: u16 = 8443;

/// One pinned Helm chart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chart {
    /// Key in `serverless.values`.
    pub component: &'static str,
    /// HelmChart object name.
    pub name: &'static str,
    pub repo: &'static str,
    pub chart: &'static str,
    pub version: &'static str,
    pub namespace: &'static str,
}

/// The pinned charts: bump versions here (OSCAR's in `OSCAR_RELEASES`), and only here.
pub const CHARTS: &[Chart] = &[
    Chart {
        component: "nfs",
        name: "nfs-server-provisioner",
        repo: "https://kubernetes-sigs.github.io/nfs-ganesha-server-and-external-provisioner/",
        chart: "nfs-server-provisioner",
        version: "1.8.0",
        namespace: "nfs-provisioner",
    },
    Chart {
        component: "minio",
        name: "minio",
        repo: "https://charts.min.io/",
        chart: "minio",
        version: "5.4.0",
        namespace: "minio",
    },
    Chart {
        component: "ingress",
        name: "ingress-nginx",
        repo: "https://kubernetes.github.io/ingress-nginx",
        chart: "ingress-nginx",
        version: "4.12.1",
        namespace: "ingress-nginx",
    },
    Chart {
        component: "knative",
        name: "knative-operator",
        repo: "https://knative.github.io/operator",
        chart: "knative-operator",
        version: "v1.17.2",
        namespace: "knative-operator",
    },
    Chart {
        component: "oscar",
        name: "oscar",
        repo: "https://grycap.github.io/helm-charts/",
        chart: "oscar",
        // Replaced by the recipe's release (`chart_of`).
        version: DEFAULT_OSCAR.chart,
        namespace: "oscar",
    },
];

const HELMCHART: &str = include_str!("../../templates/oscar/helmchart.yaml.tera");
const NAMESPACES: &str = include_str!("../../templates/oscar/namespaces.yaml.tera");
const SECRETS: &str = include_str!("../../templates/oscar/secrets.yaml.tera");
const KNATIVE_SERVING: &str = include_str!("../../templates/oscar/knative-serving.yaml.tera");
const TRAEFIK_GATEWAY: &str = include_str!("../../templates/oscar/traefik-gateway.yaml.tera");

/// A rendered manifest: its file name in `MANIFESTS_DIR` and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub file: String,
    pub text: String,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot render the {component} manifest: {detail}")]
pub struct RenderError {
    pub component: String,
    pub detail: String,
}

/// The chart of one component, OSCAR's at the recipe's release.
fn chart_of(component: &str, s: &Serverless) -> Chart {
    let mut c = *CHARTS
        .iter()
        .find(|c| c.component == component)
        .unwrap_or(&CHARTS[0]);
    if component == "oscar" {
        c.version = s.oscar.chart;
    }
    c
}

/// Every chart the layer pins, at the versions this recipe section installs.
pub fn charts(s: &Serverless) -> Vec<Chart> {
    CHARTS.iter().map(|c| chart_of(c.component, s)).collect()
}

/// Merge `over` into `base` (mappings recursively; anything else replaces).
pub fn deep_merge(base: &mut Value, over: &Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                deep_merge(b.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o.clone(),
    }
}

fn is_ip(host: &str) -> bool {
    host.trim_matches(['[', ']'])
        .parse::<std::net::IpAddr>()
        .is_ok()
}

/// The endpoint's host when it is a DNS name (Ingress and HTTPRoute hosts take no IP).
fn dns_host(s: &Serverless) -> Option<String> {
    url::Url::parse(&s.endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .filter(|h| !h.is_empty() && !is_ip(h))
}

/// The endpoint's host, as a URL authority part (IPv6 in brackets).
fn endpoint_host(s: &Serverless) -> String {
    url::Url::parse(&s.endpoint)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_default()
}

/// Namespace the TLS Secret goes to: where its reader looks for it.
fn tls_namespace(s: &Serverless) -> &'static str {
    match s.ingress {
        IngressMode::Nginx => "ingress-nginx",
        IngressMode::Gateway => "kube-system",
    }
}

/// A digest that changes with the MinIO root credentials: MinIO reads them from its
/// Secret only at start, so a change must roll its pod (as the chart's own
/// `checksum/secrets` annotation does when it renders the Secret itself).
fn minio_credentials_digest(c: &Credentials) -> String {
    crate::render::sha256_hex(
        format!(
            "{MINIO_ROOT_SECRET}\0{}\0{}",
            c.minio_access_key,
            c.minio_secret_key.expose()
        )
        .as_bytes(),
    )
}

/// The OSCAR chart's credential values: in the values Secret when the helm-controller
/// reads one, in `valuesContent` otherwise.
fn oscar_credential_values(c: &Credentials) -> Value {
    json!({
        "authPass": c.oscar_password.expose(),
        "minIO": {
            "accessKey": c.minio_access_key,
            "secretKey": c.minio_secret_key.expose(),
        },
    })
}

/// The profile's values of one component, before the recipe's overrides.
fn profile_values(component: &str, s: &Serverless, c: &Credentials) -> Value {
    let cloud = s.profile == Profile::Cloud;
    let pick = |a: &str, b: &str| if cloud { a.to_string() } else { b.to_string() };
    match component {
        "nfs" => json!({
            "persistence": {"enabled": true, "storageClass": "local-path", "size": pick("20Gi", "5Gi")},
            "storageClass": {"name": "nfs", "defaultClass": false, "allowVolumeExpansion": true,
                              "mountOptions": ["vers=4.1"]},
            "resources": {"requests": {"cpu": pick("100m", "50m"), "memory": pick("256Mi", "64Mi")}},
        }),
        "minio" => json!({
            "mode": "standalone",
            "existingSecret": MINIO_ROOT_SECRET,
            "podAnnotations": {"continuum.io/credentials-digest": minio_credentials_digest(c)},
            "persistence": {"enabled": true, "storageClass": "local-path", "size": pick("10Gi", "2Gi")},
            "service": {"type": "NodePort", "port": 9000, "nodePort": MINIO_NODE_PORT},
            "consoleService": {"type": "NodePort", "port": 9001, "nodePort": MINIO_NODE_PORT + 1},
            "environment": {"MINIO_BROWSER_REDIRECT_URL":
                format!("http://{}:{}", endpoint_host(s), MINIO_NODE_PORT + 1)},
            "resources": {"requests": {"memory": pick("1Gi", "256Mi")}},
        }),
        "ingress" => {
            // servicelb gives the LoadBalancer service host ports 80/443; without it
            // the controller binds them itself.
            let exposure = if s.servicelb {
                json!({"service": {"type": "LoadBalancer"}})
            } else {
                json!({"service": {"type": "ClusterIP"}, "hostPort": {"enabled": true}})
            };
            let mut v = json!({"controller": {
                "ingressClassResource": {"name": "nginx", "default": true},
                "resources": {"requests": {"cpu": pick("100m", "50m"), "memory": pick("128Mi", "64Mi")}},
            }});
            deep_merge(&mut v["controller"], &exposure);
            // Basic auth never crosses in clear: http is always redirected to https,
            // served with the controller's own default certificate unless the recipe
            // gives one (OSCAR's Ingress has no tls block, so only
            // `force-ssl-redirect` redirects; docs/oscar.md, "TLS").
            deep_merge(
                &mut v["controller"],
                &json!({"config": {"force-ssl-redirect": "true"}}),
            );
            if s.tls.is_some() {
                // The recipe's certificate is the controller's default one.
                deep_merge(
                    &mut v["controller"],
                    &json!({
                        "extraArgs": {"default-ssl-certificate": format!("ingress-nginx/{TLS_SECRET}")},
                    }),
                );
            }
            v
        }
        "knative" => json!({
            "knative_operator": {"knative_operator": {"resources": {"requests": {
                "cpu": pick("100m", "50m"), "memory": pick("100Mi", "64Mi")}}}},
        }),
        _ => {
            let host = dns_host(s);
            let gateway = s.ingress == IngressMode::Gateway;
            let mut v = json!({
                "authUser": c.oscar_user,
                "image": {"tag": s.oscar.image_tag},
                "serverlessBackend": if s.knative { "knative" } else { "" },
                "service": {"type": "ClusterIP"},
                "ingress": {"create": !gateway},
                "volume": {"storageClassName": "nfs"},
                "minIO": {
                    // What OSCAR hands to clients (oscar-cli put-file/get-file, the
                    // dashboard) and its service pods: MinIO as reachable from outside.
                    "endpoint": s.minio_url(),
                    "TLSVerify": false,
                },
                "resourceManager": {"enable": s.resource_manager},
                "reScheduler": {"enable": s.rescheduler},
                "resources": {"requests": {"cpu": pick("250m", "100m"), "memory": pick("512Mi", "128Mi")}},
            });
            if !s.values_secrets {
                deep_merge(&mut v, &oscar_credential_values(c));
            }
            if let Some(h) = &host {
                v["ingress"]["host"] = json!(h);
            }
            // Charts before 4.0.0 have no HTTPRoute and no exposedServices values.
            if s.oscar.has_httproute() {
                v["httproute"] = json!({"create": gateway});
                if gateway {
                    v["httproute"]["type"] = json!("traefik");
                    v["httproute"]["gateway"] =
                        json!({"name": GATEWAY_NAME, "namespace": "kube-system"});
                    if let Some(h) = &host {
                        v["httproute"]["host"] = json!(h);
                    }
                    v["exposedServices"] = json!({"routeKind": "httproute"});
                }
            }
            v
        }
    }
}

/// The values of one component: profile defaults with the recipe's overrides on top.
/// Credentials kept in Secrets are not part of them (`secrets`).
pub fn values(component: &str, s: &Serverless, c: &Credentials) -> Value {
    let mut v = profile_values(component, s, c);
    if let Some(over) = s.values.get(component) {
        deep_merge(&mut v, over);
    }
    v
}

fn render_one(template: &str, component: &str, ctx: &tera::Context) -> Result<String, RenderError> {
    tera::Tera::one_off(template, ctx, false).map_err(|e| RenderError {
        component: component.to_string(),
        detail: e.to_string(),
    })
}

fn to_yaml(component: &str, v: &Value) -> Result<String, RenderError> {
    serde_saphyr::to_string(v).map_err(|e| RenderError {
        component: component.to_string(),
        detail: e.to_string(),
    })
}

fn helmchart(
    env: &str,
    component: &str,
    s: &Serverless,
    c: &Credentials,
) -> Result<String, RenderError> {
    let ch = chart_of(component, s);
    let yaml = to_yaml(component, &values(component, s, c))?;
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("component", component);
    ctx.insert("name", ch.name);
    ctx.insert("repo", ch.repo);
    ctx.insert("chart", ch.chart);
    ctx.insert("version", ch.version);
    ctx.insert("namespace", ch.namespace);
    ctx.insert("values", yaml.trim_end());
    let values_secret = component == "oscar" && s.values_secrets;
    ctx.insert(
        "values_secret",
        if values_secret {
            OSCAR_VALUES_SECRET
        } else {
            ""
        },
    );
    ctx.insert("values_secret_key", OSCAR_VALUES_KEY);
    render_one(HELMCHART, component, &ctx)
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s.as_bytes())
}

fn secret(name: &str, namespace: &str, kind: Option<&str>, data: &[(&str, &str)]) -> Value {
    let mut v = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": data.iter().map(|(k, v)| ((*k).to_string(), json!(b64(v)))).collect::<serde_json::Map<_, _>>(),
    });
    if let Some(t) = kind {
        v["type"] = json!(t);
    }
    v
}

/// The layer's Secrets: MinIO's root credentials, the OSCAR chart's credential values
/// (when the helm-controller reads them from a Secret) and the recipe's certificate.
fn secrets(env: &str, s: &Serverless, c: &Credentials) -> Result<String, RenderError> {
    let mut docs = vec![secret(
        MINIO_ROOT_SECRET,
        "minio",
        None,
        &[
            ("rootUser", &c.minio_access_key),
            ("rootPassword", c.minio_secret_key.expose()),
        ],
    )];
    if s.values_secrets {
        let values = to_yaml("oscar", &oscar_credential_values(c))?;
        docs.push(secret(
            OSCAR_VALUES_SECRET,
            "kube-system",
            None,
            &[(OSCAR_VALUES_KEY, &values)],
        ));
    }
    if let Some(t) = &s.tls {
        docs.push(secret(
            TLS_SECRET,
            tls_namespace(s),
            Some("kubernetes.io/tls"),
            &[("tls.crt", &t.cert_pem), ("tls.key", t.key_pem.expose())],
        ));
    }
    let mut text = Vec::new();
    for d in &docs {
        text.push(to_yaml("secrets", d)?.trim_end().to_string());
    }
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("tls", &s.tls.is_some());
    ctx.insert("docs", &text.join("\n---\n"));
    render_one(SECRETS, "secrets", &ctx)
}

/// Every manifest of the layer, in apply order.
pub fn render(env: &str, s: &Serverless, c: &Credentials) -> Result<Vec<Manifest>, RenderError> {
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    let mut namespaces = vec!["oscar", "oscar-svc", "minio"];
    if s.tls.is_some() && s.ingress == IngressMode::Nginx {
        namespaces.push("ingress-nginx");
    }
    let mut ns = ctx.clone();
    ns.insert("namespaces", &namespaces);
    let mut out = vec![Manifest {
        file: format!("{FILE_PREFIX}00-namespaces.yaml"),
        text: render_one(NAMESPACES, "namespaces", &ns)?,
    }];
    let mut push = |n: &str, text: String| {
        out.push(Manifest {
            file: format!("{FILE_PREFIX}{n}.yaml"),
            text,
        });
    };
    push("05-secrets", secrets(env, s, c)?);
    push("10-nfs", helmchart(env, "nfs", s, c)?);
    push("20-minio", helmchart(env, "minio", s, c)?);
    match s.ingress {
        IngressMode::Nginx => push("30-ingress-nginx", helmchart(env, "ingress", s, c)?),
        IngressMode::Gateway => {
            let mut g = ctx.clone();
            g.insert("gateway", GATEWAY_NAME);
            g.insert("port", &TRAEFIK_WEBSECURE_PORT);
            g.insert("tls_secret", TLS_SECRET);
            push(
                "30-traefik-gateway",
                render_one(TRAEFIK_GATEWAY, "ingress", &g)?,
            );
        }
    }
    if s.knative {
        push("40-knative-operator", helmchart(env, "knative", s, c)?);
        let mut k = ctx.clone();
        k.insert("serving_version", KNATIVE_SERVING_VERSION);
        k.insert("replicas", &if s.profile == Profile::Cloud { 2 } else { 1 });
        push(
            "41-knative-serving",
            render_one(KNATIVE_SERVING, "knative", &k)?,
        );
    }
    push("50-oscar", helmchart(env, "oscar", s, c)?);
    Ok(out)
}

/// Placeholder credentials for the plan's hash (the real ones are in state).
pub fn placeholder_credentials() -> Credentials {
    Credentials {
        oscar_user: "oscar".into(),
        oscar_password: crate::recipe::Secret::new("<generated>"),
        minio_access_key: "<generated>".into(),
        minio_secret_key: crate::recipe::Secret::new("<generated>"),
    }
}

/// File name -> sha256 of the manifests rendered with placeholder credentials.
pub fn digests(env: &str, s: &Serverless) -> Result<BTreeMap<String, String>, RenderError> {
    Ok(render(env, s, &placeholder_credentials())?
        .into_iter()
        .map(|m| (m.file, crate::render::sha256_hex(m.text.as_bytes())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::serverless::{GivenCredentials, OscarCliTarget, Tier, TlsCert};
    use std::time::Duration;

    fn section(profile: Profile) -> Serverless {
        Serverless {
            profile,
            tier: if profile == Profile::Cloud {
                Tier::Cloud
            } else {
                Tier::Edge
            },
            ingress: IngressMode::Nginx,
            endpoint: "https://oscar.example.org".into(),
            cluster_id: "farm".into(),
            knative: profile == Profile::Cloud,
            gpu: None,
            readiness_timeout: Duration::from_secs(60),
            credentials: GivenCredentials::default(),
            values: BTreeMap::new(),
            oscar_cli: OscarCliTarget {
                path: None,
                set_default: false,
                ssl_verify: false,
            },
            servicelb: true,
            oscar: DEFAULT_OSCAR,
            resource_manager: true,
            rescheduler: false,
            tls: None,
            values_secrets: true,
        }
    }

    fn tls() -> TlsCert {
        TlsCert {
            cert_path: "/etc/oscar/tls.crt".into(),
            key_path: "/etc/oscar/tls.key".into(),
            cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
            key_pem: crate::recipe::Secret::new(
                "-----BEGIN PRIVATE KEY-----\nKEY-0123\n-----END PRIVATE KEY-----\n",
            ),
        }
    }

    fn creds() -> Credentials {
        Credentials {
            oscar_user: "oscar".into(),
            oscar_password: crate::recipe::Secret::new("pw-0123456789"),
            minio_access_key: "minioadmin-key".into(),
            minio_secret_key: crate::recipe::Secret::new("minio-secret-0123"),
        }
    }

    fn docs(m: &Manifest) -> Vec<Value> {
        serde_saphyr::from_multiple(&m.text)
            .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", m.file, m.text))
    }

    fn file<'a>(ms: &'a [Manifest], suffix: &str) -> &'a Manifest {
        ms.iter()
            .find(|m| m.file.ends_with(suffix))
            .unwrap_or_else(|| {
                panic!(
                    "no {suffix} in {:?}",
                    ms.iter().map(|m| &m.file).collect::<Vec<_>>()
                )
            })
    }

    /// The parsed `valuesContent` of the HelmChart in `suffix`.
    fn chart_values(ms: &[Manifest], suffix: &str) -> Value {
        let d = docs(file(ms, suffix)).remove(0);
        serde_saphyr::from_str(d["spec"]["valuesContent"].as_str().expect("values"))
            .expect("valuesContent is YAML")
    }

    /// `name` in namespace `ns` from the Secrets manifest, its data decoded.
    fn secret_data(
        ms: &[Manifest],
        name: &str,
        ns: &str,
    ) -> Option<(Value, BTreeMap<String, String>)> {
        docs(file(ms, "05-secrets.yaml")).into_iter().find_map(|d| {
            (d["metadata"]["name"] == name && d["metadata"]["namespace"] == ns).then(|| {
                let data = d["data"]
                    .as_object()
                    .expect("data")
                    .iter()
                    .map(|(k, v)| {
                        let raw = base64::engine::general_purpose::STANDARD
                            .decode(v.as_str().expect("base64 string"))
                            .expect("base64");
                        (k.clone(), String::from_utf8(raw).expect("utf-8"))
                    })
                    .collect();
                (d.clone(), data)
            })
        })
    }

    /// Every document parses; every HelmChart names repo, chart, version (a string)
    /// and targetNamespace at the pinned version, with a mapping as values.
    fn check(ms: &[Manifest], s: &Serverless) {
        for m in ms {
            assert!(m.file.starts_with(FILE_PREFIX) && m.file.ends_with(".yaml"));
            let docs = docs(m);
            assert!(!docs.is_empty(), "{}", m.file);
            for d in docs {
                if d["kind"] == "HelmChart" {
                    let spec = &d["spec"];
                    for k in ["repo", "chart", "version", "targetNamespace"] {
                        assert!(
                            spec[k].as_str().is_some_and(|s| !s.is_empty()),
                            "{}: {k}",
                            m.file
                        );
                    }
                    let pinned = charts(s)
                        .into_iter()
                        .find(|c| c.chart == spec["chart"])
                        .expect("pinned");
                    assert_eq!(spec["version"], pinned.version);
                    let values: Value =
                        serde_saphyr::from_str(spec["valuesContent"].as_str().expect("values"))
                            .expect("valuesContent is YAML");
                    assert!(values.is_object(), "{}", m.file);
                }
            }
        }
    }

    /// No credential, and no private key, outside the Secrets manifest.
    fn secrets_only_in_secret_objects(ms: &[Manifest]) {
        let c = creds();
        for m in ms.iter().filter(|m| !m.file.ends_with("05-secrets.yaml")) {
            for secret in [
                c.oscar_password.expose(),
                c.minio_secret_key.expose(),
                "KEY-0123",
                &b64(c.oscar_password.expose()),
            ] {
                assert!(
                    !m.text.contains(secret),
                    "{} holds {secret}:\n{}",
                    m.file,
                    m.text
                );
            }
        }
    }

    fn snapshot_text(ms: &[Manifest]) -> String {
        ms.iter()
            .map(|m| format!("### {}\n{}", m.file, m.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn cloud_profile_snapshot() {
        let s = section(Profile::Cloud);
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms, &s);
        secrets_only_in_secret_objects(&ms);
        assert!(ms.iter().any(|m| m.file.contains("knative-serving")));
        insta::assert_snapshot!("cloud", snapshot_text(&ms));
    }

    #[test]
    fn edge_profile_snapshot() {
        let mut s = section(Profile::Edge);
        s.values.insert(
            "oscar".into(),
            json!({"resources": {"requests": {"memory": "96Mi"}}, "extra": {"k": "v"}}),
        );
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms, &s);
        secrets_only_in_secret_objects(&ms);
        assert!(
            !ms.iter().any(|m| m.file.contains("knative")),
            "edge: no Knative by default"
        );
        let oscar = chart_values(&ms, "50-oscar.yaml");
        assert_eq!(
            oscar["resources"]["requests"]["memory"], "96Mi",
            "override applied"
        );
        assert_eq!(
            oscar["resources"]["requests"]["cpu"], "100m",
            "profile value kept next to the override"
        );
        assert_eq!(
            oscar["resourceManager"]["enable"], true,
            "edge clusters offload"
        );
        insta::assert_snapshot!("edge", snapshot_text(&ms));
    }

    /// Item 3: OSCAR's services mount a PVC, which Knative admits only with both
    /// PVC features enabled.
    #[test]
    fn knative_serving_enables_pvc_features() {
        let s = section(Profile::Cloud);
        let ms = render("farm", &s, &creds()).expect("render");
        let ks = docs(file(&ms, "41-knative-serving.yaml"))
            .into_iter()
            .find(|d| d["kind"] == "KnativeServing")
            .expect("KnativeServing");
        let features = &ks["spec"]["config"]["config-features"];
        assert_eq!(
            features["kubernetes.podspec-persistent-volume-claim"],
            "enabled"
        );
        assert_eq!(
            features["kubernetes.podspec-persistent-volume-write"],
            "enabled"
        );
        assert_eq!(
            ks["spec"]["config"]["network"]["ingress-class"],
            "kourier.ingress.networking.knative.dev"
        );
    }

    /// Item 4: each release installs its chart with its image tag pinned; 3.6's chart
    /// gets no values it does not have (httproute, exposedServices).
    #[test]
    fn oscar_release_picks_chart_and_image() {
        for r in OSCAR_RELEASES {
            let mut s = section(Profile::Cloud);
            s.oscar = *r;
            let ms = render("farm", &s, &creds()).expect("render");
            check(&ms, &s);
            let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
            assert_eq!(hc["spec"]["version"], r.chart);
            let v = chart_values(&ms, "50-oscar.yaml");
            assert_eq!(v["image"]["tag"], r.image_tag, "{}", r.version);
            assert_eq!(
                v.get("httproute").is_some(),
                r.has_httproute(),
                "{}",
                r.version
            );
            assert!(v.get("exposedServices").is_none());
        }
        assert_eq!(DEFAULT_OSCAR.version, "4.1.2");
        let old = OscarRelease::find("3.6").expect("3.6");
        assert_eq!((old.chart, old.image_tag), ("3.6.4", "3.6.4"));
        assert!(!old.has_httproute());
        assert_eq!(OscarRelease::find("v4.1.2"), Some(DEFAULT_OSCAR));
        assert_eq!(OscarRelease::find("4.1"), Some(DEFAULT_OSCAR));
        for bad in ["4", "4.2", "3.6.3", "latest", "", "4.1.x"] {
            assert_eq!(OscarRelease::find(bad), None, "{bad}");
        }
    }

    /// Item 6: the resource manager and the rescheduler follow the recipe.
    #[test]
    fn resource_manager_and_rescheduler_follow_the_section() {
        let mut s = section(Profile::Edge);
        s.resource_manager = false;
        s.rescheduler = true;
        let v = chart_values(
            &render("farm", &s, &creds()).expect("render"),
            "50-oscar.yaml",
        );
        assert_eq!(v["resourceManager"]["enable"], false);
        assert_eq!(v["reScheduler"]["enable"], true);
    }

    /// Item 8: the HTTPRoute's parent is a Gateway in kube-system served by k3s's
    /// Traefik, taking routes from every namespace, on HTTPS with the recipe's
    /// certificate.
    #[test]
    fn gateway_mode_uses_traefik_and_httproute() {
        let mut s = section(Profile::Edge);
        s.ingress = IngressMode::Gateway;
        s.tls = Some(tls());
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms, &s);
        secrets_only_in_secret_objects(&ms);
        assert!(!ms.iter().any(|m| m.file.contains("ingress-nginx")));
        let gw = docs(file(&ms, "30-traefik-gateway.yaml"));
        let hcc = gw
            .iter()
            .find(|d| d["kind"] == "HelmChartConfig")
            .expect("HelmChartConfig");
        assert_eq!(hcc["metadata"]["name"], "traefik");
        assert_eq!(hcc["metadata"]["namespace"], "kube-system");
        let traefik: Value =
            serde_saphyr::from_str(hcc["spec"]["valuesContent"].as_str().expect("values"))
                .expect("yaml");
        assert_eq!(traefik["providers"]["kubernetesGateway"]["enabled"], true);
        let g = gw.iter().find(|d| d["kind"] == "Gateway").expect("Gateway");
        assert_eq!(g["metadata"]["namespace"], "kube-system");
        assert_eq!(g["metadata"]["name"], GATEWAY_NAME);
        assert_eq!(g["spec"]["gatewayClassName"], "traefik");
        let l = &g["spec"]["listeners"][0];
        assert_eq!(l["protocol"], "HTTPS");
        assert_eq!(l["port"], TRAEFIK_WEBSECURE_PORT);
        assert_eq!(l["allowedRoutes"]["namespaces"]["from"], "All");
        assert_eq!(l["tls"]["certificateRefs"][0]["name"], TLS_SECRET);
        assert!(
            g["spec"]["listeners"]
                .as_array()
                .is_some_and(|a| a.len() == 1),
            "no plain http"
        );

        let v = chart_values(&ms, "50-oscar.yaml");
        assert_eq!(v["httproute"]["create"], true);
        assert_eq!(v["httproute"]["gateway"]["name"], GATEWAY_NAME);
        assert_eq!(v["httproute"]["gateway"]["namespace"], "kube-system");
        assert_eq!(v["httproute"]["host"], "oscar.example.org");
        assert_eq!(v["exposedServices"]["routeKind"], "httproute");
        assert_eq!(v["ingress"]["create"], false);
        let (doc, data) = secret_data(&ms, TLS_SECRET, "kube-system").expect("TLS Secret");
        assert_eq!(doc["type"], "kubernetes.io/tls");
        assert!(data["tls.key"].contains("KEY-0123"));
        assert!(data["tls.crt"].starts_with("-----BEGIN CERTIFICATE-----"));
        insta::assert_snapshot!("gateway", snapshot_text(&ms));
    }

    /// Item 9: MinIO reads its root credentials from a Secret (`existingSecret`); the
    /// OSCAR chart reads its credential values from a Secret through `valuesSecrets`.
    #[test]
    fn credentials_live_in_secrets() {
        let s = section(Profile::Cloud);
        let c = creds();
        let ms = render("farm", &s, &c).expect("render");
        let minio = chart_values(&ms, "20-minio.yaml");
        assert_eq!(minio["existingSecret"], MINIO_ROOT_SECRET);
        assert!(minio.get("rootPassword").is_none() && minio.get("rootUser").is_none());
        let (_, root) = secret_data(&ms, MINIO_ROOT_SECRET, "minio").expect("MinIO Secret");
        assert_eq!(root["rootUser"], c.minio_access_key);
        assert_eq!(root["rootPassword"], c.minio_secret_key.expose());

        let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
        let refs = &hc["spec"]["valuesSecrets"];
        assert_eq!(refs[0]["name"], OSCAR_VALUES_SECRET);
        assert_eq!(refs[0]["keys"][0], OSCAR_VALUES_KEY);
        let (_, data) =
            secret_data(&ms, OSCAR_VALUES_SECRET, "kube-system").expect("values Secret");
        let values: Value = serde_saphyr::from_str(&data[OSCAR_VALUES_KEY]).expect("yaml");
        assert_eq!(values["authPass"], c.oscar_password.expose());
        assert_eq!(values["minIO"]["secretKey"], c.minio_secret_key.expose());
        assert_eq!(values["minIO"]["accessKey"], c.minio_access_key);
        let oscar = chart_values(&ms, "50-oscar.yaml");
        assert!(oscar.get("authPass").is_none());
        assert!(oscar["minIO"].get("secretKey").is_none());
        // The namespaces the Secrets go to exist before the charts create them.
        let ns: Vec<Value> = docs(file(&ms, "00-namespaces.yaml"));
        assert!(ns.iter().any(|d| d["metadata"]["name"] == "minio"));
        // A changed MinIO password rolls MinIO's pod.
        let mut c2 = c.clone();
        c2.minio_secret_key = crate::recipe::Secret::new("another-secret-0123");
        let minio2 = chart_values(&render("farm", &s, &c2).expect("render"), "20-minio.yaml");
        assert_ne!(minio["podAnnotations"], minio2["podAnnotations"]);
    }

    /// Item 9, k3s without `valuesSecrets`: only the OSCAR chart falls back to its
    /// values; MinIO still reads a Secret.
    #[test]
    fn without_values_secrets_only_the_oscar_chart_holds_credentials() {
        let mut s = section(Profile::Edge);
        s.values_secrets = false;
        let c = creds();
        let ms = render("farm", &s, &c).expect("render");
        check(&ms, &s);
        let hc = docs(file(&ms, "50-oscar.yaml")).remove(0);
        assert!(hc["spec"].get("valuesSecrets").is_none());
        let oscar = chart_values(&ms, "50-oscar.yaml");
        assert_eq!(oscar["authPass"], c.oscar_password.expose());
        assert_eq!(oscar["minIO"]["secretKey"], c.minio_secret_key.expose());
        assert!(secret_data(&ms, OSCAR_VALUES_SECRET, "kube-system").is_none());
        for m in ms
            .iter()
            .filter(|m| !m.file.ends_with("05-secrets.yaml") && !m.file.ends_with("50-oscar.yaml"))
        {
            assert!(!m.text.contains(c.minio_secret_key.expose()), "{}", m.file);
        }
    }

    /// Item 10: with the recipe's certificate, ingress-nginx serves it as its default
    /// certificate; without one, no TLS Secret is written; http is redirected always.
    #[test]
    fn nginx_serves_the_recipe_certificate() {
        let mut s = section(Profile::Edge);
        let plain = render("farm", &s, &creds()).expect("render");
        assert!(secret_data(&plain, TLS_SECRET, "ingress-nginx").is_none());
        let v = chart_values(&plain, "30-ingress-nginx.yaml");
        assert!(v["controller"].get("extraArgs").is_none());
        // Redirected to https (the controller's own certificate) all the same.
        assert_eq!(v["controller"]["config"]["force-ssl-redirect"], "true");

        s.tls = Some(tls());
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms, &s);
        secrets_only_in_secret_objects(&ms);
        let v = chart_values(&ms, "30-ingress-nginx.yaml");
        assert_eq!(
            v["controller"]["extraArgs"]["default-ssl-certificate"],
            format!("ingress-nginx/{TLS_SECRET}")
        );
        assert_eq!(v["controller"]["config"]["force-ssl-redirect"], "true");
        let (doc, _) = secret_data(&ms, TLS_SECRET, "ingress-nginx").expect("TLS Secret");
        assert_eq!(doc["type"], "kubernetes.io/tls");
        let ns: Vec<Value> = docs(file(&ms, "00-namespaces.yaml"));
        assert!(ns.iter().any(|d| d["metadata"]["name"] == "ingress-nginx"));
    }

    /// Item 11: OSCAR hands out MinIO's external URL (its NodePort on the endpoint's
    /// host), not the in-cluster service.
    #[test]
    fn minio_endpoint_is_the_external_url() {
        let s = section(Profile::Edge);
        let ms = render("farm", &s, &creds()).expect("render");
        let v = chart_values(&ms, "50-oscar.yaml");
        assert_eq!(v["minIO"]["endpoint"], "http://oscar.example.org:30300");
        assert_eq!(v["minIO"]["endpoint"], s.minio_url());
        let minio = chart_values(&ms, "20-minio.yaml");
        assert_eq!(minio["service"]["nodePort"], MINIO_NODE_PORT);
        assert_eq!(
            minio["environment"]["MINIO_BROWSER_REDIRECT_URL"],
            "http://oscar.example.org:30301"
        );
    }

    #[test]
    fn digests_ignore_real_credentials() {
        // Issue 14: the plan's and state's digests are no function of the passwords.
        // Rendered with two different credential sets the manifests differ (the
        // passwords are in them), yet the digests are those of the placeholder
        // rendering, equal for both.
        let s = section(Profile::Cloud);
        let d = digests("farm", &s).expect("digests");
        assert_eq!(d.len(), 8);
        let real = |pw: &str| Credentials {
            oscar_user: "oscar".into(),
            oscar_password: crate::recipe::Secret::new(pw),
            minio_access_key: "minio".into(),
            minio_secret_key: crate::recipe::Secret::new(format!("{pw}-minio")),
        };
        let sha = |c: &Credentials| -> BTreeMap<String, String> {
            render("farm", &s, c)
                .expect("render")
                .into_iter()
                .map(|m| (m.file, crate::render::sha256_hex(m.text.as_bytes())))
                .collect()
        };
        let (a, b) = (real("pw-aaaaaaaaaa"), real("pw-bbbbbbbbbb"));
        let rendered_a = render("farm", &s, &a).expect("render");
        let b64 = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode("pw-aaaaaaaaaa-minio")
        };
        assert!(
            rendered_a
                .iter()
                .any(|m| m.text.contains("pw-aaaaaaaaaa") || m.text.contains(&b64)),
            "the credentials reach the manifests, so a digest over them would depend on them"
        );
        assert_ne!(sha(&a), sha(&b));
        assert_eq!(d, sha(&placeholder_credentials()));
        assert_ne!(d, sha(&a));
        let mut t = s.clone();
        t.tls = Some(tls());
        let dt = digests("farm", &t).expect("digests");
        assert_ne!(d, dt, "a certificate changes the layer's hash");
    }
}
