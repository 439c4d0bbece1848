//! The k3s node step of `up`: connect, read the host's facts, converge config.yaml,
//! binary and service (install, upgrade with the forced restart, join in batches),
//! record what was applied; the first server's join tokens are read and saved.

use super::*;

pub(super) async fn node_step(ctx: &Ctx, step: &Step) -> Result<Did, OpsError> {
    let host = step.host.clone().unwrap_or_default();
    let role = step.role.unwrap_or(Role::Agent);
    let upgrading_from = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        graph::recorded_version(&st, &step.id).filter(|v| *v != ctx.env().cluster.version)
    };
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let conn = connect(ctx, &host).await?;
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "reading host facts".into(),
    });
    let facts = k3s::facts(conn.as_ref()).await?;
    // install.sh needs systemd or openrc: a host with neither is refused here, before
    // anything below changes it (docs/k3s.md, "Service managers").
    facts.service_manager(&host).map_err(OpsError::K3s)?;
    // An active ufw/firewalld must already let in what k3s needs (docs/k3s.md, "Host
    // firewalls"): refused before any change, with the commands that open it.
    {
        let env = ctx.env();
        let c = &env.cluster;
        let need = k3s::firewall::needs(
            role,
            c.ha,
            &c.flannel_backend,
            [
                c.cluster_cidr.as_deref().unwrap_or("10.42.0.0/16"),
                c.service_cidr.as_deref().unwrap_or("10.43.0.0/16"),
            ],
        );
        if let Some(commands) = k3s::firewall::missing_commands(&facts.firewall, &need) {
            return Err(OpsError::K3s(k3s::K3sError::FirewallClosed {
                host,
                firewall: facts.firewall.kind.clone(),
                commands,
            }));
        }
    }
    with_state(ctx, |st| {
        st.hosts.entry(host.clone()).or_default().arch = Some(facts.arch.clone());
    })?;
    // A Pi that was never prepared (not probed): stop before installing a k3s that
    // could not run pods, and say how to get it prepared.
    if facts.is_raspberry_pi() && facts.memory_cgroup == Some(false) {
        return Err(OpsError::K3s(k3s::K3sError::MemoryCgroupOff {
            host,
            model: facts.model.clone().unwrap_or_default(),
        }));
    }
    let probed = ctx
        .env()
        .hosts
        .get(&host)
        .is_some_and(|h| h.probed.is_some());
    if facts.is_jetson() && !probed {
        ctx.obs.event(Event::Warning {
            message: format!(
                "`{host}` is an {} that was not probed: it joins without GPU labels, toolkit or runtime checks; run `continuum inventory probe INVENTORY --host {host}` and `up` again",
                facts.model.as_deref().unwrap_or("NVIDIA Jetson")
            ),
        });
    }
    let is_init = ctx.env().cluster.init_server() == host && role == Role::Server;
    if role == Role::Agent && agent_join_token(ctx).is_empty() {
        // A state from before agents had their own token: read it from the first server.
        let init = ctx.env().cluster.init_server().to_string();
        let server = connect(ctx, &init).await?;
        let t = k3s::read_agent_token(server.as_ref()).await?;
        with_state(ctx, |st| st.cluster.agent_join_token = Secret::new(t))?;
    }
    let secrets = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        node_secrets(&st, is_init, role)
    };
    if secrets.iter().any(|(_, v)| v.is_empty()) {
        return Err(OpsError::K3s(k3s::K3sError::Protocol {
            host,
            detail: "no join token recorded: the first server has not finished".into(),
        }));
    }
    let attrs = resource(ctx, &step.id)
        .map(|r| r.attrs.clone())
        .unwrap_or_default();
    let pairs: Vec<(&str, &str)> = secrets.iter().map(|(k, v)| (*k, v.expose())).collect();
    // Host-dependent keys (`selinux: true` on an enforcing host) join at rendering.
    let config = k3s::render_config(
        &ctx.env().name,
        &host,
        role,
        &facts.selinux.config(&attrs),
        &pairs,
    )?;
    // Labels and taints reach a live node only through the API (k3s applies them when
    // a node registers): a change of only those keys needs no restart.
    let before = {
        let st = ctx
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        st.resources
            .get(&step.id)
            .filter(|r| r.version.is_some() || !r.attrs.is_empty())
            .map(|r| r.attrs.clone())
    };
    let live_keys = |m: &BTreeMap<String, serde_json::Value>| {
        m.iter()
            .filter(|(k, _)| *k != "node-label" && *k != "node-taint")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect::<BTreeMap<_, _>>()
    };
    let labels_before = before.as_ref().map(k3s::LabelsTaints::of);
    let labels_want = k3s::LabelsTaints::of(&attrs);
    let labels_changed = labels_before.as_ref().is_some_and(|b| *b != labels_want);
    let live_keys_only = labels_changed
        && upgrading_from.is_none()
        && before
            .as_ref()
            .is_some_and(|b| live_keys(b) == live_keys(&attrs));
    let spec = NodeSpec {
        role,
        version: &ctx.env().cluster.version,
        install: &ctx.env().cluster.install,
        config,
        live_keys_only,
    };
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: "installing k3s".into(),
    });
    let _join_slot = if role == Role::Agent {
        ctx.joins.acquire().await.ok()
    } else {
        None
    };
    // The serverless layer's RWX volumes are NFS mounts made by the kubelet with the
    // host's mount.nfs (docs/oscar.md, "NFS client on the nodes"): installed first, so
    // a host that cannot get it is refused before anything else changes.
    if ctx.env().serverless.is_some() && !facts.nfs_client {
        let manager = facts.pkg_managers.first().copied();
        let (package, script) = match manager {
            Some(m) => (
                m.nfs_client_package().to_string(),
                m.install_script(&[m.nfs_client_package()]),
            ),
            None => (
                "the NFS client (nfs-common, nfs-utils or nfs-client)".to_string(),
                "echo 'no apk, apt-get, dnf, yum or zypper on this host' >&2; exit 3".to_string(),
            ),
        };
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("installing the NFS client ({package})"),
        });
        let out = conn
            .run(&script, None, true, std::time::Duration::from_secs(600))
            .await?;
        if !out.success() {
            let last = out.tail().lines().last().unwrap_or("").trim().to_string();
            return Err(OpsError::K3s(k3s::K3sError::NfsClient {
                host,
                detail: match manager {
                    Some(m) => format!("`{m} install {package}` failed there ({last})"),
                    None => "it has no package manager continuum knows".to_string(),
                },
                package,
            }));
        }
    }
    // An enforcing SELinux host needs the policy packages before k3s (install.sh's
    // SELinux step is skipped with INSTALL_K3S_SKIP_DOWNLOAD): docs/k3s.md, "SELinux".
    let missing = facts.selinux.missing();
    if !missing.is_empty() {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("installing {}", missing.join(", ")),
        });
        let out = conn
            .run(
                &k3s::selinux::install_script(&facts.pkg_managers, &missing),
                None,
                true,
                std::time::Duration::from_secs(600),
            )
            .await?;
        if !out.success() {
            return Err(OpsError::K3s(k3s::K3sError::SelinuxPackages {
                host,
                missing: missing.iter().map(|m| (*m).to_string()).collect(),
                detail: out.tail().lines().last().unwrap_or("").to_string(),
            }));
        }
    }
    // From here on the host may hold k3s files: `down` must uninstall it.
    let bin_dir = facts.bin_dir(&host)?;
    with_state(ctx, |st| {
        let h = st.hosts.entry(host.clone()).or_default();
        h.k3s_installed = true;
        h.bin_dir = (bin_dir != k3s::DEFAULT_BIN_DIR).then(|| bin_dir.clone());
    })?;
    let init_host = ctx.env().cluster.init_server().to_string();
    let drain = upgrading_from.is_some() && role == Role::Agent && ctx.env().cluster.upgrade.drain;
    if drain {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: "cordoning and draining before the upgrade".into(),
        });
        let server = connect(ctx, &init_host).await?;
        crate::k3s::drain(server.as_ref(), &host).await?;
    }
    let applied = k3s::apply_node(conn.as_ref(), &spec, &facts).await?;
    if let Some(from) = &upgrading_from {
        // Ready at the new version before the next server or batch starts.
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: format!("waiting until Ready at {} (was {from})", spec.version),
        });
        let server = if host == init_host {
            conn.clone()
        } else {
            connect(ctx, &init_host).await?
        };
        k3s::wait_ready(
            server.as_ref(),
            std::slice::from_ref(&host),
            spec.version,
            false,
            ctx.env().cluster.readiness_timeout,
        )
        .await?;
        if drain {
            k3s::uncordon(server.as_ref(), &host).await?;
        }
    }
    if let Some(b) = labels_before.filter(|_| labels_changed) {
        ctx.obs.event(Event::Progress {
            id: step.id.clone(),
            message: "updating labels and taints on the live node".into(),
        });
        let server = if host == init_host {
            conn.clone()
        } else {
            connect(ctx, &init_host).await?
        };
        k3s::sync_labels_and_taints(server.as_ref(), &host, &labels_want, &b).await?;
    }
    if is_init {
        let join = k3s::read_join_token(conn.as_ref()).await?;
        let agent_join = k3s::read_agent_token(conn.as_ref()).await?;
        let url = graph::server_url(&ctx.env());
        mark(ctx, &step.id, Status::Applied, |st| {
            st.cluster.join_token = Secret::new(join);
            st.cluster.agent_join_token = Secret::new(agent_join);
            st.cluster.server_url = Some(url);
            st.cluster.init_server = Some(host.clone());
        })?;
    } else {
        mark(ctx, &step.id, Status::Applied, |_| {})?;
    }
    Ok(if let Some(from) = upgrading_from {
        Did::changed(format!("upgraded {from} -> {}, Ready", spec.version))
    } else if live_keys_only {
        Did::changed("labels and taints updated on the live node, no restart")
    } else if applied == Applied::Changed {
        Did::changed(format!("k3s {} {} applied", spec.version, role))
    } else {
        Did::unchanged(format!("k3s {} {} already as desired", spec.version, role))
    })
}
