//! Spots requests that carry both `Content-Length` and `Transfer-Encoding`.
//!
//! RFC 9112 lets a server take such a request by its chunked framing, and
//! hyper does; but it is the shape of request smuggling (a proxy in front
//! may frame it by its length), so the API refuses it. hyper drops the
//! `Content-Length` line before the handler sees the headers, so the bytes
//! are read here, on their way into hyper: each request head is scanned for
//! the two header names, and bodies framed by a length are skipped. A chunked
//! body is not followed: the reply to a chunked request closes the
//! connection, so nothing after it is ever parsed.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the scan saw in one request head, in the order the heads arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The request line's method and target, to check that the handler is
    /// looking at the head this verdict is about.
    pub method: String,
    pub target: String,
    pub content_length: bool,
    pub transfer_encoding: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a head; `blank` is true while the current line has held
    /// nothing but CR, so a LF there ends the head.
    Head { blank: bool },
    /// Skipping a body of this many bytes.
    Body(u64),
    /// After a chunked body (or anything else not followed): heads are no
    /// longer found, and the connection closes after the current reply.
    Lost,
}

/// The scanner of one connection's bytes.
#[derive(Debug)]
pub struct Scanner {
    state: State,
    head: Vec<u8>,
    heads: VecDeque<Head>,
    max_head: usize,
}

impl Scanner {
    /// A head longer than `max_head` (hyper refuses it anyway) stops the scan.
    pub fn new(max_head: usize) -> Self {
        Self {
            state: State::Head { blank: false },
            head: Vec::new(),
            heads: VecDeque::new(),
            max_head,
        }
    }

    /// The next complete head, in arrival order (one per request hyper hands
    /// to the service), or None once the scan has lost the framing.
    pub fn next_head(&mut self) -> Option<Head> {
        self.heads.pop_front()
    }

    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.state {
                State::Lost => return,
                State::Body(left) => {
                    let n = left.min(bytes.len() as u64);
                    bytes = &bytes[n as usize..];
                    self.state = match left - n {
                        0 => State::Head { blank: false },
                        rest => State::Body(rest),
                    };
                }
                State::Head { mut blank } => {
                    let mut used = bytes.len();
                    let mut ended = false;
                    for (i, &b) in bytes.iter().enumerate() {
                        // Empty lines before a request line are skipped, as httparse does.
                        if self.head.is_empty() && (b == b'\r' || b == b'\n') {
                            continue;
                        }
                        self.head.push(b);
                        match b {
                            b'\n' if blank => {
                                used = i + 1;
                                ended = true;
                                break;
                            }
                            b'\n' => blank = true,
                            b'\r' => {}
                            _ => blank = false,
                        }
                    }
                    bytes = &bytes[used..];
                    if ended {
                        let head = std::mem::take(&mut self.head);
                        self.state = self.on_head(&head);
                    } else if self.head.len() > self.max_head {
                        self.head = Vec::new();
                        self.state = State::Lost;
                    } else {
                        self.state = State::Head { blank };
                    }
                }
            }
        }
    }

    /// Records the head and says how the bytes after it are framed.
    fn on_head(&mut self, raw: &[u8]) -> State {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_string();
        let target = request_line.next().unwrap_or("").to_string();
        let mut length: Option<Option<u64>> = None;
        let mut chunked = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            if name.eq_ignore_ascii_case("content-length") {
                length.get_or_insert(value.trim().parse().ok());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = true;
            }
        }
        self.heads.push_back(Head {
            content_length: length.is_some(),
            transfer_encoding: chunked,
            method: method.clone(),
            target,
        });
        match (chunked, length) {
            // Not followed; an upgrade's bytes after the head are not HTTP.
            (true, _) | (_, Some(None)) => State::Lost,
            _ if method == "CONNECT" => State::Lost,
            (false, Some(Some(n))) if n > 0 => State::Body(n),
            _ => State::Head { blank: false },
        }
    }
}

/// A stream whose incoming bytes are fed to a shared `Scanner`.
pub struct Scanned<T> {
    io: T,
    scanner: Arc<Mutex<Scanner>>,
}

impl<T> Scanned<T> {
    pub fn new(io: T, scanner: Arc<Mutex<Scanner>>) -> Self {
        Self { io, scanner }
    }
}

pub fn lock(scanner: &Mutex<Scanner>) -> std::sync::MutexGuard<'_, Scanner> {
    scanner.lock().unwrap_or_else(PoisonError::into_inner)
}

impl<T: AsyncRead + Unpin> AsyncRead for Scanned<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            lock(&this.scanner).feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Scanned<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `raw` in pieces of `step` bytes and returns the heads seen.
    fn scan(raw: &[u8], step: usize) -> (Vec<Head>, State) {
        let mut s = Scanner::new(1 << 16);
        for piece in raw.chunks(step) {
            s.feed(piece);
        }
        let mut heads = Vec::new();
        while let Some(h) = s.next_head() {
            heads.push(h);
        }
        (heads, s.state)
    }

    #[test]
    fn both_length_headers_are_seen_in_either_order_and_any_split() {
        for raw in [
            &b"PUT /state/a HTTP/1.1\r\nhost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
            b"PUT /state/a HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
            b"PUT /state/a HTTP/1.1\nTRANSFER-ENCODING: chunked\nCONTENT-LENGTH: 3\n\n",
        ] {
            for step in [1, 2, 7, raw.len()] {
                let (heads, state) = scan(raw, step);
                assert_eq!(heads.len(), 1, "step {step}");
                let h = &heads[0];
                assert!(h.content_length && h.transfer_encoding, "step {step}: {h:?}");
                assert_eq!((h.method.as_str(), h.target.as_str()), ("PUT", "/state/a"));
                assert_eq!(state, State::Lost);
            }
        }
    }

    #[test]
    fn bodies_framed_by_length_are_skipped_and_pipelined_heads_found() {
        // The first body looks like a smuggled request: it is body, not a head.
        let body =
            b"\r\n\r\nPUT /x HTTP/1.1\r\ncontent-length: 1\r\ntransfer-encoding: chunked\r\n\r\n";
        let mut raw = format!(
            "\r\nPUT /state/a HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        raw.extend_from_slice(body);
        raw.extend_from_slice(b"GET /leader HTTP/1.1\r\nhost: x\r\n\r\nDELETE /state/b HTTP/1.1\r\ncontent-length: 0\r\n\r\n");
        for step in [1, 3, 64, raw.len()] {
            let (heads, state) = scan(&raw, step);
            let seen: Vec<_> = heads
                .iter()
                .map(|h| (h.method.as_str(), h.content_length, h.transfer_encoding))
                .collect();
            assert_eq!(
                seen,
                [
                    ("PUT", true, false),
                    ("GET", false, false),
                    ("DELETE", true, false)
                ],
                "step {step}"
            );
            assert_eq!(state, State::Head { blank: false });
        }
    }

    #[test]
    fn a_chunked_body_or_an_oversized_head_stops_the_scan() {
        let (heads, state) = scan(
            b"PUT /a HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            5,
        );
        assert_eq!(heads.len(), 1);
        assert!(heads[0].transfer_encoding && !heads[0].content_length);
        assert_eq!(state, State::Lost);
        let mut s = Scanner::new(64);
        s.feed(&[b'a'; 100]);
        assert_eq!(s.state, State::Lost);
        assert_eq!(s.next_head(), None);
    }
}
