//! Import of Ansible inventories in the shape k3s-ansible uses (YAML or INI): groups
//! `server` (or `master`) and `agent` (or `node`), usually as children of `k3s_cluster`;
//! connection variables `ansible_host`, `ansible_user`, `ansible_port`,
//! `ansible_ssh_private_key_file`. Variables are inherited parent group -> child group
//! -> host, as Ansible does. Pure: text in, hosts out.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::InventoryError;
use super::edit::NewHost;

#[derive(Debug, Default)]
struct Group {
    hosts: Vec<String>,
    vars: BTreeMap<String, Value>,
    children: Vec<String>,
}

#[derive(Debug, Default)]
struct Inv {
    groups: BTreeMap<String, Group>,
    host_vars: BTreeMap<String, BTreeMap<String, Value>>,
    /// Hosts in first-seen order.
    order: Vec<String>,
}

impl Inv {
    fn add_host(&mut self, group: &str, host: &str, vars: BTreeMap<String, Value>) {
        if !self.order.iter().any(|h| h == host) {
            self.order.push(host.to_string());
        }
        let g = self.groups.entry(group.to_string()).or_default();
        if !g.hosts.iter().any(|h| h == host) {
            g.hosts.push(host.to_string());
        }
        self.host_vars
            .entry(host.to_string())
            .or_default()
            .extend(vars);
    }
}

fn err(file: &str, line: usize, msg: impl Into<String>) -> InventoryError {
    InventoryError::Ansible {
        file: file.to_string(),
        line,
        detail: msg.into(),
    }
}

/// Parse an INI inventory.
fn parse_ini(file: &str, text: &str) -> Result<Inv, InventoryError> {
    let mut inv = Inv::default();
    let mut section = ("ungrouped".to_string(), String::new());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(h) = line.strip_prefix('[') {
            let h = h
                .strip_suffix(']')
                .ok_or_else(|| err(file, n + 1, format!("unclosed section header `{line}`")))?;
            let (g, kind) = h.split_once(':').unwrap_or((h, ""));
            if !matches!(kind, "" | "vars" | "children") {
                return Err(err(file, n + 1, format!("unknown section kind `:{kind}`")));
            }
            inv.groups.entry(g.to_string()).or_default();
            section = (g.to_string(), kind.to_string());
            continue;
        }
        let words = split_ini(line).map_err(|e| err(file, n + 1, e))?;
        // A line of only quotes (`""`) has no word at all.
        let first = match (section.1.as_str(), words.first()) {
            ("vars", _) => String::new(),
            (_, Some(w)) => w.clone(),
            (_, None) => return Err(err(file, n + 1, "expected a host or group name")),
        };
        match section.1.as_str() {
            "vars" => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| err(file, n + 1, "expected `key=value`"))?;
                inv.groups
                    .entry(section.0.clone())
                    .or_default()
                    .vars
                    .insert(k.trim().to_string(), ini_value(v.trim()));
            }
            "children" => {
                let child = first;
                inv.groups.entry(child.clone()).or_default();
                inv.groups
                    .entry(section.0.clone())
                    .or_default()
                    .children
                    .push(child);
            }
            _ => {
                let mut vars = BTreeMap::new();
                for w in words.iter().skip(1) {
                    let (k, v) = w.split_once('=').ok_or_else(|| {
                        err(file, n + 1, format!("expected `key=value`, found `{w}`"))
                    })?;
                    vars.insert(k.to_string(), ini_value(v));
                }
                if first.contains('[') {
                    return Err(err(
                        file,
                        n + 1,
                        "host ranges (`host[1:3]`) are not supported; list the hosts",
                    ));
                }
                inv.add_host(&section.0, &first, vars);
            }
        }
    }
    Ok(inv)
}

/// Split an INI host line into words, honouring quotes.
fn split_ini(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for c in line.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '"' | '\'') => quote = Some(c),
            (None, '#') if cur.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            (None, c) => cur.push(c),
        }
    }
    if quote.is_some() {
        return Err("unterminated quote".into());
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

fn ini_value(v: &str) -> Value {
    let v = v.trim_matches(|c| c == '"' || c == '\'');
    v.parse::<i64>()
        .map_or_else(|_| Value::String(v.to_string()), Value::from)
}

/// Parse a YAML inventory (`all:`/groups with `hosts`, `vars`, `children`).
fn parse_yaml(file: &str, text: &str) -> Result<Inv, InventoryError> {
    let root: Value =
        serde_saphyr::from_str(text).map_err(|e| err(file, 0, format!("not valid YAML: {e}")))?;
    let top = root
        .as_object()
        .ok_or_else(|| err(file, 1, "the top level must be a mapping of groups"))?;
    let mut inv = Inv::default();
    for (g, body) in top {
        walk_group(file, &mut inv, g, body)?;
    }
    Ok(inv)
}

fn walk_group(file: &str, inv: &mut Inv, name: &str, body: &Value) -> Result<(), InventoryError> {
    inv.groups.entry(name.to_string()).or_default();
    let Some(body) = body.as_object() else {
        if body.is_null() {
            return Ok(());
        }
        return Err(err(file, 0, format!("group `{name}` must be a mapping")));
    };
    for key in body.keys() {
        if !matches!(key.as_str(), "hosts" | "vars" | "children") {
            return Err(err(
                file,
                0,
                format!("group `{name}`: unknown key `{key}` (want hosts, vars, children)"),
            ));
        }
    }
    if let Some(vars) = body.get("vars").and_then(Value::as_object) {
        let g = inv.groups.entry(name.to_string()).or_default();
        g.vars
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    if let Some(hosts) = body.get("hosts").and_then(Value::as_object) {
        for (h, vars) in hosts {
            let vars = vars
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            inv.add_host(name, h, vars);
        }
    }
    if let Some(children) = body.get("children").and_then(Value::as_object) {
        for (c, cbody) in children {
            inv.groups
                .entry(name.to_string())
                .or_default()
                .children
                .push(c.clone());
            walk_group(file, inv, c, cbody)?;
        }
    }
    Ok(())
}

/// Group names continuum maps to roles (k3s-ansible and its older `master`/`node`).
fn role_of_group(g: &str) -> Option<&'static str> {
    match g {
        "server" | "master" | "k3s_server" => Some("server"),
        "agent" | "node" | "k3s_agent" | "worker" => Some("agent"),
        _ => None,
    }
}

/// Ancestors of every group (for variable inheritance and role mapping).
fn parents(inv: &Inv) -> BTreeMap<String, Vec<String>> {
    let mut p: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (g, body) in &inv.groups {
        for c in &body.children {
            p.entry(c.clone()).or_default().push(g.clone());
        }
    }
    p
}

/// Groups a host belongs to, ancestors first (Ansible's precedence order, roughly).
fn groups_of(inv: &Inv, host: &str) -> Vec<String> {
    let par = parents(inv);
    let mut out: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    fn up(
        g: &str,
        par: &BTreeMap<String, Vec<String>>,
        out: &mut Vec<String>,
        seen: &mut BTreeSet<String>,
    ) {
        if !seen.insert(g.to_string()) {
            return;
        }
        for p in par.get(g).into_iter().flatten() {
            up(p, par, out, seen);
        }
        out.push(g.to_string());
    }
    for (g, body) in &inv.groups {
        if body.hosts.iter().any(|h| h == host) {
            up(g, &par, &mut out, &mut seen);
        }
    }
    let mut all = vec!["all".to_string()];
    all.extend(out.into_iter().filter(|g| g != "all"));
    all
}

/// A node name from an inventory host name: a DNS label (IPs become `host-10-0-0-1`).
fn node_name(h: &str) -> String {
    let first = if h.parse::<std::net::IpAddr>().is_ok() {
        format!("host-{}", h.replace(['.', ':'], "-"))
    } else {
        h.split('.').next().unwrap_or(h).to_string()
    };
    let s: String = first
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    s.trim_matches('-').chars().take(63).collect()
}

fn str_var(
    file: &str,
    host: &str,
    vars: &BTreeMap<String, Value>,
    k: &str,
) -> Result<Option<String>, InventoryError> {
    match vars.get(k) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.contains("{{") => Err(err(
            file,
            0,
            format!("host `{host}`: {k} is a Jinja template (`{s}`); give a literal value"),
        )),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(v) => Ok(Some(v.to_string())),
    }
}

/// Read an Ansible inventory (YAML when it parses as a mapping, else INI).
pub fn import(file: &str, text: &str) -> Result<Vec<NewHost>, InventoryError> {
    let yaml_like = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .is_some_and(|l| {
            !l.starts_with('[') && (l == "---" || l.ends_with(':') || l.contains(": "))
        });
    let inv = if yaml_like {
        parse_yaml(file, text)?
    } else {
        parse_ini(file, text)?
    };
    let mut out = Vec::new();
    for h in &inv.order {
        let groups = groups_of(&inv, h);
        let mut vars: BTreeMap<String, Value> = BTreeMap::new();
        for g in &groups {
            if let Some(body) = inv.groups.get(g) {
                vars.extend(body.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
        }
        if let Some(hv) = inv.host_vars.get(h) {
            vars.extend(hv.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        let roles: BTreeSet<&str> = groups.iter().filter_map(|g| role_of_group(g)).collect();
        if roles.len() > 1 {
            return Err(err(
                file,
                0,
                format!("host `{h}` is in both a server and an agent group"),
            ));
        }
        let port = match str_var(file, h, &vars, "ansible_port")? {
            None => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| {
                err(
                    file,
                    0,
                    format!("host `{h}`: ansible_port `{p}` is not a port number"),
                )
            })?),
        };
        out.push(NewHost {
            name: node_name(h),
            address: str_var(file, h, &vars, "ansible_host")?.unwrap_or_else(|| h.clone()),
            port,
            user: str_var(file, h, &vars, "ansible_user")?,
            key: str_var(file, h, &vars, "ansible_ssh_private_key_file")?,
            bastion: None,
            role: roles.into_iter().next().map(str::to_string),
            labels: BTreeMap::new(),
            host_key: None,
        });
    }
    if out.is_empty() {
        return Err(err(file, 0, "the inventory lists no hosts"));
    }
    // Servers first (YAML mappings come back sorted, so file order is not kept there).
    out.sort_by_key(|h| h.role.as_deref() != Some("server"));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ini_line_of_only_quotes_is_an_error_not_a_panic() {
        // `words[0]` panicked on a line that is only `""`.
        for ini in ["[server]\n\"\"\n", "[g:children]\n''\n", "\"\"\n"] {
            let e = import("inv.ini", ini).expect_err("refused");
            assert!(
                e.to_string().contains("expected a host or group name"),
                "{e}"
            );
        }
    }

    #[test]
    fn ini_k3s_ansible_shape() {
        let ini = "[server]\n192.168.1.10 ansible_user=pi\n\n[agent]\nnode-a.lan ansible_host=192.168.1.11\nnode-b ansible_host=192.168.1.12 ansible_port=2222\n\n[k3s_cluster:children]\nserver\nagent\n\n[k3s_cluster:vars]\nansible_user=debian\n";
        let hosts = import("inv.ini", ini).expect("import");
        assert_eq!(hosts.len(), 3);
        assert_eq!(hosts[0].name, "host-192-168-1-10");
        assert_eq!(
            hosts[0].user.as_deref(),
            Some("pi"),
            "host vars beat group vars"
        );
        assert_eq!(hosts[0].role.as_deref(), Some("server"));
        assert_eq!(hosts[1].name, "node-a");
        assert_eq!(hosts[1].address, "192.168.1.11");
        assert_eq!(hosts[1].user.as_deref(), Some("debian"));
        assert_eq!(hosts[2].port, Some(2222));
        assert_eq!(hosts[2].role.as_deref(), Some("agent"));
    }

    #[test]
    fn yaml_k3s_ansible_shape() {
        let y = "---\nk3s_cluster:\n  children:\n    server:\n      hosts:\n        192.16.35.11:\n    agent:\n      hosts:\n        192.16.35.12:\n          ansible_user: pi\n  vars:\n    ansible_port: 22\n    ansible_user: debian\n    token: \"changeme!\"\n";
        let hosts = import("inv.yml", y).expect("import");
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].role.as_deref(), Some("server"));
        assert_eq!(hosts[0].user.as_deref(), Some("debian"));
        assert_eq!(hosts[1].user.as_deref(), Some("pi"));
        assert_eq!(hosts[1].port, Some(22));
    }

    #[test]
    fn templates_and_bad_lines_are_errors() {
        let e = import("i", "[server]\na ansible_host=\"{{ x }}\"\n").expect_err("template");
        assert!(e.to_string().contains("Jinja"), "{e}");
        let e = import("i", "[server\na\n").expect_err("header");
        assert!(e.to_string().contains("i:1"), "{e}");
    }
}
