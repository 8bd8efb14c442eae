//! `election.*`: who decides that this sidecar campaigns.
//!
//! Flink ties candidacy to the JobManager's election driver: a process
//! campaigns from the driver's creation until its `close()`. With
//! `candidacy: client` the sidecar follows that rule (it campaigns only
//! while its client holds a candidacy open), so a sidecar whose JobManager is
//! dead never keeps the leadership. `never` makes an observer, the sidecar
//! beside a TaskManager or a CLI host: it serves discovery and reads only.

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Validator};
use crate::section::Dur;

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(super) struct RawElection {
    candidacy: Option<String>,
    candidacy_ttl: Option<Dur>,
}

/// Who opens this sidecar's candidacy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Candidacy {
    /// The sidecar campaigns from its start to its end (a process that cannot
    /// speak the candidacy API relies on `/leader/self` alone).
    Always,
    /// Only while a client holds a candidacy (`POST /candidacy`).
    Client,
    /// Never: an observer.
    Never,
}

impl Candidacy {
    pub fn as_str(self) -> &'static str {
        match self {
            Candidacy::Always => "always",
            Candidacy::Client => "client",
            Candidacy::Never => "never",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct ElectionConfig {
    pub candidacy: Candidacy,
    /// A client candidacy not renewed for this long is closed: the client hangs.
    pub candidacy_ttl: Duration,
}

pub const DEFAULT_CANDIDACY_TTL: Duration = Duration::from_secs(6);

impl Default for ElectionConfig {
    fn default() -> Self {
        Self {
            candidacy: Candidacy::Always,
            candidacy_ttl: DEFAULT_CANDIDACY_TTL,
        }
    }
}

impl Validator<'_> {
    pub(super) fn election(&self, e: RawElection) -> Result<ElectionConfig, ConfigError> {
        let candidacy = match e.candidacy.as_deref() {
            None | Some("always") => Candidacy::Always,
            Some("client") => Candidacy::Client,
            Some("never") => Candidacy::Never,
            Some(other) => {
                return Err(self.err(
                    "election.candidacy",
                    format!("{other:?}"),
                    "must be always (campaign from start), client (only while a client such as Flink's JobManager holds a candidacy open) or never (an observer, beside a TaskManager)",
                ));
            }
        };
        let ttl = e.candidacy_ttl.map_or(DEFAULT_CANDIDACY_TTL, |d| d.0);
        if !(Duration::from_millis(500)..=Duration::from_secs(600)).contains(&ttl) {
            return Err(self.err(
                "election.candidacy-ttl",
                Dur(ttl),
                "must be between 500ms and 10m: a client renews its candidacy every third of it, and a hung client keeps the leadership this long",
            ));
        }
        if e.candidacy_ttl.is_some() && candidacy != Candidacy::Client {
            return Err(self.err(
                "election.candidacy-ttl",
                Dur(ttl),
                format!(
                    "applies only with election.candidacy: client (this config has {}); remove it or set election.candidacy: client",
                    candidacy.as_str()
                ),
            ));
        }
        Ok(ElectionConfig {
            candidacy,
            candidacy_ttl: ttl,
        })
    }
}
