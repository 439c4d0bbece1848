//! Elastic IPs for groups with `elastic_ip: true` (servers of hybrid clusters): one
//! address per host, allocated once (tagged at allocation, so a crashed run's address
//! is adopted: `adopt::adopt_or_create_with`) and associated with whatever instance the
//! host has now, so a replaced spot instance or a restarted server keeps the address
//! agents were configured with (docs/aws.md, "Public addresses").

use super::adopt::{Ensured, adopt_or_create_with};
use super::{AddressRecord, Journal, Options, ProvisionError, address_id, ec2};
use crate::aws::{Address, Ec2Api, TAG_RESOURCE, retry, retry_new, tags};
use crate::recipe::InstanceGroup;

/// Give every host of the group its address (or release them all when the group no
/// longer wants them); `true` when something changed.
pub(super) async fn ensure(
    api: &dyn Ec2Api,
    env: &str,
    group: &InstanceGroup,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<bool, ProvisionError> {
    let gs = journal
        .cloud()
        .groups
        .get(&group.name)
        .cloned()
        .unwrap_or_default();
    // Hosts that left the group (or every host, when addresses are no longer wanted).
    let gone: Vec<String> = gs
        .addresses
        .keys()
        .filter(|h| !group.elastic_ip || !gs.instances.contains_key(*h))
        .cloned()
        .collect();
    let mut changed = false;
    if !gone.is_empty() {
        release_group(api, &group.name, Some(&gone), journal, opts).await?;
        changed = true;
    }
    if !group.elastic_ip {
        return Ok(changed);
    }
    // The environment's tagged addresses, listed once (when a host first needs one).
    let mut tagged: Option<Vec<Address>> = None;
    for (host, rec) in &gs.instances {
        let rid = address_id(host);
        let rid = rid.as_str();
        let listed = &mut tagged;
        let found = adopt_or_create_with(
            journal,
            |c| {
                c.groups
                    .get(&group.name)
                    .and_then(|g| g.addresses.get(host))
                    .cloned()
            },
            || async move {
                if listed.is_none() {
                    *listed = Some(
                        retry(opts.retry, || api.describe_addresses(env))
                            .await
                            .map_err(ec2(rid))?,
                    );
                }
                Ok(listed
                    .iter()
                    .flatten()
                    .find(|a| a.tags.get(TAG_RESOURCE).map(String::as_str) == Some(rid))
                    .cloned())
            },
            || async move {
                let t = tags(env, rid);
                retry(opts.retry, || api.allocate_address(&t))
                    .await
                    .map_err(ec2(rid))
            },
            |c, a| {
                c.groups
                    .entry(group.name.clone())
                    .or_default()
                    .addresses
                    .insert(host.clone(), address_record(a));
            },
        )
        .await?;
        let addr = match found {
            Ensured::Recorded(a) => a,
            Ensured::Adopted(a) | Ensured::Created(a) => {
                changed = true;
                address_record(&a)
            }
        };
        if rec.public_ip.as_deref() != Some(addr.public_ip.as_str()) {
            retry_new(opts.retry, || {
                api.associate_address(&addr.allocation_id, &rec.id)
            })
            .await
            .map_err(ec2(&address_id(host)))?;
            let (g, h, ip) = (group.name.clone(), host.clone(), addr.public_ip.clone());
            journal.record(&mut |c| {
                if let Some(r) = c.groups.get_mut(&g).and_then(|g| g.instances.get_mut(&h)) {
                    r.public_ip = Some(ip.clone());
                }
            })?;
            changed = true;
        }
    }
    Ok(changed)
}

fn address_record(a: &Address) -> AddressRecord {
    AddressRecord {
        allocation_id: a.allocation_id.clone(),
        public_ip: a.public_ip.clone(),
    }
}

/// Release the addresses of `hosts` of a group (all of them with `None`).
pub(super) async fn release_group(
    api: &dyn Ec2Api,
    group: &str,
    hosts: Option<&[String]>,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<(), ProvisionError> {
    let gs = journal
        .cloud()
        .groups
        .get(group)
        .cloned()
        .unwrap_or_default();
    for (host, a) in &gs.addresses {
        if hosts.is_some_and(|hs| !hs.contains(host)) {
            continue;
        }
        release(api, &a.allocation_id, None, journal, opts)
            .await
            .map_err(ec2(&address_id(host)))?;
        let (g, h) = (group.to_string(), host.clone());
        journal.record(&mut |c| {
            if let Some(g) = c.groups.get_mut(&g) {
                g.addresses.remove(&h);
            }
        })?;
    }
    Ok(())
}

/// Release every address of the environment (state's and tagged ones); returns what
/// was released and what could not be.
pub(super) async fn release_all(
    api: &dyn Ec2Api,
    env: &str,
    journal: &dyn Journal,
    opts: &Options,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<(Vec<String>, Vec<String>), ProvisionError> {
    let mut targets: Vec<(String, Option<String>)> = journal
        .cloud()
        .groups
        .values()
        .flat_map(|g| {
            g.addresses
                .values()
                .map(|a| (a.allocation_id.clone(), None))
        })
        .collect();
    for a in retry(opts.retry, || api.describe_addresses(env))
        .await
        .map_err(ec2("Elastic IPs"))?
    {
        match targets.iter_mut().find(|(id, _)| *id == a.allocation_id) {
            Some(t) => t.1.clone_from(&a.association_id),
            None => targets.push((a.allocation_id.clone(), a.association_id.clone())),
        }
    }
    let (mut released, mut left) = (Vec::new(), Vec::new());
    for (id, association) in targets {
        progress(format!("releasing Elastic IP {id}"));
        match release(api, &id, association.as_deref(), journal, opts).await {
            Ok(()) => {
                released.push(format!("Elastic IP {id}"));
                journal.record(&mut |c| {
                    for g in c.groups.values_mut() {
                        g.addresses.retain(|_, a| a.allocation_id != id);
                    }
                    c.created_at.remove(&id);
                })?;
            }
            Err(e) => left.push(format!("Elastic IP {id}: {e}")),
        }
    }
    Ok((released, left))
}

/// Disassociate (EC2 does so itself when the instance is terminated) and release.
async fn release(
    api: &dyn Ec2Api,
    allocation: &str,
    association: Option<&str>,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<(), crate::aws::Ec2Error> {
    let gone = |r: Result<(), crate::aws::Ec2Error>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        other => other,
    };
    if let Some(a) = association {
        gone(retry(opts.retry, || api.disassociate_address(a)).await)?;
    }
    let window = journal
        .cloud()
        .unseen_window(allocation, opts.retry.consistency);
    gone(crate::aws::retry_unseen(opts.retry, window, || api.release_address(allocation)).await)
}
