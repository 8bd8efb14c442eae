//! Continuity checks, read from the job managers' logs.
//!
//! The point of the demo: across a crash and a shutdown, the job neither loses
//! a checkpoint nor lets a deposed leader write after its successor took over.
//! Both show in the logs: a new term must recover, through `GET /recovery`,
//! exactly the last checkpoint an earlier term acknowledged (same id, same
//! count), and then make progress of its own.
//!
//! The checks work on parsed logs ([`Journal`]), not on processes, so they can
//! be tested with made-up histories.

use std::thread::sleep;
use std::time::{Duration, Instant};

use demo::{Checkpoint, Event, Start, events};

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

/// Where a job manager resumed the job when it took over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resumed {
    pub start: Start,
    pub count: u64,
}

impl Resumed {
    /// The checkpoint it recovered, if it recovered one.
    pub fn checkpoint(&self) -> Option<Checkpoint> {
        match self.start {
            Start::Checkpoint(id) => Some(Checkpoint {
                id,
                count: self.count,
            }),
            Start::NoCheckpoint | Start::Submitted => None,
        }
    }
}

impl std::fmt::Display for Resumed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.checkpoint() {
            Some(c) => write!(f, "{c}"),
            None if self.start == Start::Submitted => write!(f, "{} (submitted)", self.count),
            None => write!(f, "{} (no cp)", self.count),
        }
    }
}

/// How far a job manager got in a term it was given.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    /// Not resumed yet, or resumed but not checkpointed past that point.
    Pending(Option<Resumed>),
    /// Resumed from here and then checkpointed past it.
    Advanced(Resumed),
    /// Stopped, fenced or finished before its first checkpoint.
    Failed(String),
}

fn progress(journal: &Journal, term: u64) -> Progress {
    let mut mine = journal
        .events
        .iter()
        .skip_while(|e| !matches!(e, Event::Resumed { term: t, .. } if *t == term));
    let Some(&Event::Resumed { start, count, .. }) = mine.next() else {
        return Progress::Pending(None);
    };
    let resumed = Resumed { start, count };
    let failed = |what: String| {
        Progress::Failed(format!(
            "{} {what} in term {term} before its first checkpoint",
            journal.name
        ))
    };
    for e in mine {
        match *e {
            Event::Checkpoint { term: t, count, .. } if t == term && count > resumed.count => {
                return Progress::Advanced(resumed);
            }
            Event::Fenced { status, count } => {
                return failed(format!("was fenced ({status}) at {count}"));
            }
            Event::Stopped { count } => return failed(format!("stopped at {count}")),
            Event::Finished => return failed("found the job finished".into()),
            Event::Resumed { .. }
            | Event::Checkpoint { .. }
            | Event::Unacknowledged { .. }
            | Event::Paused { .. } => {}
        }
    }
    Progress::Pending(Some(resumed))
}

/// Waits until the job manager of `node` resumed in `term` and then wrote a
/// checkpoint past that point. Returns where it resumed, or what went wrong.
pub fn wait_for_progress(node: &Node, term: u64, timeout: Duration) -> Result<Resumed, String> {
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

/// The checks of one handover.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    pub problems: Vec<String>,
    /// Not a problem, but worth saying: the recovered checkpoint was written
    /// but never acknowledged (its writer got no answer or an error, or was
    /// killed first).
    pub note: Option<String>,
}

/// Checks a handover to `term`, which resumed at `resumed` after `before` had
/// been read (through a standby) as the job's latest checkpoint. The new term
/// must recover the last checkpoint any earlier term acknowledged, id and
/// count, unless a later one landed that its writer never saw acknowledged:
/// one it logged as unacknowledged, or one written just as it was killed.
pub fn handover(
    journals: &[Journal],
    term: u64,
    resumed: Resumed,
    before: Option<Checkpoint>,
) -> Verdict {
    let mut verdict = Verdict::default();
    let problems = &mut verdict.problems;
    let got = resumed.checkpoint();
    if let Some(b) = before {
        match got {
            None => problems.push(format!("term {term} started the job from {resumed}, but checkpoint {b} had been read before the failure: checkpoints were lost")),
            Some(r) if r.id < b.id || r.count < b.count => problems.push(format!("term {term} recovered checkpoint {r}, but checkpoint {b} had been read before the failure: a checkpoint was lost")),
            Some(r) if r.id == b.id && r.count != b.count => problems.push(format!("checkpoint {} held {} before the failure, but term {term} recovered {} from it", r.id, b.count, r.count)),
            Some(_) => {}
        }
    }
    let mut last: Option<Checkpoint> = None;
    // Writes whose outcome their writer did not learn: (writer, term, checkpoint, answer).
    let mut unacknowledged = Vec::new();
    for j in journals {
        for e in &j.events {
            let (t, id, count) = match *e {
                Event::Checkpoint { term: t, id, count } => (t, id, count),
                Event::Unacknowledged {
                    term: t,
                    id,
                    count,
                    status,
                } if t < term => {
                    let answer = status.map_or("no answer".to_string(), |s| format!("HTTP {s}"));
                    unacknowledged.push((j.name.as_str(), t, Checkpoint { id, count }, answer));
                    continue;
                }
                _ => continue,
            };
            if t >= term {
                continue;
            }
            let logged = Checkpoint { id, count };
            last = last.max(Some(logged));
            match got {
                None => problems.push(format!("{} logged checkpoint {logged} in term {t}, but term {term} started the job from {resumed}: checkpoints were lost", j.name)),
                Some(r) if id > r.id || count > r.count => problems.push(format!("{} logged checkpoint {logged} in term {t}, but term {term} recovered {r}: a checkpoint was lost or a deposed leader wrote", j.name)),
                Some(r) if id == r.id && count != r.count => problems.push(format!("{} logged checkpoint {logged} in term {t}, but term {term} recovered {r} from that id", j.name)),
                Some(_) => {}
            }
        }
    }
    if let Some(r) = got
        && last.is_none_or(|l| r.id > l.id)
    {
        let acked = last.map_or("none".to_string(), |l| l.to_string());
        let writer = unacknowledged.iter().find(|(_, _, c, _)| c.id == r.id);
        match writer {
            Some((name, t, c, _)) if *c != r => verdict.problems.push(format!(
                "{name} wrote checkpoint {c} in term {t} (unacknowledged), but term {term} recovered {r} from that id"
            )),
            Some((name, t, _, answer)) => {
                verdict.note = Some(format!(
                    "term {term} recovered checkpoint {r}, newer than the last one acknowledged ({acked}): {name} wrote it in term {t} and got {answer} as its sidecar shut down, but it had landed"
                ))
            }
            None => {
                verdict.note = Some(format!(
                    "term {term} recovered checkpoint {r}, newer than the last one acknowledged ({acked}): it was written, but its writer was killed before it could log it"
                ))
            }
        }
    }
    if !verdict.problems.is_empty() {
        verdict.note = None;
    }
    verdict
}

/// The last checkpoint a job manager logged in `term`.
pub fn last_checkpoint(journal: &Journal, term: u64) -> Option<Checkpoint> {
    journal
        .events
        .iter()
        .filter_map(|e| match *e {
            Event::Checkpoint { term: t, id, count } if t == term => Some(Checkpoint { id, count }),
            _ => None,
        })
        .max()
}

/// Whether a job manager logged that the job finished.
pub fn finished(journal: &Journal) -> bool {
    journal.events.contains(&Event::Finished)
}

/// Whether a job manager logged that it paused.
pub fn paused(journal: &Journal) -> bool {
    journal
        .events
        .iter()
        .any(|e| matches!(e, Event::Paused { .. }))
}

/// Problems anywhere in the logs: a job manager that checkpointed after it
/// stopped, was fenced or found the job finished (without a new term first),
/// or checkpoints whose ids and counts do not both grow with the term.
pub fn whole_run(journals: &[Journal]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut checkpoints = Vec::new();
    for j in journals {
        let mut stopped = false;
        for e in &j.events {
            match *e {
                Event::Resumed { .. } => stopped = false,
                Event::Fenced { .. } | Event::Stopped { .. } | Event::Finished => stopped = true,
                Event::Paused { .. } | Event::Unacknowledged { .. } => {}
                Event::Checkpoint { term, id, count } => {
                    if stopped {
                        problems.push(format!(
                            "{} checkpointed {count} in term {term} after it had stopped",
                            j.name
                        ));
                    }
                    checkpoints.push((term, id, count, j.name.as_str()));
                }
            }
        }
    }
    checkpoints.sort();
    for pair in checkpoints.windows(2) {
        let ((t1, i1, c1, n1), (t2, i2, c2, n2)) = (pair[0], pair[1]);
        if i2 <= i1 || c2 <= c1 {
            problems.push(format!(
                "checkpoint {i2}: {c2} ({n2}, term {t2}) does not follow checkpoint {i1}: {c1} ({n1}, term {t1})"
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

    fn cp(term: u64, id: u64, count: u64) -> Event {
        Event::Checkpoint { term, id, count }
    }

    fn submitted(term: u64) -> Event {
        Event::Resumed {
            term,
            start: Start::Submitted,
            count: 0,
        }
    }

    fn recovered(term: u64, id: u64, count: u64) -> Event {
        Event::Resumed {
            term,
            start: Start::Checkpoint(id),
            count,
        }
    }

    fn at(id: u64, count: u64) -> Resumed {
        Resumed {
            start: Start::Checkpoint(id),
            count,
        }
    }

    fn point(id: u64, count: u64) -> Option<Checkpoint> {
        Some(Checkpoint { id, count })
    }

    /// jm-1 submits the job in term 1 and is crashed after checkpoint 2 (20);
    /// jm-2 recovers checkpoint 2 through /recovery and carries on.
    fn clean_crash() -> Vec<Journal> {
        vec![
            journal("jm-1", &[submitted(1), cp(1, 1, 10), cp(1, 2, 20)]),
            journal("jm-2", &[recovered(2, 2, 20), cp(2, 3, 30)]),
        ]
    }

    #[test]
    fn a_clean_handover_passes() {
        let j = clean_crash();
        assert_eq!(progress(&j[1], 2), Progress::Advanced(at(2, 20)));
        assert_eq!(handover(&j, 2, at(2, 20), point(2, 20)), Verdict::default());
        assert_eq!(
            handover(&j, 2, at(2, 20), point(1, 10)),
            Verdict::default(),
            "the old leader wrote one more after the read: still recovered exactly"
        );
        assert_eq!(whole_run(&j), Vec::<String>::new());
        assert_eq!(last_checkpoint(&j[0], 1), point(2, 20));
        assert_eq!(last_checkpoint(&j[0], 2), None);
    }

    #[test]
    fn a_lost_checkpoint_is_reported() {
        let mut j = clean_crash();
        j[1] = journal("jm-2", &[recovered(2, 1, 10), cp(2, 3, 20)]);
        assert_eq!(
            handover(&j, 2, at(1, 10), point(2, 20)).problems.len(),
            2,
            "older than the checkpoint read before, and than jm-1's last"
        );
        assert_eq!(
            whole_run(&j).len(),
            1,
            "checkpoint 3 of term 2 (20) does not follow 2 (20) of term 1"
        );
    }

    #[test]
    fn starting_afresh_after_checkpoints_is_reported() {
        let mut j = clean_crash();
        j[1] = journal("jm-2", &[submitted(2), cp(2, 1, 10)]);
        let resumed = Resumed {
            start: Start::Submitted,
            count: 0,
        };
        assert_eq!(
            handover(&j, 2, resumed, point(2, 20)).problems.len(),
            3,
            "the read checkpoint and both of jm-1's are lost"
        );
        assert_eq!(whole_run(&j).len(), 1, "checkpoint id 1 reused in term 2");
    }

    #[test]
    fn a_wrong_payload_is_reported() {
        let j = clean_crash();
        let v = handover(&j, 2, at(2, 25), point(2, 20));
        assert_eq!(v.problems.len(), 2, "{:?}", v.problems);
        assert_eq!(v.note, None);
    }

    #[test]
    fn an_unacknowledged_checkpoint_is_a_note_not_a_problem() {
        // jm-1 wrote checkpoint 3 (30) and was killed before logging it.
        let j = clean_crash();
        let v = handover(&j, 2, at(3, 30), point(2, 20));
        assert_eq!(v.problems, Vec::<String>::new());
        assert!(v.note.is_some_and(|n| n.contains("20 (cp 2)")));
    }

    #[test]
    fn an_unacknowledged_checkpoint_that_landed_is_explained() {
        let mut j = clean_crash();
        j[0].events.push(Event::Unacknowledged {
            term: 1,
            id: 3,
            count: 30,
            status: Some(409),
        });
        let v = handover(&j, 2, at(3, 30), point(2, 20));
        assert_eq!(v.problems, Vec::<String>::new());
        assert!(
            v.note
                .is_some_and(|n| n.contains("jm-1 wrote it in term 1 and got HTTP 409"))
        );
        let v = handover(&j, 2, at(3, 35), point(2, 20));
        assert_eq!(v.problems.len(), 1, "not what was written under that id");
        assert_eq!(v.note, None);
        assert_eq!(
            whole_run(&j),
            Vec::<String>::new(),
            "not acknowledged: not a checkpoint"
        );
    }

    #[test]
    fn a_write_after_being_stopped_is_reported() {
        let mut j = clean_crash();
        j[0].events
            .extend([Event::Stopped { count: 25 }, cp(1, 3, 30)]);
        assert_eq!(
            whole_run(&j).len(),
            2,
            "written after stopping, and its id and count not below term 2's checkpoint"
        );
        let mut j = clean_crash();
        j[1].events.extend([Event::Finished, cp(2, 4, 40)]);
        assert_eq!(whole_run(&j).len(), 1, "written after the job finished");
        assert!(finished(&j[1]) && !finished(&j[0]));
        assert!(!paused(&j[1]));
    }

    #[test]
    fn a_fenced_successor_fails_progress() {
        let j = journal(
            "jm-2",
            &[
                recovered(2, 2, 20),
                Event::Fenced {
                    status: 412,
                    count: 30,
                },
            ],
        );
        assert!(matches!(progress(&j, 2), Progress::Failed(_)));
        assert_eq!(progress(&j, 3), Progress::Pending(None));
        let j = journal("jm-2", &[recovered(2, 2, 20), Event::Paused { count: 25 }]);
        assert_eq!(progress(&j, 2), Progress::Pending(Some(at(2, 20))));
        assert!(paused(&j));
        let j = journal("jm-2", &[recovered(2, 2, 20), Event::Finished]);
        assert!(matches!(progress(&j, 2), Progress::Failed(_)));
    }

    #[test]
    fn resumption_reads_well() {
        assert_eq!(at(5, 50).to_string(), "50 (cp 5)");
        let fresh = Resumed {
            start: Start::Submitted,
            count: 0,
        };
        assert_eq!(fresh.to_string(), "0 (submitted)");
    }
}
