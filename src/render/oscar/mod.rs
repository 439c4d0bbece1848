//! Rendering the OSCAR layer as k3s auto-deploy manifests (docs/oscar.md, docs/k3s.md,
//! "Manifests, the deploy controller and helm-controller") from the tera templates in
//! templates/oscar/: namespaces, the layer's Secrets, one HelmChart per component,
//! Traefik's Gateway (gateway mode) and KnativeServing. This file holds the public
//! API, the pinned `CHARTS` and the layer's names; each chart's values are in
//! `values`, the manifests that are not HelmCharts in `objects`.
//!
//! Invariants: every chart version is pinned in `CHARTS` (OSCAR's per release in
//! `OSCAR_RELEASES`) and nowhere else; the output is a pure function of (environment,
//! recipe section, credentials), so its hash is a faithful idempotency key; manifest
//! file names are RFC 1123 and start with `continuum-oscar-` so the layer's files can be
//! found and removed as a set; passwords appear only in the Secrets manifest, never in
//! a HelmChart's `valuesContent`, unless the pinned k3s's helm-controller cannot read
//! values from Secrets (then only the OSCAR chart's, see docs/oscar.md, "Secrets").

mod objects;
#[cfg(test)]
mod tests;
mod values;

use std::collections::BTreeMap;

use serde_json::Value;

pub use crate::recipe::serverless::{DEFAULT_OSCAR, MINIO_NODE_PORT, OSCAR_RELEASES, OscarRelease};
use crate::recipe::serverless::{IngressMode, Serverless};
use crate::state::Credentials;
pub use values::{deep_merge, values};

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

const HELMCHART: &str = include_str!("../../../templates/oscar/helmchart.yaml.tera");

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

/// The HelmChart of one component, at its pinned version, with its values.
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

/// Every manifest of the layer, in apply order.
pub fn render(env: &str, s: &Serverless, c: &Credentials) -> Result<Vec<Manifest>, RenderError> {
    let mut out = Vec::new();
    let mut push = |n: &str, text: String| {
        out.push(Manifest {
            file: format!("{FILE_PREFIX}{n}.yaml"),
            text,
        });
    };
    push("00-namespaces", objects::namespaces(env, s)?);
    push("05-secrets", objects::secrets(env, s, c)?);
    push("10-nfs", helmchart(env, "nfs", s, c)?);
    push("20-minio", helmchart(env, "minio", s, c)?);
    match s.ingress {
        IngressMode::Nginx => push("30-ingress-nginx", helmchart(env, "ingress", s, c)?),
        IngressMode::Gateway => push("30-traefik-gateway", objects::traefik_gateway(env)?),
    }
    if s.knative {
        push("40-knative-operator", helmchart(env, "knative", s, c)?);
        push("41-knative-serving", objects::knative_serving(env, s)?);
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
