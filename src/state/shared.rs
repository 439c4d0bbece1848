//! The pure parts of a state shared through an object store (docs/state.md): which
//! fields are secrets and how they are taken out of the shared document and put back
//! (`split_secrets`, `restore_secrets`), the three-way merge that re-applies one
//! writer's changes on top of a newer object after a lost compare-and-swap
//! (`merge`), and the lock record a controller leaves while it works (`LockRecord`).
//!
//! Invariant: every `Secret` field of `State` is listed in `SECRET_FIELDS`; a field
//! added to `State` as a `Secret` must be added there too, or it would be stored in
//! clear in the shared object (the unit test below sets each listed field).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{Secret, State};

/// The secret fields of `State`, as JSON pointers (RFC 6901) into its serialised form.
pub const SECRET_FIELDS: &[&str] = &[
    "/cluster/token",
    "/cluster/join_token",
    "/cluster/agent_token",
    "/cluster/agent_join_token",
    "/serverless/oscar_password",
    "/serverless/minio_secret_key",
];

/// The secret values of one state, by JSON pointer (only the non-empty ones).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets(pub std::collections::BTreeMap<String, Secret>);

impl Secrets {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The state with every secret emptied, and the secrets taken out.
pub fn split_secrets(state: &State) -> (State, Secrets) {
    let mut public = state.clone();
    let mut out = Secrets::default();
    for (ptr, slot) in secret_slots(&mut public) {
        if !slot.is_empty() {
            out.0.insert((*ptr).to_string(), std::mem::take(slot));
        }
    }
    (public, out)
}

/// Put secrets taken by `split_secrets` back (a pointer this version does not know is
/// ignored; a secret absent from `secrets` stays as it is in `state`).
pub fn restore_secrets(state: &mut State, secrets: &Secrets) {
    for (ptr, slot) in secret_slots(state) {
        if let Some(s) = secrets.0.get(*ptr) {
            *slot = s.clone();
        }
    }
}

fn secret_slots(state: &mut State) -> Vec<(&'static &'static str, &mut Secret)> {
    let c = &mut state.cluster;
    let mut v: Vec<&mut Secret> = vec![
        &mut c.token,
        &mut c.join_token,
        &mut c.agent_token,
        &mut c.agent_join_token,
    ];
    if let Some(s) = state.serverless.as_mut() {
        v.push(&mut s.oscar_password);
        v.push(&mut s.minio_secret_key);
    }
    SECRET_FIELDS.iter().zip(v).collect()
}

/// Three-way merge of JSON documents: `mine` was derived from `base`, `theirs` is what
/// another writer stored meanwhile. Where only one side changed a value, that change
/// wins; where both changed the same object, the merge goes down into it; where both
/// changed the same leaf differently, `mine` wins (the writer retrying is the one that
/// just observed the value). A key one side removed and the other left alone is
/// removed.
pub fn merge(base: &Value, mine: &Value, theirs: &Value) -> Value {
    if mine == base {
        return theirs.clone();
    }
    if theirs == base || theirs == mine {
        return mine.clone();
    }
    match (base, mine, theirs) {
        (Value::Object(b), Value::Object(m), Value::Object(t)) => {
            Value::Object(merge_maps(b, m, t))
        }
        (_, Value::Object(m), Value::Object(t)) => Value::Object(merge_maps(&Map::new(), m, t)),
        _ => mine.clone(),
    }
}

fn merge_maps(
    b: &Map<String, Value>,
    m: &Map<String, Value>,
    t: &Map<String, Value>,
) -> Map<String, Value> {
    let mut keys: Vec<&String> = b.keys().chain(m.keys()).chain(t.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut out = Map::new();
    for k in keys {
        let merged = match (b.get(k), m.get(k), t.get(k)) {
            (_, None, None) => None,
            // Removed by me, untouched by them: removed.
            (Some(bv), None, Some(tv)) if bv == tv => None,
            // Removed by me, changed by them: their change is kept.
            (Some(_), None, Some(tv)) => Some(tv.clone()),
            // Removed by them, untouched by me: removed.
            (Some(bv), Some(mv), None) if bv == mv => None,
            (_, Some(mv), None) => Some(mv.clone()),
            (None, None, Some(tv)) => Some(tv.clone()),
            (bv, Some(mv), Some(tv)) => Some(merge(bv.unwrap_or(&Value::Null), mv, tv)),
        };
        if let Some(v) = merged {
            out.insert(k.clone(), v);
        }
    }
    out
}

/// Who holds an environment's lock in a shared store: written when the lock is taken,
/// shown to whoever is refused and by `state unlock`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRecord {
    /// The user who ran continuum.
    pub owner: String,
    pub host: String,
    pub pid: u32,
    /// When the lock was taken (RFC 3339, UTC).
    pub started: String,
    /// The command that took it (`up`, `down`, `state migrate`, ...).
    pub command: String,
    /// The continuum version that took it.
    pub version: String,
    /// Random, unique to this taking of the lock: tells a run its own lock object
    /// from another's with the same PID and second.
    #[serde(default)]
    pub nonce: String,
}

impl LockRecord {
    /// `owner@host pid N since TIME (command, continuum VERSION)`.
    pub fn holder(&self) -> String {
        format!(
            "{}@{} pid {} since {} ({}, continuum {})",
            self.owner, self.host, self.pid, self.started, self.command, self.version
        )
    }
}

/// Seconds since the epoch as the civil date in UTC and the seconds into that day:
/// `(year, month, day, seconds)` (Howard Hinnant's days-to-civil algorithm).
pub fn civil(secs: u64) -> (i64, i64, i64, u64) {
    let z = i64::try_from(secs / 86_400).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d, secs % 86_400)
}

/// Seconds since the epoch as RFC 3339 UTC (`2026-12-01T14:45:00Z`).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d, rem) = civil(secs);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Credentials;
    use serde_json::json;

    fn full() -> State {
        let mut s = State::new("farm");
        s.cluster.token = Secret::new("t1");
        s.cluster.join_token = Secret::new("t2");
        s.cluster.agent_token = Secret::new("t3");
        s.cluster.agent_join_token = Secret::new("t4");
        s.serverless = Some(Credentials {
            oscar_user: "oscar".into(),
            oscar_password: Secret::new("t5"),
            minio_access_key: "minio".into(),
            minio_secret_key: Secret::new("t6"),
        });
        s
    }

    #[test]
    fn every_secret_leaves_the_public_part_and_comes_back() {
        let s = full();
        let (public, secrets) = split_secrets(&s);
        let text = serde_json::to_string(&public).expect("json");
        for t in ["t1", "t2", "t3", "t4", "t5", "t6"] {
            assert!(!text.contains(&format!("\"{t}\"")), "{t} in {text}");
        }
        assert_eq!(secrets.0.len(), SECRET_FIELDS.len());
        let v = serde_json::to_value(&s).expect("json");
        for ptr in SECRET_FIELDS {
            assert_eq!(
                v.pointer(ptr).and_then(Value::as_str),
                secrets.0.get(*ptr).map(Secret::expose),
                "{ptr}"
            );
        }
        let mut back = public;
        restore_secrets(&mut back, &secrets);
        assert_eq!(back, s);
    }

    #[test]
    fn merge_keeps_both_writers_resources() {
        let base = json!({"serial": 3, "resources": {"a": {"status": "pending"}}});
        let mine = json!({"serial": 4, "resources": {"a": {"status": "applied"}, "b": {"status": "applied"}}});
        let theirs = json!({"serial": 5, "resources": {"a": {"status": "pending"}, "c": {"status": "applied"}}});
        let m = merge(&base, &mine, &theirs);
        assert_eq!(
            m["resources"],
            json!({"a": {"status": "applied"}, "b": {"status": "applied"}, "c": {"status": "applied"}})
        );
        // Both changed the serial: mine wins here; the store sets it past both.
        assert_eq!(m["serial"], json!(4));
    }

    #[test]
    fn merge_removals() {
        let base = json!({"r": {"a": 1, "b": 2, "c": 3}});
        // I removed a, they removed b, they changed c which I removed too.
        let mine = json!({"r": {"b": 2}});
        let theirs = json!({"r": {"a": 1, "c": 4}});
        assert_eq!(merge(&base, &mine, &theirs), json!({"r": {"c": 4}}));
        // Unchanged on my side: theirs as it is.
        assert_eq!(merge(&base, &base, &theirs), theirs);
    }

    #[test]
    fn lock_record_names_the_holder() {
        let r = LockRecord {
            owner: "ana".into(),
            host: "ctl-1".into(),
            pid: 42,
            started: rfc3339(0),
            command: "up".into(),
            version: "0.1.0".into(),
            nonce: "n".into(),
        };
        assert_eq!(
            r.holder(),
            "ana@ctl-1 pid 42 since 1970-01-01T00:00:00Z (up, continuum 0.1.0)"
        );
        assert_eq!(rfc3339(1_796_136_300), "2026-12-01T14:45:00Z");
    }
}
