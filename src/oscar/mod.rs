//! The OSCAR provider (docs/oscar.md): readiness over HTTP, the OSCAR API client
//! (`client`), service definitions per API version (`service`), oscar-cli FDL (`fdl`),
//! function redeployment (`functions`), and what removing a manifest must delete from
//! the cluster (`removal`). The layer's model is `recipe::serverless`; its manifests
//! are rendered by `render::oscar`.
//!
//! Invariant: credentials live only in the 0600 state file, the 0600 manifests on the
//! server and the 0600 oscar-cli config; nothing here prints.

pub mod client;
pub mod fdl;
pub mod functions;
pub mod removal;
pub mod service;

use std::time::{Duration, Instant};

/// Why the layer is not ready.
#[derive(Debug, thiserror::Error)]
pub enum ReadyError {
    #[error(
        "OSCAR on cluster `{cluster}` is not ready after {secs} s: {component} ({url}) {detail}"
    )]
    Timeout {
        cluster: String,
        component: String,
        url: String,
        secs: u64,
        detail: String,
    },
}

/// Wait until `/health` and then `/system/info` answer through the user-facing
/// endpoint; the error names the component that did not.
pub async fn wait_ready(
    cluster: &str,
    oscar: &client::Oscar,
    timeout: Duration,
    version: Option<&str>,
) -> Result<client::SystemInfo, ReadyError> {
    let start = Instant::now();
    let mut health_ok = false;
    let same = |a: &str, b: &str| a.trim_start_matches('v') == b.trim_start_matches('v');
    loop {
        let (component, path, result) = if health_ok {
            let r = oscar.system_info().await;
            ("OSCAR manager /system/info", "/system/info", r.map(Some))
        } else {
            let r = oscar.health().await.map(|()| None);
            ("OSCAR manager /health", "/health", r)
        };
        match result {
            // After a version change the previous manager answers until the new one
            // has rolled out: only the installed version counts as ready.
            Ok(Some(info)) if version.is_some_and(|v| !same(v, &info.version)) => {
                if start.elapsed() >= timeout {
                    return Err(ReadyError::Timeout {
                        cluster: cluster.to_string(),
                        component: component.to_string(),
                        url: format!("{}{path}", oscar.base()),
                        secs: start.elapsed().as_secs(),
                        detail: format!(
                            "OSCAR answers as version {}, the recipe installs {}",
                            info.version,
                            version.unwrap_or_default()
                        ),
                    });
                }
            }
            Ok(Some(info)) => return Ok(info),
            Ok(None) => {
                health_ok = true;
                continue;
            }
            Err(e) => {
                // Even a 401 is retried until the timeout: right after a password
                // change the previous manager answers until the new one rolls out.
                if start.elapsed() >= timeout {
                    return Err(ReadyError::Timeout {
                        cluster: cluster.to_string(),
                        component: component.to_string(),
                        url: format!("{}{path}", oscar.base()),
                        secs: start.elapsed().as_secs(),
                        detail: format!("last answer: {e}"),
                    });
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
