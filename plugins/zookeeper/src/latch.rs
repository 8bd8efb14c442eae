//! Election as Curator's LeaderLatch does it: every candidate owns one
//! ephemeral-sequential node under `leader/latch`; the lowest leads; each
//! candidate watches only its predecessor, so a change wakes one candidate,
//! not all. The token is the leader's sequence number: a newer candidate
//! always gets a higher one, so tokens grow with every new leader.
//!
//! The latch nodes are also the members view (they live as long as their
//! candidates' sessions). A handover to a chosen candidate deletes, in one
//! `multi` checked against the successor's node, the leader's node and
//! every node queued before the successor's: the successor is then the
//! lowest and leads by the usual rule, and the candidates it overtook queue
//! again at the tail when they next campaign. Nothing new can lead, so the
//! handover is as safe as a resignation.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ha_sidecar_sdk::zookeeper::{self as zk, CreateMode, SessionState, ZkError};
use ha_sidecar_sdk::{Failure, Member, Result, Term, invalid, log};
use serde::{Deserialize, Serialize};

use crate::paths::{Paths, sequence};
use crate::zk_failure;

/// What a candidate writes into its latch node (and rewrites when it leads).
#[derive(Serialize, Deserialize)]
struct Candidate {
    id: String,
    address: String,
    /// When it began to lead (Unix ms), 0 while it waits.
    since_ms: u64,
    /// When it joined the queue (Unix ms); 0 in nodes of older versions.
    #[serde(default)]
    joined_ms: u64,
}

pub struct Latch {
    pub me: Member,
    /// The sidecar's random per-run session id: unique node names without
    /// another source of randomness.
    run: String,
    created: u64,
    /// This instance's latch node, once created.
    node: Option<String>,
}

impl Latch {
    pub fn new(me: Member, run: String) -> Self {
        Self {
            me,
            run,
            created: 0,
            node: None,
        }
    }

    /// Our node, created if we have none alive in this session. A node of
    /// ours that survived a reconnect (the session did) is kept: it still
    /// holds our place in the queue, and if it is the lowest we lead again
    /// under the same term without waiting for anyone. Stale nodes are
    /// removed so they cannot lead or hold the queue up: those of this
    /// session (from an instance that was replaced) and those named with
    /// this sidecar's run id but owned by an earlier session of it (the
    /// host stepped down when it lost that session, and the ensemble would
    /// only drop them once it expires the session: up to one more session
    /// timeout with nobody leading).
    fn ensure_node(&mut self, paths: &Paths) -> Result<String> {
        let session = zk::session().id;
        if let Some(node) = &self.node
            && zk::exists(node)
                .map_err(zk_failure)?
                .is_some_and(|stat| stat.ephemeral_owner == session)
        {
            return Ok(node.clone());
        }
        let dir = paths.latch_dir();
        zk::ensure_path(&dir).map_err(zk_failure)?;
        let mine = format!("_c_{}", self.run);
        for child in zk::children(&dir).map_err(zk_failure)? {
            let path = format!("{dir}/{child}");
            if let Ok(Some(stat)) = zk::exists(&path)
                && (stat.ephemeral_owner == session || child.starts_with(&mine))
            {
                log::debug(&format!("removing stale candidate node {path}"));
                let _ = zk::delete(&path, -1);
            }
        }
        let data = serde_json::to_vec(&Candidate {
            id: self.me.id.clone(),
            address: self.me.address.clone(),
            since_ms: 0,
            joined_ms: now_ms(),
        })
        .expect("serializes");
        // Curator's naming, so tools that know Flink's tree recognise it.
        self.created += 1;
        let prefix = format!("{dir}/_c_{}{:x}-latch-", self.run, self.created);
        let (node, _) =
            zk::create(&prefix, &data, CreateMode::EphemeralSequential).map_err(zk_failure)?;
        log::debug(&format!("candidate node {node}"));
        self.node = Some(node.clone());
        Ok(node)
    }

    /// Candidates' nodes, lowest sequence first.
    fn queue(paths: &Paths) -> Result<Vec<(u64, String)>> {
        let dir = paths.latch_dir();
        let mut q: Vec<(u64, String)> = match zk::children(&dir) {
            Ok(c) => c
                .into_iter()
                .filter_map(|n| sequence(&n).map(|s| (s, format!("{dir}/{n}"))))
                .collect(),
            Err(ZkError::NoNode) => Vec::new(),
            Err(e) => return Err(zk_failure(e)),
        };
        q.sort();
        Ok(q)
    }

    pub fn campaign(&mut self, paths: &Paths, wait: Duration) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        loop {
            let node = self.ensure_node(paths)?;
            let queue = Self::queue(paths)?;
            let Some(pos) = queue.iter().position(|(_, p)| *p == node) else {
                // Our node went (session trouble) or has a name we cannot
                // order: look again, within the wait.
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                self.node = None;
                continue;
            };
            if pos == 0 {
                return self.claim(&node, queue[0].0).map(Some);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            // Only the predecessor matters: when it goes, look again.
            let predecessor = &queue[pos - 1].1;
            zk::wait_change(predecessor, false, left.as_millis() as u32).map_err(zk_failure)?;
        }
    }

    /// Checks that the lowest node really is ours (owned by this very
    /// session) before calling ourselves leader, then records when we began.
    fn claim(&mut self, node: &str, seq: u64) -> Result<Term> {
        let session = zk::session();
        let stat = zk::exists(node)
            .map_err(zk_failure)?
            .ok_or(Failure::NotLeader)?;
        if stat.ephemeral_owner != session.id || session.state != SessionState::Connected {
            return Err(Failure::Unavailable(
                "the latch node is not owned by this connected session".into(),
            ));
        }
        let since_ms = now_ms();
        let joined_ms = zk::get(node)
            .ok()
            .flatten()
            .and_then(|(data, _)| serde_json::from_slice::<Candidate>(&data).ok())
            .map_or(since_ms, |c| c.joined_ms);
        let data = serde_json::to_vec(&Candidate {
            id: self.me.id.clone(),
            address: self.me.address.clone(),
            since_ms,
            joined_ms,
        })
        .expect("serializes");
        zk::set(node, &data, -1).map_err(zk_failure)?;
        Ok(Term {
            holder: self.me.clone(),
            token: seq,
            handle: node.to_string(),
            since_ms,
        })
    }

    /// Leadership holds while our node exists, belongs to our session, and
    /// the session is connected.
    pub fn keep(&self, term: &Term) -> Result<()> {
        let session = zk::session();
        if session.state != SessionState::Connected {
            return Err(Failure::Unavailable(format!(
                "the ZooKeeper session is {:?}",
                session.state
            )));
        }
        match zk::exists(&term.handle).map_err(zk_failure)? {
            Some(stat) if stat.ephemeral_owner == session.id => Ok(()),
            _ => Err(Failure::NotLeader),
        }
    }

    pub fn resign(&mut self, term: &Term) -> Result<()> {
        match zk::delete(&term.handle, -1) {
            Ok(()) | Err(ZkError::NoNode) => {}
            Err(e) => return Err(zk_failure(e)),
        }
        if self.node.as_deref() == Some(term.handle.as_str()) {
            self.node = None;
        }
        Ok(())
    }

    /// The current leader: the lowest candidate.
    pub fn leader(paths: &Paths, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        loop {
            let current = match Self::queue(paths)?.into_iter().next() {
                None => None,
                Some((seq, path)) => match zk::get(&path).map_err(zk_failure)? {
                    None => continue, // it just went: look again
                    Some((data, _)) => {
                        let c: Candidate = serde_json::from_slice(&data).unwrap_or(Candidate {
                            id: String::new(),
                            address: String::new(),
                            since_ms: 0,
                            joined_ms: 0,
                        });
                        Some(Term {
                            holder: Member {
                                id: c.id,
                                address: c.address,
                            },
                            token: seq,
                            handle: path,
                            since_ms: c.since_ms,
                        })
                    }
                },
            };
            let left = deadline.saturating_duration_since(Instant::now());
            if current.as_ref().map(|t| t.token) != known || left.is_zero() {
                return Ok(current);
            }
            let dir = paths.latch_dir();
            if let Err(e) = zk::ensure_path(&dir) {
                return Err(zk_failure(e));
            }
            zk::wait_change(&dir, true, left.as_millis() as u32).map_err(zk_failure)?;
        }
    }

    /// The queued candidates, lowest first, one per member id (a member's
    /// lowest node; a stale one of its is removed at its next campaign).
    fn candidates(paths: &Paths) -> Result<Vec<(String, Candidate)>> {
        let mut out: Vec<(String, Candidate)> = Vec::new();
        for (_, path) in Self::queue(paths)? {
            let Some((data, _)) = zk::get(&path).map_err(zk_failure)? else {
                continue; // it just went
            };
            let Ok(c) = serde_json::from_slice::<Candidate>(&data) else {
                continue; // not a node of ours
            };
            if !out.iter().any(|(_, o)| o.id == c.id) {
                out.push((path, c));
            }
        }
        Ok(out)
    }

    /// Every queued candidate; the lowest leads.
    pub fn members(paths: &Paths) -> Result<Vec<ha_sidecar_sdk::Candidate>> {
        Ok(Self::candidates(paths)?
            .into_iter()
            .enumerate()
            .map(|(i, (_, c))| ha_sidecar_sdk::Candidate {
                member: Member {
                    id: c.id,
                    address: c.address,
                },
                leads: i == 0,
                since_ms: c.joined_ms,
                seen_ms: None,
            })
            .collect())
    }

    /// Deletes, in one multi checked against `to`'s node, our node and
    /// every node queued before `to`'s (module docs).
    pub fn hand_over(&mut self, paths: &Paths, term: &Term, to: &str) -> Result<()> {
        if to == self.me.id {
            return Err(invalid(format!(
                "{to:?} is this sidecar, the leader itself: name a standby"
            )));
        }
        let queue = Self::queue(paths)?;
        let candidates = Self::candidates(paths)?;
        let Some((target, _)) = candidates.iter().find(|(_, c)| c.id == to) else {
            let known: Vec<&str> = candidates.iter().map(|(_, c)| c.id.as_str()).collect();
            return Err(invalid(format!(
                "{to:?} is not a candidate of this cluster (candidates: {})",
                known.join(", ")
            )));
        };
        let mut ops = vec![zk::Op::Check((target.clone(), -1))];
        for (_, path) in queue.iter().take_while(|(_, p)| p != target) {
            ops.push(zk::Op::Delete((path.clone(), -1)));
        }
        if !ops
            .iter()
            .any(|op| matches!(op, zk::Op::Delete((p, _)) if *p == term.handle))
        {
            // Our node is not ahead of the successor's: we do not lead.
            return Err(Failure::NotLeader);
        }
        match zk::multi(&ops) {
            Ok(_) => {}
            Err((0, ZkError::NoNode)) => {
                return Err(invalid(format!(
                    "{to:?} left the election just now: it is not a live candidate"
                )));
            }
            Err((_, ZkError::NoNode)) => {
                return Err(Failure::Unavailable(
                    "the queue changed during the handover; nothing was changed, try again".into(),
                ));
            }
            Err((_, e)) => return Err(zk_failure(e)),
        }
        if self.node.as_deref() == Some(term.handle.as_str()) {
            self.node = None;
        }
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
