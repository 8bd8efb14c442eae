//! A client-owned candidacy: the sidecar campaigns only while the process it
//! guards says so.
//!
//! Flink campaigns from the creation of a JobManager's election driver until
//! its `close()`. With `election.candidacy: client` the driver opens a
//! candidacy here (`POST /candidacy`, a stream it keeps reading) and the
//! election loop campaigns only while one is open. A candidacy ends when the
//! client closes it, when its stream can no longer be written (the client's
//! process died and the kernel closed its socket), or when the client stops
//! renewing it within the TTL (a hung JVM keeps its socket open). On any of
//! these the leader steps down and releases its term at once, so a JobManager
//! crash on a live machine hands over in milliseconds.
//!
//! At most one candidacy is open: a newer one replaces the older (a restarted
//! JobManager whose predecessor's socket is not yet seen closed).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// Why a candidacy ended, as the stream's last line says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// A newer `POST /candidacy` took its place.
    Replaced,
    /// Not renewed within the TTL.
    Expired,
    /// `DELETE /candidacy/{id}`.
    ByClient,
    /// The stream to the client could not be written.
    Disconnected,
    Shutdown,
}

impl Closed {
    pub fn as_str(&self) -> &'static str {
        match self {
            Closed::Replaced => "replaced",
            Closed::Expired => "expired",
            Closed::ByClient => "closed",
            Closed::Disconnected => "disconnected",
            Closed::Shutdown => "shutdown",
        }
    }
}

/// The open candidacy as the election loop sees it: its id, or none.
pub type OpenId = Option<String>;

pub struct Candidacies {
    ttl: Duration,
    open: Mutex<Option<Open>>,
    tx: watch::Sender<OpenId>,
    /// Why the last candidacy ended, read by its stream after it is told.
    closed: watch::Sender<Option<(String, Closed)>>,
}

struct Open {
    id: String,
    renewed: Instant,
}

impl Candidacies {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            open: Mutex::new(None),
            tx: watch::channel(None).0,
            closed: watch::channel(None).0,
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The election loop's view: campaigns while this holds an id.
    pub fn watch(&self) -> watch::Receiver<OpenId> {
        self.tx.subscribe()
    }

    /// Told when a candidacy ends, with its id and why.
    pub fn closings(&self) -> watch::Receiver<Option<(String, Closed)>> {
        self.closed.subscribe()
    }

    /// Opens a new candidacy, replacing any open one.
    pub fn open(&self) -> String {
        let id = format!("c-{}", uuid::Uuid::new_v4().simple());
        let mut open = self.open.lock().expect("candidacy lock");
        if let Some(old) = open.take() {
            tracing::info!(candidacy = %old.id, "candidacy replaced by a newer one");
            self.closed.send_replace(Some((old.id, Closed::Replaced)));
        }
        *open = Some(Open {
            id: id.clone(),
            renewed: Instant::now(),
        });
        self.tx.send_replace(Some(id.clone()));
        tracing::info!(candidacy = %id, ttl = ?self.ttl, "candidacy opened by the client");
        id
    }

    /// Renews the TTL; false if `id` is not the open candidacy.
    pub fn renew(&self, id: &str) -> bool {
        match self.open.lock().expect("candidacy lock").as_mut() {
            Some(o) if o.id == id => {
                o.renewed = Instant::now();
                true
            }
            _ => false,
        }
    }

    /// Ends `id` if it is the open candidacy; false otherwise.
    pub fn close(&self, id: &str, why: Closed) -> bool {
        let mut open = self.open.lock().expect("candidacy lock");
        match open.as_ref() {
            Some(o) if o.id == id => {
                *open = None;
                drop(open);
                tracing::info!(candidacy = %id, reason = why.as_str(), "candidacy closed");
                self.tx.send_replace(None);
                self.closed.send_replace(Some((id.to_string(), why)));
                true
            }
            _ => false,
        }
    }

    pub fn is_open(&self, id: &str) -> bool {
        matches!(self.open.lock().expect("candidacy lock").as_ref(), Some(o) if o.id == id)
    }

    /// Closes the open candidacy once it goes unrenewed for the TTL; runs
    /// until `shutdown`, then closes whatever is open.
    pub async fn expire(&self, mut shutdown: watch::Receiver<bool>) {
        let tick = (self.ttl / 10).max(Duration::from_millis(50));
        loop {
            tokio::select! {
                _ = tokio::time::sleep(tick) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
            let stale = match self.open.lock().expect("candidacy lock").as_ref() {
                Some(o) if o.renewed.elapsed() >= self.ttl => Some(o.id.clone()),
                _ => None,
            };
            if let Some(id) = stale {
                tracing::warn!(candidacy = %id, ttl = ?self.ttl, "candidacy not renewed within its TTL: the client hangs; giving the leadership up");
                self.close(&id, Closed::Expired);
            }
        }
        let open = self
            .open
            .lock()
            .expect("candidacy lock")
            .as_ref()
            .map(|o| o.id.clone());
        if let Some(id) = open {
            self.close(&id, Closed::Shutdown);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_replaces_older_and_only_the_open_one_renews_or_closes() {
        let c = Candidacies::new(Duration::from_secs(5));
        let mut closings = c.closings();
        let a = c.open();
        let b = c.open();
        assert_eq!(
            closings.borrow_and_update().clone(),
            Some((a.clone(), Closed::Replaced))
        );
        assert!(!c.renew(&a) && c.renew(&b));
        assert!(!c.close(&a, Closed::ByClient));
        assert_eq!(c.watch().borrow().clone(), Some(b.clone()));
        assert!(c.close(&b, Closed::ByClient));
        assert_eq!(c.watch().borrow().clone(), None);
        assert!(!c.is_open(&b));
    }

    #[tokio::test]
    async fn an_unrenewed_candidacy_expires() {
        let c = std::sync::Arc::new(Candidacies::new(Duration::from_millis(500)));
        let (_stop, shutdown) = watch::channel(false);
        let task = {
            let c = c.clone();
            tokio::spawn(async move { c.expire(shutdown).await })
        };
        let id = c.open();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(c.renew(&id), "renewed within the TTL");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(c.is_open(&id), "the renewal moved the deadline");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!c.is_open(&id), "expired after a TTL without renewal");
        assert_eq!(c.closings().borrow().clone(), Some((id, Closed::Expired)));
        task.abort();
    }
}
