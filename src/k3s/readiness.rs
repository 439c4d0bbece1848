//! Cluster readiness (docs/k3s.md, "Readiness"): `/readyz` answers `ok`, every
//! expected node is registered and `Ready=True` at the pinned version, CoreDNS has an
//! available replica; errors of a restarting API are retried until the timeout, and
//! the error then names what is not ready.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::nodes::{NodeInfo, list_nodes};
use super::{BIN_PATH, K3sError, SHORT};
use crate::ssh::Remote;

/// Wait until the API answers `/readyz`, CoreDNS is available (unless disabled) and
/// every expected node is Ready at `version` (`kubeletVersion`); errors of a restarting
/// API are retried until `timeout`, then the error names the nodes that are not.
pub async fn wait_ready<R: Remote>(
    r: &R,
    expected: &[String],
    version: &str,
    coredns: bool,
    timeout: Duration,
) -> Result<Vec<NodeInfo>, K3sError> {
    let start = Instant::now();
    loop {
        // A server that is restarting (an upgrade, a forced restart) answers with
        // errors for a while: those are retried until the timeout, never fatal.
        let last = match ready_once(r, expected, version, coredns).await {
            Ok(Ok(nodes)) => return Ok(nodes),
            Ok(Err(not_yet)) => not_yet,
            Err(e) => format!("the API did not answer: {}", first_line(&e.to_string())),
        };
        if start.elapsed() >= timeout {
            return Err(K3sError::NotReady {
                secs: timeout.as_secs(),
                detail: last,
            });
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// One readiness check: `Ok(Ok(nodes))` when ready, `Ok(Err(why))` when not yet,
/// `Err` when the check itself failed (connection, API restarting).
async fn ready_once<R: Remote>(
    r: &R,
    expected: &[String],
    version: &str,
    coredns: bool,
) -> Result<Result<Vec<NodeInfo>, String>, K3sError> {
    let readyz = r
        .run(
            &format!("{BIN_PATH} kubectl get --raw /readyz"),
            None,
            true,
            SHORT,
        )
        .await?;
    if !(readyz.success() && readyz.stdout.trim() == "ok") {
        return Ok(Err(format!("/readyz answered: {}", readyz.tail())));
    }
    let nodes = list_nodes(r).await?;
    let missing: Vec<&str> = expected
        .iter()
        .filter(|e| !nodes.iter().any(|n| &n.name == *e))
        .map(String::as_str)
        .collect();
    let of_interest = || nodes.iter().filter(|n| expected.contains(&n.name));
    let not_ready: Vec<String> = of_interest()
        .filter(|n| n.ready != "True")
        .map(|n| format!("{} (Ready={})", n.name, n.ready))
        .collect();
    // After an upgrade every node must run the pinned version (`kubeletVersion`).
    let other_version: Vec<String> = of_interest()
        .filter(|n| n.version != version)
        .map(|n| format!("{} ({})", n.name, n.version))
        .collect();
    let dns_ok = !coredns || {
        let d = r
            .run(
                &format!("{BIN_PATH} kubectl -n kube-system get deployment coredns -o json"),
                None,
                true,
                SHORT,
            )
            .await?;
        d.success()
            && serde_json::from_str::<Value>(&d.stdout)
                .ok()
                .and_then(|v| {
                    v.pointer("/status/availableReplicas")
                        .and_then(Value::as_u64)
                })
                .unwrap_or(0)
                > 0
    };
    if missing.is_empty() && not_ready.is_empty() && other_version.is_empty() && dns_ok {
        return Ok(Ok(nodes));
    }
    let mut parts = Vec::new();
    if !missing.is_empty() {
        parts.push(format!("not registered: {}", missing.join(", ")));
    }
    if !not_ready.is_empty() {
        parts.push(format!("not Ready: {}", not_ready.join(", ")));
    }
    if !other_version.is_empty() {
        parts.push(format!("not at {version}: {}", other_version.join(", ")));
    }
    if !dns_ok {
        parts.push("CoreDNS is not available".to_string());
    }
    Ok(Err(parts.join("; ")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::scripted::{Reply, Scripted, exit, ok};

    const V: &str = "v1.31.4+k3s1";

    fn node(name: &str, ready: &str, version: &str) -> String {
        format!(
            r#"{{"metadata":{{"name":"{name}","labels":{{}}}},"status":{{"conditions":[{{"type":"Ready","status":"{ready}"}}],"nodeInfo":{{"kubeletVersion":"{version}","architecture":"amd64"}}}}}}"#
        )
    }

    fn list(nodes: &[String]) -> String {
        format!(r#"{{"kind":"NodeList","items":[{}]}}"#, nodes.join(","))
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_string()).collect()
    }

    #[tokio::test]
    async fn the_error_names_the_nodes_that_are_not_ready() {
        let starting = Scripted::new("srv-1").on("/readyz", exit(1, "[-]etcd failed"));
        match wait_ready(&starting, &names(&["srv-1"]), V, true, Duration::ZERO).await {
            Err(K3sError::NotReady { detail, .. }) => {
                assert_eq!(detail, "/readyz answered: [-]etcd failed");
            }
            other => panic!("{other:?}"),
        }
        let nodes = list(&[
            node("srv-1", "True", V),
            node("pi-1", "False", V),
            node("pi-2", "Unknown", V),
            node("pi-3", "True", "v1.30.2+k3s1"),
            node("not-ours", "False", V),
        ]);
        let server = Scripted::new("srv-1")
            .on("get --raw /readyz", ok("ok"))
            .on("get nodes -o json", ok(&nodes))
            .on(
                "deployment coredns",
                ok(r#"{"status":{"availableReplicas":0}}"#),
            );
        let expected = names(&["srv-1", "pi-1", "pi-2", "pi-3", "pi-4"]);
        match wait_ready(&server, &expected, V, true, Duration::ZERO).await {
            Err(K3sError::NotReady { detail, .. }) => assert_eq!(
                detail,
                "not registered: pi-4; not Ready: pi-1 (Ready=False), pi-2 (Ready=Unknown); \
                 not at v1.31.4+k3s1: pi-3 (v1.30.2+k3s1); CoreDNS is not available"
            ),
            other => panic!("{other:?}"),
        }
        assert!(server.calls().iter().all(|c| c.root));
    }

    #[tokio::test]
    async fn ready_nodes_are_returned_and_coredns_is_skipped_when_disabled() {
        let server = Scripted::new("srv-1").on("/readyz", ok("ok\n")).on(
            "get nodes",
            ok(&list(&[node("srv-1", "True", V), node("a-1", "True", V)])),
        );
        let nodes = wait_ready(&server, &names(&["srv-1", "a-1"]), V, false, Duration::ZERO)
            .await
            .expect("ready");
        assert_eq!(nodes.len(), 2);
        assert_eq!(server.calls().len(), 2, "{:?}", server.scripts());
    }

    #[tokio::test]
    async fn a_restarting_api_is_retried_until_it_answers() {
        let server = Scripted::new("srv-1")
            .once("/readyz", Reply::Disconnected)
            .on("/readyz", ok("ok"))
            .on("get nodes", ok(&list(&[node("srv-1", "True", V)])))
            .on("coredns", ok(r#"{"status":{"availableReplicas":1}}"#));
        let nodes = wait_ready(
            &server,
            &names(&["srv-1"]),
            V,
            true,
            Duration::from_secs(30),
        )
        .await
        .expect("ready");
        assert_eq!(nodes[0].name, "srv-1");
        let readyz = server
            .scripts()
            .iter()
            .filter(|s| s.contains("/readyz"))
            .count();
        assert_eq!(readyz, 2);
        // Out of time: the last answer is what the error says.
        let down = Scripted::new("srv-1").on("/readyz", Reply::Unreachable);
        match wait_ready(&down, &names(&["srv-1"]), V, true, Duration::ZERO).await {
            Err(K3sError::NotReady { detail, .. }) => {
                assert!(
                    detail.starts_with("the API did not answer: cannot connect"),
                    "{detail}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
