//! How a value is kept in the backend: inline, or as a pointer to a blob in
//! the storage directory. One tag byte tells them apart, so a value can never
//! be mistaken for a pointer whatever its content.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Also what the SDK's `foreign_value` puts before bytes a plugin found in its
/// store that the host did not write: keep the two in step.
const INLINE: u8 = 0;
const POINTER: u8 = 1;

/// Where a large value lives and how to tell it arrived intact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// Blob name in the storage directory (relative, so the directory can move).
    pub blob: String,
    pub size: u64,
    pub sha256: String,
}

impl Pointer {
    pub fn to(blob: String, bytes: &[u8]) -> Self {
        Self {
            blob,
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        }
    }

    /// Checks that `bytes` are what the pointer was written for.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), String> {
        if bytes.len() as u64 != self.size {
            return Err(format!(
                "size is {} bytes, the pointer says {}",
                bytes.len(),
                self.size
            ));
        }
        let actual = hex::encode(Sha256::digest(bytes));
        if actual != self.sha256 {
            return Err(format!(
                "sha256 is {actual}, the pointer says {}",
                self.sha256
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stored {
    Inline(Vec<u8>),
    Pointer(Pointer),
}

impl Stored {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Stored::Inline(v) => {
                let mut out = Vec::with_capacity(v.len() + 1);
                out.push(INLINE);
                out.extend_from_slice(v);
                out
            }
            Stored::Pointer(p) => {
                let mut out = vec![POINTER];
                out.extend(serde_json::to_vec(p).expect("a pointer serializes"));
                out
            }
        }
    }

    pub fn decode(raw: &[u8]) -> Result<Self, String> {
        match raw.split_first() {
            Some((&INLINE, rest)) => Ok(Stored::Inline(rest.to_vec())),
            Some((&POINTER, rest)) => serde_json::from_slice(rest)
                .map(Stored::Pointer)
                .map_err(|e| format!("unreadable pointer: {e}")),
            Some((tag, _)) => Err(format!(
                "unknown value tag {tag}: not written by this version of ha-sidecar"
            )),
            None => Err("empty value: not written by ha-sidecar".into()),
        }
    }

    pub fn pointer(&self) -> Option<&Pointer> {
        match self {
            Stored::Pointer(p) => Some(p),
            Stored::Inline(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_verify() {
        for s in [
            Stored::Inline(vec![]),
            Stored::Inline(vec![1, 0, 255]),
            Stored::Pointer(Pointer::to("blob-x".into(), b"abc")),
        ] {
            assert_eq!(Stored::decode(&s.encode()).unwrap(), s);
        }
        let p = Pointer::to("blob-x".into(), b"abc");
        assert!(p.verify(b"abc").is_ok());
        assert!(p.verify(b"abd").unwrap_err().contains("sha256"));
        assert!(p.verify(b"ab").unwrap_err().contains("size"));
        assert!(Stored::decode(b"").is_err());
        assert!(Stored::decode(&[7, 1]).is_err());
    }
}
