//! A k3s node's `/etc/rancher/k3s/config.yaml`, rendered from
//! templates/k3s-config.yaml.tera as a pure function of the environment's name, the
//! node, its role, its config keys and its secrets (docs/k3s.md, "Install script":
//! every setting beside the role lives in config.yaml). Its sha256 is what the facts
//! compare with (docs/k3s.md, "Refresh and drift"), so the same inputs must always
//! give the same text: keys come out sorted, values as JSON (a subset of YAML).

use std::collections::BTreeMap;

use serde_json::Value;

use crate::recipe::Role;

/// The config.yaml template.
pub const CONFIG_TEMPLATE: &str = include_str!("../../templates/k3s-config.yaml.tera");

/// The template could not be rendered for a node.
#[derive(Debug, thiserror::Error)]
#[error("cannot render the k3s config for `{node}`: {detail}")]
pub struct ConfigError {
    pub node: String,
    pub detail: String,
}

/// config.yaml for `node` of environment `env`: the node's config keys (`attrs`) with
/// `secrets` (`token`, and on servers `agent-token`) added, the only secrets in it.
pub fn config(
    env: &str,
    node: &str,
    role: Role,
    attrs: &BTreeMap<String, Value>,
    secrets: &[(&str, &str)],
) -> Result<String, ConfigError> {
    let mut config = attrs.clone();
    for (k, v) in secrets {
        config.insert((*k).to_string(), Value::String((*v).to_string()));
    }
    let mut ctx = tera::Context::new();
    ctx.insert("env", env);
    ctx.insert("node", node);
    ctx.insert("role", &role.to_string());
    ctx.insert("config", &config);
    tera::Tera::one_off(CONFIG_TEMPLATE, &ctx, false).map_err(|e| ConfigError {
        node: node.to_string(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_renders_as_yaml_with_token() {
        let mut attrs = BTreeMap::new();
        attrs.insert("node-label".into(), serde_json::json!(["a=b", "gpu=true"]));
        attrs.insert("cluster-init".into(), serde_json::json!(true));
        attrs.insert("server".into(), serde_json::json!("https://10.0.0.1:6443"));
        let text = config(
            "farm",
            "pi-01",
            Role::Server,
            &attrs,
            &[("token", "s3cr\"et")],
        )
        .expect("render");
        let back: BTreeMap<String, Value> = serde_saphyr::from_str(&text).expect("yaml");
        assert_eq!(back["token"], serde_json::json!("s3cr\"et"));
        assert_eq!(back["node-label"], serde_json::json!(["a=b", "gpu=true"]));
        assert_eq!(back["cluster-init"], serde_json::json!(true));
        assert!(text.starts_with("# Managed by continuum"));
        assert!(text.contains("node `pi-01` (server)"), "{text}");
    }

    #[test]
    fn the_same_inputs_render_the_same_text_with_keys_sorted() {
        let attrs: BTreeMap<String, Value> = [
            ("write-kubeconfig-mode", serde_json::json!("0600")),
            ("flannel-backend", serde_json::json!("vxlan")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let a = config("e", "n", Role::Agent, &attrs, &[("token", "t")]).expect("render");
        let b = config("e", "n", Role::Agent, &attrs, &[("token", "t")]).expect("render");
        assert_eq!(a, b);
        let keys: Vec<&str> = a
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once(':').map(|(k, _)| k))
            .collect();
        assert_eq!(keys, ["flannel-backend", "token", "write-kubeconfig-mode"]);
    }
}
