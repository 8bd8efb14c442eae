//! The keys this process knows to hold a pointer to a storage-dir blob.
//!
//! A write replaces the old value in one plugin call when the key is not
//! known to hold a pointer: reading first only to find an old blob would
//! double the cost of every small write. A key is learned when this process
//! writes a pointer to it or reads one from it, and forgotten when it writes
//! an inline value or deletes it. A key missing here that does hold a
//! pointer (written by an earlier leader, or by a write whose outcome was
//! unknown) only costs an orphaned blob, which the leader's sweeper removes
//! once no pointer names it; a key wrongly listed here only costs one read.

use std::collections::HashSet;
use std::sync::Mutex;

#[derive(Default)]
pub struct KnownBlobs {
    keys: Mutex<HashSet<String>>,
}

impl KnownBlobs {
    pub fn contains(&self, key: &str) -> bool {
        self.lock().contains(key)
    }

    pub fn learn(&self, key: &str) {
        let mut keys = self.lock();
        if !keys.contains(key) {
            keys.insert(key.to_string());
        }
    }

    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // The set holds no invariant a panicking holder could break.
        self.keys.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learns_and_forgets() {
        let k = KnownBlobs::default();
        assert!(!k.contains("a"));
        k.learn("a");
        k.learn("a");
        assert!(k.contains("a"));
        k.forget("a");
        assert!(!k.contains("a"));
    }
}
