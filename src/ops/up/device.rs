//! The device steps of `up`: device preparation before k3s (`device-prep/HOST`), the
//! Jetson GPU checks after it (`gpu-runtime/HOST`), and the shrink checks run before a
//! node object is deleted. The remote work lives in `k3s::device` and `ops::shrink`;
//! this file only sequences it and records state like the other steps.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Event, OpsError};
use crate::k3s::device as dev;
use crate::ops::context::{Ctx, Step, connect, host_of, mark};
use crate::probe::{self, Device};
use crate::recipe::Role;
use crate::ssh::{HostConn, SshError};
use crate::state::Status;

fn progress(ctx: &Ctx, step: &Step, message: &str) {
    ctx.obs.event(Event::Progress {
        id: step.id.clone(),
        message: message.to_string(),
    });
}

pub(super) async fn prep_step(ctx: &Ctx, step: &Step, device: Device) -> Result<bool, OpsError> {
    let host = step.host.clone().unwrap_or_default();
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let conn = connect(ctx, &host).await?;
    progress(ctx, step, "probing the device");
    let facts = probe::probe(conn.as_ref()).await?;
    match device {
        Device::Jetson => {
            dev::check_toolkit(&host, &facts)?;
            mark(ctx, &step.id, Status::Applied, |_| {})?;
            Ok(false)
        }
        Device::RaspberryPi => {
            if facts.memory_cgroup() {
                mark(ctx, &step.id, Status::Applied, |_| {})?;
                return Ok(false);
            }
            let edited = dev::enable_memory_cgroup(conn.as_ref(), &facts).await?;
            progress(
                ctx,
                step,
                if edited {
                    "cmdline.txt edited (cgroup_enable=memory); rebooting"
                } else {
                    "cmdline.txt already edited but the memory cgroup is off; rebooting"
                },
            );
            dev::schedule_reboot(conn.as_ref()).await?;
            if !dev::wait_down(conn.as_ref(), Duration::from_secs(90)).await {
                return Err(dev::DeviceError::RebootTimeout {
                    host,
                    secs: 90,
                    detail: "it kept answering; the reboot did not happen".into(),
                }
                .into());
            }
            drop(conn);
            ctx.pool.drop_conn(&host).await;
            let conn = reconnect(ctx, &host, dev::REBOOT_TIMEOUT).await?;
            progress(ctx, step, "verifying the memory controller");
            let after = probe::probe(conn.as_ref()).await?;
            if !after.memory_cgroup() {
                return Err(dev::memory_still_off(conn.as_ref(), &after).await.into());
            }
            mark(ctx, &step.id, Status::Applied, |_| {})?;
            Ok(true)
        }
    }
}

/// Reconnect after a reboot, retrying until `timeout`; a changed host key stops at once.
async fn reconnect(ctx: &Ctx, name: &str, timeout: Duration) -> Result<Arc<HostConn>, OpsError> {
    let host = host_of(ctx, name).ok_or_else(|| dev::DeviceError::RebootTimeout {
        host: name.to_string(),
        secs: 0,
        detail: "the host is neither in the inventory nor in state".into(),
    })?;
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        match ctx.pool.get(&host).await {
            Ok(c) => return Ok(c),
            Err(
                e @ (SshError::HostKeyChanged { .. }
                | SshError::HostKeyMismatch { .. }
                | SshError::BastionKeyChanged { .. }),
            ) => {
                return Err(e.into());
            }
            Err(e) if start.elapsed() >= timeout => {
                return Err(dev::DeviceError::RebootTimeout {
                    host: name.to_string(),
                    secs: timeout.as_secs(),
                    detail: e.to_string(),
                }
                .into());
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

pub(super) async fn gpu_step(ctx: &Ctx, step: &Step) -> Result<bool, OpsError> {
    let host = step.host.clone().unwrap_or_default();
    mark(ctx, &step.id, Status::Pending, |_| {})?;
    let conn = connect(ctx, &host).await?;
    progress(ctx, step, "checking containerd's nvidia runtime");
    dev::verify_containerd_nvidia(conn.as_ref()).await?;
    let init = ctx.env().cluster.init_server().to_string();
    let server = connect(ctx, &init).await?;
    let created = dev::ensure_runtime_class(server.as_ref()).await?;
    if created {
        progress(ctx, step, "created RuntimeClass nvidia");
    }
    mark(ctx, &step.id, Status::Applied, |_| {})?;
    Ok(created)
}

/// Before a node object is deleted: servers only when etcd keeps its quorum; then
/// cordon and drain through the server.
pub(super) async fn before_node_delete(
    ctx: &Ctx,
    step: &Step,
    server: &HostConn,
    host: &str,
) -> Result<(), OpsError> {
    if step.role == Some(Role::Server) {
        progress(ctx, step, "checking the etcd quorum");
        crate::k3s::check_quorum(server, host).await?;
    }
    progress(ctx, step, "cordoning and draining");
    crate::k3s::drain(server, host).await?;
    Ok(())
}
