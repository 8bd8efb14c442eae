//! Guest SDK for ha-sidecar backend plugins.
//!
//! A plugin depends on this crate and takes one of two paths: a store with
//! compare-and-set implements [`cas::CasStore`] and calls
//! [`export_cas_backend!`](crate::export_cas_backend), getting election,
//! discovery and fencing from the SDK; any other implements the whole
//! contract as a [`stateful::StatefulBackend`] and calls
//! [`export_backend!`](crate::export_backend). The bindings are generated here once, from the
//! contract in this crate's `wit/`, so every plugin is built against the same
//! version of it. With the feature `contract-0-1` the plugin is built for the
//! previous contract instead (see `wit-0.1.0/`), without the optional
//! `ha:membership` export, which came later.
//!
//! ```ignore
//! struct MyStore { /* what configure made */ }
//! impl ha_sidecar_sdk::stateful::StatefulBackend for MyStore { /* ... */ }
//! ha_sidecar_sdk::export_backend!(MyStore);
//! ```

pub mod cas;
pub mod flink;
pub mod http;
pub mod keys;
pub mod log;
pub mod roster;
pub mod settings;
pub mod stateful;

// Bindings for every capability the host can grant (world
// `ha:sdk/capabilities`): a plugin's component imports only the interfaces its
// code actually calls. The WIT ships inside this crate (`wit/`, one directory
// per package under `wit/deps/`), so the SDK builds wherever the crate is.
#[cfg(not(feature = "contract-0-1"))]
wit_bindgen::generate!({
    path: "wit",
    world: "ha:sdk/backend",
    pub_export_macro: true,
    default_bindings_module: "ha_sidecar_sdk",
    generate_all,
});

// The same, built for the frozen 0.1.0 contract (`wit-0.1.0/`), in which the
// capability interfaces were part of `ha:sidecar`: a plugin built so loads in
// sidecars that speak only 0.1 as well as in this one.
#[cfg(feature = "contract-0-1")]
wit_bindgen::generate!({
    path: "wit-0.1.0",
    world: "ha:sidecar/capabilities@0.1.0",
    pub_export_macro: true,
    default_bindings_module: "ha_sidecar_sdk",
    generate_all,
});

/// The capability interfaces under one name whichever contract the SDK is
/// built for, so a plugin's code is the same for both.
#[cfg(not(feature = "contract-0-1"))]
mod capability {
    pub use crate::ha::kubernetes::client as kubernetes;
    pub use crate::ha::secrets::store as secrets;
    pub use crate::ha::zookeeper::client as zookeeper;
}
#[cfg(feature = "contract-0-1")]
mod capability {
    pub use crate::ha::sidecar::{kubernetes, secrets, zookeeper};
}

/// The `kubernetes` capability (granted with `capabilities.kubernetes`).
pub use capability::kubernetes;
/// The `secrets` capability (granted with `capabilities.secrets`): credentials
/// the host reads from a file or its environment, by name.
pub use capability::secrets;
/// The `zookeeper` capability (granted with `capabilities.zookeeper`).
pub use capability::zookeeper;
/// The optional `ha:membership/roster` export (not in the 0.1 contract).
#[cfg(not(feature = "contract-0-1"))]
pub use exports::ha::membership::roster::{Candidate, Guest as Roster};
pub use exports::ha::sidecar::backend::Guest as Backend;
/// A candidate as [`stateful::StatefulBackend::members`] reports it; in a
/// build for the 0.1 contract, which has no roster export, only a record
/// of the same shape, so that a plugin's code is the same for both.
#[cfg(feature = "contract-0-1")]
#[derive(Debug, Clone)]
pub struct Candidate {
    pub member: Member,
    pub leads: bool,
    pub since_ms: u64,
    pub seen_ms: Option<u64>,
}
pub use ha::sidecar::types::{Failure, Member, Setup, Term, Timing, Versioned};

/// Shorthand for the result type of every backend call.
pub type Result<T> = std::result::Result<T, Failure>;

/// `unavailable` with the operation that failed and why, e.g.
/// `unavailable("read election/term-7", err)`.
pub fn unavailable(what: &str, err: impl std::fmt::Display) -> Failure {
    Failure::Unavailable(format!("{what}: {err}"))
}

/// A value this plugin found in its store that the host did not put there
/// (state another system left behind, such as Flink's own ZooKeeper HA before
/// the cluster moved to the sidecar), in the form `get` must return it. The
/// host keeps every value it puts in an envelope whose first byte says how it
/// is stored; 0 means "inline, the bytes follow". Values the host put come
/// back as they were put and need nothing; foreign bytes returned as they are
/// would be read as an envelope (and refused, or worse, misread).
pub fn foreign_value(bytes: &[u8]) -> Vec<u8> {
    /// The host's inline tag (`host/src/storage/envelope.rs`): keep in step.
    const INLINE: u8 = 0;
    let mut out = Vec::with_capacity(bytes.len() + 1);
    out.push(INLINE);
    out.extend_from_slice(bytes);
    out
}

/// `invalid` with a message.
pub fn invalid(msg: impl Into<String>) -> Failure {
    Failure::Invalid(msg.into())
}
