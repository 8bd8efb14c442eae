//! The embedded file backend: a directory shared by the sidecars of one
//! machine, no service to start.

use std::fs::{self, File as FsFile};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Backend, Bound, NativeStore};
use crate::support::{LEASE, TIMING, plugin};

pub struct File;

impl Backend for File {
    fn name(&self) -> &'static str {
        "file"
    }

    fn plugin(&self) -> &'static str {
        "ha_plugin_file"
    }

    /// The plugin's default poll interval (50 ms), which is what a user
    /// gets, rather than the tests' faster one.
    fn config(&self, dir: &Path, ns: &str, cache_dir: &Path) -> String {
        format!(
            "plugin:\n  path: '{}'\n  cache-dir: '{}'\n  settings: {{cluster-id: {ns}}}\ncapabilities: {{filesystem: {{dir: '{}'}}}}\n{TIMING}",
            plugin(self.plugin()).display(),
            cache_dir.display(),
            dir.join("data").display(),
        )
    }

    fn detection_bound(&self) -> Bound {
        Bound {
            total: LEASE,
            made_of: format!("lease {}", crate::report::human(LEASE)),
        }
    }

    fn native(&self, dir: &Path) -> Option<Box<dyn NativeStore>> {
        Some(Box::new(FsStore::new(dir.join("native-file"))))
    }
}

/// What the file backend and the storage dir do for one durable value:
/// write a temp file, fsync it, rename it into place, fsync the directory.
pub struct FsStore {
    dir: PathBuf,
}

impl FsStore {
    pub fn new(dir: PathBuf) -> Self {
        fs::create_dir_all(&dir).expect("create the native store's directory");
        FsStore { dir }
    }
}

impl NativeStore for FsStore {
    fn describe(&self, put: bool) -> &'static str {
        if put {
            "file write, fsync, rename, dir fsync"
        } else {
            "file read"
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        let tmp = self.dir.join(format!(".{key}.tmp"));
        let mut f = FsFile::create(&tmp).expect("create a temp file");
        f.write_all(value).expect("write a temp file");
        f.sync_all().expect("fsync a temp file");
        fs::rename(&tmp, self.dir.join(key)).expect("rename a temp file");
        FsFile::open(&self.dir)
            .and_then(|d| d.sync_all())
            .expect("fsync the directory");
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        fs::read(self.dir.join(key)).expect("read a value")
    }
}
