//! Instance groups: launch what is missing (`launch`), terminate what is beyond the
//! count, wait until every instance runs, attach Elastic IPs (`addresses`), wait for
//! SSH. What EC2 lists is surveyed once per poll for the whole environment; a recorded
//! instance EC2 does not list is looked up by id, kept while it may still be
//! invisible (young), and dropped when EC2 has forgotten it (docs/aws.md).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::launch::{self, Target};
use super::{
    InstanceRecord, Journal, Options, ProvisionError, ResolvedImage, addresses, ec2, group_id,
    key_name, need, resolve, wants_public_ip,
};
use crate::aws::{
    Ec2Api, Instance, InstanceQuery, RunSpec, TAG_RESOURCE, TAG_TOKEN, retry, retry_new, tags,
};
use crate::recipe::{Environment, InstanceGroup};

pub(super) fn record_of(i: &Instance) -> InstanceRecord {
    InstanceRecord {
        id: i.id.clone(),
        state: i.state.clone(),
        private_ip: i.private_ip.clone(),
        public_ip: i.public_ip.clone(),
    }
}

/// Give every live instance of the group a host name: recorded names stay; new
/// instances take the lowest free indices in launch order.
fn assign_names(
    group: &InstanceGroup,
    recorded: &BTreeMap<String, InstanceRecord>,
    live: &[Instance],
) -> BTreeMap<String, InstanceRecord> {
    let live_ids: BTreeMap<&str, &Instance> = live.iter().map(|i| (i.id.as_str(), i)).collect();
    let mut out: BTreeMap<String, InstanceRecord> = recorded
        .iter()
        .filter_map(|(h, r)| {
            live_ids
                .get(r.id.as_str())
                .map(|i| (h.clone(), record_of(i)))
        })
        .collect();
    let taken: BTreeSet<String> = out.values().map(|r| r.id.clone()).collect();
    let mut fresh: Vec<&Instance> = live.iter().filter(|i| !taken.contains(&i.id)).collect();
    fresh.sort_by(|a, b| {
        (&a.launch_time, a.launch_index, &a.id).cmp(&(&b.launch_time, b.launch_index, &b.id))
    });
    let mut index = 0u32;
    for i in fresh {
        while out.contains_key(&group.host_name(index)) {
            index += 1;
        }
        out.insert(group.host_name(index), record_of(i));
    }
    out
}

/// The instances' user data (rendered by `render::cloud_init`).
pub fn user_data(env: &str, group: &str) -> Result<String, ProvisionError> {
    crate::render::cloud_init::user_data(env, group)
        .map_err(|e| ProvisionError::Invalid(vec![format!("cloud-init template: {e}")]))
}

/// The group's instances that still run (or start), as far as EC2 and state know:
/// the environment's tag-filtered list, plus recorded ones it did not return, looked
/// up by id; a recorded id EC2 does not know is kept while younger than the
/// consistency window (it may not be visible yet), and dropped after that.
pub(super) async fn survey(
    api: &dyn Ec2Api,
    env: &str,
    group: &str,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<Vec<Instance>, ProvisionError> {
    let rid = group_id(group);
    let listed = retry(opts.retry, || api.describe_instances(env))
        .await
        .map_err(ec2(&rid))?;
    let mut mine: Vec<Instance> = listed
        .into_iter()
        .filter(|i| i.tag(TAG_RESOURCE) == Some(rid.as_str()))
        .collect();
    let st = journal.cloud();
    let recorded = st.groups.get(group).cloned().unwrap_or_default().instances;
    let seen: BTreeSet<String> = mine.iter().map(|i| i.id.clone()).collect();
    let unlisted: Vec<(&String, &InstanceRecord)> = recorded
        .iter()
        .filter(|(_, r)| !seen.contains(&r.id))
        .collect();
    if !unlisted.is_empty() {
        let q = InstanceQuery::Ids(unlisted.iter().map(|(_, r)| r.id.clone()).collect());
        let found = retry(opts.retry, || api.find_instances(&q))
            .await
            .map_err(ec2(&rid))?;
        let found_ids: BTreeSet<String> = found.iter().map(|i| i.id.clone()).collect();
        mine.extend(found);
        for (host, r) in unlisted
            .into_iter()
            .filter(|(_, r)| !found_ids.contains(&r.id))
        {
            if st.unseen_window(&r.id, opts.retry.consistency) > Duration::ZERO {
                mine.push(Instance {
                    id: r.id.clone(),
                    state: r.state.clone(),
                    private_ip: r.private_ip.clone(),
                    public_ip: r.public_ip.clone(),
                    launch_index: 0,
                    launch_time: String::new(),
                    tags: [(TAG_RESOURCE.to_string(), rid.clone())].into(),
                });
            } else {
                tracing::warn!(
                    "instance {} ({host}) is no longer known to EC2 (ended a while ago, e.g. a reclaimed spot instance); its host gets a new instance",
                    r.id
                );
            }
        }
    }
    mine.retain(|i| !i.is_gone());
    Ok(mine)
}

/// Launch what is missing of an instance group, terminate what is beyond its count,
/// and wait until every instance runs (with its Elastic IP) and answers SSH.
pub async fn ensure_group(
    api: &dyn Ec2Api,
    env: &Environment,
    group: &InstanceGroup,
    image: &ResolvedImage,
    journal: &dyn Journal,
    opts: &Options,
    wait_ssh: bool,
) -> Result<bool, ProvisionError> {
    let Some(site) = &env.aws else {
        return Ok(false);
    };
    let rid = group_id(&group.name);
    let mut live = survey(api, &env.name, &group.name, journal, opts).await?;
    let want = group.count as usize;
    let mut changed = false;
    if live.len() < want {
        let st = journal.cloud();
        let subnet = need(&st.subnet, "the subnet")?.to_string();
        let sg = st.security_group.clone().ok_or_else(|| {
            ProvisionError::Invalid(vec!["the security group is not recorded yet".into()])
        })?;
        let key = st.key_pair.clone().unwrap_or_else(|| key_name(&env.name));
        let data = user_data(&env.name, &group.name)?;
        let public_ip = wants_public_ip(env);
        let spec = |n: usize, token: &str| {
            let mut t = tags(&env.name, &rid);
            t.insert(TAG_TOKEN.into(), token.to_string());
            RunSpec {
                image_id: image.id.clone(),
                instance_type: group.instance_type.clone(),
                count: i32::try_from(n).unwrap_or(i32::MAX),
                subnet_id: subnet.clone(),
                security_group_id: sg.clone(),
                key_name: key.clone(),
                client_token: token.to_string(),
                user_data: data.clone(),
                root_volume_gb: group
                    .root_volume_gb
                    .map(|g| i32::try_from(g).unwrap_or(i32::MAX)),
                root_device: image.root_device.clone(),
                spot: group.spot,
                public_ip,
                tags: t,
            }
        };
        let target = Target {
            group: &group.name,
            rid: &rid,
            want,
        };
        changed |= launch::launch(api, &target, &mut live, journal, opts, &spec).await?;
    }
    let recorded = journal
        .cloud()
        .groups
        .get(&group.name)
        .cloned()
        .unwrap_or_default();
    let names = assign_names(group, &recorded.instances, &live);
    let name = group.name.clone();
    journal.record(&mut |c| {
        c.groups.entry(name.clone()).or_default().instances = names.clone();
    })?;

    // Beyond the count (the group shrank): terminate; their k3s nodes were removed
    // before this step (graph edges).
    let extra: Vec<(String, String)> = names
        .iter()
        .filter(|(h, _)| !env.hosts.contains_key(*h))
        .map(|(h, r)| (h.clone(), r.id.clone()))
        .collect();
    if !extra.is_empty() {
        let ids: Vec<String> = extra.iter().map(|(_, id)| id.clone()).collect();
        terminate_ids(api, &ids, opts).await.map_err(ec2(&rid))?;
        journal.record(&mut |c| {
            if let Some(g) = c.groups.get_mut(&name) {
                for (h, _) in &extra {
                    g.instances.remove(h);
                }
            }
            for (_, id) in &extra {
                c.created_at.remove(id);
            }
        })?;
        changed = true;
    }
    wait_running(api, env, group, journal, opts, site.ssh.timeout).await?;
    changed |= addresses::ensure(api, &env.name, group, journal, opts).await?;
    if wait_ssh && site.ssh.bastion.is_none() {
        resolve::wait_ssh(site, group, journal, site.ssh.timeout).await?;
    }
    Ok(changed)
}

/// Poll (one DescribeInstances for the environment) until every instance of the group
/// runs; records what each poll shows.
async fn wait_running(
    api: &dyn Ec2Api,
    env: &Environment,
    group: &InstanceGroup,
    journal: &dyn Journal,
    opts: &Options,
    timeout: Duration,
) -> Result<(), ProvisionError> {
    let rid = group_id(&group.name);
    let started = Instant::now();
    loop {
        let mine = journal
            .cloud()
            .groups
            .get(&group.name)
            .cloned()
            .unwrap_or_default();
        let pending: Vec<(&String, &InstanceRecord)> = mine
            .instances
            .iter()
            .filter(|(_, r)| r.state != "running")
            .collect();
        let Some((h, r)) = pending.first() else {
            return Ok(());
        };
        if started.elapsed() >= timeout {
            return Err(ProvisionError::BootTimeout {
                instance: r.id.clone(),
                host: (*h).clone(),
                state: r.state.clone(),
                waited: timeout,
            });
        }
        tokio::time::sleep(opts.poll).await;
        let all = retry(opts.retry, || api.describe_instances(&env.name))
            .await
            .map_err(ec2(&rid))?;
        let by_id: BTreeMap<String, Instance> =
            all.into_iter().map(|i| (i.id.clone(), i)).collect();
        journal.record(&mut |c| {
            if let Some(g) = c.groups.get_mut(&group.name) {
                // Not listed yet (EC2 is eventually consistent): keep the record.
                for r in g.instances.values_mut() {
                    if let Some(i) = by_id.get(&r.id) {
                        *r = record_of(i);
                    }
                }
            }
        })?;
    }
}

/// Terminate instances EC2 lists (1000 per call). NotFound is retried through the
/// consistency window and never taken as proof that an instance is gone.
pub(super) async fn terminate_ids(
    api: &dyn Ec2Api,
    ids: &[String],
    opts: &Options,
) -> Result<(), crate::aws::Ec2Error> {
    for chunk in ids.chunks(1000) {
        retry_new(opts.retry, || api.terminate_instances(chunk)).await?;
    }
    Ok(())
}

/// Terminate the instances of a group that left the recipe, release its Elastic
/// IPs, and forget the group.
pub async fn remove_group(
    api: &dyn Ec2Api,
    env: &str,
    group: &str,
    journal: &dyn Journal,
    opts: &Options,
) -> Result<Vec<String>, ProvisionError> {
    let rid = group_id(group);
    let ids: Vec<String> = survey(api, env, group, journal, opts)
        .await?
        .into_iter()
        .map(|i| i.id)
        .collect();
    if !ids.is_empty() {
        terminate_ids(api, &ids, opts).await.map_err(ec2(&rid))?;
    }
    addresses::release_group(api, group, None, journal, opts).await?;
    let name = group.to_string();
    journal.record(&mut |c| {
        if let Some(g) = c.groups.remove(&name) {
            for r in g.instances.values() {
                c.created_at.remove(&r.id);
            }
        }
    })?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recipe::ImageRef;

    fn inst(id: &str, t: &str, ix: i32) -> Instance {
        Instance {
            id: id.into(),
            state: "running".into(),
            private_ip: Some(format!("10.0.0.{ix}")),
            public_ip: None,
            launch_index: ix,
            launch_time: t.into(),
            tags: BTreeMap::new(),
        }
    }

    fn group(count: u32) -> InstanceGroup {
        InstanceGroup {
            name: "w".into(),
            count,
            instance_type: "t3.small".into(),
            image: ImageRef::Id("ami-1".into()),
            root_volume_gb: None,
            spot: false,
            elastic_ip: false,
            at_type: "r.yaml:1:1".into(),
            at_image: "r.yaml:1:1".into(),
            at_root_volume: "r.yaml:1:1".into(),
        }
    }

    #[test]
    fn names_are_stable_and_fill_gaps() {
        let g = group(3);
        let live = vec![
            inst("i-b", "t1", 1),
            inst("i-a", "t1", 0),
            inst("i-c", "t2", 0),
        ];
        let names = assign_names(&g, &BTreeMap::new(), &live);
        assert_eq!(names["w-0"].id, "i-a");
        assert_eq!(names["w-1"].id, "i-b");
        assert_eq!(names["w-2"].id, "i-c");
        // w-1 died; a replacement takes its name, the others keep theirs.
        let live2 = vec![
            inst("i-a", "t1", 0),
            inst("i-c", "t2", 0),
            inst("i-d", "t3", 0),
        ];
        let names2 = assign_names(&g, &names, &live2);
        assert_eq!(names2["w-0"].id, "i-a");
        assert_eq!(names2["w-1"].id, "i-d");
        assert_eq!(names2["w-2"].id, "i-c");
    }
}
