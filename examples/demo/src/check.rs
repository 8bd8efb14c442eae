//! Continuity checks, read from the job managers' logs.
//!
//! The point of the demo: across a crash and a shutdown, the counter neither
//! loses a checkpoint nor lets a deposed leader write after its successor took
//! over. Both show in the logs: a new term must resume from at least every
//! checkpoint an earlier term logged, and then make progress of its own.
//!
//! The checks work on parsed logs ([`Journal`]), not on processes, so they can
//! be tested with made-up histories.

use std::thread::sleep;
use std::time::{Duration, Instant};

use demo::{Event, events};

use crate::cluster::Node;

/// What one job manager logged so far.
pub struct Journal {
    pub name: String,
    pub events: Vec<Event>,
}

impl Journal {
    pub fn read(node: &Node) -> Journal {
        Journal {
            name: node.name.clone(),
            events: events(&node.jobmanager_log()),
        }
    }
}

/// The journals of every job manager, as they are now.
pub fn journals(nodes: &[Node]) -> Vec<Journal> {
    nodes.iter().map(Journal::read).collect()
}

/// How far a job manager got in a term it was given.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Not resumed yet, or resumed from the count but not checkpointed past it.
    Pending(Option<u64>),
    /// Resumed from this count and then checkpointed past it.
    Advanced(u64),
    /// Stopped or fenced before its first checkpoint.
    Failed(String),
}

fn progress(journal: &Journal, term: u64) -> Progress {
    let mut mine = journal
        .events
        .iter()
        .skip_while(|e| !matches!(e, Event::Resumed { term: t, .. } if *t == term));
    let Some(&Event::Resumed { count: resumed, .. }) = mine.next() else {
        return Progress::Pending(None);
    };
    for e in mine {
        match *e {
            Event::Checkpoint { term: t, count } if t == term && count > resumed => {
                return Progress::Advanced(resumed);
            }
            Event::Fenced { status, count } => {
                return Progress::Failed(format!(
                    "{} was fenced ({status}) at {count} in term {term} before its first checkpoint",
                    journal.name
                ));
            }
            Event::Stopped { count } => {
                return Progress::Failed(format!(
                    "{} stopped at {count} in term {term} before its first checkpoint",
                    journal.name
                ));
            }
            Event::Resumed { .. } | Event::Checkpoint { .. } => {}
        }
    }
    Progress::Pending(Some(resumed))
}

/// Waits until the job manager of `node` resumed in `term` and then wrote a
/// checkpoint past that point. Returns the count it resumed from, or what
/// went wrong.
pub fn wait_for_progress(node: &Node, term: u64, timeout: Duration) -> Result<u64, String> {
    let deadline = Instant::now() + timeout;
    loop {
        match progress(&Journal::read(node), term) {
            Progress::Advanced(resumed) => return Ok(resumed),
            Progress::Failed(problem) => return Err(problem),
            Progress::Pending(None) if Instant::now() >= deadline => {
                return Err(format!(
                    "{}'s job manager did not start work in term {term} within {timeout:?}",
                    node.name
                ));
            }
            Progress::Pending(Some(r)) if Instant::now() >= deadline => {
                return Err(format!(
                    "{}'s job manager resumed from {r} in term {term} but wrote no checkpoint within {timeout:?}",
                    node.name
                ));
            }
            Progress::Pending(_) => sleep(Duration::from_millis(50)),
        }
    }
}

/// Problems with a handover to `term`, which resumed from `resumed` after
/// `before` had been read as the last checkpoint.
pub fn handover(journals: &[Journal], term: u64, resumed: u64, before: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if resumed < before {
        problems.push(format!("term {term} resumed from {resumed}, but checkpoint {before} had been read before the failure: a checkpoint was lost"));
    }
    for j in journals {
        for e in &j.events {
            if let Event::Checkpoint { term: t, count } = *e
                && t < term
                && count > resumed
            {
                problems.push(format!("{} logged checkpoint {count} in term {t}, but term {term} resumed from {resumed}: a checkpoint was lost or a deposed leader wrote", j.name));
            }
        }
    }
    problems
}

/// The last checkpoint a job manager logged in `term`.
pub fn last_checkpoint(journal: &Journal, term: u64) -> Option<u64> {
    journal
        .events
        .iter()
        .filter_map(|e| {
            if let Event::Checkpoint { term: t, count } = *e
                && t == term
            {
                Some(count)
            } else {
                None
            }
        })
        .max()
}

/// Problems anywhere in the logs: a job manager that checkpointed after it
/// stopped or was fenced (without a new term first), or checkpoints that do
/// not grow with the term.
pub fn whole_run(journals: &[Journal]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checkpoints = Vec::new();
    for j in journals {
        let mut stopped = false;
        for e in &j.events {
            match *e {
                Event::Resumed { .. } => stopped = false,
                Event::Fenced { .. } | Event::Stopped { .. } => stopped = true,
                Event::Checkpoint { term, count } => {
                    if stopped {
                        problems.push(format!(
                            "{} checkpointed {count} in term {term} after it had stopped",
                            j.name
                        ));
                    }
                    checkpoints.push((term, count, j.name.as_str()));
                }
            }
        }
    }
    checkpoints.sort();
    for pair in checkpoints.windows(2) {
        let ((t1, c1, n1), (t2, c2, n2)) = (pair[0], pair[1]);
        if c2 <= c1 {
            problems.push(format!(
                "checkpoint {c2} ({n2}, term {t2}) does not follow {c1} ({n1}, term {t1})"
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(name: &str, log: &[Event]) -> Journal {
        Journal {
            name: name.into(),
            events: log.to_vec(),
        }
    }

    fn cp(term: u64, count: u64) -> Event {
        Event::Checkpoint { term, count }
    }

    /// jm-1 leads term 1 and is crashed at 20; jm-2 takes over from 20.
    fn clean_crash() -> Vec<Journal> {
        vec![
            journal(
                "jm-1",
                &[Event::Resumed { term: 1, count: 0 }, cp(1, 10), cp(1, 20)],
            ),
            journal("jm-2", &[Event::Resumed { term: 2, count: 20 }, cp(2, 30)]),
        ]
    }

    #[test]
    fn a_clean_handover_passes() {
        let j = clean_crash();
        assert_eq!(progress(&j[1], 2), Progress::Advanced(20));
        assert_eq!(handover(&j, 2, 20, 20), Vec::<String>::new());
        assert_eq!(whole_run(&j), Vec::<String>::new());
        assert_eq!(last_checkpoint(&j[0], 1), Some(20));
    }

    #[test]
    fn a_lost_checkpoint_is_reported() {
        let mut j = clean_crash();
        j[1] = journal("jm-2", &[Event::Resumed { term: 2, count: 10 }, cp(2, 20)]);
        assert_eq!(
            handover(&j, 2, 10, 20).len(),
            2,
            "below the value read and below jm-1's last"
        );
        assert_eq!(
            whole_run(&j).len(),
            1,
            "checkpoint 20 of term 2 does not follow 20 of term 1"
        );
    }

    #[test]
    fn a_write_after_being_stopped_is_reported() {
        let mut j = clean_crash();
        j[0].events
            .extend([Event::Stopped { count: 25 }, cp(1, 30)]);
        assert_eq!(
            whole_run(&j).len(),
            2,
            "written after stopping, and not below term 2's checkpoint"
        );
    }

    #[test]
    fn a_fenced_successor_fails_progress() {
        let j = journal(
            "jm-2",
            &[
                Event::Resumed { term: 2, count: 20 },
                Event::Fenced {
                    status: 412,
                    count: 30,
                },
            ],
        );
        assert!(matches!(progress(&j, 2), Progress::Failed(_)));
        assert_eq!(progress(&j, 3), Progress::Pending(None));
        let j = journal("jm-2", &[Event::Resumed { term: 2, count: 20 }]);
        assert_eq!(progress(&j, 2), Progress::Pending(Some(20)));
    }
}
