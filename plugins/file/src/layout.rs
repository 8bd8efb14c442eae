//! Where things live under the cluster's directory, and how names encode
//! terms, keys and versions. Zero-padded numbers keep names sortable.
//!
//! ```text
//! <dir>/<cluster-id>/
//!   election/term-<token>          one record per term, created exclusively
//!   election/tmp/                  records being written
//!   state/t-<token>/               the live state of a term: <key>@<version> files
//!   state/t-<token>/.base          the version the term started from
//!   state/t-<token>/.skipped       (instead of .base) a term that never took over
//!   state/sealed/t-<token>/        a term's state, moved aside by its successor
//!   state/tmp/                     files and directories being written
//! ```

use std::path::{Path, PathBuf};

pub const BASE_MARKER: &str = ".base";
pub const SKIPPED_MARKER: &str = ".skipped";
const TOMBSTONE_SUFFIX: &str = ".del";

pub struct Layout {
    pub root: PathBuf,
}

impl Layout {
    pub fn election(&self) -> PathBuf {
        self.root.join("election")
    }
    pub fn election_tmp(&self) -> PathBuf {
        self.root.join("election/tmp")
    }
    pub fn term_record(&self, token: u64) -> PathBuf {
        self.election().join(term_record_name(token))
    }
    pub fn state(&self) -> PathBuf {
        self.root.join("state")
    }
    pub fn sealed(&self) -> PathBuf {
        self.root.join("state/sealed")
    }
    pub fn state_tmp(&self) -> PathBuf {
        self.root.join("state/tmp")
    }
    pub fn live_dir(&self, token: u64) -> PathBuf {
        self.state().join(term_dir_name(token))
    }
    pub fn sealed_dir(&self, token: u64) -> PathBuf {
        self.sealed().join(term_dir_name(token))
    }
}

pub fn term_record_name(token: u64) -> String {
    format!("term-{token:020}")
}

pub fn parse_term_record_name(name: &str) -> Option<u64> {
    name.strip_prefix("term-")?.parse().ok()
}

pub fn term_dir_name(token: u64) -> String {
    format!("t-{token:020}")
}

pub fn parse_term_dir_name(name: &str) -> Option<u64> {
    name.strip_prefix("t-")?.parse().ok()
}

/// One file of a key in a term directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub key: String,
    pub version: u64,
    pub deleted: bool,
}

impl KeyFile {
    pub fn name(&self) -> String {
        let suffix = if self.deleted { TOMBSTONE_SUFFIX } else { "" };
        format!("{}@{:020}{suffix}", encode_key(&self.key), self.version)
    }

    pub fn parse(name: &str) -> Option<Self> {
        let (enc, rest) = name.rsplit_once('@')?;
        let (digits, deleted) = match rest.strip_suffix(TOMBSTONE_SUFFIX) {
            Some(d) => (d, true),
            None => (rest, false),
        };
        Some(Self {
            key: decode_key(enc),
            version: digits.parse().ok()?,
            deleted,
        })
    }

    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.name())
    }
}

/// Keys use `[A-Za-z0-9._:-]` and `/`; `/` cannot appear in a file name and
/// `%` cannot appear in a key, so the mapping is one to one.
fn encode_key(key: &str) -> String {
    key.replace('/', "%")
}

fn decode_key(enc: &str) -> String {
    enc.replace('%', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_names_round_trip() {
        for kf in [
            KeyFile {
                key: "jobs/a1/checkpoints/0000000000000000007".into(),
                version: 42,
                deleted: false,
            },
            KeyFile {
                key: ".x/y:z".into(),
                version: 1,
                deleted: true,
            },
        ] {
            assert_eq!(KeyFile::parse(&kf.name()), Some(kf.clone()));
        }
        assert_eq!(KeyFile::parse(BASE_MARKER), None);
        assert_eq!(KeyFile::parse(SKIPPED_MARKER), None);
    }
}
