//! State in the same ConfigMap as the leader record, so that a fenced write
//! is one compare-and-set on the object that says who leads: the write is
//! based on a version of the object whose record names the fencing token,
//! and it lands only if the object is still at that version. A write from a
//! deposed leader therefore fails whatever the timing.
//!
//! Each key is one data entry, `state.<name>` = `<version>,<key>,<base64 of
//! the value>`. `<name>` is the key with `_`, `/` and `:` escaped (ConfigMap
//! keys allow only `[-._a-zA-Z0-9]`), or, when that would be too long, a
//! sha256 of the key; the key itself is kept in the entry. Versions come from
//! one counter in the annotation `ha-sidecar/revision`, raised by every
//! change of any key, so they grow strictly and never repeat, even for a key
//! deleted and created again.
//!
//! The API server limits a ConfigMap's data to 1 MiB: values above the
//! host's `storage.inline-limit` (16 KiB by default) live in the storage
//! dir and only a pointer comes here. A write that would pass the limit is
//! refused as `invalid` with that advice, and changes nothing.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ha_sidecar_sdk::{Failure, Result, Versioned, invalid};
use sha2::{Digest, Sha256};

use crate::object::{ConfigMap, Object, Written};
use crate::record::Leadership;

const ENTRY_PREFIX: &str = "state.";
const REVISION_ANNOTATION: &str = "ha-sidecar/revision";
/// The API server's limit on a ConfigMap's data and binaryData.
pub const MAX_DATA_BYTES: usize = 1 << 20;
/// ConfigMap keys are at most 253 characters.
const MAX_NAME: usize = 253;
const ATTEMPTS: usize = 8;

/// The data key of a state key.
pub fn entry_name(key: &str) -> String {
    let mut escaped = String::with_capacity(ENTRY_PREFIX.len() + key.len());
    escaped.push_str(ENTRY_PREFIX);
    for c in key.chars() {
        match c {
            '_' => escaped.push_str("__"),
            '/' => escaped.push_str("_s"),
            ':' => escaped.push_str("_c"),
            c => escaped.push(c),
        }
    }
    if escaped.len() <= MAX_NAME {
        escaped
    } else {
        format!("{ENTRY_PREFIX}h.{}", hex(&Sha256::digest(key.as_bytes())))
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Entry {
    version: u64,
    key: String,
    value: Vec<u8>,
}

fn parse_entry(text: &str) -> Option<Entry> {
    let mut parts = text.splitn(3, ',');
    let version = parts.next()?.parse().ok()?;
    let key = parts.next()?.to_string();
    let value = BASE64.decode(parts.next()?).ok()?;
    Some(Entry {
        version,
        key,
        value,
    })
}

fn entry_text(version: u64, key: &str, value: &[u8]) -> String {
    format!("{version},{key},{}", BASE64.encode(value))
}

fn read(cm: &ConfigMap, key: &str) -> Option<Versioned> {
    let e = parse_entry(cm.datum(&entry_name(key))?)?;
    // A hashed name with someone else's key would be a sha256 collision;
    // checking costs nothing.
    (e.key == key).then_some(Versioned {
        value: e.value,
        version: e.version,
    })
}

fn revision(cm: &ConfigMap) -> u64 {
    cm.annotation(REVISION_ANNOTATION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// The fence: `token` must be the current, unreleased term of this object.
/// (Expiry is the host's business: a leader past its renew deadline has
/// already stopped calling itself leader, and its successor's acquisition
/// changes the record, which fails this write's compare-and-set.)
fn check_fence(cm: Option<&ConfigMap>, fence: Option<u64>) -> Result<()> {
    let Some(token) = fence else {
        return Ok(());
    };
    match cm.and_then(Leadership::read) {
        Some(l) if !l.is_released() && l.record.leader_transitions == token => Ok(()),
        _ => Err(Failure::NotLeader),
    }
}

pub fn get(object: &Object, key: &str) -> Result<Option<Versioned>> {
    Ok(object.get()?.and_then(|cm| read(&cm, key)))
}

/// Puts (`Some`) or deletes (`None`) a key under the conditions given.
/// Returns the new version (for a delete, the revision it was recorded at).
pub fn write(
    object: &Object,
    key: &str,
    value: Option<&[u8]>,
    expected: Option<u64>,
    fence: Option<u64>,
) -> Result<u64> {
    for _ in 0..ATTEMPTS {
        let cm = object.get()?;
        // A stale term wins over a lost compare-and-set: it is the more
        // important news for the caller.
        check_fence(cm.as_ref(), fence)?;
        let current = cm.as_ref().and_then(|cm| read(cm, key));
        let matches = match (expected, &current) {
            (None, _) => true,
            (Some(0), None) => value.is_some(),
            (Some(v), Some(cur)) => cur.version == v,
            (Some(_), None) => false,
        };
        if !matches {
            return Err(Failure::Conflict(current));
        }
        if value.is_none() && current.is_none() {
            return Ok(cm.as_ref().map_or(0, revision)); // nothing to delete
        }
        let fresh = cm.is_none();
        let mut next = cm.unwrap_or_else(|| object.blank());
        let version = revision(&next) + 1;
        next.set_annotation(REVISION_ANNOTATION, Some(version.to_string()));
        next.set_datum(&entry_name(key), value.map(|v| entry_text(version, key, v)));
        if next.data_size() > MAX_DATA_BYTES {
            return Err(invalid(format!(
                "writing {key} ({} bytes) would make configmap {} larger than the API server's 1 MiB limit; keep large values in the storage dir (a lower storage.inline-limit) or delete old keys",
                value.map_or(0, <[u8]>::len),
                object.name
            )));
        }
        let written = if fresh {
            object.create(&next)?
        } else {
            object.replace(&next)?
        };
        match written {
            Written::Done(_) => return Ok(version),
            Written::Raced => continue,
        }
    }
    Err(Failure::Unavailable(format!(
        "configmap {} kept changing during the write; retry",
        object.name
    )))
}

pub fn list(object: &Object, prefix: &str) -> Result<Vec<String>> {
    let Some(cm) = object.get()? else {
        return Ok(Vec::new());
    };
    let mut keys: Vec<String> = cm
        .data()
        .into_iter()
        .flat_map(|d| d.iter())
        .filter(|(name, _)| name.starts_with(ENTRY_PREFIX))
        .filter_map(|(_, v)| parse_entry(v.as_str()?))
        .map(|e| e.key)
        .filter(|k| k.starts_with(prefix))
        .collect();
    keys.sort();
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_names_are_configmap_keys_and_distinct() {
        let names: Vec<String> = [
            "a/b",
            "a_sb",
            "a:b",
            "a_b",
            "a__b",
            "jobs/j1/checkpoints/0000000000000000007",
        ]
        .iter()
        .map(|k| entry_name(k))
        .collect();
        for n in &names {
            assert!(n.len() <= MAX_NAME);
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-._".contains(c)),
                "{n}"
            );
        }
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len(), "{names:?}");
        let long = "_".repeat(200);
        assert!(entry_name(&long).starts_with("state.h."));
        assert!(entry_name(&long).len() <= MAX_NAME);
    }

    #[test]
    fn entries_round_trip_any_bytes() {
        let value: Vec<u8> = (0..=255).collect();
        let e = parse_entry(&entry_text(7, "jobs/a:b", &value)).unwrap();
        assert_eq!((e.version, e.key.as_str(), e.value), (7, "jobs/a:b", value));
        let empty = parse_entry(&entry_text(1, "k", b"")).unwrap();
        assert!(empty.value.is_empty());
    }
}
