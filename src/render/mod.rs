//! Rendering: the files continuum writes to hosts, as pure functions of the validated
//! environment (no I/O): k3s's config.yaml (`k3s`), the OSCAR layer's k3s manifests
//! (`oscar`), the cloud-init user-data of AWS instances (`cloud_init`), the first-boot
//! files of an enrolment pool (`enroll`); digests of
//! what is rendered (`sha256_hex`), the idempotency keys of the plan.

pub mod cloud_init;
pub mod enroll;
pub mod k3s;
pub mod oscar;

use sha2::{Digest, Sha256};

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}
