//! What the orchestrator asks the sidecars over HTTP.

use std::time::Duration;

use anyhow::{Context, bail};
use demo::{Checkpoint, JOB_ID};
use serde::Deserialize;

/// A short-timeout HTTP client: every sidecar is on localhost, and a probe of a
/// dead one must fail fast so takeover times stay precise.
pub struct Probe {
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct SelfView {
    term: Option<u64>,
}

/// `GET /recovery`, as far as the orchestrator needs it.
#[derive(Deserialize)]
pub struct Recovery {
    pub jobs: Vec<RecoverableJob>,
    pub dirty_results: Vec<String>,
}

#[derive(Deserialize)]
pub struct RecoverableJob {
    pub id: String,
}

/// `PUT /jobs/{job}/result`: `deleted` (or `clean`) once the job's HA data is
/// gone, `dirty` while the clean-up is still pending.
#[derive(Deserialize)]
struct Finished {
    state: String,
}

/// Takes the body of an error reply for the message.
fn http_error(what: &str, e: ureq::Error) -> anyhow::Error {
    match e {
        ureq::Error::Status(status, r) => anyhow::anyhow!(
            "{what}: HTTP {status}: {}",
            r.into_string().unwrap_or_default().trim()
        ),
        // A transport error names the URL itself.
        e => anyhow::anyhow!("{e}"),
    }
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

    /// The job's latest checkpoint, as read through this sidecar (none if the
    /// job has no checkpoint).
    pub fn latest_checkpoint(&self, port: u16) -> anyhow::Result<Option<Checkpoint>> {
        let url = format!("http://127.0.0.1:{port}/jobs/{JOB_ID}/checkpoints/latest");
        let response = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(404, _)) => return Ok(None),
            Err(e) => return Err(http_error(&format!("GET {url}"), e)),
        };
        let id = response
            .header("x-ha-checkpoint-id")
            .and_then(|h| h.trim().parse().ok())
            .with_context(|| format!("GET {url} answered without x-ha-checkpoint-id"))?;
        let body = response
            .into_string()
            .context("cannot read the checkpoint")?;
        let count = body
            .trim()
            .parse()
            .with_context(|| format!("checkpoint {id} holds {body:?}, not a count"))?;
        Ok(Some(Checkpoint { id, count }))
    }

    /// `GET /recovery` through this sidecar.
    pub fn recovery(&self, port: u16) -> anyhow::Result<Recovery> {
        let url = format!("http://127.0.0.1:{port}/recovery");
        let response = self
            .agent
            .get(&url)
            .call()
            .map_err(|e| http_error(&format!("GET {url}"), e))?;
        response
            .into_json()
            .with_context(|| format!("GET {url}: unexpected answer"))
    }

    /// Records the job's result, fenced by `term`; returns the state the
    /// result store reports (`deleted`, `clean` or `dirty`).
    pub fn finish_job(
        &self,
        port: u16,
        term: u64,
        result: &serde_json::Value,
    ) -> anyhow::Result<String> {
        let url = format!("http://127.0.0.1:{port}/jobs/{JOB_ID}/result");
        let response = self
            .agent
            .put(&url)
            // Recording the result deletes all of the job's HA data first.
            .timeout(Duration::from_secs(10))
            .set("X-HA-Term", &term.to_string())
            .set("Content-Type", "application/json")
            .send_string(&result.to_string())
            .map_err(|e| http_error(&format!("PUT {url}"), e))?;
        let finished: Finished = response
            .into_json()
            .with_context(|| format!("PUT {url}: unexpected answer"))?;
        Ok(finished.state)
    }

    /// The job's entry in the job result store, if it has one.
    pub fn job_result(&self, port: u16) -> anyhow::Result<Option<serde_json::Value>> {
        let url = format!("http://127.0.0.1:{port}/jobs/{JOB_ID}/result");
        match self.agent.get(&url).call() {
            Ok(r) => {
                Ok(Some(r.into_json().with_context(|| {
                    format!("GET {url}: unexpected answer")
                })?))
            }
            Err(ureq::Error::Status(404, _)) => Ok(None),
            Err(e) => bail!(http_error(&format!("GET {url}"), e)),
        }
    }
}
