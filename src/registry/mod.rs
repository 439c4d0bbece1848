//! Endpoint registration: the cluster's context in the user's kubeconfig
//! (`kubeconfig`), continuum's catalog of OSCAR endpoints (`endpoints`) and the
//! oscar-cli configuration (`oscar_cli`).

pub mod endpoints;
pub mod kubeconfig;
pub mod oscar_cli;
