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

use std::cell::RefCell;
use std::time::Duration;

use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::zookeeper::{self as zk, CreateMode, ZkError};
use ha_sidecar_sdk::{Backend, Failure, Result, Setup, Term, Versioned, invalid, keys, log};

use latch::Latch;
use paths::Paths;

struct Plugin {
    paths: Paths,
    latch: Latch,
    components: Vec<String>,
    /// `connection-info: flink` writes Flink's Java-serialized form.
    flink_encoding: bool,
    session: String,
}

thread_local! {
    static PLUGIN: RefCell<Option<Plugin>> = const { RefCell::new(None) };
}

fn with<T>(f: impl FnOnce(&mut Plugin) -> Result<T>) -> Result<T> {
    PLUGIN.with(|p| match p.borrow_mut().as_mut() {
        Some(plugin) => f(plugin),
        None => Err(invalid("configure was not called")),
    })
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
            let (most, least) = flink::session_uuid(&self.session, term.token);
            flink::connection_info(&term.holder.address, most, least)
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

struct ZooKeeperBackend;

impl Backend for ZooKeeperBackend {
    fn configure(setup: Setup) -> Result<()> {
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
        let plugin = Plugin {
            paths,
            latch: Latch::new(setup.me, setup.session.clone()),
            components,
            flink_encoding,
            session: setup.session,
        };
        PLUGIN.with(|p| *p.borrow_mut() = Some(plugin));
        Ok(())
    }

    fn campaign(wait_ms: u32) -> Result<Option<Term>> {
        with(|p| {
            let term = p
                .latch
                .campaign(&p.paths, Duration::from_millis(wait_ms.into()))?;
            if let Some(t) = &term {
                p.publish(t);
            }
            Ok(term)
        })
    }

    fn keep(term: Term) -> Result<()> {
        with(|p| p.latch.keep(&term))
    }

    fn resign(term: Term) -> Result<()> {
        with(|p| {
            p.unpublish();
            p.latch.resign(&term)
        })
    }

    fn leader(known: Option<u64>, wait_ms: u32) -> Result<Option<Term>> {
        with(|p| Latch::leader(&p.paths, known, Duration::from_millis(wait_ms.into())))
    }

    fn get(key: String) -> Result<Option<Versioned>> {
        keys::validate(&key)?;
        with(|p| store::get(&p.paths, &key))
    }

    fn put(key: String, value: Vec<u8>, expected: Option<u64>, fence: Option<u64>) -> Result<u64> {
        keys::validate(&key)?;
        with(|p| store::put(&p.paths, &key, &value, expected, fence))
    }

    fn delete(key: String, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        keys::validate(&key)?;
        if expected == Some(0) {
            return Err(invalid(
                "delete with expected version 0 (\"only if absent\") cannot succeed",
            ));
        }
        with(|p| store::delete(&p.paths, &key, expected, fence))
    }

    fn list(prefix: String) -> Result<Vec<String>> {
        keys::validate_prefix(&prefix)?;
        with(|p| store::list(&p.paths, &prefix))
    }
}

ha_sidecar_sdk::export!(ZooKeeperBackend);
