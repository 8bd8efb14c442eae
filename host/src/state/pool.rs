//! A bounded pool of state instances, so that state calls run in parallel.
//!
//! One wasmtime Store runs one call at a time, so with one state instance
//! every request waits for the one before it, and a backend's round trips
//! never overlap. The pool holds `plugin.state-instances` slots; a call
//! takes an idle one and gives it back when done. Slots are handed out last
//! in, first out, and a slot makes its instance only when first used, so a
//! sidecar under light load keeps one warm instance and grows only when
//! calls really overlap.
//!
//! Fencing does not depend on which instance runs a write: every instance
//! shares the capability's session (the ZooKeeper session, the Kubernetes
//! client, the granted endpoints) and a fenced write is checked atomically in
//! the backend, so two overlapping writes are judged there, one at a time.

use std::sync::Mutex;

use tokio::sync::{Semaphore, SemaphorePermit};

use crate::runtime::Slot;

pub struct Pool {
    idle: Mutex<Vec<Slot>>,
    permits: Semaphore,
}

/// One slot, taken from the pool until dropped.
pub struct Lease<'a> {
    pool: &'a Pool,
    slot: Option<Slot>,
    // Released after the slot is back (fields drop after `Drop::drop`).
    _permit: SemaphorePermit<'a>,
}

impl Pool {
    /// A pool of the given slots; at least one.
    pub fn new(slots: Vec<Slot>) -> Self {
        assert!(!slots.is_empty(), "a state pool needs at least one slot");
        Self {
            permits: Semaphore::new(slots.len()),
            idle: Mutex::new(slots),
        }
    }

    /// Waits for an idle slot.
    pub async fn lease(&self) -> Lease<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the pool's semaphore is never closed");
        let slot = self
            .lock()
            .pop()
            .expect("a permit is only granted while a slot is idle");
        Lease {
            pool: self,
            slot: Some(slot),
            _permit: permit,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        // Only pushes and pops happen under the lock: nothing to leave half done.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::ops::Deref for Lease<'_> {
    type Target = Slot;
    fn deref(&self) -> &Slot {
        self.slot.as_ref().expect("held until drop")
    }
}

impl std::ops::DerefMut for Lease<'_> {
    fn deref_mut(&mut self) -> &mut Slot {
        self.slot.as_mut().expect("held until drop")
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.lock().push(slot);
        }
    }
}
