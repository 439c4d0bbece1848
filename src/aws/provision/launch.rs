//! One RunInstances per group with a client token (docs/aws.md, "Client tokens").
//!
//! EC2 remembers a token for at least 24 hours after the instances it launched end:
//! the same token with the same parameters returns that old reservation, with other
//! parameters it fails with `IdempotentParameterMismatch`. So each launch gets a
//! random token, written to state with a hash of its parameters before the call; a
//! token still pending (the run stopped before recording the result) is looked up
//! first and what it launched is adopted; a changed request under it is adopted and
//! the token cleared; instances of an old reservation that are gone are never mapped
//! to hosts.

use std::collections::BTreeSet;
use std::time::Instant;

use sha2::{Digest, Sha256};

use super::{Journal, Options, ProvisionError, ec2, now_secs};
use crate::aws::{Ec2Api, Instance, InstanceQuery, RunSpec, TAG_TOKEN, retry, retry_new};

/// A fresh client token (at most 64 ASCII characters, as EC2 requires).
pub fn new_token() -> String {
    let mut b = [0u8; 16];
    if getrandom::fill(&mut b).is_err() {
        // Not secret, only unique: fall back to the clock and the process.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        b.copy_from_slice(&(t ^ u128::from(std::process::id())).to_le_bytes());
    }
    format!("continuum-{}", hex::encode(b))
}

/// Hash of what EC2 compares under a token: every parameter but the token itself.
pub fn params_hash(spec: &RunSpec) -> String {
    let mut s = spec.clone();
    s.client_token.clear();
    s.tags.remove(TAG_TOKEN);
    hex::encode(&Sha256::digest(format!("{s:?}").as_bytes())[..8])
}

/// The group a launch is for.
pub(super) struct Target<'a> {
    pub group: &'a str,
    /// Its graph id (for errors).
    pub rid: &'a str,
    /// How many instances it should have.
    pub want: usize,
}

/// Launch until `live` holds `want` instances of the group: adopt what a pending
/// token launched, then launch the rest (under the pending token first, then under a
/// fresh one). `spec(n, token)` builds the request for `n` instances.
pub(super) async fn launch(
    api: &dyn Ec2Api,
    target: &Target<'_>,
    live: &mut Vec<Instance>,
    journal: &dyn Journal,
    opts: &Options,
    spec: &(dyn Fn(usize, &str) -> RunSpec + Sync),
) -> Result<bool, ProvisionError> {
    let (group, rid, want) = (target.group, target.rid, target.want);
    let gs = journal
        .cloud()
        .groups
        .get(group)
        .cloned()
        .unwrap_or_default();
    let mut pending = gs.pending_token.clone();
    let mut changed = false;
    if let Some(token) = &pending {
        let q = InstanceQuery::Token(token.clone());
        let found = retry(opts.retry, || api.find_instances(&q))
            .await
            .map_err(ec2(rid))?;
        if !found.is_empty() {
            changed |= adopt(live, found);
            clear(journal, group)?;
            pending = None;
        }
    }
    // At most: the pending token, then one fresh token.
    for _ in 0..2 {
        let missing = want.saturating_sub(live.len());
        if missing == 0 {
            break;
        }
        let token = pending.clone().unwrap_or_else(new_token);
        let request = spec(missing, &token);
        let params = params_hash(&request);
        let name = group.to_string();
        journal.record(&mut |c| {
            let g = c.groups.entry(name.clone()).or_default();
            g.pending_token = Some(token.clone());
            g.pending_params = Some(params.clone());
        })?;
        match retry_new(opts.retry, || api.run_instances(&request)).await {
            Ok(instances) => {
                let fresh: Vec<Instance> =
                    instances.iter().filter(|i| !i.is_gone()).cloned().collect();
                if fresh.len() < instances.len() {
                    tracing::warn!(
                        token,
                        "EC2 returned an old reservation for a reused client token; its ended instances are not used"
                    );
                }
                let now = now_secs();
                journal.record(&mut |c| {
                    for i in &fresh {
                        c.created_at.insert(i.id.clone(), now);
                    }
                })?;
                changed |= adopt(live, fresh);
                clear(journal, group)?;
                pending = None;
            }
            Err(e) if e.code() == Some("IdempotentParameterMismatch") => {
                // The token launched a different request (the recipe changed after a
                // crash): adopt what it launched, forget the token.
                let found = find_by_token(api, &token, opts).await?;
                changed |= adopt(live, found);
                clear(journal, group)?;
                pending = None;
            }
            Err(e) => {
                if e.is_refusal() {
                    // EC2 refused the request: nothing was launched under the token.
                    clear(journal, group)?;
                }
                return Err(ec2(rid)(e));
            }
        }
    }
    Ok(changed)
}

/// What a token launched, waiting (up to the consistency window) for EC2 to list it.
async fn find_by_token(
    api: &dyn Ec2Api,
    token: &str,
    opts: &Options,
) -> Result<Vec<Instance>, ProvisionError> {
    let q = InstanceQuery::Token(token.to_string());
    let started = Instant::now();
    let mut n = 0;
    loop {
        let found = retry(opts.retry, || api.find_instances(&q))
            .await
            .map_err(ec2("instances"))?;
        if !found.is_empty() || started.elapsed() >= opts.retry.consistency {
            return Ok(found);
        }
        n += 1;
        tokio::time::sleep(opts.retry.delay(n)).await;
    }
}

/// Add the instances that still run and are not in `live` yet; `true` if any was.
fn adopt(live: &mut Vec<Instance>, found: Vec<Instance>) -> bool {
    let have: BTreeSet<String> = live.iter().map(|i| i.id.clone()).collect();
    let before = live.len();
    live.extend(
        found
            .into_iter()
            .filter(|i| !i.is_gone() && !have.contains(&i.id)),
    );
    live.len() > before
}

fn clear(journal: &dyn Journal, group: &str) -> Result<(), ProvisionError> {
    journal.record(&mut |c| {
        if let Some(g) = c.groups.get_mut(group) {
            g.pending_token = None;
            g.pending_params = None;
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn spec(token: &str, count: i32) -> RunSpec {
        RunSpec {
            image_id: "ami-1".into(),
            instance_type: "t3.small".into(),
            count,
            subnet_id: "subnet-1".into(),
            security_group_id: "sg-1".into(),
            key_name: "k".into(),
            client_token: token.into(),
            user_data: "#cloud-config".into(),
            root_volume_gb: None,
            root_device: None,
            spot: false,
            public_ip: false,
            tags: BTreeMap::from([(TAG_TOKEN.to_string(), token.to_string())]),
        }
    }

    #[test]
    fn tokens_are_random_and_fit_ec2_limits() {
        let a = new_token();
        assert_ne!(a, new_token());
        assert!(a.len() <= 64 && a.is_ascii(), "{a}");
    }

    #[test]
    fn the_parameter_hash_ignores_the_token_but_not_the_request() {
        assert_eq!(params_hash(&spec("a", 2)), params_hash(&spec("b", 2)));
        assert_ne!(params_hash(&spec("a", 2)), params_hash(&spec("a", 3)));
    }
}
