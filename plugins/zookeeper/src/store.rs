//! State in Flink's layout: one znode per key under `<root>/<cluster-id>/`.
//!
//! Versions are the node's `mzxid`, which grows across the whole ensemble
//! and never repeats, even when a key is deleted and created again (a znode's
//! own version restarts at 0). A compare-and-set reads the node, checks the
//! `mzxid`, then writes at the node's version, so a write in between fails.
//! A fenced write is one `multi`: a check that the leader's latch node still
//! exists, and the write. Latch nodes are ephemeral and never come back, so
//! if the check passes the term is current at the moment of the write.
//! A write without an expected version needs no read first, and the term's
//! latch node, once found, is remembered: such a fenced write is one round
//! trip, `multi(check, setData)`.

use ha_sidecar_sdk::zookeeper::{self as zk, CreateMode, Op, OpResult, ZkError};
use ha_sidecar_sdk::{Failure, Result, Versioned};

use crate::flink;
use crate::paths::{Paths, VALUE_TAG, parent};
use crate::zk_failure;

/// A key's node: its value (None for a node that only holds children) and
/// stat. A value is the plugin's own (tagged) or one Flink's own ZooKeeper HA
/// wrote before the cluster moved to the sidecar (untagged, see `flink`).
fn read(path: &str) -> Result<Option<(Option<Vec<u8>>, zk::Stat)>> {
    Ok(zk::get(path).map_err(zk_failure)?.map(|(data, stat)| {
        let value = match data.split_first() {
            Some((&VALUE_TAG, rest)) => Some(rest.to_vec()),
            _ if flink::written_by_flink(path, &data) => Some(ha_sidecar_sdk::foreign_value(&data)),
            _ => None,
        };
        (value, stat)
    }))
}

fn tagged(value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(value.len() + 1);
    out.push(VALUE_TAG);
    out.extend_from_slice(value);
    out
}

fn version_of(stat: &zk::Stat) -> u64 {
    stat.mzxid as u64
}

pub fn get(paths: &Paths, key: &str) -> Result<Option<Versioned>> {
    Ok(match read(&paths.key(key)?)? {
        Some((Some(value), stat)) => Some(Versioned {
            value,
            version: version_of(&stat),
        }),
        _ => None,
    })
}

/// The check that `token` is the current term: its latch node must be the
/// lowest. A node that is lowest stays lowest until it is deleted (sequence
/// numbers only grow), so the listing here plus the atomic existence check in
/// the multi prove the term current at the moment of the write. A standby's
/// node exists too, but is not the lowest: its token never passes.
fn fence_check(paths: &Paths, token: u64) -> Result<Op> {
    if let Some(node) = remembered_latch(token) {
        return Ok(Op::Check((node, -1)));
    }
    let dir = paths.latch_dir();
    let children = match zk::children(&dir) {
        Ok(c) => c,
        Err(ZkError::NoNode) => return Err(Failure::NotLeader),
        Err(e) => return Err(zk_failure(e)),
    };
    let lowest = children
        .into_iter()
        .filter_map(|n| crate::paths::sequence(&n).map(|s| (s, n)))
        .min();
    match lowest {
        Some((seq, node)) if seq == token => {
            let node = format!("{dir}/{node}");
            remember_latch(token, &node);
            Ok(Op::Check((node, -1)))
        }
        _ => Err(Failure::NotLeader),
    }
}

/// The latch node last found to be term `token`'s, lowest at the time.
/// Remembering it is safe: a lowest node stays lowest until it is deleted
/// and is never created again, so the multi's existence check alone proves
/// the term current. (Per instance: a plugin instance runs one call at a time.)
static LATCH: std::sync::Mutex<Option<(u64, String)>> = std::sync::Mutex::new(None);

fn remembered_latch(token: u64) -> Option<String> {
    let latch = LATCH.lock().unwrap_or_else(|e| e.into_inner());
    latch
        .as_ref()
        .filter(|(t, _)| *t == token)
        .map(|(_, n)| n.clone())
}

fn remember_latch(token: u64, node: &str) {
    *LATCH.lock().unwrap_or_else(|e| e.into_inner()) = Some((token, node.to_string()));
}

/// Runs `write` (one op) after the fence check, if any. Returns the op's result.
fn commit(
    paths: &Paths,
    fence: Option<u64>,
    write: Op,
) -> std::result::Result<OpResult, (bool, ZkError)> {
    let mut ops = Vec::new();
    if let Some(token) = fence {
        match fence_check(paths, token) {
            Ok(op) => ops.push(op),
            Err(Failure::NotLeader) => return Err((true, ZkError::NoNode)),
            Err(e) => return Err((false, ZkError::Other(format!("{e:?}")))),
        }
    }
    let fenced = fence.is_some();
    match zk::multi(&ops.into_iter().chain([write]).collect::<Vec<_>>()) {
        Ok(mut results) => Ok(results.pop().expect("one result per op")),
        // The check failed: the term is gone.
        Err((0, ZkError::NoNode | ZkError::BadVersion)) if fenced => Err((true, ZkError::NoNode)),
        Err((_, e)) => Err((false, e)),
    }
}

/// Maps a failed write: a failed fence is not-leader; a failed condition on
/// the key itself is a conflict with whatever the key holds now.
fn write_failure(paths: &Paths, key: &str, fenced_out: bool, e: ZkError) -> Failure {
    if fenced_out {
        return Failure::NotLeader;
    }
    match e {
        ZkError::BadVersion | ZkError::NodeExists | ZkError::NoNode => match get(paths, key) {
            Ok(current) => Failure::Conflict(current),
            Err(f) => f,
        },
        other => zk_failure(other),
    }
}

pub fn put(
    paths: &Paths,
    key: &str,
    value: &[u8],
    expected: Option<u64>,
    fence: Option<u64>,
) -> Result<u64> {
    let path = paths.key(key)?;
    if expected.is_none() {
        return put_blind(paths, key, &path, value, fence);
    }
    for _ in 0..5 {
        let current = read(&path)?;
        let matches = match (expected, &current) {
            (None, _) => true,
            (Some(0), None | Some((None, _))) => true,
            (Some(v), Some((Some(_), stat))) => version_of(stat) == v,
            _ => false,
        };
        if !matches {
            if let Some(token) = fence {
                // A stale term must win over a lost compare-and-set.
                fence_check(paths, token)?;
            }
            return Err(Failure::Conflict(get(paths, key)?));
        }
        let op = match &current {
            Some((_, stat)) => Op::SetData((path.clone(), tagged(value), stat.version)),
            None => Op::Create((path.clone(), tagged(value), CreateMode::Persistent)),
        };
        match commit(paths, fence, op) {
            Ok(OpResult::Set(stat)) => return Ok(version_of(&stat)),
            Ok(OpResult::Created((_, stat))) if stat.mzxid > 0 => return Ok(version_of(&stat)),
            // Servers before 3.7 return no stat for a create in a multi
            // (ZOOKEEPER-4026): read it back, and trust it only if nobody
            // changed the node since it was created.
            Ok(_) => {
                return match read(&path)? {
                    Some((Some(_), stat)) if stat.czxid == stat.mzxid => Ok(version_of(&stat)),
                    _ => Err(Failure::Unavailable("written, but the new version cannot be told (the node changed right after); read it again".into())),
                };
            }
            // The parent does not exist yet: create it, then try once more.
            Err((false, ZkError::NoNode)) if current.is_none() => {
                zk::ensure_path(parent(&path)).map_err(zk_failure)?;
            }
            // Another write slipped in; the caller asked for no particular version.
            Err((false, ZkError::BadVersion | ZkError::NodeExists)) if expected.is_none() => {}
            Err((fenced_out, e)) => return Err(write_failure(paths, key, fenced_out, e)),
        }
    }
    Err(Failure::Unavailable(format!(
        "{path} kept changing during the write; retry"
    )))
}

/// A write at whatever version the node is: `setData` at version -1, or a
/// create if the node is missing, each in one multi with the fence check.
fn put_blind(
    paths: &Paths,
    key: &str,
    path: &str,
    value: &[u8],
    fence: Option<u64>,
) -> Result<u64> {
    let mut exists = true;
    for _ in 0..5 {
        let op = if exists {
            Op::SetData((path.to_string(), tagged(value), -1))
        } else {
            Op::Create((path.to_string(), tagged(value), CreateMode::Persistent))
        };
        match commit(paths, fence, op) {
            Ok(OpResult::Set(stat)) => return Ok(version_of(&stat)),
            Ok(OpResult::Created((_, stat))) if stat.mzxid > 0 => return Ok(version_of(&stat)),
            // Servers before 3.7 return no stat for a create in a multi
            // (ZOOKEEPER-4026): as in `put`.
            Ok(_) => {
                return match read(path)? {
                    Some((Some(_), stat)) if stat.czxid == stat.mzxid => Ok(version_of(&stat)),
                    _ => Err(Failure::Unavailable("written, but the new version cannot be told (the node changed right after); read it again".into())),
                };
            }
            // No node yet: create it (the second time round, its parent first).
            Err((false, ZkError::NoNode)) if exists => exists = false,
            Err((false, ZkError::NoNode)) => {
                zk::ensure_path(parent(path)).map_err(zk_failure)?;
            }
            // Created meanwhile by another write: set it after all.
            Err((false, ZkError::NodeExists)) => exists = true,
            Err((fenced_out, e)) => return Err(write_failure(paths, key, fenced_out, e)),
        }
    }
    Err(Failure::Unavailable(format!(
        "{path} kept changing during the write; retry"
    )))
}

pub fn delete(paths: &Paths, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
    let path = paths.key(key)?;
    let current = read(&path)?;
    let Some((Some(_), stat)) = &current else {
        return match expected {
            Some(_) => {
                if let Some(token) = fence {
                    fence_check(paths, token)?;
                }
                Err(Failure::Conflict(None))
            }
            None => {
                if let Some(token) = fence {
                    fence_check(paths, token)?;
                }
                Ok(())
            }
        };
    };
    if expected.is_some_and(|v| v != version_of(stat)) {
        if let Some(token) = fence {
            fence_check(paths, token)?;
        }
        return Err(Failure::Conflict(get(paths, key)?));
    }
    // A key whose node also holds other keys keeps the node, without a value.
    let op = if stat.num_children == 0 {
        Op::Delete((path.clone(), stat.version))
    } else if let Some(locks) = released_locks(&path, stat.num_children)? {
        // A node Flink's own HA wrote, whose `locks` child no JobManager
        // holds any more: both go, the node only if unchanged.
        return delete_with_locks(paths, key, &path, &locks, stat.version, fence);
    } else {
        Op::SetData((path.clone(), Vec::new(), stat.version))
    };
    commit(paths, fence, op).map_err(|(fenced_out, e)| write_failure(paths, key, fenced_out, e))?;
    prune(paths, parent(&path));
    Ok(())
}

/// The path of `node`'s `locks` child if that is its only child and holds no
/// lock: what Flink's state handle store leaves once no JobManager uses the
/// state any more.
fn released_locks(node: &str, children: i32) -> Result<Option<String>> {
    if children != 1 {
        return Ok(None);
    }
    let locks = format!("{node}/{}", flink::LOCKS);
    Ok(match zk::get(&locks).map_err(zk_failure)? {
        Some((_, stat)) if stat.num_children == 0 => Some(locks),
        _ => None,
    })
}

/// Deletes a node and its released `locks` child in one step: the node's
/// version and (when fenced) the term are checked in the same `multi`.
fn delete_with_locks(
    paths: &Paths,
    key: &str,
    path: &str,
    locks: &str,
    version: i32,
    fence: Option<u64>,
) -> Result<()> {
    let mut ops = Vec::new();
    if let Some(token) = fence {
        ops.push(fence_check(paths, token)?);
    }
    let checks = ops.len() as u32;
    ops.push(Op::Delete((locks.to_string(), -1)));
    ops.push(Op::Delete((path.to_string(), version)));
    match zk::multi(&ops) {
        Ok(_) => {
            prune(paths, parent(path));
            Ok(())
        }
        Err((i, ZkError::NoNode | ZkError::BadVersion)) if i < checks => Err(Failure::NotLeader),
        Err((_, e)) => Err(write_failure(paths, key, false, e)),
    }
}

/// Removes empty parents left behind (e.g. `jobs/<id>/checkpoints` after the
/// last checkpoint), up to the cluster's base node. Best effort: a parent
/// that gained a child meanwhile is simply not empty.
fn prune(paths: &Paths, mut path: &str) {
    while path.len() > paths.base.len() && path.starts_with(&paths.base) {
        match zk::get(path) {
            Ok(Some((data, stat))) if data.is_empty() && stat.num_children == 0 => {
                if zk::delete(path, stat.version).is_err() {
                    return;
                }
            }
            _ => return,
        }
        path = parent(path);
    }
}

pub fn list(paths: &Paths, prefix: &str) -> Result<Vec<String>> {
    // Start at the deepest node the prefix names fully, then filter.
    let dir_part = prefix.rsplit_once('/').map_or("", |(d, _)| d);
    let start = if dir_part.is_empty() {
        paths.base.clone()
    } else {
        format!("{}/{dir_part}", paths.base)
    };
    let mut keys = Vec::new();
    let mut stack = vec![start];
    while let Some(node) = stack.pop() {
        let children = match zk::children(&node) {
            Ok(c) => c,
            Err(ZkError::NoNode) => continue,
            Err(e) => return Err(zk_failure(e)),
        };
        for child in children {
            let path = format!("{node}/{child}");
            let key = &path[paths.base.len() + 1..];
            // The election's nodes. (The `locks` children of nodes Flink's
            // own HA wrote hold no value, so they are never listed.)
            if key == "leader" {
                continue;
            }
            // Descend only where keys with the prefix can be.
            if !(key.starts_with(prefix) || prefix.starts_with(&format!("{key}/"))) {
                continue;
            }
            if key.starts_with(prefix)
                && let Some((Some(_), _)) = read(&path)?
            {
                keys.push(key.to_string());
            }
            stack.push(path);
        }
    }
    keys.sort();
    Ok(keys)
}
