//! Rendering the OSCAR layer as k3s auto-deploy manifests (REFERENCE.md §1 "auto-deploy
//! manifests", §2 components) from the tera templates in templates/oscar/.
//!
//! Invariants: every chart version is pinned in `CHARTS` and nowhere else; the output
//! is a pure function of (environment, recipe section, credentials), so its hash is a
//! faithful idempotency key; manifest file names are RFC 1123 and start with
//! `continuum-oscar-` so the layer's files can be found and removed as a set.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::{Credentials, IngressMode, Profile, Serverless};

/// Directory k3s applies manifests from.
pub const MANIFESTS_DIR: &str = "/var/lib/rancher/k3s/server/manifests";
/// Prefix of every manifest file continuum writes for the layer.
pub const FILE_PREFIX: &str = "continuum-oscar-";
/// MinIO's S3 API NodePort (its console is the next port).
pub const MINIO_NODE_PORT: u16 = 30300;
/// Knative Serving version the operator installs.
pub const KNATIVE_SERVING_VERSION: &str = "1.17";

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

/// The pinned charts: bump versions here, and only here.
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
        version: "3.6.4",
        namespace: "oscar",
    },
];

const HELMCHART: &str = include_str!("../../templates/oscar/helmchart.yaml.tera");
const NAMESPACES: &str = include_str!("../../templates/oscar/namespaces.yaml.tera");
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

fn chart(component: &str) -> &'static Chart {
    CHARTS
        .iter()
        .find(|c| c.component == component)
        .unwrap_or(&CHARTS[0])
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
            "rootUser": c.minio_access_key,
            "rootPassword": c.minio_secret_key.expose(),
            "persistence": {"enabled": true, "storageClass": "local-path", "size": pick("10Gi", "2Gi")},
            "service": {"type": "NodePort", "port": 9000, "nodePort": MINIO_NODE_PORT},
            "consoleService": {"type": "NodePort", "port": 9001, "nodePort": MINIO_NODE_PORT + 1},
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
            v
        }
        "knative" => json!({
            "knative_operator": {"knative_operator": {"resources": {"requests": {
                "cpu": pick("100m", "50m"), "memory": pick("100Mi", "64Mi")}}}},
        }),
        _ => {
            let host = url::Url::parse(&s.endpoint)
                .ok()
                .and_then(|u| u.host_str().map(str::to_string))
                .unwrap_or_default();
            let mut v = json!({
                "authUser": c.oscar_user,
                "authPass": c.oscar_password.expose(),
                "serverlessBackend": if s.knative { "knative" } else { "" },
                "service": {"type": "ClusterIP"},
                "ingress": {"create": s.ingress == IngressMode::Nginx},
                "volume": {"storageClassName": "nfs"},
                "minIO": {
                    "endpoint": "http://minio.minio:9000",
                    "accessKey": c.minio_access_key,
                    "secretKey": c.minio_secret_key.expose(),
                    "TLSVerify": false,
                },
                "resourceManager": {"enable": cloud},
                "reScheduler": {"enable": false},
                "resources": {"requests": {"cpu": pick("250m", "100m"), "memory": pick("512Mi", "128Mi")}},
            });
            if !host.is_empty() && !is_ip(&host) {
                v["ingress"]["host"] = json!(host);
            }
            // Only gateway mode sets `httproute`: the pinned chart 3.6.4 has no such
            // value (it arrived in chart 4.0.0; docs/oscar.md, "Chart values"), and the
            // k3s double refuses values a pinned chart does not have.
            if s.ingress == IngressMode::Gateway {
                v["httproute"] = json!({"create": true});
            }
            v
        }
    }
}

/// The values of one component: profile defaults with the recipe's overrides on top.
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

fn helmchart(
    env: &str,
    component: &str,
    s: &Serverless,
    c: &Credentials,
) -> Result<String, RenderError> {
    let ch = chart(component);
    let yaml = serde_saphyr::to_string(&values(component, s, c)).map_err(|e| RenderError {
        component: component.to_string(),
        detail: e.to_string(),
    })?;
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("component", component);
    ctx.insert("name", ch.name);
    ctx.insert("repo", ch.repo);
    ctx.insert("chart", ch.chart);
    ctx.insert("version", ch.version);
    ctx.insert("namespace", ch.namespace);
    ctx.insert("values", yaml.trim_end());
    render_one(HELMCHART, component, &ctx)
}

/// Every manifest of the layer, in apply order.
pub fn render(env: &str, s: &Serverless, c: &Credentials) -> Result<Vec<Manifest>, RenderError> {
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    let mut out = vec![Manifest {
        file: format!("{FILE_PREFIX}00-namespaces.yaml"),
        text: render_one(NAMESPACES, "namespaces", &ctx)?,
    }];
    let mut push = |n: &str, text: String| {
        out.push(Manifest {
            file: format!("{FILE_PREFIX}{n}.yaml"),
            text,
        });
    };
    push("10-nfs", helmchart(env, "nfs", s, c)?);
    push("20-minio", helmchart(env, "minio", s, c)?);
    match s.ingress {
        IngressMode::Nginx => push("30-ingress-nginx", helmchart(env, "ingress", s, c)?),
        IngressMode::Gateway => push(
            "30-traefik-gateway",
            render_one(TRAEFIK_GATEWAY, "ingress", &ctx)?,
        ),
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
        oscar_password: crate::state::Secret::new("<generated>"),
        minio_access_key: "<generated>".into(),
        minio_secret_key: crate::state::Secret::new("<generated>"),
    }
}

/// File name -> sha256 of the manifests rendered with placeholder credentials.
pub fn digests(env: &str, s: &Serverless) -> Result<BTreeMap<String, String>, RenderError> {
    Ok(render(env, s, &placeholder_credentials())?
        .into_iter()
        .map(|m| (m.file, crate::k3s::sha256_hex(m.text.as_bytes())))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serverless::{GivenCredentials, OscarCliTarget, Tier};
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
            endpoint: "http://oscar.example.org".into(),
            cluster_id: "farm".into(),
            knative: profile == Profile::Cloud,
            gpu: None,
            readiness_timeout: Duration::from_secs(60),
            credentials: GivenCredentials::default(),
            values: BTreeMap::new(),
            oscar_cli: OscarCliTarget {
                path: None,
                set_default: false,
                ssl_verify: true,
            },
            servicelb: true,
        }
    }

    fn creds() -> Credentials {
        Credentials {
            oscar_user: "oscar".into(),
            oscar_password: crate::state::Secret::new("pw-0123456789"),
            minio_access_key: "minioadmin-key".into(),
            minio_secret_key: crate::state::Secret::new("minio-secret-0123"),
        }
    }

    /// Every document parses; every HelmChart names repo, chart, version and
    /// targetNamespace; every version is the pinned one.
    fn check(ms: &[Manifest]) {
        for m in ms {
            assert!(m.file.starts_with(FILE_PREFIX) && m.file.ends_with(".yaml"));
            let docs: Vec<Value> = serde_saphyr::from_multiple(&m.text)
                .unwrap_or_else(|e| panic!("{} is not YAML: {e}\n{}", m.file, m.text));
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
                    let pinned = CHARTS
                        .iter()
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

    fn snapshot_text(ms: &[Manifest]) -> String {
        ms.iter()
            .map(|m| format!("### {}\n{}", m.file, m.text))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn cloud_profile_snapshot() {
        let ms = render("farm", &section(Profile::Cloud), &creds()).expect("render");
        check(&ms);
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
        check(&ms);
        assert!(
            !ms.iter().any(|m| m.file.contains("knative")),
            "edge: no Knative by default"
        );
        let oscar = ms
            .iter()
            .find(|m| m.file.ends_with("50-oscar.yaml"))
            .expect("oscar");
        assert!(oscar.text.contains("memory: 96Mi"), "override applied");
        assert!(
            oscar.text.contains("cpu: 100m"),
            "profile value kept next to the override"
        );
        insta::assert_snapshot!("edge", snapshot_text(&ms));
    }

    #[test]
    fn gateway_mode_uses_traefik_and_httproute() {
        let mut s = section(Profile::Edge);
        s.ingress = IngressMode::Gateway;
        let ms = render("farm", &s, &creds()).expect("render");
        check(&ms);
        assert!(ms.iter().any(|m| m.file.contains("traefik-gateway")));
        assert!(!ms.iter().any(|m| m.file.contains("ingress-nginx")));
        let oscar = ms
            .iter()
            .find(|m| m.file.ends_with("50-oscar.yaml"))
            .expect("oscar");
        assert!(
            oscar.text.contains("httproute:\n      create: true"),
            "{}",
            oscar.text
        );
    }

    #[test]
    fn digests_ignore_real_credentials() {
        let s = section(Profile::Cloud);
        let d = digests("farm", &s).expect("digests");
        assert_eq!(d.len(), 7);
        assert!(!format!("{d:?}").contains("pw-0123456789"));
    }
}
