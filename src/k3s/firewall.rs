//! Host firewalls: when ufw or firewalld is active on a node, what k3s needs
//! must already be open, or the node is refused before any change with the exact
//! commands that open it. continuum does not change a host's firewall itself: which
//! sources may reach the API is the operator's decision (docs/k3s.md, "Host
//! firewalls").
//!
//! What k3s needs (docs.k3s.io, Installation, Requirements: "Inbound Rules for K3s
//! Nodes" and the ufw / firewalld notes): 6443/tcp on servers; 2379-2380/tcp between
//! servers with embedded etcd; 10250/tcp on every node; 8472/udp (vxlan) or
//! 51820-51821/udp (wireguard-native) on every node; and traffic from the pod and
//! service CIDRs.

use std::collections::BTreeSet;

use crate::recipe::Role;

/// An active host firewall and what it lets in, as the facts script reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Firewall {
    /// `ufw` or `firewalld`; empty when none is active.
    pub kind: String,
    /// Open ports as the tool lists them (`6443/tcp`, `2379:2380/tcp`, `2379-2380/tcp`).
    pub ports: BTreeSet<String>,
    /// Sources allowed everything (ufw `allow from CIDR`, firewalld trusted zone).
    pub sources: BTreeSet<String>,
}

/// The facts script's lines for the firewall (read-only).
pub const FACTS: &str = r#"if command -v ufw >/dev/null 2>&1 && ufw status 2>/dev/null | grep -q '^Status: active'; then
  echo fw=ufw
  ufw status 2>/dev/null | awk '$2 == "ALLOW" && $1 != "Anywhere" {print "fwport=" $1} $1 == "Anywhere" && $2 == "ALLOW" {print "fwsource=" $3}'
elif command -v firewall-cmd >/dev/null 2>&1 && [ "$(firewall-cmd --state 2>/dev/null)" = running ]; then
  echo fw=firewalld
  for p in $(firewall-cmd --list-ports 2>/dev/null); do echo "fwport=$p"; done
  for s in $(firewall-cmd --zone=trusted --list-sources 2>/dev/null); do echo "fwsource=$s"; done
fi
"#;

impl Firewall {
    /// Take one facts line (`fw=`, `fwport=`, `fwsource=`); whether it was one.
    pub fn read(&mut self, key: &str, value: &str) -> bool {
        match key {
            "fw" => self.kind = value.to_string(),
            "fwport" => {
                self.ports.insert(value.to_string());
            }
            "fwsource" => {
                self.sources.insert(value.to_string());
            }
            _ => return false,
        }
        true
    }
}

/// What one node needs open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Needs {
    /// `(first, last, proto)`.
    pub ports: Vec<(u16, u16, &'static str)>,
    pub sources: Vec<String>,
}

/// The ports and sources a node of `role` needs for `backend`.
pub fn needs(role: Role, ha: bool, backend: &str, cidrs: [&str; 2]) -> Needs {
    let mut ports = Vec::new();
    if role == Role::Server {
        ports.push((6443, 6443, "tcp"));
        if ha {
            ports.push((2379, 2380, "tcp"));
        }
    }
    ports.push((10250, 10250, "tcp"));
    match backend {
        "vxlan" => ports.push((8472, 8472, "udp")),
        "wireguard-native" => ports.push((51820, 51821, "udp")),
        _ => {}
    }
    Needs {
        ports,
        sources: cidrs.iter().map(|c| (*c).to_string()).collect(),
    }
}

/// Whether `open` (as ufw or firewalld lists it) covers `first..=last/proto`.
fn covers(open: &str, first: u16, last: u16, proto: &str) -> bool {
    let Some((range, p)) = open.split_once('/') else {
        return false;
    };
    if p != proto {
        return false;
    }
    let (a, b) = range.split_once([':', '-']).unwrap_or((range, range));
    match (a.parse::<u16>(), b.parse::<u16>()) {
        (Ok(a), Ok(b)) => a <= first && last <= b,
        _ => false,
    }
}

/// The exact commands that open what is missing, or `None` when nothing is (or no
/// firewall is active).
pub fn missing_commands(fw: &Firewall, need: &Needs) -> Option<Vec<String>> {
    if fw.kind.is_empty() {
        return None;
    }
    let ports: Vec<&(u16, u16, &str)> = need
        .ports
        .iter()
        .filter(|(a, b, p)| !fw.ports.iter().any(|o| covers(o, *a, *b, p)))
        .collect();
    let sources: Vec<&String> = need
        .sources
        .iter()
        .filter(|s| !fw.sources.contains(*s))
        .collect();
    if ports.is_empty() && sources.is_empty() {
        return None;
    }
    let span = |a: u16, b: u16, sep: char| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}{sep}{b}")
        }
    };
    let mut cmds = Vec::new();
    if fw.kind == "firewalld" {
        for (a, b, p) in ports {
            cmds.push(format!(
                "sudo firewall-cmd --permanent --add-port={}/{p}",
                span(*a, *b, '-')
            ));
        }
        for s in sources {
            cmds.push(format!(
                "sudo firewall-cmd --permanent --zone=trusted --add-source={s}"
            ));
        }
        cmds.push("sudo firewall-cmd --reload".to_string());
    } else {
        for (a, b, p) in ports {
            cmds.push(format!("sudo ufw allow {}/{p}", span(*a, *b, ':')));
        }
        for s in sources {
            cmds.push(format!("sudo ufw allow from {s} to any"));
        }
    }
    Some(cmds)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_rules_become_exact_commands() {
        let need = needs(
            Role::Server,
            true,
            "vxlan",
            ["10.42.0.0/16", "10.43.0.0/16"],
        );
        let mut fw = Firewall {
            kind: "ufw".into(),
            ..Firewall::default()
        };
        fw.ports.insert("6443/tcp".into());
        fw.ports.insert("2379:2380/tcp".into());
        fw.sources.insert("10.42.0.0/16".into());
        assert_eq!(
            missing_commands(&fw, &need),
            Some(vec![
                "sudo ufw allow 10250/tcp".to_string(),
                "sudo ufw allow 8472/udp".to_string(),
                "sudo ufw allow from 10.43.0.0/16 to any".to_string(),
            ])
        );
        let agent = needs(
            Role::Agent,
            false,
            "wireguard-native",
            ["10.42.0.0/16", "10.43.0.0/16"],
        );
        let fwd = Firewall {
            kind: "firewalld".into(),
            ..Firewall::default()
        };
        let cmds = missing_commands(&fwd, &agent).expect("missing");
        assert!(
            cmds.contains(&"sudo firewall-cmd --permanent --add-port=51820-51821/udp".to_string())
        );
        assert_eq!(
            cmds.last().map(String::as_str),
            Some("sudo firewall-cmd --reload")
        );
        assert!(
            !cmds.iter().any(|c| c.contains("6443")),
            "agents need no API port"
        );
        // No active firewall: nothing to say.
        assert_eq!(missing_commands(&Firewall::default(), &need), None);
    }
}
