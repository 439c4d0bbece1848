//! `down` for the AWS site: terminate every instance of the environment, release its
//! Elastic IPs, then delete security group, key pair, route table, internet gateway,
//! subnet and VPC (state's and tagged ones), retrying dependency violations.
//!
//! EC2 forgets a terminated instance after a while, and TerminateInstances fails
//! whole when one id is unknown: recorded ids EC2 no longer lists are looked up by id
//! and dropped when it does not know them (unless young enough to be merely
//! invisible), so one reclaimed spot instance never stops the others from being
//! terminated. NotFound from TerminateInstances is retried, never taken as proof an
//! instance is gone (docs/aws.md, "Forgotten instances").

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::instances::terminate_ids;
use super::{CloudState, Journal, Options, ProvisionError, addresses, ec2};
use crate::aws::{Ec2Api, Ec2Error, Instance, InstanceQuery, NetKind, retry, retry_unseen};

/// What teardown did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Teardown {
    pub terminated: Vec<String>,
    pub deleted: Vec<String>,
}

/// Remove every AWS resource of the environment. Deleted ids leave state at once;
/// what cannot be deleted stays in state and is reported.
pub async fn teardown(
    api: &dyn Ec2Api,
    env: &str,
    journal: &dyn Journal,
    opts: &Options,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Teardown, ProvisionError> {
    let mut report = Teardown {
        terminated: terminate_all(api, env, journal, opts, progress).await?,
        deleted: Vec::new(),
    };
    let (released, mut leftovers) =
        addresses::release_all(api, env, journal, opts, progress).await?;
    report.deleted.extend(released);
    journal.record(&mut |c| {
        for g in c.groups.values() {
            for r in g.instances.values() {
                c.created_at.remove(&r.id);
            }
        }
        c.groups.retain(|_, g| !g.addresses.is_empty());
        for g in c.groups.values_mut() {
            g.instances.clear();
        }
    })?;
    for kind in NetKind::DELETION_ORDER {
        let st = journal.cloud();
        let mut targets = from_state(&st, kind);
        for t in retry(opts.retry, || api.describe_tagged(kind, env))
            .await
            .map_err(ec2("sweep"))?
        {
            let e = targets.entry(t.id).or_default();
            for a in t.attachments {
                if !e.contains(&a) {
                    e.push(a);
                }
            }
        }
        for (id, attachments) in targets {
            progress(format!("deleting {kind} {id}"));
            let window = st.unseen_window(&id, opts.retry.consistency);
            match delete_one(api, kind, &id, &attachments, window, opts).await {
                Ok(()) => {
                    report.deleted.push(format!("{kind} {id}"));
                    journal.record(&mut |c| forget(c, kind, &id))?;
                }
                Err(e) => leftovers.push(stuck(api, kind, &id, &e, opts).await),
            }
        }
    }
    if leftovers.is_empty() {
        Ok(report)
    } else {
        Err(ProvisionError::Leftovers(leftovers))
    }
}

/// Terminate every instance of the environment EC2 knows, and wait until they are.
async fn terminate_all(
    api: &dyn Ec2Api,
    env: &str,
    journal: &dyn Journal,
    opts: &Options,
    progress: &(dyn Fn(String) + Send + Sync),
) -> Result<Vec<String>, ProvisionError> {
    let st = journal.cloud();
    let recorded: BTreeMap<String, String> = st
        .groups
        .values()
        .flat_map(|g| g.instances.iter().map(|(h, r)| (r.id.clone(), h.clone())))
        .collect();
    let mut known: BTreeMap<String, Instance> = retry(opts.retry, || api.describe_instances(env))
        .await
        .map_err(ec2("instances"))?
        .into_iter()
        .map(|i| (i.id.clone(), i))
        .collect();
    // Recorded ids the tag filter did not return: by id, waiting for young ones.
    let mut n = 0;
    loop {
        let unknown: Vec<String> = recorded
            .keys()
            .filter(|id| !known.contains_key(*id))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            let q = InstanceQuery::Ids(unknown.clone());
            for i in retry(opts.retry, || api.find_instances(&q))
                .await
                .map_err(ec2("instances"))?
            {
                known.insert(i.id.clone(), i);
            }
        }
        let young: Vec<&String> = unknown
            .iter()
            .filter(|id| !known.contains_key(*id))
            .filter(|id| st.unseen_window(id, opts.retry.consistency) > Duration::ZERO)
            .collect();
        if young.is_empty() {
            break;
        }
        n += 1;
        tokio::time::sleep(opts.retry.delay(n)).await;
    }
    for (id, host) in recorded.iter().filter(|(id, _)| !known.contains_key(*id)) {
        progress(format!(
            "instance {id} ({host}) is no longer known to EC2 (ended a while ago, e.g. a reclaimed spot instance): nothing to terminate"
        ));
    }
    let ids: Vec<String> = known
        .values()
        .filter(|i| i.state != "terminated")
        .map(|i| i.id.clone())
        .collect();
    if ids.is_empty() {
        return Ok(ids);
    }
    progress(format!("terminating {} instance(s)", ids.len()));
    terminate_ids(api, &ids, opts)
        .await
        .map_err(ec2("instances"))?;
    let started = Instant::now();
    let q = InstanceQuery::Ids(ids.clone());
    loop {
        // Absent from the answer: forgotten after termination, so gone.
        let left: Vec<String> = retry(opts.retry, || api.find_instances(&q))
            .await
            .map_err(ec2("instances"))?
            .iter()
            .filter(|i| i.state != "terminated")
            .map(|i| format!("instance {} ({})", i.id, i.state))
            .collect();
        if left.is_empty() {
            return Ok(ids);
        }
        if started.elapsed() > opts.delete_timeout {
            return Err(ProvisionError::Leftovers(left));
        }
        tokio::time::sleep(opts.poll).await;
    }
}

/// What state records of `kind`, with its attachments (route table: association;
/// gateway: the VPC it is attached to).
fn from_state(st: &CloudState, kind: NetKind) -> BTreeMap<String, Vec<String>> {
    let id = match kind {
        NetKind::SecurityGroup => st.security_group.clone(),
        NetKind::KeyPair => st.key_pair.clone(),
        NetKind::RouteTable => st.route_table.clone(),
        NetKind::InternetGateway => st.internet_gateway.clone(),
        NetKind::Subnet => st.subnet.clone().filter(|s| s.created).map(|s| s.id),
        NetKind::Vpc => st.vpc.clone().filter(|v| v.created).map(|v| v.id),
    };
    let mut att = Vec::new();
    if kind == NetKind::RouteTable
        && let Some(a) = &st.route_association
    {
        att.push(a.clone());
    }
    if kind == NetKind::InternetGateway
        && st.gateway_attached
        && let Some(v) = &st.vpc
    {
        att.push(v.id.clone());
    }
    id.into_iter().map(|id| (id, att.clone())).collect()
}

fn forget(c: &mut CloudState, kind: NetKind, id: &str) {
    let is = |v: &Option<String>| v.as_deref() == Some(id);
    match kind {
        NetKind::SecurityGroup if is(&c.security_group) => {
            c.security_group = None;
            c.rules.clear();
        }
        NetKind::KeyPair if is(&c.key_pair) => c.key_pair = None,
        NetKind::RouteTable if is(&c.route_table) => {
            c.route_table = None;
            c.route_association = None;
        }
        NetKind::InternetGateway if is(&c.internet_gateway) => {
            c.internet_gateway = None;
            c.gateway_attached = false;
        }
        NetKind::Subnet if c.subnet.as_ref().is_some_and(|s| s.id == id) => c.subnet = None,
        NetKind::Vpc if c.vpc.as_ref().is_some_and(|v| v.id == id) => c.vpc = None,
        _ => {}
    }
    c.created_at.remove(id);
}

/// Delete one resource (after detaching it). NotFound means gone, except for an id
/// young enough (`window`) to be merely invisible: that is retried first.
async fn delete_one(
    api: &dyn Ec2Api,
    kind: NetKind,
    id: &str,
    attachments: &[String],
    window: Duration,
    opts: &Options,
) -> Result<(), Ec2Error> {
    let tolerate = |r: Result<(), Ec2Error>| match r {
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) if e.code() == Some("Gateway.NotAttached") => Ok(()),
        other => other,
    };
    for a in attachments {
        match kind {
            NetKind::RouteTable => {
                tolerate(
                    retry_unseen(opts.retry, window, || api.disassociate_route_table(a)).await,
                )?;
            }
            NetKind::InternetGateway => {
                tolerate(
                    retry_unseen(opts.retry, window, || api.detach_internet_gateway(id, a)).await,
                )?;
            }
            _ => {}
        }
    }
    let started = Instant::now();
    let mut n = 0;
    loop {
        match tolerate(retry_unseen(opts.retry, window, || api.delete(kind, id)).await) {
            Err(Ec2Error::DependencyViolation { .. })
                if started.elapsed() < opts.delete_timeout =>
            {
                n += 1;
                tokio::time::sleep(
                    opts.retry
                        .delay(n)
                        .max(opts.poll.min(Duration::from_secs(1))),
                )
                .await;
            }
            other => return other,
        }
    }
}

/// The leftover line for a resource that would not delete: a subnet or VPC names the
/// network interfaces still in it (what holds it).
async fn stuck(api: &dyn Ec2Api, kind: NetKind, id: &str, e: &Ec2Error, opts: &Options) -> String {
    let mut line = format!("{kind} {id}: {e}");
    if matches!(kind, NetKind::Subnet | NetKind::Vpc)
        && matches!(e, Ec2Error::DependencyViolation { .. })
    {
        match retry(opts.retry, || api.network_interfaces(kind, id)).await {
            Ok(enis) if !enis.is_empty() => {
                let names: BTreeSet<String> = enis.into_iter().collect();
                line.push_str(&format!(
                    "; network interfaces still in it: {}",
                    names.into_iter().collect::<Vec<_>>().join(", ")
                ));
            }
            Ok(_) => {}
            Err(err) => line.push_str(&format!("; cannot list its network interfaces: {err}")),
        }
    }
    line
}
