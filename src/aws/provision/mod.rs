//! Provisioning logic of the AWS site: what state records of it, and the steps
//! (`validate` before spend; `network`, `instances`, `addresses` per graph resource;
//! `teardown`; `resolve` of addresses for the k3s steps). What each step relies on
//! from EC2 is in docs/aws.md.
//!
//! Invariants:
//! - Every id EC2 returns is recorded through the `Journal` (the state file, saved
//!   atomically) before anything else happens, with its creation time, so a crash loses
//!   nothing and NotFound for a fresh id is told apart from a gone one.
//! - Before creating anything, a step looks for what a crashed earlier run may have
//!   made (by tag): network resources and Elastic IPs through `adopt` (recorded, else
//!   adopted, else created); instance groups launch only the missing count, with a
//!   random client token written to state before the call (`launch`). So `up` after
//!   `kill -9` adopts, never duplicates.
//! - Every step converges when run again: a run interrupted half-way through a step is
//!   finished by the next one.
//! - Polls use one DescribeInstances for the whole environment (tag filter, paginated),
//!   never one call per instance; the call count does not grow with group size.
//! - Teardown finds resources by tag as well as by state, so it removes what state lost.

mod addresses;
mod adopt;
mod instances;
mod launch;
mod network;
mod resolve;
mod teardown;
mod validate;

use std::time::Duration;

use super::{Ec2Error, RetryPolicy};
use crate::files::StateError;
pub use crate::graph::cloud::{
    GATEWAY, KEY_PAIR, ROUTE, SECURITY_GROUP, SUBNET, VPC, address_id, group_id, key_name, rules,
    wants_public_ip,
};
pub use crate::state::cloud::{
    AddressRecord, CloudId, CloudState, GroupState, InstanceRecord, RuleRecord, init_cloud,
    now_secs,
};

pub use instances::{ensure_group, remove_group, user_data};
pub use network::{
    ensure_gateway, ensure_key_pair, ensure_route, ensure_security_group, ensure_subnet,
    ensure_vpc, private_key, public_key,
};
pub use resolve::{address_of, resolve};
pub use teardown::{Teardown, teardown};
pub use validate::{ResolvedImage, Validated, check_subnet_zone, pick_architecture, validate};

/// Where provisioning steps read and record cloud state (the state file).
pub trait Journal: Send + Sync {
    fn cloud(&self) -> CloudState;
    /// Apply `f` and save the state atomically before returning.
    fn record(&self, f: &mut dyn FnMut(&mut CloudState)) -> Result<(), StateError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("{resource}")]
    Ec2 {
        resource: String,
        #[source]
        source: Ec2Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("{}", .0.join("\n"))]
    Invalid(Vec<String>),
    #[error(
        "instance {instance} ({host}) is still `{state}` after {waited:?}; check it in the EC2 console (quota, capacity, image)"
    )]
    BootTimeout {
        instance: String,
        host: String,
        state: String,
        waited: Duration,
    },
    #[error(
        "instance {instance} ({host}, {address}) did not answer SSH within {waited:?}: {detail}"
    )]
    SshTimeout {
        instance: String,
        host: String,
        address: String,
        waited: Duration,
        detail: String,
    },
    #[error("instance {instance} ({host}) has no {kind} IP address")]
    NoAddress {
        instance: String,
        host: String,
        kind: &'static str,
    },
    #[error("key pair: {0}")]
    Key(String),
    #[error("could not delete {}", .0.join(", "))]
    Leftovers(Vec<String>),
    #[error("the recipe declares an AWS site but continuum was built without the `aws` feature")]
    NoProvider,
}

fn ec2(resource: &str) -> impl FnOnce(Ec2Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Ec2 {
        resource: resource.to_string(),
        source,
    }
}

fn need<'a>(v: &'a Option<CloudId>, what: &str) -> Result<&'a str, ProvisionError> {
    v.as_ref().map(|c| c.id.as_str()).ok_or_else(|| {
        ProvisionError::Invalid(vec![format!("{what} is not recorded in state yet")])
    })
}

/// Options of a provisioning run (tests shorten the waits; the code is the same).
#[derive(Debug, Clone, Copy)]
pub struct Options {
    pub retry: RetryPolicy,
    pub poll: Duration,
    /// How long teardown retries dependency violations and waits for terminations.
    pub delete_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            retry: RetryPolicy::default(),
            poll: Duration::from_secs(3),
            delete_timeout: Duration::from_secs(300),
        }
    }
}

/// Make sure the state has a cloud section for this site (its region).
pub fn init_state(journal: &dyn Journal, site: &crate::recipe::AwsSite) -> Result<(), StateError> {
    let mut cur = journal.cloud();
    if init_cloud(&mut cur, &site.region) {
        journal.record(&mut |c| c.region.clone_from(&cur.region))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn young_ids_have_an_unseen_window_and_old_or_unknown_ones_none() {
        let mut c = CloudState::default();
        let w = Duration::from_secs(180);
        assert_eq!(c.unseen_window("i-1", w), Duration::ZERO);
        c.created_at.insert("i-1".into(), now_secs());
        assert!(c.unseen_window("i-1", w) > Duration::from_secs(170));
        c.created_at.insert("i-2".into(), now_secs() - 600);
        assert_eq!(c.unseen_window("i-2", w), Duration::ZERO);
    }

    #[test]
    fn rule_records_round_trip_for_revocation() {
        for source in ["203.0.113.0/24", "2001:db8::/32", "self"] {
            let r = RuleRecord {
                protocol: "tcp".into(),
                from_port: 22,
                to_port: 22,
                source: source.into(),
            };
            assert_eq!(RuleRecord::from(&r.to_rule()), r);
        }
    }
}
