//! Line-level edits of an inventory file that keep its comments, blank lines and order.
//!
//! serde-saphyr (like every serde YAML library) drops comments on a round trip, so the
//! edits here work on the text: `hosts:` is a top-level block sequence; an entry is the
//! run of lines from its `- ` line to the next entry or the end of the block. New values
//! are written as JSON scalars/flow mappings (valid YAML), so quoting is always right.
//! Callers re-validate the result with `files::load_inventory` before replacing the
//! file (`super::write_checked`).

use std::collections::BTreeMap;

use super::InventoryError;

/// A host to add, as the user gave it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewHost {
    pub name: String,
    pub address: String,
    pub port: Option<u16>,
    pub user: Option<String>,
    pub key: Option<String>,
    pub bastion: Option<String>,
    pub role: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Host key pinned at first contact (`TYPE BASE64`).
    pub host_key: Option<String>,
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

/// Where the `hosts:` block is: (index of the `hosts:` line, first line after the block,
/// indent of its `- ` items).
fn hosts_block(lines: &[&str]) -> Result<(usize, usize, Option<usize>), InventoryError> {
    let start = lines
        .iter()
        .position(|l| l.starts_with("hosts:"))
        .ok_or_else(|| {
            InventoryError::Edit("the inventory has no top-level `hosts:` key".into())
        })?;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        let top = !l.is_empty() && !l.starts_with([' ', '\t', '#', '-']);
        if top {
            end = i;
            break;
        }
    }
    let indent = lines[start + 1..end].iter().find_map(|l| {
        let t = l.trim_start();
        t.starts_with("- ").then(|| l.len() - t.len())
    });
    Ok((start, end, indent))
}

/// Entries of the hosts block: (first line, end line, name).
fn entries(lines: &[&str]) -> Result<Vec<(usize, usize, String)>, InventoryError> {
    let (start, end, indent) = hosts_block(lines)?;
    let Some(indent) = indent else {
        return Ok(Vec::new());
    };
    // `get`, not indexing: a comment like `#ü` has no char boundary at every indent.
    let is_item = |l: &str| {
        l.get(..indent).is_some_and(|p| p.trim().is_empty())
            && l.get(indent..).is_some_and(|r| r.starts_with("- "))
    };
    let starts: Vec<usize> = (start + 1..end).filter(|i| is_item(lines[*i])).collect();
    let mut out = Vec::new();
    for (n, s) in starts.iter().enumerate() {
        let mut e = starts.get(n + 1).copied().unwrap_or(end);
        // Trailing blank lines and comments belong to what follows.
        while e > *s + 1 && {
            let t = lines[e - 1].trim();
            t.is_empty() || t.starts_with('#')
        } {
            e -= 1;
        }
        let name = (*s..e)
            .find_map(|i| {
                let t = lines[i].trim_start().trim_start_matches("- ").trim_start();
                t.strip_prefix("name:").map(|v| {
                    let v = v.split(" #").next().unwrap_or("").trim();
                    v.trim_matches(|c| c == '"' || c == '\'').to_string()
                })
            })
            .unwrap_or_default();
        out.push((*s, e, name));
    }
    Ok(out)
}

fn join(lines: &[String]) -> String {
    let mut s = lines.join("\n");
    s.push('\n');
    s
}

/// The text with `host` appended to the hosts block.
pub fn add(text: &str, host: &NewHost) -> Result<String, InventoryError> {
    let lines: Vec<&str> = text.lines().collect();
    if entries(&lines)?.iter().any(|(_, _, n)| *n == host.name) {
        return Err(InventoryError::Exists(host.name.clone()));
    }
    let (start, _, indent) = hosts_block(&lines)?;
    let indent = indent.unwrap_or(2);
    let pad = " ".repeat(indent + 2);
    let mut block = vec![format!(
        "{}- name: {}",
        " ".repeat(indent),
        json_str(&host.name)
    )];
    block.push(format!("{pad}address: {}", json_str(&host.address)));
    if let Some(p) = host.port {
        block.push(format!("{pad}port: {p}"));
    }
    for (k, v) in [
        ("user", &host.user),
        ("key", &host.key),
        ("bastion", &host.bastion),
        ("role", &host.role),
        ("host_key", &host.host_key),
    ] {
        if let Some(v) = v {
            block.push(format!("{pad}{k}: {}", json_str(v)));
        }
    }
    if !host.labels.is_empty() {
        block.push(format!(
            "{pad}labels: {}",
            serde_json::to_string(&host.labels).unwrap_or_default()
        ));
    }
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_string()).collect();
    // `hosts: []` (empty flow sequence) becomes a block sequence.
    if out[start].trim_end() != "hosts:" {
        let rest = out[start]["hosts:".len()..].trim();
        if rest.starts_with("[]") {
            out[start] = "hosts:".to_string();
        } else {
            return Err(InventoryError::Edit(
                "`hosts:` is not a block sequence; rewrite it as `- name: ...` items".into(),
            ));
        }
    }
    let ents = entries(&lines)?;
    // After the last entry; in an empty block after its comments.
    let at = ents.last().map_or_else(
        || {
            let (_, end, _) = hosts_block(&lines).unwrap_or((start, start + 1, None));
            let mut at = end;
            while at > start + 1 && lines[at - 1].trim().is_empty() {
                at -= 1;
            }
            at
        },
        |(_, e, _)| *e,
    );
    for (i, l) in block.into_iter().enumerate() {
        out.insert(at + i, l);
    }
    Ok(join(&out))
}

/// The text without host `name`.
pub fn remove(text: &str, name: &str) -> Result<String, InventoryError> {
    let lines: Vec<&str> = text.lines().collect();
    let (s, e, _) = entries(&lines)?
        .into_iter()
        .find(|(_, _, n)| n == name)
        .ok_or_else(|| InventoryError::NoSuchHost(name.to_string()))?;
    let out: Vec<String> = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i < s || *i >= e)
        .map(|(_, l)| (*l).to_string())
        .collect();
    Ok(join(&out))
}

/// The text with host `name`'s `probed:` line replaced by `value` (one JSON line).
pub fn set_probed(
    text: &str,
    name: &str,
    value: &serde_json::Value,
) -> Result<String, InventoryError> {
    let lines: Vec<&str> = text.lines().collect();
    let (s, e, _) = entries(&lines)?
        .into_iter()
        .find(|(_, _, n)| n == name)
        .ok_or_else(|| InventoryError::NoSuchHost(name.to_string()))?;
    let item_indent = lines[s].len() - lines[s].trim_start().len();
    let pad = " ".repeat(item_indent + 2);
    let mut out: Vec<String> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let own_probed = i > s
            && i < e
            && l.trim_start().starts_with("probed:")
            && l.len() - l.trim_start().len() == item_indent + 2;
        if !own_probed {
            out.push((*l).to_string());
        }
        if i + 1 == e {
            out.push(format!("{pad}probed: {value}"));
        }
    }
    Ok(join(&out))
}

/// Names of the hosts, in file order.
pub fn names(text: &str) -> Result<Vec<String>, InventoryError> {
    let lines: Vec<&str> = text.lines().collect();
    Ok(entries(&lines)?.into_iter().map(|(_, _, n)| n).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "# farm inventory\ndefaults:\n  user: ubuntu   # default user\nhosts:\n  # the server\n  - name: pi-01\n    address: 10.0.4.11\n    role: server\n\n  - name: pi-02 # agent\n    address: 10.0.4.12\n# trailing comment\nextra_is_not_here: false\n";

    #[test]
    fn add_keeps_comments_and_order() {
        let h = NewHost {
            name: "jetson-03".into(),
            address: "10.0.4.13".into(),
            port: Some(2222),
            user: Some("ubuntu".into()),
            labels: [("gpu".to_string(), "yes".to_string())].into(),
            ..NewHost::default()
        };
        let out = add(INV, &h).expect("add");
        assert!(out.starts_with("# farm inventory\ndefaults:\n  user: ubuntu   # default user\n"));
        assert!(out.contains("  - name: pi-02 # agent\n    address: 10.0.4.12\n  - name: \"jetson-03\"\n    address: \"10.0.4.13\"\n    port: 2222\n    user: \"ubuntu\"\n    labels: {\"gpu\":\"yes\"}\n# trailing comment\n"), "{out}");
        assert_eq!(names(&out).expect("names"), ["pi-01", "pi-02", "jetson-03"]);
        assert!(matches!(add(&out, &h), Err(InventoryError::Exists(_))));
    }

    #[test]
    fn non_ascii_comment_in_the_hosts_block_is_no_panic() {
        // `l[..indent]` panicked on `#ü` (no char boundary at byte 2).
        let text =
            "hosts:\n  - name: a\n    address: 10.0.0.1\n#ü\n  - name: b\n    address: 10.0.0.2\n";
        assert_eq!(names(text).expect("names"), ["a", "b"]);
        let out = add(
            text,
            &NewHost {
                name: "c".into(),
                address: "10.0.0.3".into(),
                ..NewHost::default()
            },
        )
        .expect("add");
        assert!(out.contains("#ü"), "{out}");
        assert_eq!(
            remove(&out, "b").map(|t| names(&t).ok()).ok().flatten(),
            Some(vec!["a".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn remove_only_the_entry() {
        let out = remove(INV, "pi-01").expect("remove");
        assert_eq!(names(&out).expect("names"), ["pi-02"]);
        assert!(
            out.contains("  # the server\n\n  - name: pi-02 # agent\n"),
            "{out}"
        );
        assert!(matches!(
            remove(INV, "nope"),
            Err(InventoryError::NoSuchHost(_))
        ));
    }

    #[test]
    fn probed_is_replaced_not_duplicated() {
        let v = serde_json::json!({"arch": "aarch64"});
        let once = set_probed(INV, "pi-01", &v).expect("probe");
        let twice =
            set_probed(&once, "pi-01", &serde_json::json!({"arch": "x86_64"})).expect("again");
        assert_eq!(twice.matches("probed:").count(), 1, "{twice}");
        assert!(
            twice
                .contains("    role: server\n    probed: {\"arch\":\"x86_64\"}\n\n  - name: pi-02"),
            "{twice}"
        );
    }

    #[test]
    fn empty_flow_hosts_becomes_block() {
        let out = add(
            "hosts: []\n",
            &NewHost {
                name: "a".into(),
                address: "10.0.0.1".into(),
                ..NewHost::default()
            },
        )
        .expect("add");
        assert_eq!(out, "hosts:\n  - name: \"a\"\n    address: \"10.0.0.1\"\n");
    }
}
