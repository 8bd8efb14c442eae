//! Values on top of the backend's state: small ones inline, large ones as a
//! pointer to a blob in the storage directory.
//!
//! Rules (Flink's, and FLINK-22494's lesson):
//! - A pointer is stored only after its blob is durable.
//! - A read follows the pointer and verifies size and checksum; a mismatch is
//!   an error, never data.
//! - A blob is deleted only when it is certainly unreferenced: after the
//!   pointer that replaced or deleted it is stored, or after a write that
//!   certainly failed. After an ambiguous failure (the backend did not answer)
//!   the blob stays, and the leader's sweeper removes it once no pointer names it.
//! - A write is one plugin call unless the key is known to hold a pointer
//!   (see `known`): the old blob of a key not known to have one, if there is
//!   one after all, is unreferenced once the write lands and is the sweeper's.

mod blobs;
mod envelope;
mod known;

use std::sync::Arc;
use std::time::Duration;

pub use blobs::{BlobStore, FileBlobStore};
pub use envelope::{Pointer, Stored};
use known::KnownBlobs;

use crate::failpoint;
use crate::runtime::{CallError, Failure};
use crate::state::StateService;

#[derive(Debug, thiserror::Error)]
pub enum ValueError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error(
        "the value is {size} bytes, above storage.inline-limit ({limit} bytes), and no storage.dir is configured to hold it"
    )]
    TooLarge { size: usize, limit: usize },
    #[error("storage dir: {0}")]
    Storage(String),
    /// The value cannot be trusted: it is reported, never returned.
    #[error("key {key:?} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
}

impl ValueError {
    fn failure(f: Failure) -> Self {
        ValueError::Call(CallError::Failure(f))
    }
}

/// How many times a write retries when another write slipped in between its
/// read of the old value and its compare-and-set.
const RACE_RETRIES: usize = 5;

pub struct ValueStore {
    pub state: StateService,
    blobs: Option<Arc<dyn BlobStore>>,
    inline_limit: usize,
    known: KnownBlobs,
}

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Swept {
    pub blobs: usize,
    pub referenced: usize,
    pub removed: usize,
}

impl ValueStore {
    pub fn new(
        state: StateService,
        blobs: Option<Arc<dyn BlobStore>>,
        inline_limit: usize,
    ) -> Self {
        Self {
            state,
            blobs,
            inline_limit,
            known: KnownBlobs::default(),
        }
    }

    fn blobs(&self) -> Result<&Arc<dyn BlobStore>, ValueError> {
        self.blobs
            .as_ref()
            .ok_or_else(|| ValueError::Storage("no storage.dir is configured".into()))
    }

    /// The raw entry: decoded envelope and version.
    async fn entry(&self, key: &str) -> Result<Option<(Stored, u64)>, ValueError> {
        match self.state.get(key).await? {
            None => Ok(None),
            Some(v) => {
                let stored = Stored::decode(&v.value).map_err(|reason| ValueError::Corrupt {
                    key: key.into(),
                    reason,
                })?;
                Ok(Some((stored, v.version)))
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u64)>, ValueError> {
        let Some((stored, version)) = self.entry(key).await? else {
            return Ok(None);
        };
        match stored {
            Stored::Inline(v) => Ok(Some((v, version))),
            Stored::Pointer(p) => {
                self.known.learn(key);
                let blobs = self.blobs()?.clone();
                let name = p.blob.clone();
                let bytes =
                    blocking(move || blobs.get(&name))
                        .await
                        .map_err(|e| ValueError::Corrupt {
                            key: key.into(),
                            reason: format!("its file {} cannot be read: {e}", p.blob),
                        })?;
                p.verify(&bytes).map_err(|reason| ValueError::Corrupt {
                    key: key.into(),
                    reason: format!("its file {} does not match: {reason}", p.blob),
                })?;
                Ok(Some((bytes, version)))
            }
        }
    }

    /// Writes `value`; `expected` and `fence` as in the contract.
    pub async fn put(
        &self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, ValueError> {
        let new_blob = if value.len() > self.inline_limit {
            let blobs = self.blobs.clone().ok_or(ValueError::TooLarge {
                size: value.len(),
                limit: self.inline_limit,
            })?;
            let bytes = value.to_vec();
            let name = blocking(move || blobs.put(&bytes))
                .await
                .map_err(|e| ValueError::Storage(format!("cannot write the value's file: {e}")))?;
            failpoint::hit("after-blob-write");
            Some(Pointer::to(name, value))
        } else {
            None
        };
        let encoded = match &new_blob {
            Some(p) => Stored::Pointer(p.clone()).encode(),
            None => Stored::Inline(value.to_vec()).encode(),
        };
        let result = self.write(key, Some(&encoded), expected, fence).await;
        match (&result, &new_blob) {
            (Ok(_), Some(_)) => self.known.learn(key),
            (Ok(_), None) => self.known.forget(key),
            (Err(e), Some(p)) if certainly_not_written(e) => self.drop_blob(&p.blob).await,
            (Err(e), Some(p)) => {
                tracing::warn!(key, blob = %p.blob, error = %e, "write outcome unknown; keeping its file for the sweeper")
            }
            _ => {}
        }
        result
    }

    pub async fn delete(
        &self,
        key: &str,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<(), ValueError> {
        self.write(key, None, expected, fence).await?;
        self.known.forget(key);
        Ok(())
    }

    /// Stores `new` (none: deletes) in one plugin call, unless the key is
    /// known to hold a pointer whose blob must be deleted once replaced.
    async fn write(
        &self,
        key: &str,
        new: Option<&[u8]>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, ValueError> {
        if self.blobs.is_some() && self.known.contains(key) {
            return self.replace(key, new, expected, fence).await;
        }
        let r = match new {
            Some(bytes) => self.state.put(key, bytes, expected, fence).await,
            // The contract's delete returns no version; as before, 0.
            None => self.state.delete(key, expected, fence).await.map(|()| 0),
        };
        Ok(r?)
    }

    /// Compare-and-set against the version just read, so the old blob (if
    /// any) is known to be the one replaced and can be deleted afterwards.
    async fn replace(
        &self,
        key: &str,
        new: Option<&[u8]>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, ValueError> {
        for _ in 0..RACE_RETRIES {
            let current = self.entry_tolerant(key).await?;
            let current_version = current.as_ref().map(|(_, v)| *v);
            if let Some(want) = expected
                && want != current_version.unwrap_or(0)
            {
                if fence.is_none() {
                    return Err(ValueError::failure(Failure::Conflict(
                        self.state.get(key).await?,
                    )));
                }
                // A stale term must be reported as such (409), not as a lost
                // compare-and-set (412) that would invite a deposed leader to
                // retry: let the backend judge term and version together. The
                // write cannot succeed unless the key reached `want` meanwhile;
                // then its old file, unknown here, is left to the sweeper.
                let r = match new {
                    Some(bytes) => self.state.put(key, bytes, Some(want), fence).await,
                    None => self
                        .state
                        .delete(key, Some(want), fence)
                        .await
                        .map(|()| want),
                };
                return r.map_err(ValueError::from);
            }
            let result = match (new, current_version) {
                (Some(bytes), v) => {
                    self.state
                        .put(key, bytes, Some(v.unwrap_or(0)), fence)
                        .await
                }
                (None, Some(v)) => self.state.delete(key, Some(v), fence).await.map(|()| v),
                (None, None) => match fence {
                    // Nothing to delete; still report a stale term as such.
                    Some(_) => self.state.delete(key, None, fence).await.map(|()| 0),
                    None => return Ok(0),
                },
            };
            match result {
                Ok(version) => {
                    if let Some(old) =
                        current.and_then(|(s, _)| s.and_then(|s| s.pointer().cloned()))
                    {
                        self.drop_blob(&old.blob).await;
                    }
                    return Ok(version);
                }
                // Someone wrote between our read and our write; the caller did
                // not ask for a particular version, so read again.
                Err(CallError::Failure(Failure::Conflict(_))) if expected.is_none() => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(ValueError::failure(Failure::Unavailable(format!(
            "key {key:?} kept changing during the write; retry"
        ))))
    }

    /// Like `entry`, but an undecodable value is still replaceable (its blob,
    /// if any, cannot be found, so the sweeper handles it).
    async fn entry_tolerant(&self, key: &str) -> Result<Option<(Option<Stored>, u64)>, ValueError> {
        Ok(self
            .state
            .get(key)
            .await?
            .map(|v| (Stored::decode(&v.value).ok(), v.version)))
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ValueError> {
        Ok(self.state.list(prefix).await?)
    }

    async fn drop_blob(&self, name: &str) {
        let Some(blobs) = self.blobs.clone() else {
            return;
        };
        let n = name.to_string();
        if let Err(e) = blocking(move || blobs.delete(&n)).await {
            tracing::warn!(blob = name, error = %e, "cannot delete an unreferenced file; the sweeper will retry");
        }
    }

    /// Deletes blobs older than `grace` that no pointer names. Run by the
    /// leader only: a write in progress finishes well within the grace.
    pub async fn sweep(&self, grace: Duration) -> Result<Swept, ValueError> {
        let Some(blobs) = self.blobs.clone() else {
            return Ok(Swept::default());
        };
        let b = blobs.clone();
        let old: Vec<String> = blocking(move || b.list())
            .await
            .map_err(|e| ValueError::Storage(format!("cannot list: {e}")))?
            .into_iter()
            .filter(|(_, age)| *age >= grace)
            .map(|(n, _)| n)
            .collect();
        let mut swept = Swept {
            blobs: old.len(),
            ..Swept::default()
        };
        if old.is_empty() {
            return Ok(swept);
        }
        let mut referenced = std::collections::HashSet::new();
        for key in self.list("").await? {
            if let Some((Some(Stored::Pointer(p)), _)) = self.entry_tolerant(&key).await? {
                self.known.learn(&key);
                referenced.insert(p.blob);
            }
        }
        swept.referenced = referenced.len();
        for name in old.into_iter().filter(|n| !referenced.contains(n)) {
            let b = blobs.clone();
            let n = name.clone();
            match blocking(move || b.delete(&n)).await {
                Ok(()) => {
                    swept.removed += 1;
                    tracing::info!(blob = %name, "swept an unreferenced file from the storage dir");
                }
                Err(e) => tracing::warn!(blob = %name, error = %e, "cannot sweep"),
            }
        }
        Ok(swept)
    }
}

/// A failed write that certainly did not store the pointer: its blob can go.
fn certainly_not_written(e: &ValueError) -> bool {
    matches!(
        e,
        ValueError::Call(CallError::Failure(
            Failure::Conflict(_) | Failure::NotLeader | Failure::Invalid(_)
        )) | ValueError::TooLarge { .. }
    )
}

/// Storage-dir operations running at once. Each holds at most two file
/// descriptors (the file and its directory, for the fsync), so however many
/// requests arrive, the storage dir takes at most twice this many from the
/// reserve that `descriptors` keeps beside the connections.
pub const CONCURRENT_BLOB_OPS: usize = 16;

static BLOB_OPS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(CONCURRENT_BLOB_OPS);

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    let permit = BLOB_OPS
        .acquire()
        .await
        .map_err(|e| std::io::Error::other(format!("storage dir closed: {e}")))?;
    // Held by the blocking task itself: it runs on even if this future is dropped.
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        f()
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(format!("storage task failed: {e}"))))
}
