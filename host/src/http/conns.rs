//! The cap on concurrent connections of one listener, and the idle
//! connections it sheds when close to the cap.
//!
//! Connections over the cap are accepted and closed at once (after a 503 a
//! client may read), rather than left in the kernel's accept backlog: there
//! they would cost no descriptor, but a probe or the guarded process would
//! wait behind the flood and time out with nothing to say why, and be
//! served long after it gave up. Closing costs one descriptor for a moment,
//! which the reserve (see `descriptors`) covers.
//!
//! Near the cap, a connection that has no request in flight and has sent
//! none for `IDLE_NEAR_CAP` is closed, so a client that opens connections
//! and sends nothing (or dribbles a header) holds a slot for seconds, not
//! for the whole header timeout.
//!
//! Once a flood has drained, the memory its connections freed is handed back
//! to the OS. glibc keeps freed memory in its per-thread arenas: 4,000 idle
//! connections took RSS from 18 to 66 MiB, and each new flood, landing in
//! other arenas, added more (111 MiB after five), none of it in use:
//! `malloc_trim(0)` brought it back to 20 MiB. Retention, not a leak.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::Metrics;

/// How long a connection may sit idle while the listener is near its cap.
pub const IDLE_NEAR_CAP: Duration = Duration::from_secs(2);
/// Freed memory is returned once the open connections fall to an eighth of
/// a peak at least this high (a few MiB of connection buffers).
const TRIM_AFTER_PEAK: u64 = 256;

pub struct Gate {
    permits: Arc<Semaphore>,
    /// Most connections open at once since memory was last returned.
    peak: Arc<AtomicU64>,
    cap: usize,
    metrics: Arc<Metrics>,
    /// What an over-limit connection is told before it is closed.
    full: Vec<u8>,
}

impl Gate {
    pub fn new(cap: usize, metrics: Arc<Metrics>) -> Self {
        metrics.connections_max.store(cap as u64, Relaxed);
        let body = format!(
            "{{\"error\":\"too_many_connections\",\"message\":\"this sidecar serves at most {cap} connections at once (http.max-connections); retry, or close idle connections\"}}\n"
        );
        let full = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Self {
            permits: Arc::new(Semaphore::new(cap)),
            peak: Arc::new(AtomicU64::new(0)),
            cap,
            metrics,
            full,
        }
    }

    /// A slot for a new connection, or None (counted) when all are taken.
    pub fn admit(&self) -> Option<Slot> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => {
                let open = self.metrics.connections_open.fetch_add(1, Relaxed) + 1;
                self.peak.fetch_max(open, Relaxed);
                Some(Slot {
                    _permit: permit,
                    activity: Arc::new(Activity::new()),
                    metrics: self.metrics.clone(),
                    peak: self.peak.clone(),
                })
            }
            Err(_) => {
                self.metrics.connections_rejected.fetch_add(1, Relaxed);
                None
            }
        }
    }

    /// The 503 written (without waiting) to a connection that gets no slot.
    pub fn full_reply(&self) -> &[u8] {
        &self.full
    }

    /// Three quarters of the slots are taken.
    pub fn near_cap(&self) -> bool {
        let open = self.cap - self.permits.available_permits();
        open * 4 >= self.cap * 3
    }

    pub fn record_eviction(&self) {
        self.metrics.connections_evicted.fetch_add(1, Relaxed);
    }

    /// Resolves once every connection has ended.
    pub async fn drained(&self) {
        let _ = self.permits.acquire_many(self.cap as u32).await;
    }
}

/// A connection's slot; dropping it frees the slot.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    pub activity: Arc<Activity>,
    metrics: Arc<Metrics>,
    peak: Arc<AtomicU64>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let open = self.metrics.connections_open.fetch_sub(1, Relaxed) - 1;
        let peak = self.peak.load(Relaxed);
        if peak >= TRIM_AFTER_PEAK
            && open <= peak / 8
            && self
                .peak
                .compare_exchange(peak, open, Relaxed, Relaxed)
                .is_ok()
        {
            release_freed_memory(peak);
        }
    }
}

/// Hands the memory the allocator holds free back to the OS, off the async
/// threads (it walks every arena; a few milliseconds after a large flood).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn release_freed_memory(peak: u64) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn_blocking(move || {
        let started = Instant::now();
        // SAFETY: malloc_trim only releases free memory; it is thread-safe.
        unsafe { libc::malloc_trim(0) };
        tracing::debug!(
            peak,
            took_us = started.elapsed().as_micros() as u64,
            "connections drained: returned freed memory to the OS"
        );
    });
}

/// Other allocators return memory by themselves.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn release_freed_memory(_peak: u64) {}

/// Whether a connection has a request in flight, and since when it has not.
pub struct Activity {
    start: Instant,
    in_flight: AtomicU32,
    /// Milliseconds after `start` of the last request's start or end.
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            in_flight: AtomicU32::new(0),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.last_ms
            .store(self.start.elapsed().as_millis() as u64, Relaxed);
    }

    /// Marks a request in flight until the guard drops.
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.in_flight.fetch_add(1, Relaxed);
        self.touch();
        Busy(self.clone())
    }

    /// How long the connection has been without a request in flight (zero
    /// while one is).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Relaxed));
        self.start.elapsed().saturating_sub(last)
    }
}

/// A request in flight on its connection; see `Tracked`.
pub struct Busy(Arc<Activity>);

/// A response body that keeps its request in flight until hyper has written
/// it all (or the connection ended): a streamed reply or a slow reader is
/// busy, never idle, so shedding idle connections cannot cut one off.
pub struct Tracked<B> {
    body: B,
    _busy: Busy,
}

impl<B> Tracked<B> {
    pub fn new(body: B, busy: Busy) -> Self {
        Self { body, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_capped_counted_and_given_back() {
        let metrics = Arc::new(Metrics::default());
        let gate = Gate::new(4, metrics.clone());
        let slots: Vec<Slot> = (0..4).map(|_| gate.admit().unwrap()).collect();
        assert!(gate.near_cap());
        assert!(gate.admit().is_none());
        assert_eq!(metrics.connections_rejected.load(Relaxed), 1);
        assert_eq!(metrics.connections_open.load(Relaxed), 4);
        drop(slots);
        assert!(!gate.near_cap());
        assert_eq!(metrics.connections_open.load(Relaxed), 0);
        assert!(gate.admit().is_some());
        let reply = String::from_utf8(gate.full_reply().to_vec()).unwrap();
        assert!(reply.starts_with("HTTP/1.1 503") && reply.contains("too_many_connections"));
    }

    #[test]
    fn a_request_in_flight_is_not_idle() {
        let a = Arc::new(Activity::new());
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.idle_for() >= Duration::from_millis(20));
        let busy = a.busy();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(a.idle_for(), Duration::ZERO);
        drop(busy);
        assert!(a.idle_for() < Duration::from_millis(20));
    }
}
