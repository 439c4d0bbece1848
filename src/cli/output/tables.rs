//! Text tables: left-aligned columns under an upper-case header, for status, endpoints,
//! services and inventories. Each function returns the table; the caller prints it.

use crate::files::endpoints::Endpoint;
use crate::ops::inventory::ProbeRow;
use crate::ops::status::{AwsStatus, StatusReport};

/// Left-aligned columns.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(head.iter().map(|h| (*h).to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

/// The nodes of `status`: one row per host, the first line of its last error.
pub(super) fn status_nodes(s: &StatusReport) -> String {
    let header = [
        "HOST",
        "ROLE",
        "ADDRESS",
        "ARCH",
        "VERSION",
        "READY",
        "STATE",
        "LAST ERROR",
    ];
    let rows: Vec<[String; 8]> = s
        .nodes
        .iter()
        .map(|n| {
            [
                n.host.clone(),
                n.role.clone(),
                n.address.clone(),
                n.arch.clone().unwrap_or_else(|| "-".into()),
                n.version.clone().unwrap_or_else(|| "-".into()),
                n.ready.clone().unwrap_or_else(|| "-".into()),
                format!("{:?}", n.state).to_lowercase(),
                n.last_error.as_deref().map_or("-".into(), |e| {
                    e.lines().next().unwrap_or("").chars().take(60).collect()
                }),
            ]
        })
        .collect();
    let rows: Vec<Vec<String>> = rows.into_iter().map(Vec::from).collect();
    table(&header, &rows)
}

/// The EC2 instances of `status`.
pub(super) fn aws_instances(a: &AwsStatus) -> String {
    let rows: Vec<Vec<String>> = a
        .instances
        .iter()
        .map(|i| {
            vec![
                i.host.clone(),
                i.group.clone(),
                i.id.clone(),
                i.state.clone(),
                i.private_ip.clone().unwrap_or_else(|| "-".into()),
                i.public_ip.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "INSTANCE HOST",
            "GROUP",
            "ID",
            "STATE",
            "PRIVATE IP",
            "PUBLIC IP",
        ],
        &rows,
    )
}

/// `continuum endpoints list`.
pub(super) fn endpoints(list: &[Endpoint]) -> String {
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|e| {
            vec![
                e.name.clone(),
                e.tier.to_string(),
                e.arch.clone(),
                if e.gpu { "yes".into() } else { "no".into() },
                e.oscar_url.clone(),
                e.minio_url.clone(),
                e.kube_context.clone(),
                e.env.clone(),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "TIER", "ARCH", "GPU", "OSCAR", "MINIO", "CONTEXT", "ENV",
        ],
        &rows,
    )
}

/// `continuum fn list`: a cluster's services (already redacted).
pub(super) fn services(list: &[serde_json::Value]) -> String {
    let field = |s: &serde_json::Value, k: &str| {
        s.get(k)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
            .unwrap_or_else(|| "-".into())
    };
    let rows: Vec<Vec<String>> = list
        .iter()
        .map(|s| {
            vec![
                field(s, "name"),
                field(s, "image"),
                field(s, "cpu"),
                field(s, "memory"),
            ]
        })
        .collect();
    table(&["NAME", "IMAGE", "CPU", "MEMORY"], &rows)
}

/// `continuum inventory list`: the hosts and what the last probe found.
pub fn inventory(rows: &[crate::files::inventory::Row]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{}:{}", r.address, r.port),
                r.user.clone().unwrap_or_default(),
                r.role.clone().unwrap_or_default(),
                r.arch.clone().unwrap_or_default(),
                r.model.clone().unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &["NAME", "ADDRESS", "USER", "ROLE", "ARCH", "MODEL"],
        &cells,
    )
}

/// `continuum inventory probe`: the facts per host, then each host's errors and
/// problems on lines of their own.
pub fn probe(rows: &[ProbeRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| match &r.facts {
            Some(f) => vec![
                r.name.clone(),
                f.arch.clone(),
                f.os.clone(),
                f.kernel.clone(),
                format!("{} MiB", f.memory_mib),
                format!("{} MiB", f.disk_free_mib),
                f.init.clone(),
                f.iptables.clone().unwrap_or_else(|| "-".into()),
                if f.memory_cgroup() {
                    "on".into()
                } else {
                    "OFF".into()
                },
                f.model(),
                if f.nvidia_runtime.is_some() {
                    "yes".into()
                } else {
                    "-".into()
                },
            ],
            None => vec![r.name.clone(), "?".into()],
        })
        .map(|mut v| {
            v.resize(11, String::new());
            v
        })
        .collect();
    let mut out = table(
        &[
            "NAME",
            "ARCH",
            "OS",
            "KERNEL",
            "MEMORY",
            "DISK FREE",
            "INIT",
            "IPTABLES",
            "MEMCG",
            "MODEL",
            "NVIDIA RT",
        ],
        &cells,
    );
    for r in rows {
        if let Some(e) = &r.error {
            out.push_str(&format!("\n{}: cannot probe: {e}", r.name));
        }
        for p in &r.problems {
            out.push_str(&format!("\n{}: problem: {p}", r.name));
        }
    }
    out
}
