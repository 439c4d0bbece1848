//! The serverless layer's part of the resource graph: `serverless` (manifests and
//! readiness) and `endpoint` (catalog and oscar-cli registration).

use std::collections::BTreeMap;

use crate::recipe::Secret;
use crate::recipe::serverless::Serverless;

/// The layer's two graph resources: `serverless` (manifests + readiness) and
/// `endpoint` (catalog + oscar-cli). Pure: the hash covers the manifests rendered with
/// placeholder credentials plus a digest of the credentials the recipe gives, so a
/// converged layer plans as no-op and a changed value or given password as update.
pub fn resources(
    env: &crate::recipe::Environment,
    s: &Serverless,
) -> (super::Resource, super::Resource) {
    use serde_json::json;
    let init = Some(env.cluster.init_server().to_string());
    let manifests = match crate::render::oscar::digests(&env.name, s) {
        Ok(d) => json!(d),
        // Reported by the step, which renders again.
        Err(e) => json!({"error": e.to_string()}),
    };
    let charts: BTreeMap<&str, &str> = crate::render::oscar::charts(s)
        .iter()
        .map(|c| (c.chart, c.version))
        .collect();
    let given = &s.credentials;
    let given_digest = crate::render::sha256_hex(
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
        super::Resource {
            id: crate::graph::SERVERLESS.into(),
            kind: crate::graph::Kind::Serverless,
            host: init.clone(),
            attrs: sl_attrs,
            hash: sl_hash,
        },
        super::Resource {
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
    #[test]
    fn layer_resources_follow_cluster_ready_and_plan_as_no_op_once_applied() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes");
        let env = crate::files::load_recipe(&dir.join("farm-oscar.yaml"))
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
        let plain = crate::files::load_recipe(&dir.join("farm-edge.yaml"))
            .expect("farm-edge")
            .env;
        let rg = crate::graph::build(&plain).expect("graph");
        assert!(!rg.index.contains_key(crate::graph::SERVERLESS));
    }
}
