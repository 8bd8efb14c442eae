//! The "cut one sidecar off from its backend" fault of the fault schedules,
//! shared by every backend reached through proxies (`proxy.rs`): each
//! sidecar reaches each server of the backend only through a proxy of its
//! own, so cutting one sidecar's proxies partitions it alone.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::time::Instant;

use super::proxy::{Mode, Proxy};
use super::schedule::Rng;

/// The fault kinds `Cuts::inject` takes.
pub const KINDS: [&str; 2] = ["cut blackhole", "cut reset"];

pub struct Cuts {
    /// `proxies[sidecar]`: its proxies, one per server.
    pub proxies: Vec<Vec<Proxy>>,
    /// Per sidecar: when its cut heals.
    until: Vec<Option<Instant>>,
    /// What the sidecars are cut off from, for the schedule's log.
    backend: &'static str,
}

impl Cuts {
    pub fn new(proxies: Vec<Vec<Proxy>>, backend: &'static str) -> Self {
        let until = vec![None; proxies.len()];
        Cuts {
            proxies,
            until,
            backend,
        }
    }

    fn set(&mut self, node: usize, mode: Mode, until: Instant) {
        for p in &self.proxies[node] {
            p.set(mode);
        }
        self.until[node] = (mode != Mode::Pass).then_some(until);
    }

    /// Cuts `target` off for a random while (one of [`KINDS`]); None if it
    /// is cut off already.
    pub fn inject(&mut self, kind: &str, target: usize, rng: &mut Rng) -> Option<String> {
        if self.until[target].is_some() {
            return None;
        }
        let mode = match kind {
            "cut blackhole" => Mode::Blackhole,
            "cut reset" => Mode::Reset,
            other => panic!("not a cut: {other}"),
        };
        let outage = rng.millis(500, 4000);
        self.set(target, mode, Instant::now() + outage);
        Some(format!(
            "s{} cut off from {} ({mode:?}) for {outage:?}",
            target + 1,
            self.backend
        ))
    }

    /// Heals the cuts whose time is up.
    pub fn tick(&mut self) -> Vec<String> {
        let now = Instant::now();
        let mut said = Vec::new();
        for node in 0..self.until.len() {
            if self.until[node].is_some_and(|until| now >= until) {
                self.set(node, Mode::Pass, now);
                said.push(format!("s{} reconnected to {}", node + 1, self.backend));
            }
        }
        said
    }

    pub fn heal(&mut self) {
        let now = Instant::now();
        for node in 0..self.until.len() {
            self.set(node, Mode::Pass, now);
        }
    }
}
