//! The usual shape of a backend that implements the whole contract itself:
//! state made once by `configure` and used by every later call. Implement
//! [`StatefulBackend`] on that state and export it with
//! [`export_backend!`](crate::export_backend).
//!
//! The macro keeps the state in the instance (the host runs one call at a
//! time per instance, so a thread-local `RefCell` is all the
//! synchronization needed), answers `invalid` to a call made before
//! `configure`, and checks what the contract defines as bad input before
//! your code sees it: keys and prefixes ([`crate::keys`]) and a delete
//! "only if absent". The compare-and-set recipe's
//! [`export_cas_backend!`](crate::export_cas_backend) is this macro over
//! [`crate::cas::Driver`].

use std::time::Duration;

use crate::{Candidate, Result, Setup, Term, Versioned, invalid, keys};

pub trait StatefulBackend: Sized + 'static {
    /// Called once per instance, before anything else: the state every
    /// later call gets.
    fn configure(setup: Setup) -> Result<Self>;

    /// Try to become leader, waiting at most `wait` for the current leader to go.
    fn campaign(&mut self, wait: Duration) -> Result<Option<Term>>;

    /// Renew or verify a term this process holds.
    fn keep(&mut self, term: Term) -> Result<()>;

    /// Give a term up at once.
    fn resign(&mut self, term: Term) -> Result<()>;

    /// The current leader; returns at once if its token differs from
    /// `known`, else waits at most `wait` for a change.
    fn leader(&mut self, known: Option<u64>, wait: Duration) -> Result<Option<Term>>;

    /// Read a key (a valid one: checked before the call).
    fn get(&mut self, key: &str) -> Result<Option<Versioned>>;

    /// Write a key, as the contract's `put` (key checked before the call).
    fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64>;

    /// Delete a key, as the contract's `delete` (key checked, and
    /// `expected` never `Some(0)`).
    fn delete(&mut self, key: &str, expected: Option<u64>, fence: Option<u64>) -> Result<()>;

    /// Keys starting with `prefix` (a valid one), sorted.
    fn list(&mut self, prefix: &str) -> Result<Vec<String>>;

    /// Every candidate the backend records, leader included (the optional
    /// `ha:membership/roster` export). By default the backend records none:
    /// the host then shows the leader only and says why.
    fn members(&mut self) -> Result<Vec<Candidate>> {
        Err(invalid(
            "this backend does not record its candidates (it does not implement members)",
        ))
    }

    /// Give `term` up so that only the candidate `to` may take the next one
    /// at once (the roster's `hand-over`: read its rules before
    /// implementing). By default a targeted handover is refused and nothing
    /// changes.
    fn hand_over(&mut self, term: Term, to: &str) -> Result<()> {
        let _ = (term, to);
        Err(invalid(
            "this backend cannot hand over to a chosen member (it does not implement hand-over); resign instead",
        ))
    }
}

/// What `export_backend!` calls: the contract's checks, once for every plugin.
#[doc(hidden)]
pub mod checks {
    use super::*;

    pub fn wait(wait_ms: u32) -> Duration {
        Duration::from_millis(wait_ms.into())
    }

    pub fn delete(key: &str, expected: Option<u64>) -> Result<()> {
        keys::validate(key)?;
        if expected == Some(0) {
            return Err(invalid(
                "delete with expected version 0 (\"only if absent\") cannot succeed",
            ));
        }
        Ok(())
    }

    pub fn not_configured() -> crate::Failure {
        invalid("configure was not called")
    }
}

/// Exports a [`StatefulBackend`] as a complete backend plugin:
/// `ha_sidecar_sdk::export_backend!(MyPlugin);`
#[macro_export]
macro_rules! export_backend {
    ($plugin:ty) => {
        thread_local! {
            static __HA_SIDECAR_PLUGIN: ::std::cell::RefCell<Option<$plugin>> =
                const { ::std::cell::RefCell::new(None) };
        }

        fn __ha_sidecar_with<T>(
            f: impl FnOnce(&mut $plugin) -> $crate::Result<T>,
        ) -> $crate::Result<T> {
            __HA_SIDECAR_PLUGIN.with(|p| match p.borrow_mut().as_mut() {
                Some(plugin) => f(plugin),
                None => Err($crate::stateful::checks::not_configured()),
            })
        }

        struct __HaSidecarBackend;

        impl $crate::Backend for __HaSidecarBackend {
            fn configure(setup: $crate::Setup) -> $crate::Result<()> {
                let plugin = <$plugin as $crate::stateful::StatefulBackend>::configure(setup)?;
                __HA_SIDECAR_PLUGIN.with(|p| *p.borrow_mut() = Some(plugin));
                Ok(())
            }
            fn campaign(wait_ms: u32) -> $crate::Result<Option<$crate::Term>> {
                __ha_sidecar_with(|p| {
                    $crate::stateful::StatefulBackend::campaign(
                        p,
                        $crate::stateful::checks::wait(wait_ms),
                    )
                })
            }
            fn keep(term: $crate::Term) -> $crate::Result<()> {
                __ha_sidecar_with(|p| $crate::stateful::StatefulBackend::keep(p, term))
            }
            fn resign(term: $crate::Term) -> $crate::Result<()> {
                __ha_sidecar_with(|p| $crate::stateful::StatefulBackend::resign(p, term))
            }
            fn leader(known: Option<u64>, wait_ms: u32) -> $crate::Result<Option<$crate::Term>> {
                __ha_sidecar_with(|p| {
                    $crate::stateful::StatefulBackend::leader(
                        p,
                        known,
                        $crate::stateful::checks::wait(wait_ms),
                    )
                })
            }
            fn get(key: String) -> $crate::Result<Option<$crate::Versioned>> {
                $crate::keys::validate(&key)?;
                __ha_sidecar_with(|p| $crate::stateful::StatefulBackend::get(p, &key))
            }
            fn put(
                key: String,
                value: Vec<u8>,
                expected: Option<u64>,
                fence: Option<u64>,
            ) -> $crate::Result<u64> {
                $crate::keys::validate(&key)?;
                __ha_sidecar_with(|p| {
                    $crate::stateful::StatefulBackend::put(p, &key, value, expected, fence)
                })
            }
            fn delete(
                key: String,
                expected: Option<u64>,
                fence: Option<u64>,
            ) -> $crate::Result<()> {
                $crate::stateful::checks::delete(&key, expected)?;
                __ha_sidecar_with(|p| {
                    $crate::stateful::StatefulBackend::delete(p, &key, expected, fence)
                })
            }
            fn list(prefix: String) -> $crate::Result<Vec<String>> {
                $crate::keys::validate_prefix(&prefix)?;
                __ha_sidecar_with(|p| $crate::stateful::StatefulBackend::list(p, &prefix))
            }
        }

        $crate::__export_roster!(__HaSidecarBackend, __ha_sidecar_with, $plugin);

        // Through the name the plugin gave this SDK, not `$crate`: a test
        // build that puts a fault-injecting SDK under that name (see
        // `plugins/fixtures/faults`) then wraps this backend too.
        ha_sidecar_sdk::export!(__HaSidecarBackend);
    };
}

/// The roster export of [`export_backend!`]: defined here, where the SDK's
/// own feature is known, because a `cfg` in `export_backend!` would be read
/// in the plugin's crate.
#[cfg(not(feature = "contract-0-1"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_roster {
    ($backend:ident, $with:ident, $plugin:ty) => {
        impl $crate::Roster for $backend {
            fn members() -> $crate::Result<Vec<$crate::Candidate>> {
                $with(|p| $crate::stateful::StatefulBackend::members(p))
            }
            fn hand_over(term: $crate::Term, to: String) -> $crate::Result<()> {
                $with(|p| $crate::stateful::StatefulBackend::hand_over(p, term, &to))
            }
        }
    };
}

/// Built for the 0.1 contract, which has no roster: nothing to export.
#[cfg(feature = "contract-0-1")]
#[doc(hidden)]
#[macro_export]
macro_rules! __export_roster {
    ($backend:ident, $with:ident, $plugin:ty) => {};
}

/// For a plugin that implements [`crate::Backend`] by hand and records no
/// candidates: exports the roster as refusing both calls, which is what the
/// host expects of such a backend (`GET /members` then shows the leader
/// only). `ha_sidecar_sdk::no_roster!(MyBackend);` next to `export!`.
#[cfg(not(feature = "contract-0-1"))]
#[macro_export]
macro_rules! no_roster {
    ($backend:ident) => {
        impl $crate::Roster for $backend {
            fn members() -> $crate::Result<Vec<$crate::Candidate>> {
                Err($crate::invalid(
                    "this backend does not record its candidates (it does not implement members)",
                ))
            }
            fn hand_over(_: $crate::Term, _: String) -> $crate::Result<()> {
                Err($crate::invalid(
                    "this backend cannot hand over to a chosen member (it does not implement hand-over); resign instead",
                ))
            }
        }
    };
}

/// Built for the 0.1 contract, which has no roster: nothing to export.
#[cfg(feature = "contract-0-1")]
#[macro_export]
macro_rules! no_roster {
    ($backend:ident) => {};
}
