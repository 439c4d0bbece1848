//! Checks `up` makes before it changes anything (issue 5): every per-arch k3s binary
//! the plan needs is in the bundle. The arch comes from the inventory's probe or from
//! state (hosts contacted before); hosts of unknown arch are checked again on the host
//! by `k3s::apply_node`.

use crate::graph::{Action, Plan};
use crate::k3s::{K3sError, bundle_binary};
use crate::recipe::{Environment, Install};
use crate::state::State;

/// k3s's name for a recorded or probed architecture of `host`.
fn arch_of(env: &Environment, state: &State, host: &str) -> Result<Option<String>, K3sError> {
    if let Some(f) = env.hosts.get(host).and_then(|h| h.probed.as_ref()) {
        return match f.k3s_arch() {
            Some(a) => Ok(Some(a.to_string())),
            None => Err(K3sError::UnsupportedArch {
                host: host.to_string(),
                arch: f.arch.clone(),
            }),
        };
    }
    Ok(state.hosts.get(host).and_then(|h| h.arch.clone()))
}

pub fn check_artifacts(env: &Environment, state: &State, plan: &Plan) -> Result<(), K3sError> {
    let Install::Bundle { dir } = &env.cluster.install else {
        return Ok(());
    };
    for c in &plan.changes {
        let (Some(host), Some(_), Action::Create | Action::Update) = (&c.host, c.role, c.action)
        else {
            continue;
        };
        let Some(arch) = arch_of(env, state, host)? else {
            continue;
        };
        let file = bundle_binary(&arch);
        if !dir.join(file).is_file() {
            return Err(K3sError::MissingBinary {
                host: host.clone(),
                arch,
                dir: dir.clone(),
                file: file.to_string(),
            });
        }
    }
    Ok(())
}
