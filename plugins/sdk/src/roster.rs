//! What every backend's member records share: when a member counts as live
//! for a handover, when the leader forgets it, and the refusal of a
//! successor that is not a live standby (the roster export's rules). Member
//! times are the members' own clocks: for people and this check, never
//! for safety.

use std::time::Duration;

use crate::{Result, invalid};

/// A handover is refused to a member not seen for this many leases.
pub const LIVE_WITHIN_LEASES: u32 = 3;
/// The leader forgets a member record not rewritten for this many leases
/// (and at least a minute).
pub const FORGET_AFTER_LEASES: u32 = 20;

/// Unix ms before which a member record is forgotten.
pub fn forget_before_ms(now_ms: u64, lease: Duration) -> u64 {
    now_ms.saturating_sub(
        (lease * FORGET_AFTER_LEASES)
            .max(Duration::from_secs(60))
            .as_millis() as u64,
    )
}

/// Refuses (`invalid`, nothing changed) a handover from `me` to `to` unless
/// `to` is among `members` (id, last seen in Unix ms) and was seen within
/// [`LIVE_WITHIN_LEASES`] leases of `now_ms`.
pub fn check_successor<'a>(
    me: &str,
    to: &str,
    members: impl IntoIterator<Item = (&'a str, u64)>,
    now_ms: u64,
    lease: Duration,
) -> Result<()> {
    if to == me {
        return Err(invalid(format!(
            "{to:?} is this sidecar, the leader itself: name a standby"
        )));
    }
    let members: Vec<(&str, u64)> = members.into_iter().collect();
    match members.iter().find(|(id, _)| *id == to) {
        None => Err(invalid(format!(
            "{to:?} is not a candidate of this cluster (candidates: {})",
            members
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
        Some((_, seen))
            if now_ms.saturating_sub(*seen) > (lease * LIVE_WITHIN_LEASES).as_millis() as u64 =>
        {
            Err(invalid(format!(
                "{to:?} was last seen {} ms ago by its own clock, more than {LIVE_WITHIN_LEASES} leases: it is not a live candidate",
                now_ms.saturating_sub(*seen)
            )))
        }
        Some(_) => Ok(()),
    }
}
