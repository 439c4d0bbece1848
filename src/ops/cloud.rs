//! The AWS site inside `up` and `down`: provider setup and validation before spend,
//! the graph steps of cloud resources, and the teardown sweep. The EC2 logic itself is
//! in `aws::provision`; this module wires it to the state file (`Journal`) and events.

use std::sync::Arc;

use super::context::{CloudCtx, Ctx};
use super::{Event, OpsError, Settings, SharedObserver};
use crate::aws::Ec2Api;
use crate::aws::provision::{self, CloudState, Journal, ProvisionError, Validated};
use crate::files::StateError;
use crate::graph::{Action, Kind, Plan};
use crate::recipe::Environment;
use crate::state::State;
use crate::statestore::Store;

fn invalid(msg: impl Into<String>) -> OpsError {
    OpsError::Cloud(ProvisionError::Invalid(vec![msg.into()]))
}

/// The EC2 provider for `region`, from the settings' connector.
pub(super) async fn provider(
    settings: &Settings,
    region: &str,
) -> Result<Arc<dyn Ec2Api>, OpsError> {
    Ok(settings.ec2.connect(region).await?)
}

/// Set up the provider (credentials resolved now), check instance types, their
/// zones and images before anything is created, and record the region in state.
pub(super) async fn prepare(
    base: &Environment,
    plan: &Plan,
    settings: &Settings,
    store: &Store,
    state: &mut State,
) -> Result<Option<CloudCtx>, OpsError> {
    let Some(site) = &base.aws else {
        if state.aws.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(invalid(format!(
                "the recipe no longer declares the AWS site, but state holds its resources: run `continuum down {}` to remove them",
                base.name
            )));
        }
        return Ok(None);
    };
    if let Some(c) = &state.aws
        && !c.region.is_empty()
        && c.region != site.region
        && !c.is_empty()
    {
        return Err(invalid(format!(
            "the environment's AWS resources are in {}, the recipe now says {}: run `continuum down {}` first",
            c.region, site.region, base.name
        )));
    }
    let api = provider(settings, &site.region).await?;
    // Launches, and the subnet (its zone must offer the types), are checked first.
    let spends = plan.changes.iter().any(|c| {
        c.action != Action::NoOp
            && matches!(
                crate::graph::ResourceId::parse(&c.id),
                Some(crate::graph::ResourceId::Aws(
                    crate::graph::AwsId::Instances { .. } | crate::graph::AwsId::Subnet
                ))
            )
    });
    let valid = if spends {
        let valid = provision::validate(api.as_ref(), site, &settings.cloud).await?;
        let cloud = state.aws.clone().unwrap_or_default();
        if let Some(zone) =
            provision::check_subnet_zone(api.as_ref(), &cloud, &valid, &settings.cloud).await?
            && let Some(s) = state.aws.as_mut().and_then(|c| c.subnet.as_mut())
            && s.zone.is_none()
        {
            s.zone = Some(zone);
            store.save(state)?;
        }
        valid
    } else {
        Validated::default()
    };
    if provision::init_cloud(
        state.aws.get_or_insert_with(CloudState::default),
        &site.region,
    ) {
        store.save(state)?;
    }
    Ok(Some(CloudCtx {
        api,
        valid,
        opts: settings.cloud,
    }))
}

/// The instance group a host belongs to, per state.
pub(super) fn group_of(state: &State, host: &str) -> Option<String> {
    state.aws.as_ref().and_then(|c| {
        c.groups
            .iter()
            .find(|(_, g)| g.instances.contains_key(host))
            .map(|(name, _)| name.clone())
    })
}

/// The state file as the provisioning journal.
struct StateJournal<'a> {
    state: &'a std::sync::Mutex<State>,
    store: &'a Store,
}

impl Journal for StateJournal<'_> {
    fn cloud(&self) -> CloudState {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .aws
            .clone()
            .unwrap_or_default()
    }
    fn record(&self, f: &mut dyn FnMut(&mut CloudState)) -> Result<(), StateError> {
        let mut st = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(st.aws.get_or_insert_with(CloudState::default));
        self.store.save(&mut st)
    }
}

/// Apply one cloud resource of the graph.
/// Changes EC2 cannot make in place never get here: the plan refuses them
/// (`graph::plan`, `Action::Refused`) and `up` stops before any step.
pub(super) async fn step(ctx: &Ctx, id: &str, kind: &Kind) -> Result<bool, OpsError> {
    let cc = ctx
        .cloud
        .as_ref()
        .ok_or_else(|| invalid("no AWS provider for a cloud resource"))?;
    let env = ctx.env();
    let site = env
        .aws
        .as_ref()
        .ok_or_else(|| invalid("the recipe declares no AWS site"))?;
    let j = StateJournal {
        state: &ctx.state,
        store: &ctx.store,
    };
    let api = cc.api.as_ref();
    let opts = &cc.opts;
    let progress = |m: String| {
        ctx.obs.event(Event::Progress {
            id: id.to_string(),
            message: m,
        });
    };
    let changed = match kind {
        Kind::AwsVpc => provision::ensure_vpc(api, &env, &j, opts).await?,
        Kind::AwsSubnet => provision::ensure_subnet(api, &env, &j, &cc.valid.zones, opts).await?,
        Kind::AwsInternetGateway => provision::ensure_gateway(api, &env, &j, opts).await?,
        Kind::AwsRoute => provision::ensure_route(api, &env, &j, opts).await?,
        Kind::AwsSecurityGroup => provision::ensure_security_group(api, &env, &j, opts).await?,
        Kind::AwsKeyPair => {
            provision::ensure_key_pair(api, &env, &j, ctx.store.dir(), opts).await?
        }
        Kind::AwsInstances { group } => {
            let g = site
                .groups
                .iter()
                .find(|g| &g.name == group)
                .ok_or_else(|| invalid(format!("instance group `{group}` is not in the recipe")))?;
            let image = cc.valid.images.get(group).ok_or_else(|| {
                invalid(format!("no image resolved for instance group `{group}`"))
            })?;
            progress(format!("{} x {} ({})", g.count, g.instance_type, image.id));
            let changed = provision::ensure_group(api, &env, g, image, &j, opts, true).await?;
            // Addresses are known now: every k3s node's config can name them.
            ctx.refresh()?;
            changed
        }
        _ => false,
    };
    Ok(changed)
}

/// A cloud resource that left the recipe: an instance group is terminated; the
/// network stays until `down` (removing it under running instances cannot work).
pub(super) async fn delete_step(ctx: &Ctx, id: &str) -> Result<bool, OpsError> {
    let Some(crate::graph::ResourceId::Aws(crate::graph::AwsId::Instances { group })) =
        crate::graph::ResourceId::parse(id)
    else {
        return Err(invalid(format!(
            "{id} is no longer in the recipe; network resources are removed by `continuum down`"
        )));
    };
    let cc = ctx
        .cloud
        .as_ref()
        .ok_or_else(|| invalid("no AWS provider for a cloud resource"))?;
    let j = StateJournal {
        state: &ctx.state,
        store: &ctx.store,
    };
    let env = ctx.env();
    let ids = provision::remove_group(cc.api.as_ref(), &env.name, &group, &j, &cc.opts).await?;
    ctx.obs.event(Event::Progress {
        id: id.to_string(),
        message: format!("terminated {} instance(s)", ids.len()),
    });
    super::context::with_state(ctx, |st| {
        st.resources.remove(id);
    })?;
    Ok(true)
}

/// `down`: remove every AWS resource of the environment (sweep by tag and state).
/// Returns what was done; on failure the leftovers stay in state.
pub(super) async fn teardown(
    env: &str,
    settings: &Settings,
    state: &std::sync::Mutex<State>,
    store: &Store,
    obs: &SharedObserver,
) -> Result<Option<provision::Teardown>, OpsError> {
    let region = {
        let st = state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match &st.aws {
            Some(c) if !c.region.is_empty() => c.region.clone(),
            _ => return Ok(None),
        }
    };
    let api = provider(settings, &region).await?;
    let j = StateJournal { state, store };
    let progress = |m: String| {
        obs.event(Event::Progress {
            id: "aws".into(),
            message: m,
        });
    };
    let report = provision::teardown(api.as_ref(), env, &j, &settings.cloud, &progress).await?;
    let mut st = state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    st.aws = None;
    st.resources.retain(|id, _| {
        !matches!(
            crate::graph::ResourceId::parse(id),
            Some(crate::graph::ResourceId::Aws(_))
        )
    });
    store.save(&mut st)?;
    Ok(Some(report))
}
