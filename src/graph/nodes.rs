//! The k3s nodes' desired configuration (config.yaml keys per host and role, with
//! device-derived keys and labels) and the device preparation nodes of probed
//! Raspberry Pis and Jetsons.

use std::collections::{BTreeMap, HashMap};

use petgraph::graph::{DiGraph, NodeIndex};
use serde_json::{Value, json};

use super::{Dep, Kind, Resource, device, hash_of, node_id, server_url};
use crate::recipe::device::Device;
use crate::recipe::{Environment, Role, flags};

/// Desired k3s `config.yaml` keys of one node, without secrets (docs/k3s-config.md).
pub fn node_config(env: &Environment, host: &str, role: Role) -> BTreeMap<String, Value> {
    let c = &env.cluster;
    let mut m: BTreeMap<String, Value> = BTreeMap::new();
    let h = env.hosts.get(host);
    m.insert("node-name".into(), json!(host));
    let mut labels: BTreeMap<&str, &str> = c
        .node_labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let device_labels = h
        .and_then(|h| h.probed.as_deref())
        .map(device::labels)
        .unwrap_or_default();
    labels.extend(device_labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if let Some(h) = h {
        labels.extend(h.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    }
    if !labels.is_empty() {
        m.insert(
            "node-label".into(),
            json!(
                labels
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ),
        );
    }
    let mut taints: Vec<String> = c.node_taints.clone();
    if let Some(h) = h {
        taints.extend(h.taints.iter().cloned());
    }
    if !taints.is_empty() {
        m.insert("node-taint".into(), json!(taints));
    }
    // Per-host addresses (docs/k3s-config.md, "Node addresses"): an inventory host's
    // come from its `node_ip` / `external_ip`; an AWS instance has neither, and its
    // external address is its public IP, for servers under wireguard-native (below).
    let cloud = h.and_then(|h| h.cloud.as_ref());
    if let Some(ip) = h.and_then(|h| h.node_ip.as_ref()) {
        m.insert("node-ip".into(), json!(ip));
    }
    if cloud.is_none()
        && let Some(ip) = h.and_then(|h| h.external_ip.as_ref())
    {
        m.insert("node-external-ip".into(), json!(ip));
    }
    let is_init = role == Role::Server && c.init_server() == host;
    if !is_init {
        m.insert("server".into(), json!(server_url(env)));
    }
    if role == Role::Server {
        if c.ha && is_init {
            m.insert("cluster-init".into(), json!(true));
        }
        // Every name the API is reached by must be in the serving certificate.
        let mut sans: Vec<String> = vec![c.api_endpoint.clone()];
        for s in &c.servers {
            if let Some(sh) = env.hosts.get(s) {
                sans.push(sh.address.clone());
            }
        }
        sans.extend(c.tls_san.iter().cloned());
        sans.sort();
        sans.dedup();
        m.insert("tls-san".into(), json!(sans));
        // A server on a cloud instance in a cluster that spans networks (wireguard-native):
        // nodes outside the VPC reach it by its public address (docs/k3s-config.md).
        if c.flannel_backend == "wireguard-native"
            && let Some(ip) = cloud.and_then(|c| c.public_ip.as_ref())
        {
            m.insert("node-external-ip".into(), json!(ip));
            m.insert("flannel-external-ip".into(), json!(true));
        }
        if c.flannel_backend != "vxlan" {
            m.insert("flannel-backend".into(), json!(c.flannel_backend));
        }
        if !c.disable.is_empty() {
            m.insert("disable".into(), json!(c.disable));
        }
        if let Some(v) = &c.cluster_cidr {
            m.insert("cluster-cidr".into(), json!(v));
        }
        if let Some(v) = &c.service_cidr {
            m.insert("service-cidr".into(), json!(v));
        }
    }
    // Each role gets the extra keys its subcommand has (k3s server/agent flag split).
    for (k, v) in &c.extra_config {
        if flags::accepts(role, k) {
            m.insert(k.clone(), v.clone());
        }
    }
    if let Some(p) = h.and_then(|h| h.probed.as_deref()) {
        device::config_keys(p, c.nvidia_default_runtime, &mut m);
    }
    m
}

/// `device-prep/HOST`
pub fn prep_id(host: &str) -> String {
    super::ResourceId::DevicePrep {
        host: host.to_string(),
    }
    .to_string()
}

/// `gpu-runtime/HOST`
pub fn gpu_id(host: &str) -> String {
    super::ResourceId::GpuRuntime {
        host: host.to_string(),
    }
    .to_string()
}

/// Device preparation before a node's k3s, GPU checks after it: only for
/// hosts whose inventory entry carries a probe that found a Pi or a Jetson.
pub(super) fn add_device_nodes(
    env: &Environment,
    g: &mut DiGraph<Resource, Dep>,
    index: &mut HashMap<String, NodeIndex>,
    ready: NodeIndex,
) {
    // Only probed devices get nodes: look those up instead of scanning every node.
    // Deterministic order (DOT output, walk order): ids sorted.
    let mut node_ixs: Vec<(String, NodeIndex)> = env
        .hosts
        .values()
        .filter(|h| h.probed.as_deref().and_then(|f| f.device()).is_some())
        .flat_map(|h| {
            [
                node_id(Role::Server, &h.name),
                node_id(Role::Agent, &h.name),
            ]
        })
        .filter_map(|id| index.get(&id).map(|ix| (id, *ix)))
        .collect();
    node_ixs.sort();
    for (id, node_ix) in node_ixs {
        let Some(host) = g[node_ix].host.clone() else {
            continue;
        };
        let Some(facts) = env.hosts.get(&host).and_then(|h| h.probed.as_deref()) else {
            continue;
        };
        let Some(device) = facts.device() else {
            continue;
        };
        let attrs: BTreeMap<String, Value> = [
            ("device".to_string(), json!(device.to_string())),
            ("model".to_string(), json!(facts.model())),
        ]
        .into();
        let prep = Resource {
            id: prep_id(&host),
            kind: Kind::DevicePrep { device },
            host: Some(host.clone()),
            hash: hash_of(&[&json!(attrs)]),
            attrs,
        };
        let pix = g.add_node(prep);
        index.insert(prep_id(&host), pix);
        g.add_edge(pix, node_ix, Dep::Needs);
        if device == Device::Jetson {
            let attrs: BTreeMap<String, Value> = [("node".to_string(), json!(id))].into();
            let gpu = Resource {
                id: gpu_id(&host),
                kind: Kind::GpuRuntime,
                host: Some(host.clone()),
                hash: hash_of(&[&json!(attrs)]),
                attrs,
            };
            let gix = g.add_node(gpu);
            index.insert(gpu_id(&host), gix);
            g.add_edge(node_ix, gix, Dep::Needs);
            // An offline Jetson never withholds the rest of the cluster.
            g.add_edge(gix, ready, Dep::After);
        }
    }
}
