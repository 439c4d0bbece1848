//! The recipe's `state:` section: an S3 location for the environment's state
//! (`url: s3://BUCKET/PREFIX`, optional `endpoint`, `path_style`, `region`),
//! checked with positions (docs/state.md, "Addressing and precedence").

use serde_saphyr::Spanned;

use crate::recipe::diag::{Sink, pos};
use crate::recipe::model::StateSite;
use crate::recipe::raw::StateSection;
use crate::recipe::validators::s3_url;

/// Check `state:`; `None` (with errors in `sink`) when it is invalid.
pub fn check_state(section: &Spanned<StateSection>, sink: &mut Sink) -> Option<StateSite> {
    let s = &section.value;
    let mut ok = true;
    let (bucket, prefix) = match s3_url(&s.url.value) {
        Ok(x) => x,
        Err(why) => {
            sink.error(pos(&s.url), format!("state.url `{}`: {why}", s.url.value))
                .help("state lives in S3: `url: s3://BUCKET/PREFIX`");
            ok = false;
            (String::new(), String::new())
        }
    };
    if let Some(ep) = &s.endpoint {
        let valid = url::Url::parse(&ep.value)
            .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some());
        if !valid {
            sink.error(
                pos(ep),
                format!("state.endpoint `{}` is not an http(s) URL", ep.value),
            )
            .help("for example `endpoint: https://minio.example.org:9000`");
            ok = false;
        }
    }
    if let Some(r) = &s.region {
        let valid = !r.value.is_empty()
            && r.value
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            sink.error(
                pos(r),
                format!("state.region `{}` is not a region name", r.value),
            )
            .help("for example `region: eu-west-1`");
            ok = false;
        }
    }
    ok.then(|| StateSite {
        url: s.url.value.clone(),
        bucket,
        prefix,
        endpoint: s.endpoint.as_ref().map(|e| e.value.clone()),
        path_style: s.path_style.as_ref().map(|p| p.value),
        region: s.region.as_ref().map(|r| r.value.clone()),
    })
}
