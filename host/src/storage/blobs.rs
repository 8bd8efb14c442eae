//! Where large values live: the storage directory (Flink's
//! `high-availability.storageDir`). Behind a small trait so that an object
//! store can be added without touching the callers; `file://` is the only
//! scheme today.

use std::fs;
use std::io::{self, Write};
use std::path::PathBuf;
use std::time::Duration;

/// A store of immutable blobs, each written once under a fresh name.
pub trait BlobStore: Send + Sync {
    /// Writes `bytes` under a new name and returns only once they are durable.
    fn put(&self, bytes: &[u8]) -> io::Result<String>;
    fn get(&self, name: &str) -> io::Result<Vec<u8>>;
    /// Deleting a missing blob succeeds.
    fn delete(&self, name: &str) -> io::Result<()>;
    /// Every blob and unfinished write, with its age, for the orphan sweeper.
    fn list(&self) -> io::Result<Vec<(String, Duration)>>;
    fn describe(&self) -> String;
}

/// Blobs as files in one directory: written to a temp name, fsynced, renamed
/// into place, and the directory fsynced, so a name that exists is complete.
pub struct FileBlobStore {
    dir: PathBuf,
}

const BLOB_PREFIX: &str = "blob-";
const TMP_PREFIX: &str = ".tmp-";

impl FileBlobStore {
    pub fn open(dir: PathBuf) -> io::Result<Self> {
        fs::create_dir_all(&dir)?;
        Ok(Self { dir })
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        // Names come from pointers in the backend: never let one escape the directory.
        let ok = (name.starts_with(BLOB_PREFIX) || name.starts_with(TMP_PREFIX))
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.'));
        if !ok {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} is not a blob name"),
            ));
        }
        Ok(self.dir.join(name))
    }
}

impl BlobStore for FileBlobStore {
    fn put(&self, bytes: &[u8]) -> io::Result<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{BLOB_PREFIX}{id}");
        let tmp = self.dir.join(format!("{TMP_PREFIX}{id}"));
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        let written = f.write_all(bytes).and_then(|()| f.sync_all());
        if let Err(e) = written.and_then(|()| fs::rename(&tmp, self.dir.join(&name))) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::File::open(&self.dir)?.sync_all()?;
        Ok(name)
    }

    fn get(&self, name: &str) -> io::Result<Vec<u8>> {
        fs::read(self.path(name)?)
    }

    fn delete(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    fn list(&self) -> io::Result<Vec<(String, Duration)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !(name.starts_with(BLOB_PREFIX) || name.starts_with(TMP_PREFIX)) {
                continue;
            }
            let age = entry.metadata()?.modified()?.elapsed().unwrap_or_default();
            out.push((name, age));
        }
        Ok(out)
    }

    fn describe(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_names_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileBlobStore::open(dir.path().join("s")).unwrap();
        let name = store.put(b"payload").unwrap();
        assert_eq!(store.get(&name).unwrap(), b"payload");
        assert_eq!(store.list().unwrap().len(), 1);
        store.delete(&name).unwrap();
        store.delete(&name).unwrap();
        assert!(store.get("../etc/passwd").is_err());
        assert!(store.get("blob-../../x").is_err());
    }
}
