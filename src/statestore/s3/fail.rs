//! How the S3 state store reads an S3 error (`Fail`): a missing object, a lost
//! compare-and-swap, a missing bucket or one in another region, or anything else;
//! and the typed errors the last two become. Classified by S3's error code first
//! (a missing bucket and a missing key are both 404) and the HTTP status second.

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use super::region;
use crate::files::StateError;
use crate::statestore::Remote;

/// How an S3 call failed, as far as the store cares.
pub(super) enum Fail {
    /// 404 / NoSuchKey.
    Missing,
    /// 412 PreconditionFailed or 409 ConditionalRequestConflict: lost a race.
    Condition,
    /// 404 NoSuchBucket: the bucket itself is absent (never "no object yet").
    NoBucket,
    /// 301 PermanentRedirect (or 400 AuthorizationHeaderMalformed): the bucket is in
    /// another region than the client's; S3 names it in `x-amz-bucket-region`.
    Region(Option<String>),
    Other(String),
}

pub(super) fn fail<E>(e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Fail
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(se) = &e {
        let status = se.raw().status().as_u16();
        let code = se.err().code().unwrap_or_default();
        // S3 answers a missing bucket with 404 too; only the code tells it from a
        // missing key, and treating it as "no object" would make a mistyped bucket
        // look like an environment without state.
        if code == "NoSuchBucket" {
            return Fail::NoBucket;
        }
        if status == 301 || code == "PermanentRedirect" || code == "AuthorizationHeaderMalformed" {
            let region = se
                .raw()
                .headers()
                .get("x-amz-bucket-region")
                .map(str::to_string);
            return Fail::Region(region);
        }
        if status == 404 || code == "NoSuchKey" {
            return Fail::Missing;
        }
        if status == 412 || status == 409 || code == "PreconditionFailed" {
            return Fail::Condition;
        }
    }
    Fail::Other(crate::error_chain(&e))
}

pub(super) fn wrong_region(remote: &Remote, actual: Option<String>) -> StateError {
    StateError::BucketRegion {
        bucket: remote.bucket.clone(),
        url: remote.url(),
        used: region(remote),
        hint: match actual {
            Some(r) => format!("it is in {r}: pass --state-region {r} (CONTINUUM_STATE_REGION)"),
            None => "pass its region with --state-region (CONTINUUM_STATE_REGION)".to_string(),
        },
    }
}

pub(super) fn no_bucket(remote: &Remote) -> StateError {
    StateError::NoBucket {
        bucket: remote.bucket.clone(),
        url: remote.url(),
        endpoint: remote
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3".to_string()),
    }
}
