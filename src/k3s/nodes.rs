//! Nodes as the API server sees them, through `k3s kubectl` on a server: the node
//! list, live labels and taints (docs/k3s.md, "Labels and taints"), uncordoning after
//! a drain, the etcd quorum check and the drain before a node leaves, and deleting a
//! Node object (docs/k3s.md, "Removing a node from a
//! cluster").

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use super::{BIN_PATH, K3sError, SHORT, check, run_root};
use crate::ssh::{Remote, quote};

/// One node as the API server reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeInfo {
    pub name: String,
    pub ready: String,
    pub version: String,
    pub arch: String,
    pub roles: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// `k3s kubectl get nodes -o json`, parsed.
pub async fn list_nodes<R: Remote>(r: &R) -> Result<Vec<NodeInfo>, K3sError> {
    let out = run_root(
        r,
        "listing nodes",
        &format!("{BIN_PATH} kubectl get nodes -o json"),
        None,
        SHORT,
    )
    .await?;
    parse_nodes(r.name(), &out.stdout)
}

/// A Node object's `metadata.labels`.
fn labels_of(node: &Value) -> BTreeMap<String, String> {
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

pub fn parse_nodes(host: &str, json: &str) -> Result<Vec<NodeInfo>, K3sError> {
    let v: Value = serde_json::from_str(json).map_err(|e| K3sError::Protocol {
        host: host.to_string(),
        detail: format!("node list is not JSON: {e}"),
    })?;
    let items = v
        .get("items")
        .and_then(Value::as_array)
        .ok_or_else(|| K3sError::Protocol {
            host: host.to_string(),
            detail: "node list has no items".into(),
        })?;
    let s = |v: &Value, p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    Ok(items
        .iter()
        .map(|n| {
            let labels = labels_of(n);
            let ready = n
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|c| {
                    c.iter()
                        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"))
                })
                .and_then(|c| c.get("status").and_then(Value::as_str))
                .unwrap_or("Unknown")
                .to_string();
            let mut roles: Vec<String> = labels
                .keys()
                .filter_map(|k| {
                    k.strip_prefix("node-role.kubernetes.io/")
                        .map(str::to_string)
                })
                .collect();
            roles.sort();
            NodeInfo {
                name: s(n, "/metadata/name"),
                ready,
                version: s(n, "/status/nodeInfo/kubeletVersion"),
                arch: s(n, "/status/nodeInfo/architecture"),
                roles,
                labels,
            }
        })
        .collect())
}

/// Delete a Node object through a server; absent nodes are fine.
pub async fn delete_node<R: Remote>(server: &R, node: &str) -> Result<(), K3sError> {
    let out = server
        .run(
            &format!("{BIN_PATH} kubectl delete node {}", quote(node)),
            None,
            true,
            SHORT,
        )
        .await?;
    if out.success() || out.stderr.contains("NotFound") || out.stderr.contains("not found") {
        Ok(())
    } else {
        check(server.name(), "deleting the node object", out).map(|_| ())
    }
}

/// A node's labels (`key=value`) and taints (`key[=value]:Effect`), as config.yaml's
/// `node-label` / `node-taint` lists carry them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelsTaints {
    pub labels: Vec<String>,
    pub taints: Vec<String>,
}

impl LabelsTaints {
    /// From a node's config attributes.
    pub fn of(attrs: &BTreeMap<String, Value>) -> Self {
        let list = |k: &str| -> Vec<String> {
            attrs
                .get(k)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        LabelsTaints {
            labels: list("node-label"),
            taints: list("node-taint"),
        }
    }
}

/// `key[=value]:Effect` -> (key, value, effect).
fn split_taint(t: &str) -> Option<(&str, &str, &str)> {
    let (kv, effect) = t.rsplit_once(':')?;
    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
    Some((k, v, effect))
}

/// The `kubectl label` and `kubectl taint` arguments that bring a live node from `live`
/// to `want`, removing only what continuum set before (`before`) and no longer wants;
/// labels and taints others set are left alone. Pure.
pub fn label_taint_args(
    live_labels: &BTreeMap<String, String>,
    live_taints: &[(String, String, String)],
    want: &LabelsTaints,
    before: &LabelsTaints,
) -> (Vec<String>, Vec<String>) {
    let mut labels = Vec::new();
    let want_keys: Vec<&str> = want
        .labels
        .iter()
        .map(|l| l.split_once('=').map_or(l.as_str(), |(k, _)| k))
        .collect();
    for l in &want.labels {
        let (k, v) = l.split_once('=').unwrap_or((l, ""));
        if live_labels.get(k).map(String::as_str) != Some(v) {
            labels.push(format!("{k}={v}"));
        }
    }
    for l in &before.labels {
        let k = l.split_once('=').map_or(l.as_str(), |(k, _)| k);
        if !want_keys.contains(&k) && live_labels.contains_key(k) {
            labels.push(format!("{k}-"));
        }
    }
    let mut taints = Vec::new();
    let has = |k: &str, v: &str, e: &str| {
        live_taints
            .iter()
            .any(|(lk, lv, le)| lk == k && lv == v && le == e)
    };
    let want_t: Vec<(&str, &str, &str)> =
        want.taints.iter().filter_map(|t| split_taint(t)).collect();
    for (k, v, e) in &want_t {
        if !has(k, v, e) {
            taints.push(if v.is_empty() {
                format!("{k}:{e}")
            } else {
                format!("{k}={v}:{e}")
            });
        }
    }
    for t in &before.taints {
        if let Some((k, _, e)) = split_taint(t)
            && !want_t.iter().any(|(wk, _, we)| *wk == k && *we == e)
            && live_taints.iter().any(|(lk, _, le)| lk == k && le == e)
        {
            taints.push(format!("{k}:{e}-"));
        }
    }
    (labels, taints)
}

/// Bring a live node's labels and taints to the recipe's through a server: k3s applies
/// `node-label`/`node-taint` only when a node registers (docs/k3s.md, "Labels and
/// taints"). Returns whether anything changed.
pub async fn sync_labels_and_taints<R: Remote>(
    server: &R,
    node: &str,
    want: &LabelsTaints,
    before: &LabelsTaints,
) -> Result<bool, K3sError> {
    let out = run_root(
        server,
        "reading the node",
        &format!("{BIN_PATH} kubectl get node {} -o json", quote(node)),
        None,
        SHORT,
    )
    .await?;
    let v: Value = serde_json::from_str(&out.stdout).map_err(|e| K3sError::Protocol {
        host: server.name().to_string(),
        detail: format!("node {node} is not JSON: {e}"),
    })?;
    let live_labels = labels_of(&v);
    let s = |t: &Value, k: &str| t.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let live_taints: Vec<(String, String, String)> = v
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| (s(t, "key"), s(t, "value"), s(t, "effect")))
                .collect()
        })
        .unwrap_or_default();
    let (labels, taints) = label_taint_args(&live_labels, &live_taints, want, before);
    let q = |args: &[String]| args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" ");
    if !labels.is_empty() {
        run_root(
            server,
            "labelling the node",
            &format!(
                "{BIN_PATH} kubectl label node {} --overwrite {}",
                quote(node),
                q(&labels)
            ),
            None,
            SHORT,
        )
        .await?;
    }
    if !taints.is_empty() {
        run_root(
            server,
            "tainting the node",
            &format!(
                "{BIN_PATH} kubectl taint node {} --overwrite {}",
                quote(node),
                q(&taints)
            ),
            None,
            SHORT,
        )
        .await?;
    }
    Ok(!labels.is_empty() || !taints.is_empty())
}

/// Make a node schedulable again (after an upgrade with drain).
pub async fn uncordon<R: Remote>(server: &R, node: &str) -> Result<(), K3sError> {
    run_root(
        server,
        "uncordoning the node",
        &format!("{BIN_PATH} kubectl uncordon {}", quote(node)),
        None,
        SHORT,
    )
    .await
    .map(|_| ())
}

/// How long a drain may take (its own `--timeout` is 120 s).
const DRAIN_WAIT: Duration = Duration::from_secs(180);

/// Refuse when removing server `host` would leave etcd without a Ready majority.
pub async fn check_quorum<R: Remote>(server: &R, host: &str) -> Result<(), K3sError> {
    let nodes = list_nodes(server).await?;
    let etcd: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| n.roles.iter().any(|r| r == "etcd"))
        .collect();
    if !etcd.iter().any(|n| n.name == host) {
        return Ok(());
    }
    let members = etcd.len();
    let healthy = etcd.iter().filter(|n| n.ready == "True").count();
    let left = members - 1;
    let left_healthy = etcd
        .iter()
        .filter(|n| n.ready == "True" && n.name != host)
        .count();
    let quorum = left / 2 + 1;
    if left > 0 && left_healthy < quorum {
        return Err(K3sError::Quorum {
            host: host.to_string(),
            members,
            healthy,
            left,
            left_healthy,
            quorum,
        });
    }
    Ok(())
}

/// Cordon and drain `node` through `server`; a node the API no longer has is fine.
pub async fn drain<R: Remote>(server: &R, node: &str) -> Result<(), K3sError> {
    let out = server
        .run(
            &format!(
                "{BIN_PATH} kubectl drain {} --ignore-daemonsets --delete-emptydir-data --timeout=120s",
                quote(node)
            ),
            None,
            true,
            DRAIN_WAIT,
        )
        .await?;
    if out.success() || out.stderr.contains("NotFound") {
        return Ok(());
    }
    Err(K3sError::Drain {
        host: node.to_string(),
        server: server.name().to_string(),
        detail: out.tail(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::scripted::{Scripted, exit, ok};

    #[test]
    fn node_list_parses_real_shape() {
        let json = r#"{"kind":"NodeList","items":[{"metadata":{"name":"a","labels":{"node-role.kubernetes.io/control-plane":"true","zone":"x"}},
            "status":{"conditions":[{"type":"Ready","status":"True"}],"nodeInfo":{"kubeletVersion":"v1.31.4+k3s1","architecture":"amd64"}}}]}"#;
        let nodes = parse_nodes("h", json).expect("parse");
        assert_eq!(nodes[0].name, "a");
        assert_eq!(nodes[0].ready, "True");
        assert_eq!(nodes[0].roles, vec!["control-plane".to_string()]);
        assert!(parse_nodes("h", "nope").is_err());
    }

    #[test]
    fn label_and_taint_changes_touch_only_what_continuum_set() {
        let lt = |l: &[&str], t: &[&str]| LabelsTaints {
            labels: l.iter().map(|s| (*s).to_string()).collect(),
            taints: t.iter().map(|s| (*s).to_string()).collect(),
        };
        let live: BTreeMap<String, String> = [("a", "1"), ("b", "1"), ("manual", "yes")]
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        let live_taints = vec![
            (
                "gpu".to_string(),
                "true".to_string(),
                "NoSchedule".to_string(),
            ),
            ("other".to_string(), String::new(), "NoExecute".to_string()),
        ];
        let before = lt(&["a=1", "b=1"], &["gpu=true:NoSchedule"]);
        let want = lt(&["a=2", "c=3"], &["edge:PreferNoSchedule"]);
        let (labels, taints) = label_taint_args(&live, &live_taints, &want, &before);
        assert_eq!(labels, ["a=2", "c=3", "b-"]);
        assert_eq!(taints, ["edge:PreferNoSchedule", "gpu:NoSchedule-"]);
        // Converged: nothing to run.
        let (labels, taints) = label_taint_args(&live, &live_taints, &before, &before);
        assert!(labels.is_empty() && taints.is_empty());
    }

    #[tokio::test]
    async fn deleting_an_absent_node_is_fine_and_other_failures_are_not() {
        let server = Scripted::new("srv-1")
            .once(
                "delete node 'pi 2'",
                exit(1, "Error from server (NotFound): nodes \"pi 2\" not found"),
            )
            .on(
                "delete node",
                exit(1, "the server is currently unable to handle the request"),
            );
        delete_node(&server, "pi 2").await.expect("absent is fine");
        match delete_node(&server, "pi-3").await {
            Err(K3sError::Step {
                host, step, tail, ..
            }) => {
                assert_eq!(
                    (host.as_str(), step.as_str()),
                    ("srv-1", "deleting the node object")
                );
                assert!(tail.contains("unable to handle"), "{tail}");
            }
            other => panic!("{other:?}"),
        }
        let scripts = server.scripts();
        assert!(
            scripts[0].ends_with("kubectl delete node 'pi 2'"),
            "{}",
            scripts[0]
        );
        assert!(server.calls().iter().all(|c| c.root));
    }

    #[tokio::test]
    async fn live_labels_and_taints_are_set_through_the_server() {
        let node = r#"{"metadata":{"name":"pi-2","labels":{"a":"1","manual":"yes"}},
            "spec":{"taints":[{"key":"gpu","value":"true","effect":"NoSchedule"}]}}"#;
        let server = Scripted::new("srv-1")
            .on("kubectl get node pi-2 -o json", ok(node))
            .on("kubectl label node pi-2 --overwrite", ok(""))
            .on("kubectl taint node pi-2 --overwrite", ok(""));
        let lt = |l: &[&str], t: &[&str]| LabelsTaints {
            labels: l.iter().map(|s| (*s).to_string()).collect(),
            taints: t.iter().map(|s| (*s).to_string()).collect(),
        };
        let before = lt(&["a=1"], &["gpu=true:NoSchedule"]);
        let want = lt(&["a=2"], &[]);
        assert!(
            sync_labels_and_taints(&server, "pi-2", &want, &before)
                .await
                .expect("sync")
        );
        let scripts = server.scripts();
        assert_eq!(scripts.len(), 3, "{scripts:#?}");
        assert!(scripts[1].ends_with("--overwrite a=2"), "{}", scripts[1]);
        assert!(
            scripts[2].ends_with("--overwrite gpu:NoSchedule-"),
            "{}",
            scripts[2]
        );
        // Converged: one read, nothing written.
        let server = Scripted::new("srv-1").on("-o json", ok(node));
        let same = lt(&["a=1"], &["gpu=true:NoSchedule"]);
        assert!(
            !sync_labels_and_taints(&server, "pi-2", &same, &same)
                .await
                .expect("sync")
        );
        assert_eq!(server.calls().len(), 1);
        assert!(server.unexpected().is_empty());
    }

    /// A node list of etcd servers (`s1`..) and agents, with their Ready status.
    fn node_list(nodes: &[(&str, bool, bool)]) -> String {
        let items: Vec<String> = nodes
            .iter()
            .map(|(name, etcd, ready)| {
                let roles = if *etcd {
                    r#""node-role.kubernetes.io/control-plane":"true","node-role.kubernetes.io/etcd":"true""#
                } else {
                    r#""kubernetes.io/os":"linux""#
                };
                format!(
                    r#"{{"metadata":{{"name":"{name}","labels":{{{roles}}}}},"status":{{"conditions":[{{"type":"Ready","status":"{}"}}],"nodeInfo":{{"kubeletVersion":"v1.31.4+k3s1","architecture":"amd64"}}}}}}"#,
                    if *ready { "True" } else { "False" }
                )
            })
            .collect();
        format!(r#"{{"kind":"NodeList","items":[{}]}}"#, items.join(","))
    }

    #[tokio::test]
    async fn a_server_leaves_only_when_etcd_keeps_a_ready_majority() {
        // Three etcd members, one already NotReady: removing a Ready one leaves two
        // members with one Ready, below the quorum of two.
        let list = node_list(&[
            ("s1", true, true),
            ("s2", true, true),
            ("s3", true, false),
            ("a1", false, true),
        ]);
        let server = Scripted::new("s1").on("get nodes", ok(&list));
        match check_quorum(&server, "s2").await {
            Err(e @ K3sError::Quorum { .. }) => {
                let msg = e.to_string();
                assert!(
                    msg.contains("refusing to remove server `s2`")
                        && msg.contains("etcd has 3 member(s), 2 of them Ready"),
                    "{msg}"
                );
            }
            other => panic!("expected a quorum refusal, got {other:?}"),
        }
        // The NotReady member itself may go: two Ready members remain.
        check_quorum(&server, "s3").await.expect("s3 may leave");
        // An agent is not an etcd member: no check.
        check_quorum(&server, "a1")
            .await
            .expect("agents always may leave");
        // The check only reads.
        assert!(server.scripts().iter().all(|s| s.contains("get nodes")));
    }

    #[tokio::test]
    async fn a_drain_of_a_node_the_api_no_longer_has_is_fine() {
        let server = Scripted::new("s1")
            .once(
                "drain gone ",
                exit(1, "Error from server (NotFound): nodes \"gone\" not found"),
            )
            .once("drain pi-1 ", ok("node/pi-1 drained"))
            .on(
                "drain",
                exit(1, "error: unable to drain node \"pi-2\": timed out"),
            );
        drain(&server, "gone").await.expect("absent is fine");
        drain(&server, "pi-1").await.expect("drained");
        match drain(&server, "pi-2").await {
            Err(K3sError::Drain {
                host,
                server,
                detail,
            }) => {
                assert_eq!((host.as_str(), server.as_str()), ("pi-2", "s1"));
                assert!(detail.contains("timed out"), "{detail}");
            }
            other => panic!("expected a drain failure, got {other:?}"),
        }
        let calls = server.calls();
        assert!(calls.iter().all(|c| {
            c.root
                && c.script
                    .contains("--ignore-daemonsets --delete-emptydir-data --timeout=120s")
        }));
    }
}
