//! The PostgreSQL backend: the SDK's [`CasStore`] on one table, so the SDK's
//! lease election gives leadership, discovery and fenced state
//! (`ha_sidecar_sdk::cas`), as it does for etcd.
//!
//! The plugin speaks PostgreSQL's wire protocol itself over the host's
//! allow-listed TCP (`capabilities.tcp`), with `postgres-protocol` for the
//! message encoding and SCRAM-SHA-256 (see [`wire`] for why that crate). The
//! password comes from the host's secrets (`capabilities.secrets`), never
//! from the plugin settings.
//!
//! The table (created if missing) holds one row per key of a cluster and one
//! counter row (key `''`, which no contract key can be). Every write runs in
//! one transaction that first increments the counter row: that row lock
//! serialises the writes of a cluster, so the guard and the expected version
//! are checked against the latest committed state, and the counter's value,
//! which the write stores as the key's version, is strictly greater for every
//! change of any key, deleted keys included (it lives on in the counter).
//!
//! Settings: `host` (default `127.0.0.1`) and `port` (default 5432), also
//! listed in `capabilities.tcp.endpoints`; `user` (required); `database`
//! (default: the user's name); `password-secret`, the name of the secret in
//! `capabilities.secrets` (default `pg-password`); `table` (default
//! `ha_sidecar`); `cluster-id` (default `default`); `request-timeout-ms`
//! (default 2000); `sslmode`, `disable` (default) or `verify-full` (TLS,
//! the server's certificate checked against the CA in the secret that
//! `sslrootcert-secret` names, and for `host`).

mod tls;
mod wire;

use std::time::Duration;

use ha_sidecar_sdk::cas::{CasStore, Guard};
use ha_sidecar_sdk::settings::Settings;
use ha_sidecar_sdk::{Failure, Result, Setup, Versioned, invalid, secrets, unavailable};

use wire::{Connection, Param, Target, int};

pub struct Postgres {
    target: Target,
    password: String,
    table: String,
    cluster: String,
    /// Opened on first use and after a broken one, so a server that is down
    /// at start or restarts costs calls, not the plugin.
    conn: Option<Connection>,
}

/// A table name PostgreSQL takes unquoted: lowercase letters, digits, `_`.
fn valid_table(t: &str) -> bool {
    let mut chars = t.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && t.len() <= 63
}

impl Postgres {
    /// The open connection, opening it (and the table) if there is none.
    fn conn(&mut self) -> Result<&mut Connection> {
        if self.conn.is_none() {
            let mut c = Connection::open(&self.target, &self.password)
                .map_err(|e| unavailable("connect to PostgreSQL", e))?;
            self.schema(&mut c)
                .map_err(|e| unavailable(&format!("create table {}", self.table), e))?;
            self.conn = Some(c);
        }
        Ok(self.conn.as_mut().expect("just opened"))
    }

    fn schema(&self, c: &mut Connection) -> std::result::Result<(), wire::Error> {
        let create = format!(
            "CREATE TABLE IF NOT EXISTS {} (cluster text COLLATE \"C\" NOT NULL, key text COLLATE \"C\" NOT NULL, value bytea NOT NULL, version bigint NOT NULL, PRIMARY KEY (cluster, key))",
            self.table
        );
        // Two sidecars creating the table at once: one of them loses on
        // the catalog's unique index; the table exists then.
        if let Err(e) = c.batch(&create) {
            match &e {
                wire::Error::Server { code, .. } if code == "23505" || code == "42P07" => {}
                _ => return Err(e),
            }
        }
        c.query(
            &format!(
                "INSERT INTO {} (cluster, key, value, version) VALUES ($1, '', ''::bytea, 0) ON CONFLICT DO NOTHING",
                self.table
            ),
            &[Param::Text(&self.cluster)],
        )?;
        Ok(())
    }

    /// Runs `f` on the connection; a broken connection is dropped, so the
    /// next call opens a new one.
    fn run<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut Connection, &str, &str) -> std::result::Result<T, wire::Error>,
    ) -> Result<T> {
        let table = self.table.clone();
        let cluster = self.cluster.clone();
        let c = self.conn()?;
        match f(c, &table, &cluster) {
            Ok(v) => Ok(v),
            Err(e) => {
                if matches!(e, wire::Error::Io(_)) {
                    self.conn = None;
                }
                Err(unavailable(what, e))
            }
        }
    }

    fn read(
        c: &mut Connection,
        table: &str,
        cluster: &str,
        key: &str,
    ) -> std::result::Result<Option<Versioned>, wire::Error> {
        let rows = c.query(
            &format!("SELECT value, version FROM {table} WHERE cluster = $1 AND key = $2"),
            &[Param::Text(cluster), Param::Text(key)],
        )?;
        Ok(rows.into_iter().next().map(|r| Versioned {
            value: r[0].clone().unwrap_or_default(),
            version: int(&r[1]).unwrap_or(0) as u64,
        }))
    }
}

/// What a write transaction found.
enum Outcome {
    Written(u64),
    NotLeader,
    Conflict(Option<Versioned>),
}

impl CasStore for Postgres {
    fn open(setup: &Setup) -> Result<Self> {
        let s = Settings::new(
            "postgres",
            setup.settings.clone(),
            &[
                "host",
                "port",
                "user",
                "database",
                "password-secret",
                "table",
                "cluster-id",
                "request-timeout-ms",
                "sslmode",
                "sslrootcert-secret",
            ],
        )?;
        let user = s
            .get("user")
            .filter(|u| !u.is_empty())
            .ok_or_else(|| invalid("plugin.settings.user: missing; name the PostgreSQL role the sidecar logs in as"))?
            .to_string();
        let port = s.u64_or("port", 5432, 1..=65535)? as u16;
        let secret = s.string_or("password-secret", "pg-password");
        let password = secrets::get(&secret).ok_or_else(|| {
            invalid(format!(
                "plugin.settings.password-secret: the sidecar has no secret named {secret:?}; add capabilities.secrets.{secret} (a file or an environment variable with the password of {user})"
            ))
        })?;
        let table = s.string_or("table", "ha_sidecar");
        if !valid_table(&table) {
            return Err(invalid(format!(
                "plugin.settings.table: {table:?} must be lowercase letters, digits and '_', not starting with a digit, at most 63 bytes"
            )));
        }
        let cluster = s.string_or("cluster-id", "default");
        if cluster.is_empty() {
            return Err(invalid("plugin.settings.cluster-id: must not be empty"));
        }
        let timeout = s.u64_or("request-timeout-ms", 2000, 10..=60_000)?;
        let tls = match s.string_or("sslmode", "disable").as_str() {
            "disable" => None,
            "verify-full" => {
                let name = s.get("sslrootcert-secret").filter(|n| !n.is_empty()).ok_or_else(|| {
                    invalid("plugin.settings.sslrootcert-secret: missing; with sslmode: verify-full, name the secret (capabilities.secrets) that holds the PEM certificate of the CA that signed the server's")
                })?;
                let pem = secrets::get(name).ok_or_else(|| {
                    invalid(format!(
                        "plugin.settings.sslrootcert-secret: the sidecar has no secret named {name:?}; add capabilities.secrets.{name} (a file with the CA's PEM certificate)"
                    ))
                })?;
                Some(tls::client_config(&pem).map_err(|why| {
                    invalid(format!("capabilities.secrets.{name}: {why}; it must hold the PEM certificate of the CA that signed the server's"))
                })?)
            }
            other => {
                return Err(invalid(format!(
                    "plugin.settings.sslmode: {other:?} must be disable or verify-full (TLS with the server's certificate checked)"
                )));
            }
        };
        Ok(Self {
            target: Target {
                host: s.string_or("host", "127.0.0.1"),
                port,
                database: s.string_or("database", &user),
                user,
                timeout: Duration::from_millis(timeout),
                tls,
            },
            password,
            table,
            cluster,
            conn: None,
        })
    }

    fn get(&mut self, key: &str) -> Result<Option<Versioned>> {
        self.run(&format!("read {key}"), |c, table, cluster| {
            Self::read(c, table, cluster, key)
        })
    }

    fn write(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
        expected: Option<u64>,
        guard: Option<Guard<'_>>,
    ) -> Result<u64> {
        let outcome = self.run(&format!("write {key}"), |c, table, cluster| {
            c.batch("BEGIN")?;
            let mut body = || -> std::result::Result<Outcome, wire::Error> {
                // The counter row's lock orders every write of the cluster.
                let rows = c.query(
                    &format!("UPDATE {table} SET version = version + 1 WHERE cluster = $1 AND key = '' RETURNING version"),
                    &[Param::Text(cluster)],
                )?;
                let version = rows.first().and_then(|r| int(&r[0])).ok_or_else(|| {
                    wire::Error::Io(format!("the counter row of cluster {cluster} in {table} is missing"))
                })?;
                if let Some(g) = &guard {
                    let at = Self::read(c, table, cluster, g.key)?.map_or(0, |v| v.version);
                    if at != g.version {
                        return Ok(Outcome::NotLeader);
                    }
                }
                if let Some(exp) = expected {
                    let current = Self::read(c, table, cluster, key)?;
                    if current.as_ref().map_or(0, |v| v.version) != exp {
                        return Ok(Outcome::Conflict(current));
                    }
                }
                match value {
                    Some(v) => c.query(
                        &format!("INSERT INTO {table} (cluster, key, value, version) VALUES ($1, $2, $3, $4) ON CONFLICT (cluster, key) DO UPDATE SET value = EXCLUDED.value, version = EXCLUDED.version"),
                        &[Param::Text(cluster), Param::Text(key), Param::Bytes(v), Param::Int(version)],
                    )?,
                    None => c.query(
                        &format!("DELETE FROM {table} WHERE cluster = $1 AND key = $2"),
                        &[Param::Text(cluster), Param::Text(key)],
                    )?,
                };
                Ok(Outcome::Written(version as u64))
            };
            let outcome = body();
            match &outcome {
                Ok(Outcome::Written(_)) => c.batch("COMMIT")?,
                // A server error (or a lost compare) leaves the
                // transaction to roll back; a broken connection takes it
                // with it.
                Ok(_) | Err(wire::Error::Server { .. }) => c.batch("ROLLBACK")?,
                Err(wire::Error::Io(_)) => {}
            }
            outcome
        })?;
        match outcome {
            Outcome::Written(v) => Ok(v),
            Outcome::NotLeader => Err(Failure::NotLeader),
            Outcome::Conflict(current) => Err(Failure::Conflict(current)),
        }
    }

    fn list(&mut self, prefix: &str) -> Result<Vec<String>> {
        self.run(&format!("list {prefix}"), |c, table, cluster| {
            let rows = c.query(
                &format!("SELECT key FROM {table} WHERE cluster = $1 AND key <> '' AND starts_with(key, $2) ORDER BY key"),
                &[Param::Text(cluster), Param::Text(prefix)],
            )?;
            Ok(rows
                .into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .filter_map(|k| String::from_utf8(k).ok())
                .collect())
        })
    }
}

ha_sidecar_sdk::export_cas_backend!(Postgres);
