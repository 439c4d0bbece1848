//! Addresses of AWS hosts: what continuum connects to (private or public IP, from
//! state), filling the recipe's environment for the k3s steps (`resolve`), and the
//! wait until a group's instances answer SSH.

use std::path::Path;
use std::time::{Duration, Instant};

use super::{CloudState, InstanceRecord, Journal, ProvisionError, private_key};
use crate::recipe::{AddressKind, AwsSite, Environment, InstanceGroup};

/// Wait (in parallel, until `timeout`) for every instance of the group to answer SSH.
pub(super) async fn wait_ssh(
    site: &AwsSite,
    group: &InstanceGroup,
    journal: &dyn Journal,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let mine = journal
        .cloud()
        .groups
        .get(&group.name)
        .cloned()
        .unwrap_or_default();
    let mut waits = tokio::task::JoinSet::new();
    for (host, r) in mine.instances {
        let addr = address_of(site, &host, &r)?;
        waits.spawn(wait_for_ssh(host, r.id.clone(), addr, timeout));
    }
    while let Some(res) = waits.join_next().await {
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(e) => {
                return Err(ProvisionError::Invalid(vec![format!(
                    "SSH wait task failed: {e}"
                )]));
            }
        }
    }
    Ok(())
}

/// The address continuum connects to for an instance.
pub fn address_of(
    site: &AwsSite,
    host: &str,
    r: &InstanceRecord,
) -> Result<String, ProvisionError> {
    let (ip, kind) = match site.ssh.address {
        AddressKind::Private => (&r.private_ip, "private"),
        AddressKind::Public => (&r.public_ip, "public"),
    };
    ip.clone().ok_or_else(|| ProvisionError::NoAddress {
        instance: r.id.clone(),
        host: host.to_string(),
        kind,
    })
}

/// Wait until `addr:22` answers with an SSH banner.
async fn wait_for_ssh(
    host: String,
    instance: String,
    addr: String,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    use tokio::io::AsyncReadExt;
    let started = Instant::now();
    let target = if addr.contains(':') {
        format!("[{addr}]:22")
    } else {
        format!("{addr}:22")
    };
    let mut last = String::from("no attempt");
    while started.elapsed() < timeout {
        let attempt = async {
            let mut s = tokio::net::TcpStream::connect(&target).await?;
            let mut buf = [0u8; 4];
            s.read_exact(&mut buf).await?;
            if &buf == b"SSH-" {
                Ok(())
            } else {
                Err(std::io::Error::other("the port answered, but not with SSH"))
            }
        };
        match tokio::time::timeout(Duration::from_secs(3), attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "connection timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(ProvisionError::SshTimeout {
        instance,
        host,
        address: addr,
        waited: timeout,
        detail: last,
    })
}

/// Fill in what the recipe could not know: the addresses (and key) of AWS hosts, from
/// state; the API endpoint when it defaults to an AWS server.
pub fn resolve<'a>(
    env: &'a Environment,
    cloud: Option<&CloudState>,
    state_dir: &Path,
) -> std::borrow::Cow<'a, Environment> {
    let Some(site) = &env.aws else {
        // Nothing to fill in: no copy (plans of 10,000 hosts stay cheap).
        return std::borrow::Cow::Borrowed(env);
    };
    let mut out = env.clone();
    let key = private_key(site, state_dir, &env.name);
    for h in out.hosts.values_mut() {
        if h.cloud.is_none() {
            continue;
        }
        h.key = Some(key.clone());
        if let Some(r) = cloud.and_then(|c| c.instance(&h.name)) {
            if let Ok(a) = address_of(site, &h.name, r) {
                h.address = a;
            }
            if let Some(c) = h.cloud.as_mut() {
                c.public_ip.clone_from(&r.public_ip);
            }
        }
    }
    if out.cluster.api_endpoint.is_empty()
        && let Some(first) = out.cluster.servers.first()
        && let Some(h) = out.hosts.get(first)
    {
        out.cluster.api_endpoint = h.address.clone();
    }
    // Servers reached from outside the VPC (wireguard-native hybrid) advertise their
    // public address, and it must be in the certificate.
    if env.cluster.flannel_backend == "wireguard-native" {
        for s in &out.cluster.servers {
            if let Some(r) = cloud.and_then(|c| c.instance(s))
                && let Some(ip) = &r.public_ip
                && !out.cluster.tls_san.contains(ip)
            {
                out.cluster.tls_san.push(ip.clone());
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::Role;

    #[test]
    fn cloud_server_advertises_its_public_ip_in_a_wireguard_cluster() {
        let dir = tempfile::tempdir().expect("tempdir");
        let recipe = dir.path().join("r.yaml");
        std::fs::write(
            &recipe,
            "name: hy\nk3s:\n  version: v1.31.4+k3s1\n  servers: [cp]\n  flannel_backend: wireguard-native\naws:\n  region: eu-west-1\n  ssh:\n    user: ubuntu\n    address: public\n  firewall:\n    ssh_from: [203.0.113.7/32]\n  instance_groups:\n    - name: cp\n      count: 1\n      instance_type: t3.medium\n      image: ami-785db401\n    - name: w\n      count: 1\n      instance_type: t3.small\n      image: ami-785db401\n",
        )
        .expect("write");
        let env = crate::files::load_recipe(&recipe).expect("recipe").env;
        let mut cloud = CloudState::default();
        for (g, h, ip) in [
            ("cp", "cp-0", "198.51.100.10"),
            ("w", "w-0", "198.51.100.11"),
        ] {
            cloud.groups.entry(g.into()).or_default().instances.insert(
                h.into(),
                InstanceRecord {
                    id: format!("i-{h}"),
                    state: "running".into(),
                    private_ip: Some("10.0.0.5".into()),
                    public_ip: Some(ip.into()),
                },
            );
        }
        let env = resolve(&env, Some(&cloud), dir.path());
        assert_eq!(env.hosts["cp-0"].address, "198.51.100.10");
        assert_eq!(env.cluster.api_endpoint, "198.51.100.10");
        let server = crate::graph::node_config(&env, "cp-0", Role::Server);
        assert_eq!(server["node-external-ip"], "198.51.100.10");
        assert_eq!(server["flannel-external-ip"], true);
        assert!(server["tls-san"].to_string().contains("198.51.100.10"));
        let agent = crate::graph::node_config(&env, "w-0", Role::Agent);
        assert_eq!(agent["server"], "https://198.51.100.10:6443");
        assert!(!agent.contains_key("node-external-ip"));
        // The generated key lives in the state directory.
        assert_eq!(
            env.hosts["cp-0"].key.as_deref(),
            Some(dir.path().join("hy.id_ed25519").as_path())
        );
    }
}
