//! The embedded default backend: a directory, granted to the plugin by the
//! host (WASI preopen at `/data`), that the sidecars of one machine share.
//! No external service is needed, so a single machine and the demo work out
//! of the box. The directory must be on a local filesystem: the design relies
//! on atomic `rename` and exclusive hard links (see `election` and `state`).

mod election;
mod fsx;
mod layout;
mod members;
mod state;

use std::path::Path;
use std::time::{Duration, Instant};

use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::stateful::StatefulBackend;
use ha_sidecar_sdk::{Failure, Result, Setup, Term, Versioned, invalid, unavailable};

use election::{Election, Vacancy};
use layout::Layout;
use members::Members;
use state::{StateStore, Takeover};

/// Where the host mounts the granted directory.
const GRANTED_DIR: &str = "/data";

struct Plugin {
    layout: Layout,
    election: Election,
    members: Members,
    session: String,
}

impl Plugin {
    fn store(&self) -> StateStore<'_> {
        StateStore {
            layout: &self.layout,
            session: &self.session,
        }
    }

    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        self.members.announce(&self.layout)?;
        loop {
            let (token, previous) = match self.election.vacancy(&self.layout)? {
                Vacancy::Never => (1, None),
                Vacancy::After(latest) => (latest.token + 1, Some(latest)),
                Vacancy::Held => {
                    if !sleep_until_next_poll(deadline, self.election.poll) {
                        return Ok(None);
                    }
                    continue;
                }
            };
            if let Some(record) =
                self.election
                    .try_acquire(&self.layout, token, previous.as_ref())?
            {
                return match self.store().takeover(token) {
                    Ok(Takeover::Done) => {
                        self.election.prune(&self.layout, token);
                        Ok(Some(record.to_term()))
                    }
                    Ok(Takeover::Superseded) => {
                        let _ = self.election.resign(&self.layout, token);
                        Ok(None)
                    }
                    Err(e) => {
                        let _ = self.election.resign(&self.layout, token);
                        Err(e)
                    }
                };
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
        }
    }

    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        let deadline = Instant::now() + wait;
        loop {
            let current = self.election.current(&self.layout)?;
            if current.as_ref().map(|t| t.token) != known
                || !sleep_until_next_poll(deadline, self.election.poll)
            {
                return Ok(current);
            }
        }
    }

    /// The term a write goes under: this process must hold it, and it must
    /// match the caller's fence if one was given.
    fn writer_term(&self, fence: Option<u64>) -> Result<u64> {
        let held = self
            .election
            .held_by_me(&self.layout)?
            .ok_or(Failure::NotLeader)?;
        match fence {
            Some(f) if f != held => Err(Failure::NotLeader),
            _ => Ok(held),
        }
    }
}

/// Sleeps one poll interval (or less, up to `deadline`); false once the deadline has passed.
fn sleep_until_next_poll(deadline: Instant, poll: Duration) -> bool {
    let now = Instant::now();
    if now >= deadline {
        return false;
    }
    std::thread::sleep(poll.min(deadline - now));
    true
}

fn configure(setup: Setup) -> Result<Plugin> {
    let settings = Settings::new("file", setup.settings, &["cluster-id", "poll-interval-ms"])?;
    let cluster_id = settings.string_or("cluster-id", "default");
    if cluster_id.is_empty()
        || cluster_id.starts_with('.')
        || !cluster_id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(invalid(format!(
            "plugin.settings.cluster-id: {cluster_id:?} must be a non-empty name of A-Z a-z 0-9 - _ . (not starting with '.')"
        )));
    }
    let poll = Duration::from_millis(settings.u64_or("poll-interval-ms", 50, 1..=60_000)?);
    if !Path::new(GRANTED_DIR).is_dir() {
        return Err(invalid(
            "the file plugin needs a directory: grant one with capabilities.filesystem.dir in the sidecar config",
        ));
    }
    let layout = Layout {
        root: Path::new(GRANTED_DIR).join(&cluster_id),
    };
    for dir in [layout.election_tmp(), layout.state_tmp()] {
        fsx::ensure_dir(&dir).map_err(|e| unavailable(&format!("create {}", dir.display()), e))?;
    }
    let lease = Duration::from_millis(setup.timing.lease_ms.into());
    Ok(Plugin {
        layout,
        members: Members::new(setup.me.clone(), setup.session.clone(), lease),
        election: Election::new(setup.me, setup.session.clone(), lease, poll),
        session: setup.session,
    })
}

impl StatefulBackend for Plugin {
    fn configure(setup: Setup) -> Result<Self> {
        configure(setup)
    }

    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>> {
        Plugin::campaign(self, wait)
    }

    fn keep(&mut self, term: Term) -> Result<()> {
        self.election.keep(&self.layout, term.token)?;
        // Member records are for people: failing to write one must not cost
        // the leadership the renewal above just proved.
        match self.members.announce(&self.layout) {
            Ok(true) => self.members.forget_gone(&self.layout),
            Ok(false) => {}
            Err(e) => {
                ha_sidecar_sdk::log::warn(&format!("could not update the member record: {e:?}"))
            }
        }
        Ok(())
    }

    fn resign(&mut self, term: Term) -> Result<()> {
        self.election.resign(&self.layout, term.token)
    }

    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>> {
        Plugin::leader(self, known, wait)
    }

    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        self.store().get(key)
    }

    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64> {
        let token = self.writer_term(fence)?;
        self.store().write(token, key, Some(&value), expected)
    }

    fn delete(&mut self, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()> {
        let token = self.writer_term(fence)?;
        self.store().write(token, key, None, expected).map(drop)
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        self.store().list(prefix)
    }

    fn members(&mut self) -> Result<Vec<ha_sidecar_sdk::Candidate>> {
        let leader = self.election.current(&self.layout)?;
        Members::list(&self.layout, leader.as_ref().map(|t| t.holder.id.as_str()))
    }

    fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        self.members.check_successor(&self.layout, to)?;
        self.election.hand_over(&self.layout, term.token, to)
    }
}

ha_sidecar_sdk::export_backend!(Plugin);
