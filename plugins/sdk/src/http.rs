//! A small blocking HTTP client over `wasi:http/outgoing-handler`, for stores
//! reached over HTTP (granted with `capabilities.outgoing-http`; the host
//! refuses endpoints the config does not list, and bounds every request by
//! the deadline of the plugin call that made it).
//!
//! A [`Request`] has a method (GET, PUT, POST, DELETE, PATCH, HEAD), a path
//! and headers (such as `Authorization` with a token from
//! [`crate::secrets`]). Two shapes: [`send`] (and [`post`] for JSON) reads a
//! whole response; [`Stream`] reads a long response (a watch) piece by piece,
//! each read bounded by a deadline, so a plugin call always returns by itself.

use std::time::{Duration, Instant};

use wasip2::clocks::monotonic_clock;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::poll;
use wasip2::io::streams::{InputStream, StreamError};

/// A server to talk to: `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    https: bool,
    authority: String,
}

impl Endpoint {
    pub fn parse(s: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(format!("{s:?} must start with http:// or https://"));
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains(['/', '?', '@']) {
            return Err(format!(
                "{s:?} must be scheme://host:port with no path, query or credentials"
            ));
        }
        Ok(Self {
            https,
            authority: authority.to_string(),
        })
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        write!(f, "{scheme}://{}", self.authority)
    }
}

/// Why a request got no response.
#[derive(Debug)]
pub enum Error {
    /// The host refused the endpoint: it is not in the config's grant.
    Denied(String),
    /// Connection refused, reset, timed out, or any other transport failure.
    Transport(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Denied(e) => write!(
                f,
                "the sidecar refused a request to {e}: the endpoint is not listed in capabilities.outgoing-http.endpoints"
            ),
            Error::Transport(m) => f.write_str(m),
        }
    }
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
}

impl Verb {
    fn wasi(self) -> Method {
        match self {
            Verb::Get => Method::Get,
            Verb::Head => Method::Head,
            Verb::Post => Method::Post,
            Verb::Put => Method::Put,
            Verb::Patch => Method::Patch,
            Verb::Delete => Method::Delete,
        }
    }
}

/// One request: method, path (with query), headers and body.
#[derive(Debug, Clone)]
pub struct Request {
    pub verb: Verb,
    pub path: String,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(verb: Verb, path: impl Into<String>) -> Self {
        Self {
            verb,
            path: path.into(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    pub fn get(path: impl Into<String>) -> Self {
        Self::new(Verb::Get, path)
    }

    pub fn delete(path: impl Into<String>) -> Self {
        Self::new(Verb::Delete, path)
    }

    pub fn put(path: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new(Verb::Put, path).body(body)
    }

    pub fn post(path: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Self::new(Verb::Post, path).body(body)
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Adds a header (a repeated name is sent once per call).
    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// `Content-Type: application/json`.
    pub fn json(self) -> Self {
        self.header("content-type", b"application/json".to_vec())
    }

    /// `Authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", format!("Bearer {token}"))
    }

    /// `Authorization: Basic <user:password in base64>`.
    pub fn basic(self, user: &str, password: &str) -> Self {
        use base64::Engine;
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        self.header("authorization", format!("Basic {pair}"))
    }
}

/// Sends `request` and waits for the response head, at most `timeout`.
fn open(
    endpoint: &Endpoint,
    request: &Request,
    timeout: Duration,
) -> Result<IncomingResponse, Error> {
    let path = request.path.as_str();
    let body = request.body.as_slice();
    let transport =
        |what: &str, e: String| Error::Transport(format!("{what} {endpoint}{path}: {e}"));
    let mut fields = request.headers.clone();
    if !body.is_empty() || matches!(request.verb, Verb::Post | Verb::Put | Verb::Patch) {
        fields.push(("content-length".into(), body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&fields).map_err(|e| {
        // The error names the header, never its value (it may be a credential).
        let names: Vec<&str> = request.headers.iter().map(|(n, _)| n.as_str()).collect();
        transport(
            "headers for",
            format!("{e:?} (headers: {})", names.join(", ")),
        )
    })?;
    let verb = request.verb;
    let request = OutgoingRequest::new(headers);
    let scheme = if endpoint.https {
        Scheme::Https
    } else {
        Scheme::Http
    };
    let set = request.set_method(&verb.wasi()).is_ok()
        && request.set_scheme(Some(&scheme)).is_ok()
        && request.set_authority(Some(&endpoint.authority)).is_ok()
        && request.set_path_with_query(Some(path)).is_ok();
    if !set {
        return Err(transport("cannot address", "invalid request line".into()));
    }
    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let outgoing = request
        .body()
        .map_err(|()| transport("no body for", String::new()))?;
    let pending =
        outgoing_handler::handle(request, Some(options)).map_err(|e| error(endpoint, path, e))?;
    {
        let out = outgoing
            .write()
            .map_err(|()| transport("no body stream for", String::new()))?;
        // blocking-write-and-flush takes at most 4096 bytes at a time.
        for chunk in body.chunks(4096) {
            out.blocking_write_and_flush(chunk)
                .map_err(|e| transport("writing to", format!("{e:?}")))?;
        }
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| error(endpoint, path, e))?;
    pending.subscribe().block();
    match pending.get() {
        Some(Ok(Ok(response))) => Ok(response),
        Some(Ok(Err(e))) => Err(error(endpoint, path, e)),
        Some(Err(())) | None => Err(transport(
            "no response from",
            "response already taken".into(),
        )),
    }
}

fn error(endpoint: &Endpoint, path: &str, e: ErrorCode) -> Error {
    match e {
        ErrorCode::HttpRequestDenied => Error::Denied(endpoint.to_string()),
        other => Error::Transport(format!("{endpoint}{path}: {other:?}")),
    }
}

/// A response body being read piece by piece.
pub struct Stream {
    pub status: u16,
    // Field order is drop order: the stream is a child of the body, which is a
    // child of the response; wasi traps if a parent goes first.
    stream: InputStream,
    _body: IncomingBody,
    _response: IncomingResponse,
}

impl Stream {
    /// POSTs `body` (JSON) to `path` and opens the response.
    pub fn open(
        endpoint: &Endpoint,
        path: &str,
        body: &[u8],
        timeout: Duration,
    ) -> Result<Self, Error> {
        Self::request(endpoint, &Request::post(path, body).json(), timeout)
    }

    /// Sends `request` and opens the response.
    pub fn request(
        endpoint: &Endpoint,
        request: &Request,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let path = request.path.as_str();
        let response = open(endpoint, request, timeout)?;
        let status = response.status();
        let incoming = response
            .consume()
            .map_err(|()| Error::Transport(format!("{endpoint}{path}: body already consumed")))?;
        let stream = incoming
            .stream()
            .map_err(|()| Error::Transport(format!("{endpoint}{path}: no body stream")))?;
        Ok(Self {
            status,
            stream,
            _body: incoming,
            _response: response,
        })
    }

    /// The next bytes of the body: `Ok(Some)` with at least one byte,
    /// `Ok(None)` at the end of the body or once `deadline` passes.
    pub fn read(&mut self, deadline: Instant) -> Result<Option<Vec<u8>>, Error> {
        loop {
            match self.stream.read(64 * 1024) {
                Ok(bytes) if !bytes.is_empty() => return Ok(Some(bytes)),
                Ok(_) => {}
                Err(StreamError::Closed) => return Ok(None),
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(Error::Transport(format!(
                        "reading a response: {}",
                        e.to_debug_string()
                    )));
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            let ready = self.stream.subscribe();
            let timer = monotonic_clock::subscribe_duration(
                u64::try_from(left.as_nanos()).unwrap_or(u64::MAX),
            );
            poll::poll(&[&ready, &timer]);
        }
    }

    /// The rest of the body, until its end or `deadline`.
    pub fn read_to_end(&mut self, deadline: Instant) -> Result<Vec<u8>, Error> {
        let mut all = Vec::new();
        while let Some(bytes) = self.read(deadline)? {
            all.extend_from_slice(&bytes);
        }
        Ok(all)
    }
}

/// POSTs `body` (JSON) and reads the whole response, all within `timeout`.
pub fn post(
    endpoint: &Endpoint,
    path: &str,
    body: &[u8],
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Error> {
    send(endpoint, &Request::post(path, body).json(), timeout)
}

/// Sends `request` and reads the whole response (status and body), all
/// within `timeout`.
pub fn send(
    endpoint: &Endpoint,
    request: &Request,
    timeout: Duration,
) -> Result<(u16, Vec<u8>), Error> {
    let deadline = Instant::now() + timeout;
    let mut stream = Stream::request(endpoint, request, timeout)?;
    let bytes = stream.read_to_end(deadline)?;
    if Instant::now() >= deadline {
        return Err(Error::Transport(format!(
            "{endpoint}{}: no complete response within {timeout:?}",
            request.path
        )));
    }
    Ok((stream.status, bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_carry_method_headers_and_credentials() {
        let r = Request::put("/v1/kv/x", b"v".to_vec())
            .bearer("t0ken")
            .json();
        assert_eq!(r.verb, Verb::Put);
        assert_eq!(r.body, b"v");
        assert_eq!(
            r.headers,
            [
                ("authorization".to_string(), b"Bearer t0ken".to_vec()),
                ("content-type".to_string(), b"application/json".to_vec()),
            ]
        );
        // RFC 7617's example.
        let b = Request::get("/").basic("Aladdin", "open sesame");
        assert_eq!(
            b.headers[0].1,
            b"Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".to_vec()
        );
        assert_eq!(
            Request::delete("/k").header("X-Trace", "1").headers[0].0,
            "x-trace"
        );
    }
}
