//! The operator commands' HTTP client: one request per connection to a
//! sidecar's API, over hyper's HTTP/1 connection, bounded by a deadline.
//! Loopback or a trusted network only, as the API itself.

use std::time::Duration;

use anyhow::{Context, anyhow};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A sidecar's API: `host:port`, and the bearer token its writes need
/// (`--token-file`, the sidecar's `http.token-file`), if any.
#[derive(Clone)]
pub struct Api {
    pub address: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Api {
    /// The token in `path` (`--token-file`), without surrounding whitespace.
    pub fn read_token(path: &std::path::Path) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("--token-file: cannot read {}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            anyhow::bail!(
                "--token-file: {} is empty; name the file of the sidecar's http.token-file",
                path.display()
            );
        }
        Ok(token.to_string())
    }
}

/// An answer: status and JSON body (null if the body was empty).
pub struct Answer {
    pub status: u16,
    pub body: serde_json::Value,
}

impl Api {
    /// `method path`, answered within `timeout` (connect included).
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        timeout: Duration,
    ) -> anyhow::Result<Answer> {
        tokio::time::timeout(timeout, self.exchange(method, path))
            .await
            .map_err(|_| {
                anyhow!(
                    "{method} {path} on {}: no answer within {timeout:?}",
                    self.address
                )
            })?
    }

    async fn exchange(&self, method: &str, path: &str) -> anyhow::Result<Answer> {
        let stream = tokio::net::TcpStream::connect(&self.address)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the sidecar at {}: is it running, and is that its http.listen?",
                    self.address
                )
            })?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake")?;
        tokio::spawn(conn);
        let mut request = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, &self.address);
        if let Some(token) = &self.token {
            request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = request
            .body(Empty::<Bytes>::new())
            .context("build the request (is the --token-file token one line of visible ASCII?)")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("{method} {path} on {}", self.address))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .context("read the answer")?
            .to_bytes();
        let body = if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{method} {path} on {}: the answer is not JSON: {}",
                    self.address,
                    String::from_utf8_lossy(&bytes)
                )
            })?
        };
        Ok(Answer { status, body })
    }
}
