//! State as versioned files in one directory per term.
//!
//! Only the process holding term T writes, and only into `state/t-T`. When
//! term T+1 takes over it first moves `state/t-T` aside (`rename` to
//! `state/sealed/`), then builds `state/t-(T+1)` from it. The rename is what
//! makes fencing atomic: a write of term T either landed before the rename (and
//! is carried over) or fails because `state/t-T` no longer exists, however long
//! the writer was paused between its checks and its write.
//!
//! A term that won its record but never created its directory (it crashed, or
//! is paused) is blocked by its successor with a `.skipped` placeholder at
//! `state/t-T`, so that it can never create the directory later. Directory
//! renames onto a non-empty directory fail, which makes both the takeover and
//! the placeholder exclusive.
//!
//! A read is one read of the value's file where it can be: the path where
//! this instance last found or wrote a key in a live term directory is
//! remembered, and read first. The file at that path is the key's current
//! value as long as it exists: the term's holder removes a key's older file
//! once its newer one is published, and a successor renames the whole
//! directory away (seals it) before it writes anything of its own. Only
//! when the file is gone does the read list directories again.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ha_sidecar_sdk::{Failure, Result, Versioned, unavailable};

use crate::fsx;
use crate::layout::{BASE_MARKER, KeyFile, Layout, SKIPPED_MARKER, parse_term_dir_name};

pub enum Takeover {
    Done,
    /// A newer term blocked or replaced this one.
    Superseded,
}

/// The newest version of each key in one term directory.
#[derive(Default)]
struct Snapshot {
    keys: BTreeMap<String, KeyFile>,
    /// Highest version ever used, including deleted keys and `.base`.
    max_version: u64,
}

impl Snapshot {
    fn read(dir: &Path) -> std::io::Result<Self> {
        let mut snap = Snapshot::default();
        for name in fsx::names(dir)? {
            if name == BASE_MARKER {
                let raw = fs::read_to_string(dir.join(&name))?;
                snap.max_version = snap.max_version.max(raw.trim().parse().unwrap_or(0));
            } else if let Some(kf) = KeyFile::parse(&name) {
                snap.max_version = snap.max_version.max(kf.version);
                match snap.keys.get(&kf.key) {
                    Some(cur) if cur.version >= kf.version => {}
                    _ => {
                        snap.keys.insert(kf.key.clone(), kf);
                    }
                }
            }
        }
        Ok(snap)
    }

    fn live(&self, key: &str) -> Option<&KeyFile> {
        self.keys.get(key).filter(|kf| !kf.deleted)
    }
}

/// Where each key's value was last seen in a live term directory, and its
/// version (per plugin instance).
static SEEN: Mutex<Option<HashMap<String, (PathBuf, u64)>>> = Mutex::new(None);

fn seen() -> std::sync::MutexGuard<'static, Option<HashMap<String, (PathBuf, u64)>>> {
    SEEN.lock().unwrap_or_else(|e| e.into_inner())
}

fn remember(key: &str, path: PathBuf, version: u64) {
    seen()
        .get_or_insert_with(HashMap::new)
        .insert(key.to_string(), (path, version));
}

fn forget(key: &str) {
    if let Some(m) = seen().as_mut() {
        m.remove(key);
    }
}

fn remembered(key: &str) -> Option<(PathBuf, u64)> {
    seen().as_ref()?.get(key).cloned()
}

pub struct StateStore<'a> {
    pub layout: &'a Layout,
    pub session: &'a str,
}

impl StateStore<'_> {
    /// Moves every older term's state aside and starts `token`'s directory
    /// from the newest of them.
    pub fn takeover(&self, token: u64) -> Result<Takeover> {
        for _ in 0..16 {
            let live = self.term_dirs(&self.layout.state())?;
            let sealed = self.term_dirs(&self.layout.sealed())?;
            if live.iter().chain(&sealed).any(|&t| t >= token) {
                return Ok(Takeover::Superseded);
            }
            let newest = live.iter().chain(&sealed).copied().max().unwrap_or(0);
            if !self.block_terms(newest + 1..token)? {
                continue; // a blocked term created its directory meanwhile: look again
            }
            for &t in &live {
                self.seal(t)?;
            }
            let source = self
                .term_dirs(&self.layout.sealed())?
                .into_iter()
                .filter(|&t| t < token)
                .max();
            let snapshot = match source {
                Some(t) => Snapshot::read(&self.layout.sealed_dir(t))
                    .map_err(|e| unavailable("read predecessor state", e))?,
                None => Snapshot::default(),
            };
            let src_dir = source.map(|t| self.layout.sealed_dir(t));
            if !self.create_term_dir(token, &snapshot, src_dir.as_deref())? {
                return Ok(Takeover::Superseded);
            }
            for t in self
                .term_dirs(&self.layout.sealed())?
                .into_iter()
                .filter(|&t| t < token)
            {
                let _ = fs::remove_dir_all(self.layout.sealed_dir(t));
            }
            fsx::sweep_tmp(
                &self.layout.state_tmp(),
                self.session,
                std::time::Duration::from_secs(60),
            );
            return Ok(Takeover::Done);
        }
        Err(Failure::Unavailable(
            "state takeover kept racing with other terms; will retry".into(),
        ))
    }

    /// Term numbers of the directories in `dir` (live and skipped alike).
    fn term_dirs(&self, dir: &Path) -> Result<Vec<u64>> {
        match fsx::names(dir) {
            Ok(names) => Ok(names
                .iter()
                .filter_map(|n| parse_term_dir_name(n))
                .collect()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(unavailable("list state directory", e)),
        }
    }

    /// Places a `.skipped` directory at each term in `range`. False if one of
    /// them exists already (its holder created it after all).
    fn block_terms(&self, range: std::ops::Range<u64>) -> Result<bool> {
        for t in range {
            let tmp = self.new_tmp_dir()?;
            fs::write(tmp.join(SKIPPED_MARKER), b"")
                .map_err(|e| unavailable("write skipped marker", e))?;
            if !self.place_dir(&tmp, &self.layout.live_dir(t))? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    fn seal(&self, token: u64) -> Result<()> {
        let from = self.layout.live_dir(token);
        if from.join(SKIPPED_MARKER).exists() {
            return Ok(());
        }
        fsx::ensure_dir(&self.layout.sealed())
            .map_err(|e| unavailable("create sealed directory", e))?;
        match fs::rename(&from, self.layout.sealed_dir(token)) {
            Ok(()) => Ok(()),
            // Sealed by a concurrent successor.
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(&format!("seal state of term {token}"), e)),
        }
    }

    /// Builds the new term's directory in tmp, then renames it into place.
    /// False if the place is taken (a successor blocked this term).
    fn create_term_dir(&self, token: u64, snap: &Snapshot, src: Option<&Path>) -> Result<bool> {
        let tmp = self.new_tmp_dir()?;
        let io = |e| unavailable("build term state directory", e);
        fsx::write_durable(
            &tmp.join(BASE_MARKER),
            snap.max_version.to_string().as_bytes(),
        )
        .map_err(io)?;
        if let Some(src) = src {
            for kf in snap.keys.values().filter(|kf| !kf.deleted) {
                let value = fs::read(kf.path_in(src)).map_err(io)?;
                fsx::write_durable(&kf.path_in(&tmp), &value).map_err(io)?;
            }
        }
        self.place_dir(&tmp, &self.layout.live_dir(token))
    }

    /// Renames a complete directory to `dst`; false if `dst` already exists.
    fn place_dir(&self, tmp: &Path, dst: &Path) -> Result<bool> {
        match fs::rename(tmp, dst) {
            Ok(()) => Ok(true),
            Err(e) => {
                let _ = fs::remove_dir_all(tmp);
                if dst.exists() {
                    Ok(false)
                } else {
                    Err(unavailable(&format!("place {}", dst.display()), e))
                }
            }
        }
    }

    fn new_tmp_dir(&self) -> Result<PathBuf> {
        let io = |e| unavailable("create tmp directory", e);
        fsx::ensure_dir(&self.layout.state_tmp()).map_err(io)?;
        let tmp = fsx::tmp_path(&self.layout.state_tmp(), self.session);
        fs::create_dir(&tmp).map_err(io)?;
        Ok(tmp)
    }

    /// The directory holding the newest state: the live directory of the
    /// latest term that took over, or a sealed one during a handover.
    fn newest_data_dir(&self) -> Result<Option<PathBuf>> {
        let mut live = self.term_dirs(&self.layout.state())?;
        live.sort_unstable();
        let newest_live = live
            .into_iter()
            .rev()
            .find(|&t| !self.layout.live_dir(t).join(SKIPPED_MARKER).exists());
        let newest_sealed = self.term_dirs(&self.layout.sealed())?.into_iter().max();
        Ok(match (newest_live, newest_sealed) {
            (Some(l), Some(s)) if s > l => Some(self.layout.sealed_dir(s)),
            (Some(l), _) => Some(self.layout.live_dir(l)),
            (None, Some(s)) => Some(self.layout.sealed_dir(s)),
            (None, None) => None,
        })
    }

    /// Runs `f` on the newest state directory, retrying when a handover
    /// moves it away mid-read.
    fn with_newest<T>(&self, f: impl Fn(&Path) -> std::io::Result<T>) -> Result<Option<T>> {
        for _ in 0..8 {
            let Some(dir) = self.newest_data_dir()? else {
                return Ok(None);
            };
            match f(&dir) {
                Ok(v) => return Ok(Some(v)),
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable("read state", e)),
            }
        }
        Err(Failure::Unavailable(
            "state kept moving during a handover; retry".into(),
        ))
    }

    pub fn get(&self, key: &str) -> Result<Option<Versioned>> {
        if let Some((path, version)) = remembered(key) {
            match fs::read(&path) {
                Ok(value) => return Ok(Some(Versioned { value, version })),
                Err(_) => forget(key),
            }
        }
        let live = self.layout.state();
        let found = self.with_newest(|dir| {
            let snap = Snapshot::read(dir)?;
            match snap.live(key) {
                Some(kf) => {
                    let path = kf.path_in(dir);
                    let value = fs::read(&path)?;
                    if dir.parent() == Some(live.as_path()) {
                        remember(key, path, kf.version);
                    }
                    Ok(Some(Versioned {
                        value,
                        version: kf.version,
                    }))
                }
                None => Ok(None),
            }
        })?;
        Ok(found.flatten())
    }

    pub fn list(&self, prefix: &str) -> Result<Vec<String>> {
        let keys = self.with_newest(|dir| {
            let snap = Snapshot::read(dir)?;
            Ok(snap
                .keys
                .values()
                .filter(|kf| !kf.deleted && kf.key.starts_with(prefix))
                .map(|kf| kf.key.clone())
                .collect())
        })?;
        Ok(keys.unwrap_or_default())
    }

    /// Writes (or, with `value` none, deletes) `key` in term `token`'s
    /// directory. The caller has checked that this process holds `token`.
    pub fn write(
        &self,
        token: u64,
        key: &str,
        value: Option<&[u8]>,
        expected: Option<u64>,
    ) -> Result<u64> {
        let dir = self.layout.live_dir(token);
        let snap = match Snapshot::read(&dir) {
            Ok(s) => s,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Failure::NotLeader),
            Err(e) => return Err(unavailable("read state", e)),
        };
        let current = snap.live(key);
        let matches = match expected {
            None => true,
            Some(0) => current.is_none(),
            Some(v) => current.is_some_and(|kf| kf.version == v),
        };
        if !matches {
            let value = match current {
                Some(kf) => Some(Versioned {
                    value: fs::read(kf.path_in(&dir)).map_err(|e| unavailable("read state", e))?,
                    version: kf.version,
                }),
                None => None,
            };
            return Err(Failure::Conflict(value));
        }
        if value.is_none() && current.is_none() {
            return Ok(snap.max_version); // deleting an absent key: nothing to do
        }
        let next = KeyFile {
            key: key.to_string(),
            version: snap.max_version + 1,
            deleted: value.is_none(),
        };
        fsx::ensure_dir(&self.layout.state_tmp())
            .map_err(|e| unavailable("create tmp directory", e))?;
        let tmp = fsx::tmp_path(&self.layout.state_tmp(), self.session);
        fsx::write_durable(&tmp, value.unwrap_or_default())
            .map_err(|e| unavailable("write value", e))?;
        match fsx::publish_new(&tmp, &next.path_in(&dir)) {
            Ok(()) => {}
            // Our term's directory was sealed by a successor: we are fenced.
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(Failure::NotLeader),
            Err(e) => return Err(unavailable("publish value", e)),
        }
        if let Some(old) = snap.keys.get(key) {
            let _ = fs::remove_file(old.path_in(&dir));
        }
        match value {
            Some(_) => remember(key, next.path_in(&dir), next.version),
            None => forget(key),
        }
        Ok(next.version)
    }
}
