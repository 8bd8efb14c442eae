//! The etcd backend, written the way a third party would write one: it
//! implements the SDK's [`CasStore`] over etcd's v3 JSON gateway and gets
//! election, discovery and fencing from the SDK (`ha_sidecar_sdk::cas`).
//!
//! etcd maps onto the store contract directly: its store-wide revision is the
//! version (strictly growing, never 0), a txn compares the guard key's
//! revision together with the key's own, and a watch wakes a waiting standby
//! or client as soon as the leader record changes.
//!
//! Settings: `endpoints` (comma-separated `http://host:port`, each also listed
//! in `capabilities.outgoing-http.endpoints`), `prefix` (default
//! `/ha-sidecar/`), `cluster-id` (default `default`), `request-timeout-ms`
//! (default 2000).
//!
//! Authentication (etcd with `auth enable`): `user`, and `password-secret`,
//! the name of the secret in `capabilities.secrets` that holds its password
//! (default `etcd-password`); the password never is a plugin setting. TLS
//! (its CA, a client certificate) is the host's, per endpoint, in
//! `capabilities.outgoing-http.tls`: list the endpoints as `https://`.

mod gateway;

use std::time::Duration;

use ha_sidecar_sdk::cas::{CasStore, Guard};
use ha_sidecar_sdk::http::Endpoint;
use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::{Failure, Result, Setup, Versioned, invalid, secrets};

use gateway::{Auth, Compare, Gateway, Op};

pub struct Etcd {
    gateway: Gateway,
    /// Prepended to every key: `<prefix><cluster-id>/`.
    root: String,
}

impl Etcd {
    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.root)
    }
}

impl CasStore for Etcd {
    fn open(setup: &Setup) -> Result<Self> {
        let s = Settings::new(
            "etcd",
            setup.settings.clone(),
            &[
                "endpoints",
                "prefix",
                "cluster-id",
                "request-timeout-ms",
                "user",
                "password-secret",
            ],
        )?;
        let endpoints = s
            .get("endpoints")
            .ok_or_else(|| invalid("plugin.settings.endpoints: missing; list etcd's client URLs, such as http://127.0.0.1:2379"))?
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(|e| Endpoint::parse(e).map_err(|m| invalid(format!("plugin.settings.endpoints: {m}"))))
            .collect::<Result<Vec<_>>>()?;
        if endpoints.is_empty() {
            return Err(invalid(
                "plugin.settings.endpoints: empty; list etcd's client URLs",
            ));
        }
        let prefix = s.string_or("prefix", "/ha-sidecar/");
        if !prefix.ends_with('/') {
            return Err(invalid(format!(
                "plugin.settings.prefix: {prefix:?} must end with '/'"
            )));
        }
        let cluster = s.string_or("cluster-id", "default");
        if cluster.is_empty() || cluster.contains('/') {
            return Err(invalid(format!(
                "plugin.settings.cluster-id: {cluster:?} must be non-empty and contain no '/'"
            )));
        }
        let timeout = s.u64_or("request-timeout-ms", 2000, 10..=60_000)?;
        let auth = match s.get("user").filter(|u| !u.is_empty()) {
            None => None,
            Some(user) => {
                let secret = s.string_or("password-secret", "etcd-password");
                let password = secrets::get(&secret).ok_or_else(|| {
                    invalid(format!(
                        "plugin.settings.password-secret: the sidecar has no secret named {secret:?}; add capabilities.secrets.{secret} (a file or an environment variable with the password of etcd user {user:?})"
                    ))
                })?;
                Some(Auth::new(user.to_string(), password, secret))
            }
        };
        let mut gateway = Gateway::new(endpoints, Duration::from_millis(timeout), auth);
        // Wrong credentials stop the start with what to fix; an etcd that
        // cannot be reached now is retried on the first request instead.
        if let Err(f @ Failure::Invalid(_)) = gateway.authenticate() {
            return Err(f);
        }
        Ok(Self {
            gateway,
            root: format!("{prefix}{cluster}/"),
        })
    }

    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        let full = self.full(key);
        Ok(self.gateway.range(&full)?.map(|kv| Versioned {
            value: kv.value,
            version: kv.mod_revision,
        }))
    }

    fn write(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        expected: Option<u64>,
        guard: Option<Guard<'_>>,
    ) -> Result<u64> {
        let full = self.full(key);
        let guard_key = guard.as_ref().map(|g| self.full(g.key));
        let mut compare = Vec::new();
        if let (Some(g), Some(k)) = (&guard, &guard_key) {
            compare.push(Compare::ModRevision(k, g.version));
        }
        if let Some(v) = expected {
            // A missing key compares as revision 0, which is "only if absent".
            compare.push(Compare::ModRevision(&full, v));
        }
        let op = match value {
            Some(v) => Op::Put(&full, v),
            None => Op::Delete(&full),
        };
        let mut read_back = vec![full.as_str()];
        read_back.extend(guard_key.as_deref());
        match self.gateway.txn(&compare, op, &read_back)? {
            Ok(revision) => Ok(revision),
            Err(current) => {
                if let (Some(g), Some(k)) = (&guard, &guard_key) {
                    let at = current.get(k).map_or(0, |kv| kv.mod_revision);
                    if at != g.version {
                        return Err(Failure::NotLeader);
                    }
                }
                Err(Failure::Conflict(current.get(&full).map(|kv| Versioned {
                    value: kv.value.clone(),
                    version: kv.mod_revision,
                })))
            }
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        let full = self.full(prefix);
        let keys = self.gateway.keys(&full)?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.strip_prefix(&self.root).map(str::to_string))
            .collect())
    }

    fn wait_change(&mut self, key: &str, seen: Option<u64>, wait: Duration) -> Result<()> {
        let full = self.full(key);
        self.gateway.watch(&full, seen, wait)
    }
}

ha_sidecar_sdk::export_cas_backend!(Etcd);
