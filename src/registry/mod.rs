//! Endpoint registration. For now: the cluster's context in the user's kubeconfig.
//! (The OSCAR endpoint catalog and oscar-cli config come with the serverless layer.)

pub mod kubeconfig;
