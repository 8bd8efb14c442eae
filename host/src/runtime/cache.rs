//! On-disk cache of compiled plugins, so a restart loads native code in well
//! under a millisecond instead of compiling for tens of milliseconds (or
//! seconds, for a large plugin on a busy machine).
//!
//! The key covers the plugin's bytes and everything about the engine that
//! affects compiled code (wasmtime's compatibility hash includes its version
//! and settings), so a changed plugin or engine recompiles by itself.
//!
//! Loading compiled code is `unsafe` in wasmtime because native code is
//! trusted as is. The cache only ever loads files this sidecar wrote; the cache
//! directory must be writable by the sidecar's user alone.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// Feeds a `Hash` value into SHA-256, for a cache key that is stable across
/// processes (std's `DefaultHasher` is not guaranteed to be).
struct ShaHasher(Sha256);

impl Hasher for ShaHasher {
    fn finish(&self) -> u64 {
        unreachable!("only the full digest is used")
    }
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
}

pub fn cache_key(engine: &Engine, wasm_sha256: &str) -> String {
    let mut h = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut h);
    wasm_sha256.hash(&mut h);
    hex::encode(h.0.finalize())
}

/// How the component was obtained, for the start-up log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Compiled,
}

/// Loads the compiled component from `dir` if present, else compiles `wasm`
/// and stores the result. Cache failures only cost time: they are logged and
/// the plugin is compiled in memory.
pub fn load_or_compile(
    engine: &Engine,
    wasm: &[u8],
    wasm_sha256: &str,
    dir: Option<&Path>,
) -> anyhow::Result<(Component, Source)> {
    let Some(dir) = dir else {
        return Ok((Component::new(engine, wasm)?, Source::Compiled));
    };
    let path = dir.join(format!("{}.cwasm", cache_key(engine, wasm_sha256)));
    if path.is_file() {
        let started = Instant::now();
        // SAFETY: the file is in the sidecar's own cache directory, named by
        // the hash of the plugin and the engine settings, and was written by
        // `store` below from wasmtime's own serialization.
        match unsafe { Component::deserialize_file(engine, &path) } {
            Ok(c) => {
                tracing::debug!(path = %path.display(), took_us = started.elapsed().as_micros() as u64, "plugin loaded from compile cache");
                return Ok((c, Source::Cache));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "compile cache entry unusable; recompiling")
            }
        }
    }
    let started = Instant::now();
    let component = Component::new(engine, wasm)?;
    tracing::info!(
        took_ms = started.elapsed().as_millis() as u64,
        "plugin compiled"
    );
    if let Err(e) = store(&component, dir, &path) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot write the compile cache; the next start compiles again");
    }
    Ok((component, Source::Compiled))
}

/// Removes the entry `load_or_compile` just stored for a plugin that was
/// then refused, so that a refused start leaves the cache as it found it.
pub fn forget(engine: &Engine, wasm_sha256: &str, dir: Option<&Path>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_file(dir.join(format!("{}.cwasm", cache_key(engine, wasm_sha256))));
    }
}

fn store(component: &Component, dir: &Path, path: &PathBuf) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4()
    ));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}
