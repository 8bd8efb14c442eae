//! Who is in the cluster, as the backend records it, and whether a member
//! may be handed the leadership: over the plugin's optional
//! `ha:membership/roster` export. Every sidecar reads the same records, so
//! every sidecar answers the same; a plugin without the export (built
//! before it existed, or for contract 0.1) leaves only the leader known.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bindings::ha::sidecar::types::Failure;
use crate::runtime::CallError;
use crate::state::StateService;

/// A member not seen for this many leases is not handed the leadership
/// (the SDK's compare-and-set recipe applies the same rule).
pub const LIVE_WITHIN_LEASES: u32 = 3;

/// One candidate as the backend records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: String,
    pub address: String,
    pub leads: bool,
    /// When it joined the election, Unix ms by its own clock (if known).
    pub since_ms: Option<u64>,
    /// When it last proved itself alive, Unix ms by its own clock; none
    /// where the record lives only as long as the member (ZooKeeper).
    pub seen_ms: Option<u64>,
    /// Seen within [`LIVE_WITHIN_LEASES`] leases by this host's clock (or
    /// bound to the member's liveness).
    pub live: bool,
}

pub enum Roster {
    /// Every candidate the backend records, sorted by id.
    Recorded(Vec<Member>),
    /// The plugin records no candidates; why, for people.
    Unrecorded(String),
}

/// Why a handover to a member is refused before anything changes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetRefusal {
    #[error("{0}; POST /leader/resign hands over to whichever standby wins")]
    Unsupported(String),
    #[error("{to:?} is this sidecar, the leader itself: name a standby")]
    Itself { to: String },
    #[error("{to:?} is not a candidate of this cluster (candidates: {known})")]
    Unknown { to: String, known: String },
    #[error(
        "{to:?} was last seen {ago_ms} ms ago by its own clock, more than {LIVE_WITHIN_LEASES} leases: it is not a live candidate"
    )]
    Gone { to: String, ago_ms: u64 },
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Reads the roster through a state instance.
pub async fn read(state: &StateService, lease: Duration) -> Result<Roster, CallError> {
    let candidates = match state.members().await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return Ok(Roster::Unrecorded(
                "the plugin does not export ha:membership/roster (it was built before members and targeted handovers existed, or for contract 0.1): rebuild it with the current SDK to see every candidate".into(),
            ));
        }
        // The SDK's default for a backend that records no candidates.
        Err(CallError::Failure(Failure::Invalid(why))) => return Ok(Roster::Unrecorded(why)),
        Err(e) => return Err(e),
    };
    let now = now_ms();
    let live_ms = (lease * LIVE_WITHIN_LEASES).as_millis() as u64;
    let mut members: Vec<Member> = candidates
        .into_iter()
        .map(|c| Member {
            live: c.seen_ms.is_none_or(|s| now.saturating_sub(s) <= live_ms),
            id: c.member.id,
            address: c.member.address,
            leads: c.leads,
            since_ms: (c.since_ms > 0).then_some(c.since_ms),
            seen_ms: c.seen_ms,
        })
        .collect();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Roster::Recorded(members))
}

/// Whether `to` may be handed the leadership by the leader `me`.
pub fn check_target(roster: &Roster, me: &str, to: &str) -> Result<(), TargetRefusal> {
    let members = match roster {
        Roster::Unrecorded(why) => return Err(TargetRefusal::Unsupported(why.clone())),
        Roster::Recorded(m) => m,
    };
    if to == me {
        return Err(TargetRefusal::Itself { to: to.into() });
    }
    match members.iter().find(|m| m.id == to) {
        None => Err(TargetRefusal::Unknown {
            to: to.into(),
            known: members
                .iter()
                .map(|m| m.id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
        Some(m) if !m.live => Err(TargetRefusal::Gone {
            to: to.into(),
            ago_ms: now_ms().saturating_sub(m.seen_ms.unwrap_or(0)),
        }),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, leads: bool, seen_ms: Option<u64>, live: bool) -> Member {
        Member {
            id: id.into(),
            address: format!("{id}:1"),
            leads,
            since_ms: None,
            seen_ms,
            live,
        }
    }

    #[test]
    fn only_a_live_standby_may_be_handed_the_leadership() {
        let roster = Roster::Recorded(vec![
            member("a", true, None, true),
            member("b", false, Some(now_ms()), true),
            member("c", false, Some(1), false),
        ]);
        assert_eq!(check_target(&roster, "a", "b"), Ok(()));
        assert!(matches!(
            check_target(&roster, "a", "a"),
            Err(TargetRefusal::Itself { .. })
        ));
        assert!(matches!(
            check_target(&roster, "a", "c"),
            Err(TargetRefusal::Gone { .. })
        ));
        let unknown = check_target(&roster, "a", "x").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "\"x\" is not a candidate of this cluster (candidates: a, b, c)"
        );
        assert!(matches!(
            check_target(&Roster::Unrecorded("no".into()), "a", "b"),
            Err(TargetRefusal::Unsupported(_))
        ));
    }
}
