//! The one way a step gets a resource of its own (ARCHITECTURE.md, "Invariants"): the
//! id state recorded; else a tagged leftover of an earlier run that stopped before
//! recording it, adopted; else a new one, created. A found or new id is recorded
//! through the `Journal` before anything else happens, a new one with its creation time
//! (docs/aws.md, "Eventual consistency"), so a crash at any point is resumed without a
//! duplicate.

use std::collections::BTreeMap;
use std::future::Future;

use super::{CloudState, Journal, Options, ProvisionError, ec2, now_secs};
use crate::aws::{Address, Ec2Api, NetKind, TAG_RESOURCE, Tagged, retry, tags};

/// How a step got its resource.
#[derive(Debug)]
pub(super) enum Ensured<R, T> {
    /// State had it: nothing was looked up or recorded.
    Recorded(R),
    /// A tagged leftover of an earlier run, recorded now.
    Adopted(T),
    /// Created now, recorded with its creation time.
    Created(T),
}

/// What EC2 made that state records by its id.
pub(super) trait Made {
    fn id(&self) -> &str;
}

impl Made for Tagged {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Made for Address {
    fn id(&self) -> &str {
        &self.allocation_id
    }
}

/// `recorded` in state; else what `find` finds (a tagged leftover); else what `create`
/// makes. What was found or made is recorded with `record` before this returns.
pub(super) async fn adopt_or_create_with<R, T, Find, Found, Create, Creating>(
    journal: &dyn Journal,
    recorded: impl FnOnce(&CloudState) -> Option<R>,
    find: Find,
    create: Create,
    mut record: impl FnMut(&mut CloudState, &T),
) -> Result<Ensured<R, T>, ProvisionError>
where
    T: Made,
    Find: FnOnce() -> Found,
    Found: Future<Output = Result<Option<T>, ProvisionError>>,
    Create: FnOnce() -> Creating,
    Creating: Future<Output = Result<T, ProvisionError>>,
{
    if let Some(r) = recorded(&journal.cloud()) {
        return Ok(Ensured::Recorded(r));
    }
    if let Some(t) = find().await? {
        journal.record(&mut |c| record(c, &t))?;
        return Ok(Ensured::Adopted(t));
    }
    let t = create().await?;
    journal.record(&mut |c| {
        record(c, &t);
        c.created_at.insert(t.id().to_string(), now_secs());
    })?;
    Ok(Ensured::Created(t))
}

/// `adopt_or_create_with` for a network resource of `kind` made for graph resource
/// `rid`: the leftover is the one `describe_tagged` lists with `rid` as its
/// `continuum:resource` tag; `create` gets the tags to create it with and returns its
/// id (a created resource has no attachments yet); `record` gets the id.
#[allow(clippy::too_many_arguments)]
pub(super) async fn adopt_or_create<R, Create, Creating>(
    api: &dyn Ec2Api,
    journal: &dyn Journal,
    env: &str,
    kind: NetKind,
    rid: &str,
    opts: &Options,
    recorded: impl FnOnce(&CloudState) -> Option<R>,
    mut record: impl FnMut(&mut CloudState, &str),
    create: Create,
) -> Result<Ensured<R, Tagged>, ProvisionError>
where
    Create: FnOnce(BTreeMap<String, String>) -> Creating,
    Creating: Future<Output = Result<String, ProvisionError>>,
{
    adopt_or_create_with(
        journal,
        recorded,
        || leftover(api, env, kind, rid, opts),
        || async move {
            let t = tags(env, rid);
            let id = create(t.clone()).await?;
            Ok(Tagged {
                kind,
                id,
                attachments: Vec::new(),
                tags: t,
            })
        },
        |c, t| record(c, &t.id),
    )
    .await
}

/// One tagged resource of `kind` for graph resource `rid` made by an earlier run.
async fn leftover(
    api: &dyn Ec2Api,
    env: &str,
    kind: NetKind,
    rid: &str,
    opts: &Options,
) -> Result<Option<Tagged>, ProvisionError> {
    let found = retry(opts.retry, || api.describe_tagged(kind, env))
        .await
        .map_err(ec2(rid))?;
    Ok(found
        .into_iter()
        .find(|t| t.tags.get(TAG_RESOURCE).map(String::as_str) == Some(rid)))
}
