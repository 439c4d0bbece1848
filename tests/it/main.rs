//! The single integration-test binary (one link for every integration test).
//!
//! `fleet` tests need root, the test fleet (tests/fleet/fleet.sh) and the k3s test
//! double (tests/k3s-double); `.ci/run` provides them and sets CONTINUUM_FLEET=1.
//! Without it they print why and return.

mod aws;
mod bastion;
mod cli;
mod e2e;
mod edge;
mod enroll;
mod faults;
mod fuzz_entry;
mod fuzz_replay;
mod harness;
mod hostile;
mod layers;
mod manifests;
mod nfs;
mod offline;
mod openrc;
mod oscar;
mod oscar_e2e;
mod recipes;
#[cfg(feature = "aws")]
mod s3state;
#[cfg(feature = "aws")]
mod s3state_edges;
mod secrets_audit;
mod upgrade;
