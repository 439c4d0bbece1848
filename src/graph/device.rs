//! What a probed device adds to its node: labels (k3s adds no GPU labels) and
//! config.yaml keys (bundled iptables, the nvidia default runtime). Pure.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::recipe::device::{Device, Facts};

/// A Kubernetes label value from free text (at most 63 chars of `[A-Za-z0-9._-]`,
/// alphanumeric at both ends).
pub fn label_value(s: &str) -> String {
    let v: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let v: String = v.chars().take(63).collect();
    v.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Node labels continuum adds for a probed device (k3s adds no GPU labels).
pub fn labels(f: &Facts) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    match f.device() {
        Some(Device::RaspberryPi) => {
            m.insert("continuum.io/device".into(), "raspberry-pi".into());
            if let Some(model) = &f.pi_model {
                m.insert("continuum.io/model".into(), label_value(model));
            }
        }
        Some(Device::Jetson) => {
            m.insert("continuum.io/device".into(), "jetson".into());
            m.insert("nvidia.com/gpu.present".into(), "true".into());
            if let Some(model) = &f.jetson_model {
                m.insert("continuum.io/model".into(), label_value(model));
            }
            if let Some(l4t) = &f.l4t {
                m.insert("continuum.io/l4t-release".into(), label_value(l4t));
            }
        }
        None => {}
    }
    m
}

/// Device-derived config.yaml keys: `prefer-bundled-bin` for buggy iptables, the
/// nvidia default runtime on Jetsons when the recipe asks for it.
pub fn config_keys(f: &Facts, nvidia_default: bool, m: &mut BTreeMap<String, Value>) {
    if f.needs_bundled_iptables() {
        m.insert("prefer-bundled-bin".into(), json!(true));
    }
    if nvidia_default && f.device() == Some(Device::Jetson) {
        m.insert("default-runtime".into(), json!("nvidia"));
    }
}
