//! The plugin-facing side of the `zookeeper` capability: each WIT function as
//! one bounded operation on the sidecar's shared session.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::session::{ZkSession, stat, to_wit};
use crate::bindings::ha::zookeeper::client::{
    self as wit, CreateMode, Op, OpResult, SessionInfo, Stat, ZkError,
};
use crate::capabilities::HostState;

fn version(v: i32) -> Option<i32> {
    (v >= 0).then_some(v)
}

/// What an instance holds of the capability: the sidecar's session.
pub(super) struct Context {
    pub session: Arc<ZkSession>,
}

/// The host functions' view of one instance: its session (none: not
/// granted) and the deadline of the plugin call in progress.
pub(super) struct View {
    session: Option<Arc<ZkSession>>,
    deadline: Option<Instant>,
}

pub(super) struct Data;

impl wasmtime::component::HasData for Data {
    type Data<'a> = View;
}

pub(super) fn view(s: &mut HostState) -> View {
    View {
        session: s.contexts().get::<Context>().map(|c| c.session.clone()),
        deadline: s.call_deadline,
    }
}

/// The session, bound to the deadline of the plugin call in progress.
struct Bound {
    session: Arc<ZkSession>,
    deadline: Option<Instant>,
}

impl Bound {
    async fn run<T, F, Fut>(&self, op: F) -> Result<T, ZkError>
    where
        F: FnOnce(zk::Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, ZkError>>,
    {
        self.session.run(self.deadline, op).await
    }
}

impl std::ops::Deref for Bound {
    type Target = ZkSession;
    fn deref(&self) -> &ZkSession {
        &self.session
    }
}

impl View {
    fn zk(&self) -> Result<Bound, ZkError> {
        let session = self
            .session
            .clone()
            .ok_or_else(|| ZkError::Other("the zookeeper capability is not granted".into()))?;
        Ok(Bound {
            session,
            deadline: self.deadline,
        })
    }
}

impl wit::Host for View {
    async fn session(&mut self) -> SessionInfo {
        match &self.session {
            Some(zk) => zk.info().await,
            None => SessionInfo {
                id: 0,
                state: wit::SessionState::Closed,
                timeout_ms: 0,
            },
        }
    }

    async fn create(
        &mut self,
        path: String,
        data: Vec<u8>,
        mode: CreateMode,
    ) -> Result<(String, Stat), ZkError> {
        let zk = self.zk()?;
        let options = zk.create_options(mode);
        zk.run(|c| async move {
            let (stat_, seq) = c.create(&path, &data, &options).await.map_err(to_wit)?;
            // The client returns the sequence number, not the path.
            let created = if matches!(
                mode,
                CreateMode::PersistentSequential | CreateMode::EphemeralSequential
            ) {
                format!("{path}{seq}")
            } else {
                path
            };
            Ok((created, stat(&stat_)))
        })
        .await
    }

    async fn ensure_path(&mut self, path: String) -> Result<(), ZkError> {
        let zk = self.zk()?;
        let options = zk.create_options(CreateMode::Persistent);
        zk.run(|c| async move {
            match c.mkdir(&path, &options).await {
                Ok(()) | Err(zk::Error::NodeExists) => Ok(()),
                Err(e) => Err(to_wit(e)),
            }
        })
        .await
    }

    async fn get(&mut self, path: String) -> Result<Option<(Vec<u8>, Stat)>, ZkError> {
        self.zk()?
            .run(|c| async move {
                match c.get_data(&path).await {
                    Ok((data, s)) => Ok(Some((data, stat(&s)))),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(to_wit(e)),
                }
            })
            .await
    }

    async fn exists(&mut self, path: String) -> Result<Option<Stat>, ZkError> {
        self.zk()?
            .run(|c| async move {
                c.check_stat(&path)
                    .await
                    .map(|s| s.as_ref().map(stat))
                    .map_err(to_wit)
            })
            .await
    }

    async fn set(&mut self, path: String, data: Vec<u8>, v: i32) -> Result<Stat, ZkError> {
        self.zk()?
            .run(|c| async move {
                c.set_data(&path, &data, version(v))
                    .await
                    .map(|s| stat(&s))
                    .map_err(to_wit)
            })
            .await
    }

    async fn delete(&mut self, path: String, v: i32) -> Result<(), ZkError> {
        self.zk()?
            .run(|c| async move { c.delete(&path, version(v)).await.map_err(to_wit) })
            .await
    }

    async fn children(&mut self, path: String) -> Result<Vec<String>, ZkError> {
        self.zk()?
            .run(|c| async move { c.list_children(&path).await.map_err(to_wit) })
            .await
    }

    async fn multi(&mut self, ops: Vec<Op>) -> Result<Vec<OpResult>, (u32, ZkError)> {
        let zk = self.zk().map_err(|e| (0, e))?;
        let options: Vec<_> = ops
            .iter()
            .map(|op| {
                if let Op::Create((_, _, m)) = op {
                    Some(zk.create_options(*m))
                } else {
                    None
                }
            })
            .collect();
        let result = zk
            .run(|c| async move {
                let mut w = c.new_multi_writer();
                for (i, op) in ops.iter().enumerate() {
                    let added = match op {
                        Op::Check((p, v)) => w.add_check_version(p, *v),
                        Op::Create((p, d, _)) => w.add_create(
                            p,
                            d,
                            options[i].as_ref().expect("create options prepared"),
                        ),
                        Op::SetData((p, d, v)) => w.add_set_data(p, d, version(*v)),
                        Op::Delete((p, v)) => w.add_delete(p, version(*v)),
                    };
                    if let Err(e) = added {
                        return Ok(Err((i as u32, to_wit(e))));
                    }
                }
                Ok(match w.commit().await {
                    Ok(results) => {
                        let mut out = Vec::with_capacity(results.len());
                        for (i, r) in results.into_iter().enumerate() {
                            out.push(match r {
                                zk::MultiWriteResult::Check => OpResult::Checked,
                                zk::MultiWriteResult::Delete => OpResult::Deleted,
                                zk::MultiWriteResult::Create { path, stat: s } => {
                                    OpResult::Created((path, stat(&s)))
                                }
                                zk::MultiWriteResult::SetData { stat: s } => {
                                    OpResult::Set(stat(&s))
                                }
                                other => {
                                    return Ok(Err((
                                        i as u32,
                                        ZkError::Other(format!(
                                            "unexpected multi result {other:?}"
                                        )),
                                    )));
                                }
                            });
                        }
                        Ok(out)
                    }
                    Err(zk::MultiWriteError::OperationFailed { index, source }) => {
                        Err((index as u32, to_wit(source)))
                    }
                    Err(zk::MultiWriteError::RequestFailed { source }) => Err((0, to_wit(source))),
                })
            })
            .await;
        match result {
            Ok(r) => r,
            Err(e) => Err((0, e)),
        }
    }

    async fn wait_change(
        &mut self,
        path: String,
        children: bool,
        wait_ms: u32,
    ) -> Result<bool, ZkError> {
        let zk = self.zk()?;
        // A node that is already gone when the watch is set has changed:
        // its existence watch would wait for a re-creation that may never come.
        let (gone, watcher) = zk
            .run(|c| async move {
                if children {
                    c.get_and_watch_children(&path)
                        .await
                        .map(|(_, _, w)| (false, w))
                        .map_err(to_wit)
                } else {
                    c.check_and_watch_stat(&path)
                        .await
                        .map(|(stat, w)| (stat.is_none(), w))
                        .map_err(to_wit)
                }
            })
            .await?;
        if gone {
            return Ok(true);
        }
        Ok(
            tokio::time::timeout(Duration::from_millis(wait_ms.into()), watcher.changed())
                .await
                .is_ok(),
        )
    }
}
