//! Who may do what on which listener.
//!
//! The API on `http.listen` writes fenced state and changes leadership, so it
//! stays on loopback by default. What a kubelet or a Prometheus needs from the
//! pod network (a few reads) is served on `http.probe-listen`, which answers
//! nothing else: a write there never reaches a handler. When the write API
//! must leave loopback, `http.token-file` names a bearer token that every
//! request other than a GET must carry.
//!
//! The token is read once, at start (with the rest of the config): rotating
//! it means restarting the sidecar, as the Flink plugin beside it also reads
//! its copy once. Only its SHA-256 digest is kept, and a presented token is
//! compared digest to digest in constant time, so neither the time of a
//! refusal nor a debug print of the config tells anything about the token.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper::header::{AUTHORIZATION, HeaderMap, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Method, StatusCode};
use sha2::{Digest, Sha256};

use super::Endpoint;
use super::reply::{self, Reply};

/// Shortest token accepted: 128 bits of hex, or 96 bits of base64.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why a token file cannot be used. Never holds the token itself.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} holds {len} characters after trimming whitespace; a token needs at least {MIN_TOKEN_LEN} (make one with: head -c 32 /dev/urandom | base64)"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error(
        "{path} holds a character that cannot be sent in an HTTP header (only visible ASCII, no spaces, is allowed); write the token alone on one line"
    )]
    NotHeaderSafe { path: PathBuf },
}

/// The write API's bearer token: its digest only.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken {
    digest: [u8; 32],
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// Reads the token from `path`: the file's contents without surrounding
    /// whitespace (a trailing newline is the common case).
    pub fn load(path: &Path) -> Result<Self, TokenError> {
        let bytes = std::fs::read(path).map_err(|source| TokenError::Read {
            path: path.into(),
            source,
        })?;
        let token = bytes.trim_ascii();
        if !token.iter().all(|b| b.is_ascii_graphic()) {
            return Err(TokenError::NotHeaderSafe { path: path.into() });
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(TokenError::TooShort {
                path: path.into(),
                len: token.len(),
            });
        }
        Ok(Self::from_bytes(token))
    }

    fn from_bytes(token: &[u8]) -> Self {
        Self {
            digest: Sha256::digest(token).into(),
        }
    }

    /// Whether `presented` is the token. Digests of equal length are compared
    /// without an early exit, so the time taken does not depend on where the
    /// first differing byte is (nor, digests being fixed-size, on the length).
    pub fn matches(&self, presented: &[u8]) -> bool {
        let other: [u8; 32] = Sha256::digest(presented).into();
        let diff = self
            .digest
            .iter()
            .zip(other.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        std::hint::black_box(diff) == 0
    }
}

/// Which listener a connection came in on, and what it lets through.
#[derive(Clone, Debug)]
pub enum Face {
    /// `http.listen`: everything; writes need the token when one is set.
    Api { token: Option<Arc<ApiToken>> },
    /// `http.probe-listen`: reads for probes and scrapers only.
    Probe,
}

/// What a probe or a scraper needs, and all the probe listener serves.
pub const PROBE_ENDPOINTS: &[Endpoint] = &[
    Endpoint::Leader,
    Endpoint::LeaderSelf,
    Endpoint::Healthz,
    Endpoint::Readyz,
    Endpoint::Metrics,
];

const PROBE_PATHS: &str = "GET /leader, /leader/self, /healthz, /readyz and /metrics";

/// The refusal for a request this face does not let through, if any. Runs
/// after routing (so 404 and 405 stay what the route table says) and before
/// any handler, so a refused request changes nothing.
pub fn refusal(
    face: &Face,
    method: &Method,
    endpoint: Endpoint,
    headers: &HeaderMap,
) -> Option<Reply> {
    match face {
        Face::Probe if !PROBE_ENDPOINTS.contains(&endpoint) => Some(reply::error(
            StatusCode::FORBIDDEN,
            "probe_listener",
            format!(
                "the probe listener (http.probe-listen) serves only {PROBE_PATHS}; state, jobs, candidacy and resign are on the API of http.listen, inside the pod"
            ),
        )),
        Face::Probe => None,
        Face::Api { token: Some(token) } if *method != Method::GET => {
            bearer_refusal(token, headers)
        }
        Face::Api { .. } => None,
    }
}

/// The 401 for a write without the right bearer token, or None when it has it.
fn bearer_refusal(token: &ApiToken, headers: &HeaderMap) -> Option<Reply> {
    let presented = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()));
    let message = match presented {
        Some(p) if token.matches(p) => return None,
        Some(_) => {
            "the bearer token does not match the one in http.token-file; send that file's contents (Flink: high-availability.sidecar.token-file names a copy of it)"
        }
        None => {
            "writes to this sidecar need its bearer token (http.token-file): send Authorization: Bearer <the token>; Flink's plugin does when high-availability.sidecar.token-file names the file, the operator commands with --token-file"
        }
    };
    tracing::debug!(
        presented = presented.is_some(),
        "write refused: no valid bearer token"
    );
    let mut r = reply::error(StatusCode::UNAUTHORIZED, "unauthorized", message);
    r.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ha-sidecar\""),
    );
    Some(r)
}

/// The credentials of `Bearer <token>` (the scheme in any case), or None.
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let scheme = value.get(..7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    Some(value[7..].trim_ascii())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_file(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, contents).unwrap();
        (dir, path)
    }

    #[test]
    fn a_token_is_read_trimmed_and_compared() {
        let (_d, path) = token_file(b"0123456789abcdef-xyz\n");
        let t = ApiToken::load(&path).unwrap();
        assert!(t.matches(b"0123456789abcdef-xyz"));
        assert!(!t.matches(b"0123456789abcdef-xy"));
        assert!(!t.matches(b"0123456789abcdef-xyz\n"));
        assert!(!t.matches(b""));
        assert_eq!(format!("{t:?}"), "ApiToken(<redacted>)");
    }

    #[test]
    fn bad_token_files_are_named_without_their_contents() {
        let (_d, path) = token_file(b"short\n");
        let e = ApiToken::load(&path).unwrap_err().to_string();
        assert!(e.contains("at least 16") && !e.contains("short\n"), "{e}");
        let (_d, path) = token_file(b"0123456789 abcdef0123\n");
        let e = ApiToken::load(&path).unwrap_err().to_string();
        assert!(e.contains("HTTP header") && !e.contains("abcdef"), "{e}");
        let e = ApiToken::load(Path::new("/nonexistent/token"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read /nonexistent/token"), "{e}");
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer  abc "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer"), None);
    }

    #[test]
    fn faces_let_through_what_they_should() {
        let t = Arc::new(ApiToken::from_bytes(b"0123456789abcdef"));
        let api = Face::Api { token: Some(t) };
        let none = HeaderMap::new();
        let mut good = HeaderMap::new();
        good.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdef"),
        );
        let mut wrong = HeaderMap::new();
        wrong.insert(
            AUTHORIZATION,
            HeaderValue::from_static("Bearer 0123456789abcdeX"),
        );
        assert!(refusal(&api, &Method::GET, Endpoint::State, &none).is_none());
        assert!(refusal(&api, &Method::PUT, Endpoint::State, &good).is_none());
        for h in [&none, &wrong] {
            let r = refusal(&api, &Method::PUT, Endpoint::State, h).unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        }
        let open = Face::Api { token: None };
        assert!(refusal(&open, &Method::POST, Endpoint::Resign, &none).is_none());
        assert!(refusal(&Face::Probe, &Method::GET, Endpoint::LeaderSelf, &none).is_none());
        for e in [
            Endpoint::State,
            Endpoint::Resign,
            Endpoint::Candidacies,
            Endpoint::Jobs,
        ] {
            let r = refusal(&Face::Probe, &Method::GET, e, &good).unwrap();
            assert_eq!(r.status(), StatusCode::FORBIDDEN, "{e:?}");
        }
    }
}
