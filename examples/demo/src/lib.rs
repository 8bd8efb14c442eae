//! What the demo's job managers print, in one place, and the job they run.
//!
//! `demo-jobmanager` writes these lines to its log and the `demo` orchestrator
//! reads them back to check continuity, so the wording and the parser live side
//! by side and cannot drift apart.

pub mod process;

/// The one job of the demo, with a Flink-style id (32 hex digits).
pub const JOB_ID: &str = "a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5";

/// How a job manager got the job when it became leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// `GET /recovery` listed the job; it resumed from this checkpoint id.
    Checkpoint(u64),
    /// `GET /recovery` listed the job, but it had no checkpoint yet.
    NoCheckpoint,
    /// `GET /recovery` did not list the job: it submitted the job's graph.
    Submitted,
}

/// A checkpoint: its id (from the job's checkpoint id counter) and the count it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint {
    pub id: u64,
    pub count: u64,
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (cp {})", self.count, self.id)
    }
}

/// One line of a job manager's log that the orchestrator cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The job manager took over in `term` and continues from `count`.
    Resumed { term: u64, start: Start, count: u64 },
    /// Checkpoint `id` holding `count` was written (fenced by `term`) and acknowledged.
    Checkpoint { term: u64, id: u64, count: u64 },
    /// The write of checkpoint `id` was not acknowledged: it got no answer
    /// (`status` none: the sidecar went away mid-reply) or an error `status`
    /// that does not prove it was not stored. It may have landed.
    Unacknowledged {
        term: u64,
        id: u64,
        count: u64,
        status: Option<u16>,
    },
    /// A write was refused (409 `not_leader` or 412 `version_conflict`): someone else leads now.
    Fenced { status: u16, count: u64 },
    /// Told to pause (on its stdin): no step and no checkpoint until told to resume.
    /// Its last checkpoint is acknowledged and no write of it is in flight.
    Paused { count: u64 },
    /// The job is globally terminal (it has a result): nothing more to do.
    Finished,
    /// The sidecar stopped reporting leadership (or went away).
    Stopped { count: u64 },
}

impl Event {
    /// The line `name` prints for this event.
    pub fn line(&self, name: &str) -> String {
        match self {
            Event::Resumed { term, start, count } => {
                let how = match start {
                    Start::Checkpoint(id) => {
                        format!("recovered job {JOB_ID} from checkpoint {id} via /recovery")
                    }
                    Start::NoCheckpoint => {
                        format!("recovered job {JOB_ID} via /recovery (no checkpoint yet)")
                    }
                    Start::Submitted => format!("submitted job {JOB_ID} (not in /recovery)"),
                };
                format!("{name}: leading term {term}, {how}, resuming from {count}")
            }
            Event::Checkpoint { term, id, count } => {
                format!("{name}: checkpoint {id}: {count} (term {term})")
            }
            Event::Unacknowledged {
                term,
                id,
                count,
                status,
            } => {
                let answer = status.map_or("no answer".to_string(), |s| format!("HTTP {s}"));
                format!(
                    "{name}: unacknowledged checkpoint {id}: {count} (term {term}, {answer}), outcome unknown"
                )
            }
            Event::Fenced { status, count } => {
                format!("{name}: fenced ({status}), stopping at {count}")
            }
            Event::Paused { count } => {
                format!("{name}: paused at {count}, no write in flight")
            }
            Event::Finished => format!("{name}: job finished, stopping"),
            Event::Stopped { count } => format!("{name}: no longer leader, stopping at {count}"),
        }
    }

    /// The event a log line describes, if it is one of ours (other lines are ignored).
    pub fn parse(line: &str) -> Option<Event> {
        let (_, rest) = line.split_once(": ")?;
        if let Some(rest) = rest.strip_prefix("leading term ") {
            let (term, rest) = rest.split_once(", ")?;
            let (how, count) = rest.rsplit_once(", resuming from ")?;
            let start = if let Some((_, id)) = how.split_once(" from checkpoint ") {
                Start::Checkpoint(id.strip_suffix(" via /recovery")?.parse().ok()?)
            } else if how.starts_with("recovered job ") {
                Start::NoCheckpoint
            } else if how.starts_with("submitted job ") {
                Start::Submitted
            } else {
                return None;
            };
            return Some(Event::Resumed {
                term: term.parse().ok()?,
                start,
                count: count.trim().parse().ok()?,
            });
        }
        if let Some(rest) = rest.strip_prefix("checkpoint ") {
            let (id, rest) = rest.split_once(": ")?;
            let (count, term) = rest.split_once(" (term ")?;
            let term = term.trim().strip_suffix(')')?;
            return Some(Event::Checkpoint {
                term: term.parse().ok()?,
                id: id.parse().ok()?,
                count: count.parse().ok()?,
            });
        }
        if let Some(rest) = rest.strip_prefix("unacknowledged checkpoint ") {
            let (id, rest) = rest.split_once(": ")?;
            let (count, rest) = rest.split_once(" (term ")?;
            let (term, answer) = rest.strip_suffix("), outcome unknown")?.split_once(", ")?;
            let status = match answer.strip_prefix("HTTP ") {
                Some(s) => Some(s.parse().ok()?),
                None if answer == "no answer" => None,
                None => return None,
            };
            return Some(Event::Unacknowledged {
                term: term.parse().ok()?,
                id: id.parse().ok()?,
                count: count.parse().ok()?,
                status,
            });
        }
        if let Some(rest) = rest.strip_prefix("fenced (") {
            let (status, count) = rest.split_once("), stopping at ")?;
            return Some(Event::Fenced {
                status: status.parse().ok()?,
                count: count.trim().parse().ok()?,
            });
        }
        if let Some(rest) = rest.strip_prefix("paused at ") {
            let count = rest.strip_suffix(", no write in flight")?;
            return Some(Event::Paused {
                count: count.parse().ok()?,
            });
        }
        if rest.trim_end() == "job finished, stopping" {
            return Some(Event::Finished);
        }
        let count = rest.strip_prefix("no longer leader, stopping at ")?;
        Some(Event::Stopped {
            count: count.trim().parse().ok()?,
        })
    }
}

/// Every event in a log, in order.
pub fn events(log: &str) -> Vec<Event> {
    log.lines().filter_map(Event::parse).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_round_trip() {
        let all = [
            Event::Resumed {
                term: 2,
                start: Start::Checkpoint(12),
                count: 120,
            },
            Event::Resumed {
                term: 3,
                start: Start::NoCheckpoint,
                count: 0,
            },
            Event::Resumed {
                term: 1,
                start: Start::Submitted,
                count: 0,
            },
            Event::Checkpoint {
                term: 2,
                id: 13,
                count: 130,
            },
            Event::Unacknowledged {
                term: 2,
                id: 14,
                count: 140,
                status: None,
            },
            Event::Unacknowledged {
                term: 2,
                id: 15,
                count: 150,
                status: Some(409),
            },
            Event::Fenced {
                status: 409,
                count: 137,
            },
            Event::Paused { count: 140 },
            Event::Finished,
            Event::Stopped { count: 42 },
        ];
        for e in all {
            assert_eq!(Event::parse(&e.line("jm-1")), Some(e));
        }
    }

    #[test]
    fn the_wording_is_as_documented() {
        let e = Event::Resumed {
            term: 2,
            start: Start::Checkpoint(5),
            count: 50,
        };
        assert_eq!(
            e.line("jm-2"),
            "jm-2: leading term 2, recovered job a0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5 from checkpoint 5 via /recovery, resuming from 50"
        );
        let e = Event::Checkpoint {
            term: 2,
            id: 6,
            count: 60,
        };
        assert_eq!(e.line("jm-2"), "jm-2: checkpoint 6: 60 (term 2)");
    }

    #[test]
    fn other_lines_are_ignored() {
        assert_eq!(
            Event::parse("jm-1: sidecar not reachable yet (connection refused); retrying"),
            None
        );
        assert_eq!(
            Event::parse(
                "jm-1: checkpoint 40 not written (HTTP 503); trying again at the next one"
            ),
            None
        );
        assert_eq!(Event::parse("garbage"), None);
        assert_eq!(events("jm-1: checkpoint 1: 10 (term 1)\nnoise\n").len(), 1);
    }
}
