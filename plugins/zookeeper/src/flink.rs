//! What Flink's own ZooKeeper HA services write, so that the two can share a
//! cluster's znodes:
//!
//! - a leader's `connection_info` node
//!   (`ZooKeeperUtils.writeLeaderInformationToZooKeeper`): Java serialization
//!   of `writeUTF(address)` then `writeObject(java.util.UUID)`, so that Flink
//!   clients reading ZooKeeper find the sidecar's leader (layout as observed
//!   on Flink 2.3);
//! - the state nodes of a cluster that ran on Flink's own HA before it moved
//!   to the sidecar (docs/flink.md, "Moving a cluster from Flink's ZooKeeper
//!   HA"): Flink's `ZooKeeperStateHandleStore` writes a Java-serialized state
//!   handle as a node's whole data (no tag byte, unlike the plugin's own
//!   values) and gives each node a `locks` child with one ephemeral node per
//!   JobManager that holds it; its checkpoint id counter is Curator's
//!   `SharedCount`, a 4-byte big-endian int at `checkpoint_id_counter`.

/// Java serialization's stream header (magic 0xACED, version 5).
const JAVA_STREAM: [u8; 4] = [0xac, 0xed, 0x00, 0x05];

/// The child Flink's state handle store gives every state node.
pub const LOCKS: &str = "locks";

/// Whether an untagged node's data is a value Flink's own HA wrote: a
/// Java-serialized state handle, or its 4-byte checkpoint id counter.
pub fn written_by_flink(path: &str, data: &[u8]) -> bool {
    data.starts_with(&JAVA_STREAM) || (data.len() == 4 && path.ends_with("/checkpoint_id_counter"))
}

/// java.util.UUID's serialVersionUID.
const UUID_SERIAL_VERSION: [u8; 8] = [0xbc, 0x99, 0x03, 0xf7, 0x98, 0x6d, 0x85, 0x2f];

fn java_utf(out: &mut Vec<u8>, s: &str) {
    // Addresses are ASCII, where Java's modified UTF-8 is plain UTF-8.
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `address` and the leader session id (most, least significant bits).
pub fn connection_info(address: &str, most: u64, least: u64) -> Vec<u8> {
    let mut out = JAVA_STREAM.to_vec();
    // writeUTF goes into a data block, flushed before the object.
    let block_len = 2 + address.len();
    if block_len <= 0xff {
        out.extend_from_slice(&[0x77, block_len as u8]);
    } else {
        out.push(0x7a);
        out.extend_from_slice(&(block_len as u32).to_be_bytes());
    }
    java_utf(&mut out, address);
    // TC_OBJECT, TC_CLASSDESC "java.util.UUID", serialVersionUID, SC_SERIALIZABLE, 2 fields
    out.extend_from_slice(&[0x73, 0x72]);
    java_utf(&mut out, "java.util.UUID");
    out.extend_from_slice(&UUID_SERIAL_VERSION);
    out.extend_from_slice(&[0x02, 0x00, 0x02]);
    out.push(b'J');
    java_utf(&mut out, "leastSigBits");
    out.push(b'J');
    java_utf(&mut out, "mostSigBits");
    // TC_ENDBLOCKDATA, no superclass (TC_NULL), then the values in field order.
    out.extend_from_slice(&[0x78, 0x70]);
    out.extend_from_slice(&least.to_be_bytes());
    out.extend_from_slice(&most.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_bytes_flink_writes() {
        let bytes = connection_info(
            "http://127.0.0.1:8081",
            0x0102030405060708,
            0x1112131415161718,
        );
        let mut expected = vec![0xac, 0xed, 0x00, 0x05, 0x77, 23, 0x00, 21];
        expected.extend_from_slice(b"http://127.0.0.1:8081");
        expected.extend_from_slice(&[0x73, 0x72, 0x00, 0x0e]);
        expected.extend_from_slice(b"java.util.UUID");
        expected.extend_from_slice(&[
            0xbc, 0x99, 0x03, 0xf7, 0x98, 0x6d, 0x85, 0x2f, 0x02, 0x00, 0x02, 0x4a, 0x00, 0x0c,
        ]);
        expected.extend_from_slice(b"leastSigBits");
        expected.extend_from_slice(&[0x4a, 0x00, 0x0b]);
        expected.extend_from_slice(b"mostSigBits");
        expected.extend_from_slice(&[
            0x78, 0x70, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x01, 0x02, 0x03, 0x04,
            0x05, 0x06, 0x07, 0x08,
        ]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn long_addresses_use_a_long_block() {
        let addr = "x".repeat(300);
        let bytes = connection_info(&addr, 1, 2);
        assert_eq!(&bytes[4..9], &[0x7a, 0, 0, 1, 46]);
    }
}
