//! Validation of `k3s.extra_config`: every key must be a visible flag of the pinned k3s
//! (`recipe::flags`), and none of the keys continuum manages. Each refusal is positioned
//! at the key's value and names the recipe or inventory field to use instead
//! (docs/k3s-config.md).

use std::collections::BTreeMap;

use serde_saphyr::Spanned;

use crate::recipe::diag::{Sink, did_you_mean, pos};
use crate::recipe::flags;

/// Check `extra_config` and return the keys that may be passed through.
pub fn check(
    extra: &BTreeMap<String, Spanned<serde_json::Value>>,
    sink: &mut Sink<'_>,
) -> BTreeMap<String, serde_json::Value> {
    let mut out = BTreeMap::new();
    for (key, value) in extra {
        if let Some(instead) = flags::managed(key) {
            sink.error(pos(value), format!("`{key}` is managed by continuum"))
                .help(instead);
        } else if let Some(why) = flags::hidden(key) {
            sink.error(
                pos(value),
                format!("`{key}` is a hidden k3s flag that continuum does not pass"),
            )
            .help(why);
        } else if flags::is_known(key) {
            out.insert(key.clone(), value.value.clone());
        } else {
            let d = sink.error(
                pos(value),
                format!(
                    "`{key}` is not a k3s configuration key ({})",
                    flags::CHECKED_AGAINST
                ),
            );
            if let Some(s) = did_you_mean(key, flags::all_keys()) {
                d.help(format!("did you mean `{s}`?"));
            }
        }
    }
    out
}
