//! How S3 answers are classified (`fail`) and how far apart compare-and-swap retries
//! are, without a network: the SDK's service errors are built from a status and an
//! error code as S3 sends them.

use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::primitives::SdkBody;

use super::{Fail, fail};

fn answer(status: u16, code: &str) -> Fail {
    answer_with(status, code, None)
}

fn answer_with(status: u16, code: &str, bucket_region: Option<&str>) -> Fail {
    let err = GetObjectError::generic(ErrorMetadata::builder().code(code).build());
    let mut raw = HttpResponse::new(status.try_into().expect("status"), SdkBody::empty());
    if let Some(r) = bucket_region {
        raw.headers_mut()
            .insert("x-amz-bucket-region", r.to_string());
    }
    fail(SdkError::service_error(err, raw))
}

#[test]
fn a_missing_bucket_is_not_a_missing_object() {
    assert!(matches!(answer(404, "NoSuchBucket"), Fail::NoBucket));
    assert!(matches!(answer(404, "NoSuchKey"), Fail::Missing));
    // HEAD-style 404 without a body.
    assert!(matches!(answer(404, ""), Fail::Missing));
    assert!(matches!(answer(412, "PreconditionFailed"), Fail::Condition));
    assert!(matches!(
        answer(409, "ConditionalRequestConflict"),
        Fail::Condition
    ));
    assert!(matches!(answer(403, "AccessDenied"), Fail::Other(_)));
    assert!(matches!(answer(503, "SlowDown"), Fail::Other(_)));
}

/// A bucket in another region than the client signs for: S3 answers 301
/// PermanentRedirect naming the bucket's region in `x-amz-bucket-region`; the error
/// says which region to give instead of an opaque "unhandled error".
#[test]
fn a_bucket_in_another_region_is_named_with_its_region() {
    assert!(matches!(
        answer_with(301, "PermanentRedirect", Some("eu-west-1")),
        Fail::Region(Some(r)) if r == "eu-west-1"
    ));
    assert!(matches!(
        answer(400, "AuthorizationHeaderMalformed"),
        Fail::Region(None)
    ));
    let mut r = crate::statestore::Remote::parse("s3://team-state/envs").expect("url");
    r.region = Some("us-east-1".into());
    let e = super::wrong_region(&r, Some("eu-west-1".into())).to_string();
    assert!(
        e.contains("team-state")
            && e.contains("us-east-1")
            && e.contains("--state-region eu-west-1"),
        "{e}"
    );
}

/// An S3-compatible endpoint gets checksums only where an operation requires them
/// (the SDK's default CRC32 on every PutObject is refused by a number of such
/// stores); AWS itself keeps the SDK's default, and a setting from the environment
/// or profile wins.
#[test]
fn s3_compatible_endpoints_get_checksums_only_when_required() {
    use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
    let base = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .build();
    let mut minio = crate::statestore::Remote::parse("s3://team-state").expect("url");
    minio.endpoint = Some("https://minio.example.org:9000".into());
    let c = super::s3_config(&minio, &base);
    assert_eq!(
        c.request_checksum_calculation(),
        Some(&RequestChecksumCalculation::WhenRequired)
    );
    assert_eq!(
        c.response_checksum_validation(),
        Some(&ResponseChecksumValidation::WhenRequired)
    );
    let aws = crate::statestore::Remote::parse("s3://team-state").expect("url");
    let c = super::s3_config(&aws, &base);
    assert_ne!(
        c.request_checksum_calculation(),
        Some(&RequestChecksumCalculation::WhenRequired)
    );
    let chosen = aws_config::SdkConfig::builder()
        .behavior_version(aws_config::BehaviorVersion::latest())
        .request_checksum_calculation(RequestChecksumCalculation::WhenSupported)
        .build();
    let c = super::s3_config(&minio, &chosen);
    assert_eq!(
        c.request_checksum_calculation(),
        Some(&RequestChecksumCalculation::WhenSupported)
    );
}

#[test]
fn compare_and_swap_backoff_grows_and_stays_bounded() {
    for attempt in 1..=20 {
        let full = 20u64 << attempt.min(5);
        let d = super::cas_backoff(attempt).as_millis() as u64;
        assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d} ms");
    }
    assert!(super::cas_backoff(20) <= std::time::Duration::from_millis(640));
}
