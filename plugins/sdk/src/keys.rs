//! The key syntax every backend accepts, checked once here so that a key that
//! works on one backend works on all of them.

use crate::{Failure, invalid};

/// Longest accepted key, in bytes: short enough to become a file name, a znode
/// name or a ConfigMap data key on every backend.
pub const MAX_KEY_LEN: usize = 200;

/// Keys are non-empty `/`-separated paths of `[A-Za-z0-9._:-]`, with no empty,
/// `.` or `..` segment.
pub fn validate(key: &str) -> Result<(), Failure> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(invalid(format!(
            "key must be 1 to {MAX_KEY_LEN} bytes, got {} bytes",
            key.len()
        )));
    }
    for segment in key.split('/') {
        if segment.is_empty() || segment == "." || segment == ".." {
            return Err(invalid(format!(
                "key {key:?} has an empty, '.' or '..' segment"
            )));
        }
        if let Some(c) = segment
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-')))
        {
            return Err(invalid(format!(
                "key {key:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ : - and / between segments"
            )));
        }
    }
    Ok(())
}

/// A prefix for `list` may be empty or end in the middle of a segment, but must
/// otherwise use the key alphabet.
pub fn validate_prefix(prefix: &str) -> Result<(), Failure> {
    if prefix.len() > MAX_KEY_LEN {
        return Err(invalid(format!("prefix longer than {MAX_KEY_LEN} bytes")));
    }
    match prefix
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/')))
    {
        Some(c) => Err(invalid(format!("prefix {prefix:?} contains {c:?}"))),
        None => Ok(()),
    }
}
