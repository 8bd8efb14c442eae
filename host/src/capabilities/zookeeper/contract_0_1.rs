//! The `zookeeper` capability under its 0.1.0 name, `ha:sidecar/zookeeper`,
//! for plugins built before it had a package of its own. The interface is the
//! same WIT as `ha:zookeeper/client@0.1.0`, generated a second time as
//! distinct Rust types: every call goes to the current implementation in
//! `ops`, its values converted field by field. Delete this file (and its
//! line in `link`) when the host stops speaking contract 0.1.

use super::ops::View;
use crate::bindings::contract_0_1::ha::sidecar::zookeeper as old;
use crate::bindings::ha::zookeeper::client as new;

impl old::Host for View {
    async fn session(&mut self) -> old::SessionInfo {
        new::Host::session(self).await.into()
    }

    async fn create(
        &mut self,
        path: String,
        data: Vec<u8>,
        mode: old::CreateMode,
    ) -> Result<(String, old::Stat), old::ZkError> {
        new::Host::create(self, path, data, mode.into())
            .await
            .map(|(path, stat)| (path, stat.into()))
            .map_err(Into::into)
    }

    async fn ensure_path(&mut self, path: String) -> Result<(), old::ZkError> {
        new::Host::ensure_path(self, path).await.map_err(Into::into)
    }

    async fn get(&mut self, path: String) -> Result<Option<(Vec<u8>, old::Stat)>, old::ZkError> {
        new::Host::get(self, path)
            .await
            .map(|found| found.map(|(data, stat)| (data, stat.into())))
            .map_err(Into::into)
    }

    async fn exists(&mut self, path: String) -> Result<Option<old::Stat>, old::ZkError> {
        new::Host::exists(self, path)
            .await
            .map(|found| found.map(Into::into))
            .map_err(Into::into)
    }

    async fn set(
        &mut self,
        path: String,
        data: Vec<u8>,
        version: i32,
    ) -> Result<old::Stat, old::ZkError> {
        new::Host::set(self, path, data, version)
            .await
            .map(Into::into)
            .map_err(Into::into)
    }

    async fn delete(&mut self, path: String, version: i32) -> Result<(), old::ZkError> {
        new::Host::delete(self, path, version)
            .await
            .map_err(Into::into)
    }

    async fn children(&mut self, path: String) -> Result<Vec<String>, old::ZkError> {
        new::Host::children(self, path).await.map_err(Into::into)
    }

    async fn multi(
        &mut self,
        ops: Vec<old::Op>,
    ) -> Result<Vec<old::OpResult>, (u32, old::ZkError)> {
        new::Host::multi(self, ops.into_iter().map(Into::into).collect())
            .await
            .map(|results| results.into_iter().map(Into::into).collect())
            .map_err(|(index, e)| (index, e.into()))
    }

    async fn wait_change(
        &mut self,
        path: String,
        children: bool,
        wait_ms: u32,
    ) -> Result<bool, old::ZkError> {
        new::Host::wait_change(self, path, children, wait_ms)
            .await
            .map_err(Into::into)
    }
}

impl From<old::CreateMode> for new::CreateMode {
    fn from(m: old::CreateMode) -> Self {
        match m {
            old::CreateMode::Persistent => Self::Persistent,
            old::CreateMode::PersistentSequential => Self::PersistentSequential,
            old::CreateMode::Ephemeral => Self::Ephemeral,
            old::CreateMode::EphemeralSequential => Self::EphemeralSequential,
        }
    }
}

impl From<new::Stat> for old::Stat {
    fn from(s: new::Stat) -> Self {
        Self {
            czxid: s.czxid,
            mzxid: s.mzxid,
            version: s.version,
            cversion: s.cversion,
            ephemeral_owner: s.ephemeral_owner,
            num_children: s.num_children,
        }
    }
}

impl From<new::SessionInfo> for old::SessionInfo {
    fn from(s: new::SessionInfo) -> Self {
        Self {
            id: s.id,
            state: match s.state {
                new::SessionState::Connected => old::SessionState::Connected,
                new::SessionState::Suspended => old::SessionState::Suspended,
                new::SessionState::Expired => old::SessionState::Expired,
                new::SessionState::Closed => old::SessionState::Closed,
            },
            timeout_ms: s.timeout_ms,
        }
    }
}

impl From<new::ZkError> for old::ZkError {
    fn from(e: new::ZkError) -> Self {
        match e {
            new::ZkError::NoNode => Self::NoNode,
            new::ZkError::NodeExists => Self::NodeExists,
            new::ZkError::BadVersion => Self::BadVersion,
            new::ZkError::NotEmpty => Self::NotEmpty,
            new::ZkError::ConnectionLoss(m) => Self::ConnectionLoss(m),
            new::ZkError::SessionExpired => Self::SessionExpired,
            new::ZkError::Other(m) => Self::Other(m),
        }
    }
}

impl From<old::Op> for new::Op {
    fn from(op: old::Op) -> Self {
        match op {
            old::Op::Check(c) => Self::Check(c),
            old::Op::Create((path, data, mode)) => Self::Create((path, data, mode.into())),
            old::Op::SetData(s) => Self::SetData(s),
            old::Op::Delete(d) => Self::Delete(d),
        }
    }
}

impl From<new::OpResult> for old::OpResult {
    fn from(r: new::OpResult) -> Self {
        match r {
            new::OpResult::Checked => Self::Checked,
            new::OpResult::Created((path, stat)) => Self::Created((path, stat.into())),
            new::OpResult::Set(stat) => Self::Set(stat.into()),
            new::OpResult::Deleted => Self::Deleted,
        }
    }
}
