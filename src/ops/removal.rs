//! Taking a node out of a cluster, the one path `up` (a host the recipe dropped),
//! `down` and `nodes remove` share: what leaving needs (uninstall, nothing, or
//! forgetting an unreachable device; the etcd quorum check and the drain are the k3s
//! provider's), and what state keeps afterwards (a host leaves state with its last
//! resource, unless the recipe still lists it). docs/k3s.md, "Removing a node".

use std::collections::BTreeSet;

use super::OpsError;
use crate::recipe;
use crate::state::{State, Status};

/// How a node leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leave {
    /// k3s is (or may be) on the host: connect and uninstall.
    Uninstall,
    /// k3s never got there: drop the record, no connection needed.
    NeverInstalled,
    /// The device is gone for good (`--forget`): drop it without contacting it.
    Forget,
}

/// How node resource `id` on `host` leaves, given whether the user asked to forget it.
pub fn leave_for(st: &State, id: &str, host: &str, forget: bool) -> Leave {
    if forget {
        Leave::Forget
    } else if needs_uninstall(st, id, host) {
        Leave::Uninstall
    } else {
        Leave::NeverInstalled
    }
}

/// Record that resource `id` on `host` is gone. The host's entry (address, pinned
/// key) leaves with its last resource; when the recipe still lists the host
/// (`keep_host`), it stays, marked as without k3s.
pub fn record_removed(st: &mut State, id: &str, host: &str, keep_host: bool) {
    st.resources.remove(id);
    if keep_host {
        if let Some(h) = st.hosts.get_mut(host) {
            h.k3s_installed = false;
        }
    } else if !st
        .resources
        .values()
        .any(|r| r.host.as_deref() == Some(host))
    {
        st.hosts.remove(host);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShrinkError {
    #[error("environment `{env}` has no host `{host}` (state knows: {known})")]
    NoSuchHost {
        env: String,
        host: String,
        known: String,
    },
    #[error(
        "cannot reach `{host}` to uninstall k3s; it stays in state. If the device is gone for \
         good, drop it with `{forget}` (it lists what may remain on the device)"
    )]
    Unreachable {
        host: String,
        /// The command that drops the host without contacting it.
        forget: String,
        #[source]
        source: Box<OpsError>,
    },
    #[error(
        "`{host}` is the first server of `{env}` (the one every node joined): it can only go with \
         `continuum down {env}`"
    )]
    InitServer { env: String, host: String },
    #[error("state of `{0}` does not name its recipe; run `continuum up RECIPE` once")]
    NoRecipe(String),
    #[error(
        "the recipe still names `{host}` (k3s.servers or k3s.agents): remove it there; the inventory \
         was left unchanged"
    )]
    RecipeNamesHost {
        host: String,
        #[source]
        source: recipe::LoadError,
    },
}

/// The hosts a state knows, for error messages.
pub fn known_hosts(state: &State) -> String {
    let mut names: BTreeSet<&str> = state.hosts.keys().map(String::as_str).collect();
    names.extend(state.resources.values().filter_map(|r| r.host.as_deref()));
    if names.is_empty() {
        "none".to_string()
    } else {
        names.into_iter().collect::<Vec<_>>().join(", ")
    }
}

/// Whether removing node resource `id` on `host` needs an uninstall there: the node
/// was applied once, or continuum started installing k3s on the host.
pub fn needs_uninstall(st: &State, id: &str, host: &str) -> bool {
    st.resources
        .get(id)
        .is_some_and(|r| r.status == Status::Applied)
        || st.hosts.get(host).is_some_and(|h| h.k3s_installed)
}

/// An unreachable host that must be uninstalled: say how to drop it for good with
/// `forget` (the command that drops it without contacting it).
pub fn forget_hint(e: OpsError, host: &str, forget: String) -> OpsError {
    if e.is_unreachable() {
        OpsError::Shrink(ShrinkError::Unreachable {
            host: host.to_string(),
            forget,
            source: Box::new(e),
        })
    } else {
        e
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{HostState, ResourceState};

    fn resource(host: &str, status: Status) -> ResourceState {
        ResourceState {
            status,
            hash: String::new(),
            host: Some(host.to_string()),
            role: Some(crate::recipe::Role::Agent),
            attrs: Default::default(),
            last_error: None,
            updated_at: 0,
            version: None,
            kind: Some(crate::state::Kind::K3sAgent),
        }
    }

    fn state() -> State {
        let mut st = State::new("farm");
        st.resources
            .insert("k3s-agent/pi".into(), resource("pi", Status::Applied));
        st.resources
            .insert("device-prep/pi".into(), resource("pi", Status::Applied));
        st.resources
            .insert("k3s-agent/new".into(), resource("new", Status::Failed));
        for h in ["pi", "new"] {
            st.hosts.insert(h.into(), HostState::default());
        }
        st
    }

    #[test]
    fn how_a_node_leaves_follows_what_it_got() {
        let mut st = state();
        assert_eq!(
            leave_for(&st, "k3s-agent/pi", "pi", false),
            Leave::Uninstall
        );
        assert_eq!(leave_for(&st, "k3s-agent/pi", "pi", true), Leave::Forget);
        // Failed before any upload: nothing to undo, no connection needed.
        assert_eq!(
            leave_for(&st, "k3s-agent/new", "new", false),
            Leave::NeverInstalled
        );
        // Once continuum started installing there, it must uninstall.
        if let Some(h) = st.hosts.get_mut("new") {
            h.k3s_installed = true;
        }
        assert_eq!(
            leave_for(&st, "k3s-agent/new", "new", false),
            Leave::Uninstall
        );
    }

    #[test]
    fn a_host_leaves_state_with_its_last_resource_unless_the_recipe_keeps_it() {
        let mut st = state();
        record_removed(&mut st, "k3s-agent/pi", "pi", false);
        assert!(!st.resources.contains_key("k3s-agent/pi"));
        // Its device resource still names it: the pinned key and address stay.
        assert!(st.hosts.contains_key("pi"));
        record_removed(&mut st, "device-prep/pi", "pi", false);
        assert!(!st.hosts.contains_key("pi"));
        // A host the recipe still lists stays, marked as without k3s.
        if let Some(h) = st.hosts.get_mut("new") {
            h.k3s_installed = true;
        }
        record_removed(&mut st, "k3s-agent/new", "new", true);
        assert!(st.hosts.get("new").is_some_and(|h| !h.k3s_installed));
        assert!(st.resources.is_empty());
    }

    #[test]
    fn an_unreachable_host_gets_the_command_that_forgets_it() {
        let e = OpsError::Ssh(crate::ssh::SshError::Connect {
            host: "pi".into(),
            address: "10.0.0.9".into(),
            attempts: 3,
            detail: "No route to host".into(),
        });
        let e = forget_hint(e, "pi", "continuum down farm --forget pi".into());
        let text = crate::error_chain(&e);
        assert!(
            text.contains("continuum down farm --forget pi") && text.contains("No route to host"),
            "{text}"
        );
        assert!(e.is_unreachable());
        // Other failures are left as they are.
        let other = forget_hint(OpsError::Interrupted, "pi", "x".into());
        assert!(matches!(other, OpsError::Interrupted));
    }

    #[test]
    fn known_hosts_lists_hosts_of_state_and_resources() {
        let mut st = state();
        st.hosts.remove("new");
        assert_eq!(known_hosts(&st), "new, pi");
        assert_eq!(known_hosts(&State::new("empty")), "none");
    }
}
