//! Listing the environments whose state objects are under an S3 location
//! (ListObjectsV2, every page): names that are environment names, nothing else that
//! shares the prefix.

use super::{Fail, block, client, fail, no_bucket, runtime, wrong_region};
use crate::files::StateError;
use crate::statestore::Remote;

/// Names of the environments with a state object under the prefix.
pub fn list(remote: &Remote) -> Result<Vec<String>, StateError> {
    let url = remote.url();
    let rt = runtime(&url)?;
    let r = remote.clone();
    let prefix = remote.key("");
    let out = block(&rt, &url, async move {
        let client = client(r.clone()).await;
        let mut names = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(r.bucket.clone())
            .prefix(prefix.clone())
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(fail)?;
            for o in page.contents() {
                let name = o
                    .key()
                    .unwrap_or_default()
                    .strip_prefix(&prefix)
                    .unwrap_or_default();
                // Environments' state objects only (their names are DNS labels),
                // not whatever else shares the prefix.
                if let Some(env) = name.strip_suffix(".json")
                    && crate::recipe::check::common::is_env_name(env)
                {
                    names.push(env.to_string());
                }
            }
        }
        Ok::<_, Fail>(names)
    })?;
    let mut names = out.map_err(|f| match f {
        Fail::NoBucket => no_bucket(remote),
        Fail::Region(r) => wrong_region(remote, r),
        Fail::Missing | Fail::Condition => StateError::Remote {
            url,
            op: "ListObjectsV2",
            message: "unexpected answer".to_string(),
        },
        Fail::Other(message) => StateError::Remote {
            url,
            op: "ListObjectsV2",
            message,
        },
    })?;
    names.sort();
    Ok(names)
}
