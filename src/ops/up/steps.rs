//! The steps of `up` other than a k3s node: applying and deleting by step kind
//! (`ops::kinds`), cluster readiness, the kubeconfig merge, deleting what the recipe dropped, and the
//! serverless layer and its endpoint (the work is in `ops::serverless`).

use super::*;
use crate::ops::kinds::StepKind;

/// Run one step: its kind applies or deletes it.
pub(super) async fn run_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let Some(kind) = StepKind::of(&step.id) else {
        return Ok(Did::unchanged("nothing to do"));
    };
    if step.action == Action::Delete {
        kind.delete(ctx, step).await
    } else {
        kind.apply(ctx, step).await
    }
}

impl StepKind {
    /// Converge the resource (create, update or replace).
    async fn apply(&self, ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
        match (self, &step.kind) {
            (StepKind::Node(_), _) => super::node::node_step(ctx, step).await,
            (StepKind::ClusterReady, _) => ready_step(ctx, step).await,
            (StepKind::Kubeconfig, _) => kubeconfig_step(ctx, step).await,
            (StepKind::DevicePrep, Some(Kind::DevicePrep { device })) => {
                device::prep_step(ctx, step, *device).await.map(Did::from)
            }
            (StepKind::GpuRuntime, _) => device::gpu_step(ctx, step).await.map(Did::from),
            (StepKind::Serverless, _) => serverless_step(ctx, step).await.map(Did::from),
            (StepKind::Endpoint, _) => endpoint_step(ctx, step).await.map(Did::from),
            (StepKind::Cloud(_), Some(k)) => {
                mark(ctx, &step.id, Status::Pending, |_| {})?;
                let changed = crate::ops::cloud::step(ctx, &step.id, k).await?;
                mark(ctx, &step.id, Status::Applied, |_| {})?;
                Ok(Did::from(changed))
            }
            (StepKind::DevicePrep | StepKind::Cloud(_), _) => {
                Err(OpsError::K3s(k3s::K3sError::Protocol {
                    host: step.host.clone().unwrap_or_default(),
                    detail: format!("{} is not in the desired graph", step.id),
                }))
            }
        }
    }

    /// Take the resource away (the recipe no longer has it).
    async fn delete(&self, ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
        match self {
            StepKind::Cloud(_) => crate::ops::cloud::delete_step(ctx, &step.id)
                .await
                .map(Did::from),
            StepKind::Serverless => serverless_delete_step(ctx, step).await.map(Did::from),
            StepKind::Endpoint => endpoint_delete_step(ctx, step).await.map(Did::from),
            StepKind::Node(_)
            | StepKind::ClusterReady
            | StepKind::Kubeconfig
            | StepKind::DevicePrep
            | StepKind::GpuRuntime => delete_step(ctx, step).await,
        }
    }
}

async fn ready_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let env = ctx.env();
    let init = env.cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    // Wait for the nodes that are applied; name the others (failed, offline, skipped):
    // they do not withhold the rest of the cluster.
    let (applied, missing): (Vec<String>, Vec<String>) = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        env.cluster
            .servers
            .iter()
            .map(|s| (s, Role::Server))
            .chain(env.cluster.agents.iter().map(|a| (a, Role::Agent)))
            .map(|(h, role)| {
                let ok = st
                    .resources
                    .get(&graph::node_id(role, h))
                    .is_some_and(|r| r.status == Status::Applied);
                (h.clone(), ok)
            })
            .fold((Vec::new(), Vec::new()), |(mut a, mut m), (h, ok)| {
                if ok {
                    a.push(h)
                } else {
                    m.push(h)
                }
                (a, m)
            })
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: if missing.is_empty() {
            format!("waiting for {} node(s) to be Ready", applied.len())
        } else {
            format!(
                "waiting for {} node(s) to be Ready (not applied, not waited for: {})",
                applied.len(),
                missing.join(", ")
            )
        },
    });
    let coredns = !env.cluster.disable.iter().any(|d| d == "coredns");
    k3s::wait_ready(
        conn.as_ref(),
        &applied,
        &env.cluster.version,
        coredns,
        env.cluster.readiness_timeout,
    )
    .await?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    let mut summary = format!("{} node(s) Ready", applied.len());
    if !missing.is_empty() {
        summary.push_str(&format!("; not applied: {}", missing.join(", ")));
    }
    // Waiting changes nothing on the hosts.
    Ok(Did::unchanged(summary))
}

async fn kubeconfig_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    let text = k3s::read_kubeconfig(conn.as_ref()).await?;
    let server = ctx
        .rg_attr(&step.id, "server")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    let entries = kubeconfig::from_k3s(&text, &ctx.env().kubeconfig.context, &server)?;
    // Absolute, so `down` from another directory removes the same entry.
    let path = crate::files::absolute(&kubeconfig::default_path(
        ctx.env().kubeconfig.path.as_deref(),
    ));
    // A moved or renamed context: remove the old entry first.
    let old = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources.get(&step.id).map(|r| r.attrs.clone())
    };
    if let Some(old) = old
        && let (Some(p), Some(c)) = (
            old.get("resolved_path").and_then(|v| v.as_str()),
            old.get("context").and_then(|v| v.as_str()),
        )
        && (p != path.display().to_string() || c != ctx.env().kubeconfig.context)
    {
        kubeconfig::remove(std::path::Path::new(p), c)?;
    }
    let changed = kubeconfig::merge(&path, entries)?;
    let resolved = path.display().to_string();
    mark(ctx, &step.id, Status::Applied, |st| {
        if let Some(r) = st.resources.get_mut(graph::KUBECONFIG) {
            r.attrs
                .insert("resolved_path".into(), serde_json::json!(resolved));
        }
    })?;
    let context = &ctx.env().kubeconfig.context;
    Ok(if changed {
        Did::changed(format!("context `{context}` written to {resolved}"))
    } else {
        Did::unchanged(format!("context `{context}` already current in {resolved}"))
    })
}

pub(super) async fn delete_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let Some(host) = step.host.clone() else {
        with_state(ctx, |st| {
            st.resources.remove(&step.id);
        })?;
        return Ok(Did::changed("removed from state"));
    };
    if graph::ResourceId::parse(&step.id).is_some_and(|i| i.is_device()) {
        // Nothing to undo on the host (a memory cgroup left on is harmless).
        let still_used = ctx.env().hosts.contains_key(&host);
        with_state(ctx, |st| {
            removal::record_removed(st, &step.id, &host, still_used);
        })?;
        return Ok(Did::changed("removed from state"));
    }
    let still_used = ctx.env().hosts.contains_key(&host);
    let leave = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        removal::leave_for(&st, &step.id, &host, false)
    };
    if leave == removal::Leave::NeverInstalled {
        // Never got k3s from continuum: nothing to undo there, no connection needed.
        with_state(ctx, |st| {
            removal::record_removed(st, &step.id, &host, still_used);
        })?;
        return Ok(Did::changed("dropped: k3s was never installed there"));
    }
    // The host first: one that is gone is not drained for nothing, and the error says
    // how to forget it.
    let conn = connect(ctx, &host).await.map_err(|e| {
        let forget = format!("continuum nodes remove {} {host} --forget", ctx.env().name);
        removal::forget_hint(e, &host, forget)
    })?;
    let server = if ctx.env().cluster.init_server() != host && step.role.is_some() {
        let init = ctx.env().cluster.init_server().to_string();
        let server = connect(ctx, &init).await?;
        // Declarative shrink: quorum check for servers, cordon + drain first.
        device::before_node_delete(ctx, step, server.as_ref(), &host).await?;
        Some(server)
    } else {
        None
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "uninstalling k3s".into(),
    });
    k3s::uninstall(conn.as_ref()).await?;
    ctx.pool.drop_conn(&host).await;
    if let Some(server) = server {
        // Then the Node object, through the first server: once k3s is gone from the
        // host it cannot register again, and its node-password secret goes with it, so
        // a later join under the same name works (docs/k3s.md, "Removing a node").
        k3s::delete_node(server.as_ref(), &host).await?;
    }
    with_state(ctx, |st| {
        removal::record_removed(st, &step.id, &host, still_used);
    })?;
    Ok(Did::changed("uninstalled"))
}

async fn serverless_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let (sl, creds) = layer_inputs(ctx)?;
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    crate::ops::serverless::check_arch(&node_arches(ctx))?;
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "uploading the OSCAR layer manifests".into(),
    });
    let changed =
        crate::ops::serverless::apply_layer(conn.as_ref(), &ctx.env(), &sl, &creds).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: format!("waiting for OSCAR at {}", sl.endpoint),
    });
    crate::ops::serverless::wait_ready(&sl, &creds).await?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    Ok(changed)
}

async fn endpoint_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let (sl, creds) = layer_inputs(ctx)?;
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let info = crate::ops::serverless::client(&sl, &creds)?
        .system_info()
        .await
        .map_err(crate::ops::serverless::LayerError::from)?;
    let arches = node_arches(ctx);
    let (arch, gpu) = crate::ops::serverless::arch_and_gpu(&ctx.env(), &arches);
    if arch == "mixed" {
        ctx.obs.event(Event::Warning {
            message: format!(
                "OSCAR cluster `{}` has nodes of several architectures ({}): keep one architecture per OSCAR cluster (docs/oscar.md, \"Architectures\")",
                sl.cluster_id,
                arches.iter().map(|(n, a)| format!("{n}={a}")).collect::<Vec<_>>().join(", ")
            ),
        });
    }
    let changed = crate::ops::serverless::register(
        ctx.store.dir(),
        &ctx.env(),
        &sl,
        &creds,
        &info,
        &arch,
        gpu,
    )?;
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    Ok(changed)
}

async fn serverless_delete_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let init = ctx.env().cluster.init_server().to_string();
    let conn = connect(ctx, &init).await?;
    let changed = crate::ops::serverless::remove_layer(conn.as_ref()).await?;
    with_state(ctx, |st| {
        st.resources.remove(&step.id);
        st.serverless = None;
    })?;
    Ok(changed)
}

async fn endpoint_delete_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let removed = crate::ops::serverless::unregister(ctx.store.dir(), &ctx.env().name)?;
    with_state(ctx, |st| {
        st.resources.remove(&step.id);
    })?;
    Ok(!removed.is_empty())
}
