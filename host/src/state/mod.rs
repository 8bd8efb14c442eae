//! State requests, run by a bounded pool of plugin instances (see `pool`):
//! a Store runs one call at a time, so parallel calls need several. Backends
//! are small-metadata stores; a slot is held only for one bounded call.

mod pool;

pub use pool::Pool;

use crate::bindings::roster::exports::ha::membership::roster::Candidate;
use crate::runtime::{CallError, Slot, Versioned};

pub struct StateService {
    pool: Pool,
}

impl StateService {
    /// One slot per state call that may run at once.
    pub fn new(slots: Vec<Slot>) -> Self {
        Self {
            pool: Pool::new(slots),
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Versioned>, CallError> {
        let mut slot = self.pool.lease().await;
        slot.instance().await?.get(key).await
    }

    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, CallError> {
        let mut slot = self.pool.lease().await;
        slot.instance()
            .await?
            .put(key, value, expected, fence)
            .await
    }

    pub async fn delete(
        &self,
        key: &str,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<(), CallError> {
        let mut slot = self.pool.lease().await;
        slot.instance().await?.delete(key, expected, fence).await
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, CallError> {
        let mut slot = self.pool.lease().await;
        slot.instance().await?.list(prefix).await
    }

    /// The candidates the backend records; none if the plugin has no
    /// roster export.
    pub async fn members(&self) -> Result<Option<Vec<Candidate>>, CallError> {
        let mut slot = self.pool.lease().await;
        slot.instance().await?.members().await.transpose()
    }
}

/// The key syntax of the HTTP API, checked before any plugin sees a key:
/// non-empty `/`-separated paths of `[A-Za-z0-9._:-]`, at most 200 bytes, no
/// empty, `.` or `..` segment. Short and plain enough to be a file name, a
/// znode or a ConfigMap key on every backend.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > 200 {
        return Err(format!("key must be 1 to 200 bytes, got {}", key.len()));
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!("key {key:?} has an empty, '.' or '..' segment"));
    }
    check_alphabet(key, "key")
}

/// A prefix may end in the middle of a segment, but the segments it names
/// whole are held to the key rules: otherwise `a//b` or `../x` reaches a
/// backend that maps prefixes onto paths (ZooKeeper) and comes back as a
/// misleading "unavailable, retry" instead of a bad request.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.len() > 200 {
        return Err("prefix longer than 200 bytes".into());
    }
    if let Some((whole, _)) = prefix.rsplit_once('/')
        && whole
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(format!(
            "prefix {prefix:?} has an empty, '.' or '..' segment"
        ));
    }
    check_alphabet(prefix, "prefix")
}

fn check_alphabet(s: &str, what: &str) -> Result<(), String> {
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-' | '/')))
    {
        Some(c) => Err(format!(
            "{what} {s:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ : - and /"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_may_end_mid_segment_but_whole_segments_follow_the_key_rules() {
        for ok in ["", "jobs/", "jobs/j1/check", "a", "..", "a/..x", "a/."] {
            assert!(check_prefix(ok).is_ok(), "{ok:?}");
        }
        for bad in ["a//b", "/abs", "../x", "./", "a/../", "a/./b", "jobs/ x"] {
            assert!(check_prefix(bad).is_err(), "{bad:?}");
        }
    }
}
