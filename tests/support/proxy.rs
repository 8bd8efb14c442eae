//! A TCP proxy between one client and one server (a sidecar and a ZooKeeper
//! member), so that a test can cut that one connection as a network would,
//! without touching the server or the other clients.
//!
//! - [`Mode::Pass`]: bytes flow both ways.
//! - [`Mode::Blackhole`]: the connections stay open but nothing moves, in
//!   either direction, and new connections are accepted but never answered:
//!   a partition. The proxy stops reading, so what was sent waits in the
//!   kernel's buffers and is delivered, intact, when the cut heals, as TCP
//!   retransmission would deliver it; a client that gave up meanwhile (a
//!   ZooKeeper client does, after its read timeout) has closed its socket.
//! - [`Mode::Reset`]: every connection is reset (RST) and new ones are reset
//!   at once: a crashed middlebox or a firewall that rejects.
//!
//! All proxies of a test process run on one small tokio runtime of their own.

#![allow(dead_code)] // each test binary uses a different part of the harness

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Pass,
    Blackhole,
    Reset,
}

pub struct Proxy {
    port: u16,
    mode: watch::Sender<Mode>,
    accept: tokio::task::JoinHandle<()>,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("test-proxy")
            .enable_all()
            .build()
            .expect("start the proxies' runtime")
    })
}

impl Proxy {
    /// A proxy on a free loopback port, forwarding to `127.0.0.1:<upstream>`.
    pub fn start(upstream: u16) -> Proxy {
        let std_listener =
            std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port for a proxy");
        std_listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");
        let port = std_listener.local_addr().unwrap().port();
        let (mode, watching) = watch::channel(Mode::Pass);
        let upstream = SocketAddr::from(([127, 0, 0, 1], upstream));
        let rt = runtime();
        let listener = {
            let _entered = rt.enter();
            TcpListener::from_std(std_listener).expect("hand the listener to tokio")
        };
        let accept = rt.spawn(accept_loop(listener, upstream, watching));
        Proxy { port, mode, accept }
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn mode(&self) -> Mode {
        *self.mode.borrow()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Connections end too: they see the mode channel close.
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        tokio::spawn(connection(client, upstream, mode.clone()));
    }
}

/// Waits until bytes may flow: true for `Pass`, false once the connection
/// must be reset (or the proxy is gone).
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Blackhole).await {
        Ok(m) => *m == Mode::Pass,
        Err(_) => false,
    }
}

async fn connection(client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    // Closing with a zero linger sends RST instead of FIN: what `Reset` means.
    let _ = client.set_zero_linger();
    let _ = client.set_nodelay(true);
    if !flowing(&mut mode).await {
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        return; // the server is down: the client sees a reset, as it would without us
    };
    let _ = server.set_zero_linger();
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, mode.clone());
    let down = pump(server_read, client_write, mode);
    // When either direction ends (a close, an error or a reset), so does the
    // connection: both sockets drop here and are reset.
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut mode: watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // A cut while waiting: stop reading at once.
            _ = mode.changed() => continue,
        };
        // Bytes read just as a cut began are held until it heals.
        if !flowing(&mut mode).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
