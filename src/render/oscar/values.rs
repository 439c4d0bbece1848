//! The values of each pinned chart of the OSCAR layer (docs/oscar.md, "Chart values"):
//! the profile's defaults (cloud or edge), the settings the recipe section implies
//! (ingress mode, TLS, Knative, the resource manager, MinIO's external URL) and the
//! recipe's `serverless.values` overrides merged on top.
//!
//! Invariant: no credential is part of a chart's values, except the OSCAR chart's
//! when the pinned k3s's helm-controller cannot read values from a Secret
//! (docs/oscar.md, "Secrets"); a change of MinIO's root credentials changes MinIO's
//! values (a digest, never the credentials) so that its pod rolls.

use serde_json::{Value, json};

use super::{GATEWAY_NAME, MINIO_NODE_PORT, MINIO_ROOT_SECRET, TLS_SECRET};
use crate::recipe::serverless::{IngressMode, Profile, Serverless};
use crate::state::Credentials;

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
pub(super) fn oscar_credential_values(c: &Credentials) -> Value {
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
