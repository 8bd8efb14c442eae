//! What parsing any section of the config file needs: the error that names
//! the key, the value and the reason; the directory relative paths start
//! at; the units (durations, sizes, Flink's durations); the timing every
//! section may be checked against; and the Flink config file a section may
//! take defaults from. Both `config` (the file as a whole) and each
//! capability (its own section) build on it, and it imports neither.

pub mod flink;
mod units;

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, Visitor};

pub use flink::FlinkConfig;
pub use units::{Bytes, Dur, FlinkDur, parse_bytes, parse_duration, parse_flink_duration};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {key}: {message}")]
    Parse {
        path: PathBuf,
        key: String,
        message: String,
    },
    #[error("{path}: {key} = {value}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },
}

/// The leadership timing the whole config shares (`timing.*`).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
    pub resign_holdoff: Duration,
}

/// Which file is being read, its text, and where its relative paths start.
pub struct Keys<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub base: &'a Path,
}

impl Keys<'_> {
    /// An invalid value: the key, the value as written (or a stand-in for a
    /// secret), and why, with what to do.
    pub fn err(
        &self,
        key: &str,
        value: impl std::fmt::Display,
        reason: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.into(),
            key: key.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }

    /// A path as written in the config: relative ones start at the config
    /// file's directory, so a config works from any working directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base.join(p)
        }
    }

    /// Reads the section at `at` (such as `["capabilities", "zookeeper"]`)
    /// into its raw, strictly checked shape, straight from the file's text,
    /// so that an error names the full key and its line, as one for the
    /// whole file does. None: the file has no such section (or it is null).
    pub fn section<T: DeserializeOwned>(&self, at: &[&str]) -> Result<Option<T>, ConfigError> {
        let mut track = serde_path_to_error::Track::new();
        let de = serde_path_to_error::Deserializer::new(
            serde_yaml::Deserializer::from_str(self.text),
            &mut track,
        );
        match (At::<T> {
            path: at,
            wanted: PhantomData,
        })
        .deserialize(de)
        {
            Ok(v) => Ok(v),
            Err(e) => Err(self.parse_error(None, serde_path_to_error::Error::new(track.path(), e))),
        }
    }

    /// A serde error, with the key it happened at (below `prefix`, if any).
    pub fn parse_error<E: std::fmt::Display>(
        &self,
        prefix: Option<&str>,
        e: serde_path_to_error::Error<E>,
    ) -> ConfigError {
        let at = e.path().to_string();
        let message = e.into_inner().to_string();
        // serde_yaml names the key in some messages itself: say it once.
        let message = match message.strip_prefix(&format!("{at}: ")) {
            Some(rest) => rest.to_string(),
            None => message,
        };
        let key = match (prefix, at.as_str()) {
            (None, ".") => "(top level)".to_string(),
            (None, _) => at,
            (Some(p), ".") => p.to_string(),
            (Some(p), _) => format!("{p}.{at}"),
        };
        ConfigError::Parse {
            path: self.path.into(),
            key,
            message,
        }
    }
}

/// Finds the value at `path` in nested maps and reads it as a `T`,
/// skipping everything else.
struct At<'p, T> {
    path: &'p [&'p str],
    wanted: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for At<'_, T> {
    type Value = Option<T>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        match self.path {
            [] => Option::<T>::deserialize(d),
            _ => d.deserialize_any(self),
        }
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for At<'_, T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a map with the key {:?}", self.path.first())
    }

    fn visit_unit<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_none<E: de::Error>(self) -> Result<Option<T>, E> {
        Ok(None)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let Some((key, rest)) = self.path.split_first() else {
            return Ok(None);
        };
        let mut found = None;
        while let Some(k) = map.next_key::<String>()? {
            if k == *key {
                found = map.next_value_seed(At::<T> {
                    path: rest,
                    wanted: PhantomData,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}
