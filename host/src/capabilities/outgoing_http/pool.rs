//! Keep-alive connections to the granted `http://` endpoints, shared by
//! every instance of one plugin.
//!
//! Opening a TCP connection for every request (what wasmtime-wasi-http does
//! by default) costs a handshake per call and leaves a socket in TIME_WAIT
//! each time; against a store a few hundred microseconds away, that is a
//! large part of each call. Here a request takes an idle connection to its
//! endpoint, or opens one, and the connection goes back to the pool once the
//! response has been read to its end. The allow-list is checked before a
//! request reaches the pool (see `Hooks`), and every request keeps the
//! deadlines of the plugin call that made it: connecting, the first byte of
//! the answer and each gap between its bytes. `https://` endpoints are not
//! pooled (they take wasmtime-wasi-http's own path, a connection per request).

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// Idle connections kept per endpoint: more than the instances of a plugin
/// (state pool, election, discovery) ever use at once; beyond it, a
/// connection is closed once its response is read.
const MAX_IDLE: usize = 32;

/// A timeout the guest did not set and no call deadline bounds.
const UNBOUNDED: Duration = Duration::from_secs(600);

/// The idle connections of each granted endpoint, by its index in the grant.
pub struct ConnectionPool {
    idle: Box<[Mutex<Vec<SendRequest<WasiBody>>>]>,
}

impl ConnectionPool {
    pub fn new(endpoints: usize) -> Arc<Self> {
        Arc::new(Self {
            idle: (0..endpoints).map(|_| Mutex::new(Vec::new())).collect(),
        })
    }

    /// Sends `request` to endpoint `index` (at `addr`, `host:port`) over a
    /// kept-alive connection.
    pub async fn send(
        self: Arc<Self>,
        index: usize,
        addr: String,
        mut request: http::Request<WasiBody>,
        options: RequestOptions,
    ) -> Result<http::Response<WasiBody>, Error> {
        // On the wire, only the path goes in the request line (the Host
        // header names the server).
        *request.uri_mut() = origin_form(request.uri());
        let first_byte = options.first_byte_timeout.unwrap_or(UNBOUNDED);
        let between_bytes = options
            .between_bytes_timeout
            .unwrap_or(UNBOUNDED)
            .max(Duration::from_nanos(1));
        loop {
            let (mut sender, reused) = match self.take(index) {
                Some(s) => (s, true),
                None => (connect(&addr, options.connect_timeout).await?, false),
            };
            let sent = tokio::time::timeout(first_byte, sender.try_send_request(request))
                .await
                .map_err(|_| Error::ConnectionReadTimeout)?;
            match sent {
                Ok(response) => {
                    self.give_back(index, sender);
                    return Ok(response.map(|body| Timed::new(body, between_bytes).boxed_unsync()));
                }
                Err(mut e) => match e.take_message() {
                    // The server closed an idle connection just before this
                    // request: it was not sent, so it goes on a fresh one.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(Error::from(e.into_error())),
                },
            }
        }
    }

    fn take(&self, index: usize) -> Option<SendRequest<WasiBody>> {
        let mut idle = lock(&self.idle[index]);
        while let Some(s) = idle.pop() {
            if s.is_ready() {
                return Some(s);
            }
        }
        None
    }

    /// Returns the connection to the pool once its response has been read
    /// (a connection whose response is dropped unread is closed by hyper).
    fn give_back(self: Arc<Self>, index: usize, mut sender: SendRequest<WasiBody>) {
        tokio::spawn(async move {
            if sender.ready().await.is_ok() {
                let mut idle = lock(&self.idle[index]);
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        });
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Only pushes and pops happen under the lock.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn origin_form(uri: &http::Uri) -> http::Uri {
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    http::Uri::builder()
        .path_and_query(path)
        .build()
        .unwrap_or_else(|_| http::Uri::from_static("/"))
}

async fn connect(addr: &str, timeout: Option<Duration>) -> Result<SendRequest<WasiBody>, Error> {
    let timeout = timeout.unwrap_or(UNBOUNDED);
    let deadline = Instant::now() + timeout;
    let stream = tokio::time::timeout_at(deadline, tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    // Requests are small and answered at once: do not wait to fill a segment.
    stream.set_nodelay(true).map_err(Error::Connect)?;
    let (sender, connection) =
        tokio::time::timeout_at(deadline, http1::handshake(TokioIo::new(stream)))
            .await
            .map_err(|_| Error::ConnectionTimeout)??;
    let addr = addr.to_string();
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%addr, error = %e, "outgoing HTTP connection ended");
        }
    });
    Ok(sender)
}

/// A response body that fails when the server pauses longer than the
/// between-bytes timeout.
struct Timed {
    body: Incoming,
    gap: Duration,
    timer: Pin<Box<Sleep>>,
}

impl Timed {
    fn new(body: Incoming, gap: Duration) -> Self {
        Self {
            body,
            gap,
            timer: Box::pin(tokio::time::sleep(gap)),
        }
    }
}

impl Body for Timed {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.timer.as_mut().reset(Instant::now() + this.gap);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
