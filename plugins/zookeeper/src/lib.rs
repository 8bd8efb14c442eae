//! The ZooKeeper backend: Curator-style leader latch, Flink's node layout,
//! fenced writes as one multi-op, all over the host's one ZooKeeper session
//! (the `zookeeper` capability). Settings: `root` (Flink's
//! `high-availability.zookeeper.path.root`, default `/flink`), `cluster-id`
//! (`high-availability.cluster-id`, default `default`), `components` (the
//! leader's connection_info nodes, default dispatcher, resource_manager,
//! rest_server), `connection-info` (`json`, or `flink` for Flink's
//! Java-serialized address + leader session id, readable by Flink clients).

mod flink;
mod latch;
mod paths;
mod store;

use std::time::Duration;

use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::stateful::StatefulBackend;
use ha_sidecar_sdk::zookeeper::{self as zk, CreateMode, ZkError};
use ha_sidecar_sdk::{Failure, Result, Setup, Term, Versioned, invalid, log};

use latch::Latch;
use paths::Paths;

struct Plugin {
    paths: Paths,
    latch: Latch,
    components: Vec<String>,
    /// `connection-info: flink` writes Flink's Java-serialized form.
    flink_encoding: bool,
}

/// ZooKeeper errors as contract failures: connection trouble is worth a retry.
pub(crate) fn zk_failure(e: ZkError) -> Failure {
    match e {
        ZkError::ConnectionLoss(m) => Failure::Unavailable(format!("ZooKeeper: {m}")),
        ZkError::SessionExpired => Failure::Unavailable("ZooKeeper session expired".into()),
        other => Failure::Unavailable(format!("ZooKeeper: {other:?}")),
    }
}

impl Plugin {
    /// Publishes the leader's address under each component's
    /// `connection_info` (ephemeral: it goes with the leader's session).
    fn publish(&self, term: &Term) {
        let data = if self.flink_encoding {
            // The id the sidecar reports and Flink fences with (see the SDK).
            let id = ha_sidecar_sdk::flink::leader_session(term.token, &term.holder.id);
            flink::connection_info(&term.holder.address, id.most, id.least)
        } else {
            serde_json::json!({ "id": term.holder.id, "address": term.holder.address, "term": term.token }).to_string().into_bytes()
        };
        let data = data.as_slice();
        let session = zk::session().id;
        for component in &self.components {
            let path = self.paths.connection_info(component);
            // Parents are made only when the node is missing: each step of
            // `ensure_path` is a write to the ensemble's leader, which would
            // slow down the common case (a leader that resumes its term
            // after a reconnect finds its nodes in place).
            let written = match zk::exists(&path) {
                Ok(Some(stat)) if stat.ephemeral_owner == session => {
                    zk::set(&path, data, -1).map(drop)
                }
                Ok(Some(_)) => zk::delete(&path, -1)
                    .and_then(|()| zk::create(&path, data, CreateMode::Ephemeral).map(drop)),
                Ok(None) => zk::ensure_path(paths::parent(&path))
                    .and_then(|()| zk::create(&path, data, CreateMode::Ephemeral).map(drop)),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                log::warn(&format!("cannot publish {path}: {e:?}"));
            }
        }
    }

    fn unpublish(&self) {
        let session = zk::session().id;
        for component in &self.components {
            let path = self.paths.connection_info(component);
            if let Ok(Some(stat)) = zk::exists(&path)
                && stat.ephemeral_owner == session
            {
                let _ = zk::delete(&path, stat.version);
            }
        }
    }
}

impl StatefulBackend for Plugin {
    fn configure(setup: Setup) -> Result<Self> {
        let s = Settings::new(
            "zookeeper",
            setup.settings,
            &["root", "cluster-id", "components", "connection-info"],
        )?;
        let flink_encoding = match s.string_or("connection-info", "json").as_str() {
            "json" => false,
            "flink" => true,
            other => {
                return Err(invalid(format!(
                    "plugin.settings.connection-info: {other:?} must be json or flink"
                )));
            }
        };
        let paths = Paths::new(
            &s.string_or("root", "/flink"),
            &s.string_or("cluster-id", "default"),
        )?;
        let components: Vec<String> = s
            .string_or("components", "dispatcher,resource_manager,rest_server")
            .split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(bad) = components.iter().find(|c| {
            !c.chars()
                .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_'))
        }) {
            return Err(invalid(format!(
                "plugin.settings.components: {bad:?} is not a component name (A-Z a-z 0-9 - _)"
            )));
        }
        Ok(Plugin {
            paths,
            latch: Latch::new(setup.me, setup.session),
            components,
            flink_encoding,
        })
    }

    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>> {
        let term = self.latch.campaign(&self.paths, wait)?;
        if let Some(t) = &term {
            self.publish(t);
        }
        Ok(term)
    }

    fn keep(&mut self, term: Term) -> Result<()> {
        self.latch.keep(&term)
    }

    fn resign(&mut self, term: Term) -> Result<()> {
        self.unpublish();
        self.latch.resign(&term)
    }

    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        Latch::leader(&self.paths, known, wait)
    }

    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        store::get(&self.paths, key)
    }

    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64> {
        store::put(&self.paths, key, &value, expected, fence)
    }

    fn delete(&mut self, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        store::delete(&self.paths, key, expected, fence)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        store::list(&self.paths, prefix)
    }

    fn members(&mut self) -> Result<Vec<ha_sidecar_sdk::Candidate>> {
        Latch::members(&self.paths)
    }

    fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        self.latch.hand_over(&self.paths, &term, to)?;
        self.unpublish();
        Ok(())
    }
}

ha_sidecar_sdk::export_backend!(Plugin);
