//! Logging into the host's log stream.
//!
//! Outside WebAssembly (a plugin's native unit tests) there is no host to
//! log to: messages go to stderr, where the test harness shows them.

#[cfg(target_family = "wasm")]
use crate::ha::sidecar::log::{Level, log};

#[cfg(not(target_family = "wasm"))]
#[derive(Debug)]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

#[cfg(not(target_family = "wasm"))]
fn log(level: Level, msg: &str) {
    eprintln!("{level:?}: {msg}");
}

pub fn debug(msg: &str) {
    log(Level::Debug, msg);
}

pub fn info(msg: &str) {
    log(Level::Info, msg);
}

pub fn warn(msg: &str) {
    log(Level::Warn, msg);
}

pub fn error(msg: &str) {
    log(Level::Error, msg);
}
