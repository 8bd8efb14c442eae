//! What the ConfigMap says about its leader, in Flink's format.
//!
//! - The annotation `control-plane.alpha.kubernetes.io/leader` holds the
//!   record fabric8's ConfigMapLock writes for Flink (Flink's
//!   `KubernetesLeaderElector`): `holderIdentity` (here: the sidecar's per-run session, written
//!   as a dashed UUID like Flink's lock identity `UUID.randomUUID()`), the lease
//!   in seconds with nine decimals, `acquireTime` and `renewTime` as
//!   MicroTime (UTC, six fractional digits), and `leaderTransitions`, which
//!   is our fencing token: it grows by one with every acquisition.
//! - `ha-sidecar/leader` holds what Flink's record has no room for: the
//!   member id and address, and a renewal counter, so that every renewal
//!   changes the record even if the holder's clock stands still.
//! - The data keys `org.apache.flink.k8s.leader.<component>` hold
//!   `<leader session UUID>,<address>` as Flink's `KubernetesLeaderElectionDriver` writes them.
//!
//! Times written here are for people; expiry is judged by the reader's own
//! clock (see `lease.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ha_sidecar_sdk::flink::leader_session;
use serde::{Deserialize, Serialize};

use crate::object::ConfigMap;

pub const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";
pub const HOLDER_ANNOTATION: &str = "ha-sidecar/leader";
pub const LEADER_KEY_PREFIX: &str = "org.apache.flink.k8s.leader.";

/// fabric8's LeaderElectionRecord, field for field.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeaderRecord {
    /// Empty once the holder released the lease.
    pub holder_identity: String,
    /// Seconds (a Java Duration as fabric8 writes it, e.g. 15.000000000).
    pub lease_duration: serde_json::Number,
    pub acquire_time: String,
    pub renew_time: String,
    pub leader_transitions: u64,
}

impl LeaderRecord {
    pub fn lease(&self) -> Duration {
        self.lease_duration
            .as_f64()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map_or(Duration::ZERO, Duration::from_secs_f64)
    }
}

/// Our annotation beside Flink's record.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub id: String,
    pub address: String,
    /// Unix ms when the term began, by the holder's clock.
    pub since_ms: u64,
    pub renewals: u64,
    /// Set by a handover, with the record released: only this member may
    /// take the next term at once (see `lease.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub successor: Option<String>,
}

/// The leader part of a ConfigMap: parsed, and as raw text for change detection.
pub struct Leadership {
    pub record: LeaderRecord,
    pub holder: Holder,
    /// Both annotations as read: any change to either is a sign of life.
    pub raw: String,
}

impl Leadership {
    pub fn read(cm: &ConfigMap) -> Option<Self> {
        let text = cm.annotation(LEADER_ANNOTATION)?;
        let holder_text = cm.annotation(HOLDER_ANNOTATION).unwrap_or("");
        // A record we cannot parse is someone else's: it counts as held,
        // with an unknown token, until it stays unchanged for a lease.
        let record = serde_json::from_str(text).unwrap_or(LeaderRecord {
            holder_identity: "(unreadable)".into(),
            lease_duration: 0.into(),
            acquire_time: String::new(),
            renew_time: String::new(),
            leader_transitions: 0,
        });
        Some(Self {
            record,
            holder: serde_json::from_str(holder_text).unwrap_or_default(),
            raw: format!("{text}\n{holder_text}"),
        })
    }

    pub fn is_released(&self) -> bool {
        self.record.holder_identity.is_empty()
    }

    /// Writes both annotations and the leader keys into `cm`.
    pub fn write(&self, cm: &mut ConfigMap, components: &[String]) {
        cm.set_annotation(
            LEADER_ANNOTATION,
            Some(serde_json::to_string(&self.record).expect("serializes")),
        );
        cm.set_annotation(
            HOLDER_ANNOTATION,
            Some(serde_json::to_string(&self.holder).expect("serializes")),
        );
        let value = (!self.is_released()).then(|| {
            format!(
                "{},{}",
                leader_session(self.record.leader_transitions, &self.holder.id),
                self.holder.address
            )
        });
        for c in components {
            cm.set_datum(&format!("{LEADER_KEY_PREFIX}{c}"), value.clone());
        }
    }
}

/// fabric8's rendering of a lease as a Java Duration in seconds.
pub fn lease_seconds(d: Duration) -> serde_json::Number {
    let text = format!("{}.{:09}", d.as_secs(), d.subsec_nanos());
    text.parse().unwrap_or_else(|_| d.as_secs().into())
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Now as Kubernetes MicroTime: `2026-11-21T05:25:45.459640Z` (exactly six
/// fractional digits; the API server refuses other forms in Lease fields).
pub fn micro_time_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    micro_time(since)
}

pub fn micro_time(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since_epoch.subsec_micros()
    )
}

/// Year, month, day of a count of days since 1970-01-01 (proleptic
/// Gregorian), by counting 400-year eras of 146,097 days.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // year of era
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year, from March 1
    let mp = (5 * doy + 2) / 153; // month, March = 0
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Flink's lock identity is `UUID.randomUUID().toString()`: 36 characters,
/// dashed. The host's session is a v4 UUID as 32 hex digits, so it is
/// written the same way; a session of another shape is kept as it is.
pub fn lock_identity(session: &str) -> String {
    let hex = session.len() == 32 && session.chars().all(|c| c.is_ascii_hexdigit());
    if !hex {
        return session.to_string();
    }
    let s = session.to_ascii_lowercase();
    format!(
        "{}-{}-{}-{}-{}",
        &s[..8],
        &s[8..12],
        &s[12..16],
        &s[16..20],
        &s[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_time_has_six_fractional_digits() {
        assert_eq!(
            micro_time(Duration::new(0, 1_000)),
            "1970-01-01T00:00:00.000001Z"
        );
        // 2024-02-29 (a leap day) 12:34:56.789012
        assert_eq!(
            micro_time(Duration::new(1_709_210_096, 789_012_345)),
            "2024-02-29T12:34:56.789012Z"
        );
        assert_eq!(
            micro_time(Duration::new(4_102_444_799, 0)),
            "2099-12-31T23:59:59.000000Z"
        );
    }

    #[test]
    fn lease_is_written_as_fabric8_does() {
        assert_eq!(
            lease_seconds(Duration::from_secs(15)).to_string(),
            "15.0",
            "serde_json normalizes the number; fabric8 reads either"
        );
        assert_eq!(
            LeaderRecord {
                holder_identity: "x".into(),
                lease_duration: lease_seconds(Duration::from_millis(2500)),
                acquire_time: String::new(),
                renew_time: String::new(),
                leader_transitions: 1,
            }
            .lease(),
            Duration::from_millis(2500)
        );
    }

    #[test]
    fn flinks_record_parses() {
        let text = r#"{"holderIdentity":"623e","leaseDuration":15.000000000,"acquireTime":"2020-10-20T04:06:31.431000Z","renewTime":"2020-10-22T08:51:36.843000Z","leaderTransitions":37981}"#;
        let r: LeaderRecord = serde_json::from_str(text).unwrap();
        assert_eq!(r.leader_transitions, 37981);
        assert_eq!(r.lease(), Duration::from_secs(15));
    }

    #[test]
    fn lock_identity_is_a_dashed_uuid_as_flink_writes_it() {
        assert_eq!(
            lock_identity("6F1C2D3E4A5B4C6D8E9F0A1B2C3D4E5F"),
            "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f"
        );
        assert_eq!(lock_identity("not-a-uuid"), "not-a-uuid");
    }
}
