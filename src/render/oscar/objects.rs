//! The OSCAR layer's manifests that are not HelmCharts (docs/oscar.md): the namespaces
//! the layer's Secrets live in, the Secrets themselves (docs/oscar.md, "Secrets"), the
//! Gateway k3s's Traefik serves in gateway mode (docs/oscar.md, "Gateway") and the
//! KnativeServing the Knative operator acts on (docs/oscar.md, "Knative").
//!
//! Invariant: the Secrets manifest is the only one that holds a credential or a
//! private key (the OSCAR chart's own values aside when the helm-controller cannot
//! read a Secret; see `values`).

use base64::Engine as _;
use serde_json::{Value, json};

use super::values::oscar_credential_values;
use super::{
    GATEWAY_NAME, KNATIVE_SERVING_VERSION, MINIO_ROOT_SECRET, OSCAR_VALUES_KEY,
    OSCAR_VALUES_SECRET, RenderError, TLS_SECRET, TRAEFIK_WEBSECURE_PORT, render_one, to_yaml,
};
use crate::recipe::serverless::{IngressMode, Profile, Serverless};
use crate::state::Credentials;

const NAMESPACES: &str = include_str!("../../../templates/oscar/namespaces.yaml.tera");
const SECRETS: &str = include_str!("../../../templates/oscar/secrets.yaml.tera");
const KNATIVE_SERVING: &str = include_str!("../../../templates/oscar/knative-serving.yaml.tera");
const TRAEFIK_GATEWAY: &str = include_str!("../../../templates/oscar/traefik-gateway.yaml.tera");

/// A tera context naming the environment, the start of every template's context.
fn context(env: &str) -> tera::Context {
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx
}

/// OSCAR's namespaces (manager, services) and those the layer's Secrets go to, so
/// that the Secrets can be applied before the charts create them.
pub(super) fn namespaces(env: &str, s: &Serverless) -> Result<String, RenderError> {
    let mut namespaces = vec!["oscar", "oscar-svc", "minio"];
    if s.tls.is_some() && s.ingress == IngressMode::Nginx {
        namespaces.push("ingress-nginx");
    }
    let mut ctx = context(env);
    ctx.insert("namespaces", &namespaces);
    render_one(NAMESPACES, "namespaces", &ctx)
}

/// Traefik's Gateway API provider switched on and the Gateway OSCAR's HTTPRoute
/// attaches to: HTTPS only, with the recipe's certificate (gateway mode).
pub(super) fn traefik_gateway(env: &str) -> Result<String, RenderError> {
    let mut ctx = context(env);
    ctx.insert("gateway", GATEWAY_NAME);
    ctx.insert("port", &TRAEFIK_WEBSECURE_PORT);
    ctx.insert("tls_secret", TLS_SECRET);
    render_one(TRAEFIK_GATEWAY, "ingress", &ctx)
}

/// The KnativeServing the operator installs Knative Serving from, with Kourier and
/// the PVC features OSCAR's services need (high availability: two replicas in the
/// cloud profile, one on the edge).
pub(super) fn knative_serving(env: &str, s: &Serverless) -> Result<String, RenderError> {
    let mut ctx = context(env);
    ctx.insert("serving_version", KNATIVE_SERVING_VERSION);
    ctx.insert("replicas", &if s.profile == Profile::Cloud { 2 } else { 1 });
    render_one(KNATIVE_SERVING, "knative", &ctx)
}

/// Namespace the TLS Secret goes to: where its reader looks for it.
fn tls_namespace(s: &Serverless) -> &'static str {
    match s.ingress {
        IngressMode::Nginx => "ingress-nginx",
        IngressMode::Gateway => "kube-system",
    }
}

pub(super) fn b64(s: &str) -> String {
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
pub(super) fn secrets(env: &str, s: &Serverless, c: &Credentials) -> Result<String, RenderError> {
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
    let mut ctx = context(env);
    ctx.insert("tls", &s.tls.is_some());
    ctx.insert("docs", &text.join("\n---\n"));
    render_one(SECRETS, "secrets", &ctx)
}
