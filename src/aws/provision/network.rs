//! The network steps of the AWS site: VPC, subnet (in a zone offering the site's
//! instance types), internet gateway, route table and its default route, security
//! group (rules authorised and, when the recipe drops them, revoked), key pair. Each
//! step gets its resource through `adopt::adopt_or_create` (recorded, else a tagged
//! leftover adopted, else created; recorded at once), retries NotFound on the ids it
//! just created (EC2 is eventually consistent), and converges when run again after an
//! interruption (docs/aws.md).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::adopt::{Ensured, adopt_or_create};
use super::{
    CloudId, GATEWAY, Journal, KEY_PAIR, Options, ProvisionError, ROUTE, RuleRecord,
    SECURITY_GROUP, SUBNET, VPC, ec2, need,
};
use crate::aws::{Ec2Api, NetKind, retry, retry_new};
use crate::graph::cloud::{key_name, rules, wants_public_ip};
use crate::recipe::{AwsSite, Environment, VpcChoice};

/// Private key continuum uses for the site's instances.
pub fn private_key(site: &AwsSite, state_dir: &Path, env: &str) -> PathBuf {
    site.ssh
        .key
        .clone()
        .unwrap_or_else(|| state_dir.join(format!("{env}.id_ed25519")))
}

/// The public key to import: `KEY.pub` of the configured key, or of a key generated
/// for the environment (ed25519, 0600, by `ssh-keygen`, created once).
pub fn public_key(site: &AwsSite, state_dir: &Path, env: &str) -> Result<String, ProvisionError> {
    let key = private_key(site, state_dir, env);
    if site.ssh.key.is_none() && !key.exists() {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| ProvisionError::Key(format!("{}: {e}", state_dir.display())))?;
        let out = std::process::Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C"])
            .arg(format!("continuum:{env}"))
            .arg("-f")
            .arg(&key)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| ProvisionError::Key(format!("cannot run ssh-keygen: {e}")))?;
        if !out.status.success() {
            return Err(ProvisionError::Key(format!(
                "ssh-keygen failed for {}: {}",
                key.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    let mut pubpath = key.clone().into_os_string();
    pubpath.push(".pub");
    let pubpath = PathBuf::from(pubpath);
    std::fs::read_to_string(&pubpath)
        .map(|s| s.trim().to_string())
        .map_err(|e| ProvisionError::Key(format!("cannot read {}: {e}", pubpath.display())))
}

/// The VPC: the default one, or one created (or adopted) for the environment.
pub async fn ensure_vpc(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    match &site.vpc {
        VpcChoice::Default => {
            if journal.cloud().vpc.is_some() {
                return Ok(false);
            }
            let id = retry(opts.retry, || api.default_vpc())
                .await
                .map_err(ec2(VPC))?
                .ok_or_else(|| {
                    ProvisionError::Invalid(vec![format!(
                        "region {} has no default VPC: set `aws.network.vpc_cidr` to create one",
                        site.region
                    )])
                })?;
            let vpc = CloudId {
                id,
                created: false,
                zone: None,
            };
            journal.record(&mut |c| c.vpc = Some(vpc.clone()))?;
        }
        VpcChoice::Create { cidr } => {
            let found = adopt_or_create(
                api,
                journal,
                &env.name,
                NetKind::Vpc,
                VPC,
                opts,
                |c| c.vpc.clone(),
                |c, id| {
                    c.vpc = Some(CloudId {
                        id: id.to_string(),
                        created: true,
                        zone: None,
                    });
                },
                |t| async move {
                    retry(opts.retry, || api.create_vpc(cidr, &t))
                        .await
                        .map_err(ec2(VPC))
                },
            )
            .await?;
            if let Ensured::Recorded(_) = found {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// The subnet: created (in the recipe's zone, or the first zone offering every
/// instance type) or the default VPC's default subnet in such a zone. Then, for
/// public addresses, its public-IP setting; set on every run, so a run interrupted
/// between the two finishes it.
pub async fn ensure_subnet(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    zones: &[String],
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    let st = journal.cloud();
    let subnet = match (st.subnet.clone(), &site.subnet_cidr) {
        (Some(s), _) => s,
        (None, None) => {
            let vpc = need(&st.vpc, "the VPC")?;
            let s = default_subnet(api, vpc, site, zones, opts).await?;
            journal.record(&mut |c| c.subnet = Some(s.clone()))?;
            s
        }
        (None, Some(cidr)) => {
            let vpc = need(&st.vpc, "the VPC")?;
            let az = site
                .availability_zone
                .clone()
                .or_else(|| zones.first().cloned());
            let zone = az.as_deref();
            let made = |id: &str| CloudId {
                id: id.to_string(),
                created: true,
                zone: az.clone(),
            };
            let found = adopt_or_create(
                api,
                journal,
                &env.name,
                NetKind::Subnet,
                SUBNET,
                opts,
                |c| c.subnet.clone(),
                |c, id| c.subnet = Some(made(id)),
                |t| async move {
                    retry_new(opts.retry, || api.create_subnet(vpc, cidr, zone, &t))
                        .await
                        .map_err(ec2(SUBNET))
                },
            )
            .await?;
            match found {
                Ensured::Recorded(s) => s,
                Ensured::Adopted(t) | Ensured::Created(t) => made(&t.id),
            }
        }
    };
    if subnet.created && wants_public_ip(env) {
        retry_new(opts.retry, || api.map_public_ip_on_launch(&subnet.id))
            .await
            .map_err(ec2(SUBNET))?;
    }
    Ok(true)
}

/// The default subnet to use: in the recipe's zone, or in the first zone that offers
/// every instance type of the site.
async fn default_subnet(
    api: &dyn Ec2Api,
    vpc: &str,
    site: &AwsSite,
    zones: &[String],
    opts: &Options,
) -> Result<CloudId, ProvisionError> {
    let all = retry(opts.retry, || api.default_subnets(vpc))
        .await
        .map_err(ec2(SUBNET))?;
    let fits = |z: &str| {
        site.availability_zone.as_deref().is_none_or(|a| a == z)
            && (zones.is_empty() || zones.iter().any(|o| o == z))
    };
    let s = all.iter().find(|s| fits(&s.zone)).ok_or_else(|| {
        let want = match (&site.availability_zone, zones.is_empty()) {
            (Some(a), _) => format!(" in {a}"),
            (None, false) => format!(
                " in a zone offering the site's instance types ({})",
                zones.join(", ")
            ),
            (None, true) => String::new(),
        };
        let have: Vec<&str> = all.iter().map(|s| s.zone.as_str()).collect();
        ProvisionError::Invalid(vec![format!(
            "VPC {vpc} has no default subnet{want} (default subnets: {}): set `aws.network.subnet_cidr` to create one",
            if have.is_empty() { "none".to_string() } else { have.join(", ") }
        )])
    })?;
    Ok(CloudId {
        id: s.id.clone(),
        created: false,
        zone: Some(s.zone.clone()),
    })
}

/// Internet gateway, attached to the created VPC.
pub async fn ensure_gateway(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    if st.internet_gateway.is_some() && st.gateway_attached {
        return Ok(false);
    }
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let found = adopt_or_create(
        api,
        journal,
        &env.name,
        NetKind::InternetGateway,
        GATEWAY,
        opts,
        |c| c.internet_gateway.clone(),
        |c, id| c.internet_gateway = Some(id.to_string()),
        |t| async move {
            retry(opts.retry, || api.create_internet_gateway(&t))
                .await
                .map_err(ec2(GATEWAY))
        },
    )
    .await?;
    let (igw, attached) = match found {
        Ensured::Recorded(id) => (id, false),
        Ensured::Adopted(t) => {
            let attached = t.attachments.contains(&vpc);
            (t.id, attached)
        }
        Ensured::Created(t) => (t.id, false),
    };
    if !attached {
        match retry_new(opts.retry, || api.attach_internet_gateway(&igw, &vpc)).await {
            Ok(()) => {}
            // Attached by a run that crashed before recording it.
            Err(e) if e.code() == Some("Resource.AlreadyAssociated") => {}
            Err(e) => return Err(ec2(GATEWAY)(e)),
        }
    }
    journal.record(&mut |c| c.gateway_attached = true)?;
    Ok(true)
}

/// Route table with a default route through the gateway, associated with the subnet.
/// The route is created on every run (`RouteAlreadyExists` is done), so a run
/// interrupted between the table and its route finishes it.
pub async fn ensure_route(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let subnet = need(&st.subnet, "the subnet")?.to_string();
    let igw = st.internet_gateway.clone().ok_or_else(|| {
        ProvisionError::Invalid(vec!["the internet gateway is not recorded yet".into()])
    })?;
    let mut assoc = st.route_association.clone();
    let found = adopt_or_create(
        api,
        journal,
        &env.name,
        NetKind::RouteTable,
        ROUTE,
        opts,
        |c| c.route_table.clone(),
        |c, id| c.route_table = Some(id.to_string()),
        |t| async move {
            retry_new(opts.retry, || api.create_route_table(&vpc, &t))
                .await
                .map_err(ec2(ROUTE))
        },
    )
    .await?;
    let rt = match found {
        Ensured::Recorded(id) => id,
        Ensured::Adopted(t) => {
            if assoc.is_none() {
                assoc = t.attachments.first().cloned();
            }
            t.id
        }
        Ensured::Created(t) => t.id,
    };
    match retry_new(opts.retry, || api.create_default_route(&rt, &igw)).await {
        Ok(()) => {}
        Err(e) if e.code() == Some("RouteAlreadyExists") => {}
        Err(e) => return Err(ec2(ROUTE)(e)),
    }
    if assoc.is_none() {
        assoc = Some(
            retry_new(opts.retry, || api.associate_route_table(&rt, &subnet))
                .await
                .map_err(ec2(ROUTE))?,
        );
    }
    journal.record(&mut |c| c.route_association.clone_from(&assoc))?;
    Ok(true)
}

/// Security group with the rules the cluster needs: authorises what is missing and
/// revokes what continuum authorised and the recipe no longer has (rules it did not
/// record are left alone).
pub async fn ensure_security_group(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let st = journal.cloud();
    let vpc = need(&st.vpc, "the VPC")?.to_string();
    let found = adopt_or_create(
        api,
        journal,
        &env.name,
        NetKind::SecurityGroup,
        SECURITY_GROUP,
        opts,
        |c| c.security_group.clone(),
        |c, id| c.security_group = Some(id.to_string()),
        |t| async move {
            let name = format!("continuum-{}", env.name);
            let desc = format!("continuum environment {}: k3s cluster nodes", env.name);
            retry_new(opts.retry, || {
                api.create_security_group(&name, &desc, &vpc, &t)
            })
            .await
            .map_err(ec2(SECURITY_GROUP))
        },
    )
    .await?;
    let (sg, mut changed) = match found {
        Ensured::Recorded(id) => (id, false),
        Ensured::Adopted(t) | Ensured::Created(t) => (t.id, true),
    };
    let desired = rules(env);
    let wanted: BTreeSet<RuleRecord> = desired.iter().map(RuleRecord::from).collect();
    let have: BTreeSet<RuleRecord> = st.rules.iter().cloned().collect();
    for r in desired
        .iter()
        .filter(|r| !have.contains(&RuleRecord::from(*r)))
    {
        // One rule per call: a duplicate (authorised by a crashed run) fails only itself.
        match retry_new(opts.retry, || {
            api.authorize_ingress(&sg, std::slice::from_ref(r))
        })
        .await
        {
            Ok(()) => {}
            Err(e) if e.code() == Some("InvalidPermission.Duplicate") => {}
            Err(e) => return Err(ec2(SECURITY_GROUP)(e)),
        }
        let rec = RuleRecord::from(r);
        journal.record(&mut |c| {
            if !c.rules.contains(&rec) {
                c.rules.push(rec.clone());
            }
        })?;
        changed = true;
    }
    for rec in have.iter().filter(|r| !wanted.contains(*r)) {
        let rule = rec.to_rule();
        match retry_new(opts.retry, || {
            api.revoke_ingress(&sg, std::slice::from_ref(&rule))
        })
        .await
        {
            Ok(()) => {}
            // Revoked by a run that crashed before recording it.
            Err(e) if e.code() == Some("InvalidPermission.NotFound") => {}
            Err(e) => return Err(ec2(SECURITY_GROUP)(e)),
        }
        journal.record(&mut |c| c.rules.retain(|x| x != rec))?;
        changed = true;
    }
    Ok(changed)
}

/// Import the environment's public key as the key pair.
pub async fn ensure_key_pair(
    api: &dyn Ec2Api,
    env: &Environment,
    journal: &dyn Journal,
    state_dir: &Path,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    if journal.cloud().key_pair.is_some() {
        return Ok(false);
    }
    let name = key_name(&env.name);
    let material = public_key(site, state_dir, &env.name)?;
    let (name, material) = (name.as_str(), material.as_str());
    let found = adopt_or_create(
        api,
        journal,
        &env.name,
        NetKind::KeyPair,
        KEY_PAIR,
        opts,
        |c| c.key_pair.clone(),
        // The key pair's id is its name (the one continuum imports).
        |c, _| c.key_pair = Some(name.to_string()),
        |t| async move {
            match retry(opts.retry, || api.import_key_pair(name, material, &t)).await {
                Ok(()) => Ok(name.to_string()),
                Err(e) if e.code() == Some("InvalidKeyPair.Duplicate") => {
                    Err(foreign_key_pair(name, &site.region))
                }
                Err(e) => Err(ec2(KEY_PAIR)(e)),
            }
        },
    )
    .await?;
    Ok(!matches!(found, Ensured::Recorded(_)))
}

/// A key pair with continuum's name that is not tagged for this environment.
fn foreign_key_pair(name: &str, region: &str) -> ProvisionError {
    ProvisionError::Key(format!(
        "a key pair named `{name}` exists in {region} but was not made by continuum for this environment; delete it or rename the environment"
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn generated_key_is_private_and_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let site = AwsSite {
            region: "eu-west-1".into(),
            vpc: VpcChoice::Default,
            subnet_cidr: None,
            availability_zone: None,
            ssh: crate::recipe::AwsSsh {
                user: "ubuntu".into(),
                key: None,
                address: crate::recipe::AddressKind::Private,
                bastion: None,
                timeout: Duration::from_secs(1),
            },
            firewall: crate::recipe::Firewall {
                ssh_from: vec![],
                api_from: vec![],
                http: false,
            },
            groups: vec![],
        };
        let a = public_key(&site, dir.path(), "e").expect("key");
        assert!(a.starts_with("ssh-ed25519 "), "{a}");
        let b = public_key(&site, dir.path(), "e").expect("key again");
        assert_eq!(a, b);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join("e.id_ed25519"))
            .expect("private key")
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "private key is group/world readable: {mode:o}"
        );
    }
}
