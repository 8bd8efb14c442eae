//! What the orchestrator asks the sidecars over HTTP.

use std::time::Duration;

use anyhow::{Context, bail};
use serde::Deserialize;

/// The checkpoint key the job managers write.
pub const CHECKPOINT_KEY: &str = "demo/count";

/// A short-timeout HTTP client: every sidecar is on localhost, and a probe of a
/// dead one must fail fast so takeover times stay precise.
pub struct Probe {
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct SelfView {
    term: Option<u64>,
}

impl Probe {
    pub fn new() -> Probe {
        Probe {
            agent: ureq::AgentBuilder::new()
                .timeout(Duration::from_millis(500))
                .build(),
        }
    }

    /// The term this sidecar leads in, or none if it does not lead or does not answer.
    pub fn leading_term(&self, port: u16) -> Option<u64> {
        let response = self
            .agent
            .get(&format!("http://127.0.0.1:{port}/leader/self"))
            .call()
            .ok()?;
        response.into_json::<SelfView>().ok()?.term
    }

    /// The last checkpointed count, as read through this sidecar (none if no
    /// checkpoint exists yet).
    pub fn checkpoint(&self, port: u16) -> anyhow::Result<Option<u64>> {
        let url = format!("http://127.0.0.1:{port}/state/{CHECKPOINT_KEY}");
        let body = match self.agent.get(&url).call() {
            Ok(r) => r.into_string().context("cannot read the checkpoint")?,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(ureq::Error::Status(status, r)) => bail!(
                "GET {url}: HTTP {status}: {}",
                r.into_string().unwrap_or_default().trim()
            ),
            // A transport error names the URL itself.
            Err(e) => bail!("{e}"),
        };
        let count = body
            .trim()
            .parse()
            .with_context(|| format!("the checkpoint {body:?} is not a number"))?;
        Ok(Some(count))
    }
}
