//! The few filesystem primitives the backend's correctness rests on. Each
//! publishes a complete file or directory in one atomic step, so a reader never
//! sees half a record and a crash never leaves one.

use std::fs;
use std::io::{self, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A fresh path under `tmp_dir` that no other process uses: names start with
/// this process's session.
pub fn tmp_path(tmp_dir: &Path, session: &str) -> PathBuf {
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    tmp_dir.join(format!("{session}-{n}"))
}

/// Writes `bytes` to a new file and makes it durable before it is published.
pub fn write_durable(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Publishes `tmp` as `dst` only if `dst` does not exist yet: the hard link
/// either creates `dst` with the complete content or fails with
/// `AlreadyExists`. This is the backend's one exclusive-creation primitive.
pub fn publish_new(tmp: &Path, dst: &Path) -> io::Result<()> {
    let linked = fs::hard_link(tmp, dst);
    let _ = fs::remove_file(tmp);
    linked?;
    sync_dir(dst);
    Ok(())
}

/// Replaces `dst` with `tmp` in one step (rename).
pub fn publish_replace(tmp: &Path, dst: &Path) -> io::Result<()> {
    let renamed = fs::rename(tmp, dst);
    if renamed.is_err() {
        let _ = fs::remove_file(tmp);
    }
    renamed?;
    sync_dir(dst);
    Ok(())
}

/// Makes a rename or link durable. Best effort: not every filesystem lets a
/// directory be opened for sync, and the data itself is already synced.
fn sync_dir(entry: &Path) {
    if let Some(dir) = entry.parent()
        && let Ok(d) = fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
}

/// File names in `dir`; a missing directory is an error the caller interprets.
pub fn names(dir: &Path) -> io::Result<Vec<String>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = match entry {
            Ok(entry) => entry,
            // Removed while we listed (a pruned term record): WASI's readdir
            // looks at each entry after reading its name, and finds it gone.
            Err(e) if e.kind() == ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if let Some(name) = entry.file_name().to_str() {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// The content of `path`, or `None` if it does not exist.
pub fn read_opt(path: &Path) -> io::Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub fn ensure_dir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

/// Removes files left in a tmp directory by other processes that crashed
/// mid-write. Only entries older than `min_age` are touched, so a write in
/// progress elsewhere is never disturbed.
pub fn sweep_tmp(tmp_dir: &Path, own_session: &str, min_age: std::time::Duration) {
    let Ok(entries) = fs::read_dir(tmp_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(own_session) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if old {
            let p = entry.path();
            let _ = fs::remove_dir_all(&p).or_else(|_| fs::remove_file(&p));
        }
    }
}
