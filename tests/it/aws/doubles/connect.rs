//! TEST DOUBLE (test code only): a `Connect` that hands the operations a given provider
//! (moto behind `honest` and `fault`) instead of the SDK's credential chain. Used by the
//! tests of tests/it/aws and by examples/aws_crash_child.rs, which includes this file by
//! path.

use std::sync::Arc;

use async_trait::async_trait;
use continuum::aws::provision::ProvisionError;
use continuum::aws::{Connect, Ec2Api};

/// Connects every region to the same provider.
#[derive(Clone)]
pub struct Given(pub Arc<dyn Ec2Api>);

#[async_trait]
impl Connect for Given {
    async fn connect(&self, _region: &str) -> Result<Arc<dyn Ec2Api>, ProvisionError> {
        Ok(self.0.clone())
    }
}
