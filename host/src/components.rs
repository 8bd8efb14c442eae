//! Per-component leader information: who serves each of the leader's
//! components (Flink's dispatcher, resource manager, REST server, one
//! JobMaster per job) at which address, under which leader session.
//!
//! Flink's components learn their addresses only once they run, so the
//! leader publishes each at confirm time, fenced by its term, and deletes it
//! when the component stops. Entries live in the backend as fenced state
//! under [`PREFIX`] (one key per component, written only by the leader), so
//! an observer beside a TaskManager reads the same entries from the same
//! backend. Each sidecar keeps a copy in memory, refreshed while anyone has
//! asked for it, so a retriever's long poll never waits on the backend.
//!
//! An entry is handed out only while its term is the current one or newer:
//! the address of a leader that is gone is never given to anyone.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::storage::{ValueError, ValueStore};

/// Where entries live in the backend's state keys; `/state` refuses it.
pub const PREFIX: &str = "leader-info/";

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub address: String,
    pub session: String,
    /// The term it was published under.
    pub term: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub info: Info,
    /// The backend's version of the entry: changes with every publication.
    pub version: u64,
}

pub type Map = BTreeMap<String, Entry>;

pub struct Components {
    values: Arc<ValueStore>,
    poll: Duration,
    map: watch::Sender<Map>,
    refreshing: AtomicBool,
}

/// A component id: Flink's names and job ids.
pub fn check_component(c: &str) -> Result<(), String> {
    if c.is_empty()
        || c.len() > 128
        || !c
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.'))
        || c.starts_with('.')
    {
        return Err(format!(
            "component {c:?} must be 1 to 128 characters of A-Z a-z 0-9 - _ . (not starting with '.'), such as dispatcher or a job id"
        ));
    }
    Ok(())
}

fn key(component: &str) -> String {
    format!("{PREFIX}{component}")
}

impl Components {
    /// `retry` is the election's retry period: entries are re-read at most
    /// that often, and at least every half second.
    pub fn new(values: Arc<ValueStore>, retry: Duration) -> Self {
        Self {
            values,
            poll: (retry / 2).clamp(Duration::from_millis(50), Duration::from_millis(500)),
            map: watch::channel(Map::new()).0,
            refreshing: AtomicBool::new(false),
        }
    }

    pub fn subscribe(&self) -> watch::Receiver<Map> {
        self.map.subscribe()
    }

    pub fn snapshot(&self) -> Map {
        self.map.borrow().clone()
    }

    /// Starts keeping the copy fresh, on first use: a sidecar nobody asks
    /// about components never polls the backend for them.
    pub fn start(self: &Arc<Self>, shutdown: watch::Receiver<bool>) {
        if self.refreshing.swap(true, Relaxed) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.refresh_loop(shutdown).await });
    }

    async fn refresh_loop(&self, mut shutdown: watch::Receiver<bool>) {
        let mut failing = false;
        loop {
            match self.read_all().await {
                Ok(map) => {
                    if failing {
                        tracing::info!("component leader information readable again");
                    }
                    failing = false;
                    self.map.send_if_modified(|m| {
                        let changed = *m != map;
                        if changed {
                            *m = map;
                        }
                        changed
                    });
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot read component leader information; keeping the last known");
                    }
                    failing = true;
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(self.poll) => {}
                _ = shutdown.wait_for(|s| *s) => return,
            }
        }
    }

    async fn read_all(&self) -> Result<Map, ValueError> {
        let mut map = Map::new();
        for k in self.values.list(PREFIX).await? {
            let Some(component) = k.strip_prefix(PREFIX) else {
                continue;
            };
            // Deleted since the listing: simply absent.
            let Some((bytes, version)) = self.values.get(&k).await? else {
                continue;
            };
            match serde_json::from_slice::<Info>(&bytes) {
                Ok(info) => {
                    map.insert(component.to_string(), Entry { info, version });
                }
                Err(e) => {
                    tracing::warn!(key = %k, error = %e, "not component leader information; ignored")
                }
            }
        }
        Ok(map)
    }

    /// Publishes `info` for `component` under `info.term` (the fence).
    pub async fn publish(&self, component: &str, info: Info) -> Result<u64, ValueError> {
        let bytes = serde_json::to_vec(&info).expect("component info serializes");
        let version = self
            .values
            .put(&key(component), &bytes, None, Some(info.term))
            .await?;
        self.map.send_modify(|m| {
            m.insert(component.to_string(), Entry { info, version });
        });
        Ok(version)
    }

    pub async fn remove(&self, component: &str, term: u64) -> Result<(), ValueError> {
        self.values
            .delete(&key(component), None, Some(term))
            .await?;
        self.map.send_modify(|m| {
            m.remove(component);
        });
        Ok(())
    }
}

/// Whether an entry may be handed out while `current` is the leader's term
/// as this sidecar knows it: never without a leader, never an older term's.
pub fn visible(entry: &Entry, current: Option<u64>) -> bool {
    current.is_some_and(|t| entry.info.term >= t)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(term: u64) -> Entry {
        Entry {
            info: Info {
                address: "a".into(),
                session: "s".into(),
                term,
            },
            version: 1,
        }
    }

    #[test]
    fn only_current_or_newer_terms_are_handed_out() {
        assert!(!visible(&entry(3), None), "no leader: no address");
        assert!(!visible(&entry(3), Some(4)), "a deposed leader's address");
        assert!(visible(&entry(4), Some(4)));
        assert!(
            visible(&entry(5), Some(4)),
            "published by a leader we have not seen yet"
        );
    }

    #[test]
    fn component_names() {
        for ok in [
            "dispatcher",
            "resourcemanager",
            "00000000000000000000000000000000",
            "a-b_c.d",
        ] {
            assert!(check_component(ok).is_ok(), "{ok}");
        }
        for bad in ["", ".x", "a/b", "a b", &"x".repeat(129)] {
            assert!(check_component(bad).is_err(), "{bad}");
        }
    }
}
