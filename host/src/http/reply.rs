//! Responses: JSON with a stable `error` code and a human message for every
//! failure, so scripts can branch on the code and people can read the message.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Frame;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A whole body, or a stream of lines that a task writes while the client reads.
pub type Body = Either<Full<Bytes>, Lines>;
pub type Reply = Response<Body>;

fn whole(bytes: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(bytes.into()))
}

/// A streamed body: each message of the channel is one chunk. When hyper
/// drops the body (the client's connection is gone) the sender's next
/// `send` fails, which is how the writer learns the client left.
pub struct Lines {
    rx: mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for Lines {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|m| m.map(|b| Ok(Frame::data(b))))
    }
}

/// A `200` whose body is what is sent on the returned channel, until it is dropped.
pub fn stream(content_type: &'static str) -> (Reply, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel(16);
    let mut r = Response::new(Either::Right(Lines { rx }));
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    (r, tx)
}

pub fn json(status: StatusCode, value: &Value) -> Reply {
    let mut r = Response::new(whole(value.to_string() + "\n"));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(whole(body));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

/// A body that is part of the binary (no copy per request).
pub fn static_text(status: StatusCode, content_type: &'static str, body: &'static str) -> Reply {
    let mut r = Response::new(whole(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn bytes(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut r = Response::new(whole(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

pub fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(whole(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// An error reply: the code is part of the API, the message is for people.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
    json(status, &json!({ "error": code, "message": message.into() }))
}

pub fn error_with(
    status: StatusCode,
    code: &str,
    message: impl Into<String>,
    extra: Value,
) -> Reply {
    let mut body = json!({ "error": code, "message": message.into() });
    if let (Some(obj), Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
    json(status, &body)
}

/// A 405 with the `Allow` header RFC 9110 requires: the methods the path
/// takes, so a client (or a probe) can tell what to send instead.
pub fn method_not_allowed(allowed: &[&str], message: impl Into<String>) -> Reply {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        message,
    );
    if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
        r.headers_mut().insert(hyper::header::ALLOW, v);
    }
    r
}

pub fn etag(mut r: Reply, version: u64) -> Reply {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(hyper::header::ETAG, v);
    }
    r
}
