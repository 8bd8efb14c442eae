//! What a plugin that writes Flink's own leader records needs from Flink's
//! side: the leader session id of a term.
//!
//! Flink fences its RPCs with a leader session UUID, new for every leader.
//! On the sidecar, the Flink HA services plugin takes it from the sidecar's
//! `GET /leader` (`session`), which the host derives from the term's token
//! and holder (`host/src/discovery.rs`, `session_uuid`). A plugin that also
//! writes the leader into the backend's native place (ZooKeeper's
//! `connection_info`, the leader keys of Flink's Kubernetes ConfigMap), for
//! Flink components or tools that read it there, must write that same id,
//! or their RPCs would carry a token the leader refuses. So it is derived
//! once, here, by the host's recipe; the ZooKeeper and Kubernetes tests
//! compare what the plugins write with what the sidecar reports.

use sha2::{Digest, Sha256};

/// A UUID as Java's `java.util.UUID` holds it: two 64-bit halves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderSession {
    pub most: u64,
    pub least: u64,
}

/// The leader session id of the term with `token` held by member `holder_id`
/// (a `Term`'s `token` and `holder.id`): SHA-256 of a fixed label, the token
/// (big-endian) and the id, its first 16 bytes made a version-8 (custom)
/// RFC 4122 UUID.
pub fn leader_session(token: u64, holder_id: &str) -> LeaderSession {
    let mut h = Sha256::new();
    h.update(b"ha-sidecar leader session\0");
    h.update(token.to_be_bytes());
    h.update(holder_id.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80; // version 8
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 4122 variant
    let (most, least) = bytes.split_at(8);
    LeaderSession {
        most: u64::from_be_bytes(most.try_into().expect("8 bytes")),
        least: u64::from_be_bytes(least.try_into().expect("8 bytes")),
    }
}

impl std::fmt::Display for LeaderSession {
    /// The dashed lower-case form Flink's `UUID.toString()` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            self.most >> 32,
            (self.most >> 16) & 0xffff,
            self.most & 0xffff,
            self.least >> 48,
            self.least & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hosts_recipe_and_form() {
        // The same vector as the host's `discovery::tests`: keep them equal.
        let s = leader_session(7, "jm-1");
        assert_eq!(s.to_string(), "5e3483e2-7616-8c93-9da7-4c018a725887");
        assert_ne!(leader_session(8, "jm-1"), s);
        assert_ne!(leader_session(7, "jm-2"), s);
    }
}
