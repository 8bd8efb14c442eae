//! Responses: JSON with a stable `error` code and a human message for every
//! failure, so scripts can branch on the code and people can read the message.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde_json::{Value, json};

pub type Body = Full<Bytes>;
pub type Reply = Response<Body>;

pub fn json(status: StatusCode, value: &Value) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(value.to_string() + "\n")));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

pub fn text(status: StatusCode, content_type: &'static str, body: String) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    r
}

pub fn bytes(status: StatusCode, body: Vec<u8>) -> Reply {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    r
}

pub fn empty(status: StatusCode) -> Reply {
    let mut r = Response::new(Full::new(Bytes::new()));
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

pub fn etag(mut r: Reply, version: u64) -> Reply {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(hyper::header::ETAG, v);
    }
    r
}
