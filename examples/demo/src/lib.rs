//! What the demo's job managers print, in one place.
//!
//! `demo-jobmanager` writes these lines to its log and the `demo` orchestrator
//! reads them back to check continuity, so the wording and the parser live side
//! by side and cannot drift apart.

/// One line of a job manager's log that the orchestrator cares about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The job manager took over in `term` and continues from `count`.
    Resumed { term: u64, count: u64 },
    /// A fenced checkpoint of `count` succeeded in `term`.
    Checkpoint { term: u64, count: u64 },
    /// A checkpoint was refused (409 or 412): someone else leads now.
    Fenced { status: u16, count: u64 },
    /// The sidecar stopped reporting leadership (or went away).
    Stopped { count: u64 },
}

impl Event {
    /// The line `name` prints for this event.
    pub fn line(&self, name: &str) -> String {
        match self {
            Event::Resumed { term, count } => {
                format!("{name}: leading term {term}, resuming from checkpoint {count}")
            }
            Event::Checkpoint { term, count } => {
                format!("{name}: checkpoint {count} (term {term})")
            }
            Event::Fenced { status, count } => {
                format!("{name}: fenced ({status}), stopping at {count}")
            }
            Event::Stopped { count } => format!("{name}: no longer leader, stopping at {count}"),
        }
    }

    /// The event a log line describes, if it is one of ours (other lines are ignored).
    pub fn parse(line: &str) -> Option<Event> {
        let (_, rest) = line.split_once(": ")?;
        if let Some(rest) = rest.strip_prefix("leading term ") {
            let (term, count) = rest.split_once(", resuming from checkpoint ")?;
            return Some(Event::Resumed {
                term: term.parse().ok()?,
                count: count.trim().parse().ok()?,
            });
        }
        if let Some(rest) = rest.strip_prefix("checkpoint ") {
            let (count, term) = rest.split_once(" (term ")?;
            let term = term.trim().strip_suffix(')')?;
            return Some(Event::Checkpoint {
                term: term.parse().ok()?,
                count: count.parse().ok()?,
            });
        }
        if let Some(rest) = rest.strip_prefix("fenced (") {
            let (status, count) = rest.split_once("), stopping at ")?;
            return Some(Event::Fenced {
                status: status.parse().ok()?,
                count: count.trim().parse().ok()?,
            });
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
                count: 120,
            },
            Event::Checkpoint {
                term: 2,
                count: 130,
            },
            Event::Fenced {
                status: 409,
                count: 137,
            },
            Event::Stopped { count: 42 },
        ];
        for e in all {
            assert_eq!(Event::parse(&e.line("jm-1")), Some(e));
        }
    }

    #[test]
    fn other_lines_are_ignored() {
        assert_eq!(
            Event::parse("jm-1: sidecar not reachable yet (connection refused); retrying"),
            None
        );
        assert_eq!(Event::parse("garbage"), None);
        assert_eq!(events("jm-1: checkpoint 10 (term 1)\nnoise\n").len(), 1);
    }
}
