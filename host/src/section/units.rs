//! Durations ("500ms", "15s", "2m") and byte sizes ("64MiB", 1048576) as
//! people write them in YAML, with errors that show an accepted form.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

/// A duration written with a unit. A bare number is refused: "15" could be
/// seconds (Kubernetes) or milliseconds (ZooKeeper), and guessing wrong is an outage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Dur(pub Duration);

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

pub fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw.trim()).map_err(|_| {
        format!("{raw:?} is not a duration: write a number with a unit, such as 500ms, 15s or 2m")
    })
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a duration with a unit, such as 500ms, 15s or 2m")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Dur, E> {
                parse_duration(v).map(Dur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Dur, E> {
                Err(E::custom(format!(
                    "{v} has no unit: write {v}ms or {v}s (a bare number is ambiguous)"
                )))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Dur, E> {
                self.visit_u64(v.unsigned_abs())
            }
        }
        d.deserialize_any(V)
    }
}

/// A size in bytes: a number, or a number with KiB/MiB/GiB (or KB/MB/GB).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MIB: u64 = 1 << 20;
        if self.0 >= MIB && self.0.is_multiple_of(MIB) {
            write!(f, "{}MiB", self.0 / MIB)
        } else {
            write!(f, "{} bytes", self.0)
        }
    }
}

pub fn parse_bytes(raw: &str) -> Result<u64, String> {
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => {
            return Err(format!(
                "{raw:?} is not a size: write bytes or a number with KiB, MiB or GiB, such as 64MiB"
            ));
        }
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| {
            format!(
                "{raw:?} is not a size: write bytes or a number with KiB, MiB or GiB, such as 64MiB"
            )
        })
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1048576 or 64MiB")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Bytes, E> {
                parse_bytes(v).map(Bytes).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Bytes, E> {
                u64::try_from(v)
                    .map(Bytes)
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_need_units() {
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("15").is_err());
        assert!(parse_duration("5 parsecs").unwrap_err().contains("500ms"));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert!(parse_bytes("12 furlongs").is_err());
        assert!(parse_bytes("99999999999999999999GiB").is_err());
    }
}

/// Flink's duration syntax: bare milliseconds, or a number and a unit
/// ("30 s", "1 min", "500ms").
pub fn parse_flink_duration(raw: &str) -> Result<Duration, String> {
    let t = raw.trim();
    if let Ok(ms) = t.parse::<u64>() {
        return Ok(Duration::from_millis(ms));
    }
    parse_duration(&t.replace(' ', ""))
}

/// A duration under one of Flink's keys: a number with a unit, or a bare
/// number of milliseconds (Flink up to 1.19 typed these keys as integers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlinkDur(pub Duration);

impl<'de> Deserialize<'de> for FlinkDur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = FlinkDur;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("milliseconds, or a duration with a unit such as 60s")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<FlinkDur, E> {
                parse_flink_duration(v).map(FlinkDur).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<FlinkDur, E> {
                Ok(FlinkDur(Duration::from_millis(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<FlinkDur, E> {
                u64::try_from(v)
                    .map(|ms| FlinkDur(Duration::from_millis(ms)))
                    .map_err(|_| E::custom(format!("{v} is negative")))
            }
        }
        d.deserialize_any(V)
    }
}
