//! etcd's v3 API through its JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/watch`): keys and values travel base64-encoded, 64-bit numbers as
//! strings, and fields at their default value (an empty value, `succeeded:
//! false`) are left out of responses.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ha_sidecar_sdk::http::{self, Endpoint, Request, Stream};
use ha_sidecar_sdk::{Failure, Result, log};
use serde_json::{Value, json};

/// A key as etcd returns it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub value: Vec<u8>,
    pub mod_revision: u64,
}

pub enum Compare<'a> {
    /// The key's last modification revision equals this (0: the key is absent).
    ModRevision(&'a str, u64),
}

pub enum Op<'a> {
    Put(&'a str, &'a [u8]),
    Delete(&'a str),
}

pub struct Gateway {
    endpoints: Vec<Endpoint>,
    /// The endpoint that answered last; tried first.
    current: usize,
    timeout: Duration,
    auth: Option<Auth>,
}

/// etcd's user/password authentication: `/v3/auth/authenticate` trades them
/// for a token that every request then carries (`Authorization: <token>`).
/// The token expires (`--auth-token-ttl`, or when the member restarts with
/// simple tokens): a request refused for it authenticates again, once.
pub struct Auth {
    pub user: String,
    /// From the host's secrets; never logged, never in a message.
    pub password: String,
    /// Which secret held it, for messages.
    pub secret: String,
    token: Option<String>,
}

impl Auth {
    pub fn new(user: String, password: String, secret: String) -> Self {
        Self {
            user,
            password,
            secret,
            token: None,
        }
    }
}

/// What one request came back with.
enum Answer {
    Ok(Value),
    /// etcd refused the token (expired, or unknown after a restart).
    BadToken(String),
    Failed(Failure),
}

impl Gateway {
    pub fn new(endpoints: Vec<Endpoint>, timeout: Duration, auth: Option<Auth>) -> Self {
        Self {
            endpoints,
            current: 0,
            timeout,
            auth,
        }
    }

    /// Trades the user and password for a token. A refusal is `Invalid`:
    /// the credentials come from the config, so retrying cannot help.
    pub fn authenticate(&mut self) -> Result<()> {
        let Some(auth) = &self.auth else {
            return Ok(());
        };
        let body = json!({ "name": auth.user, "password": auth.password });
        let (user, secret) = (auth.user.clone(), auth.secret.clone());
        let v = match self.request("/v3/auth/authenticate", &body, true, false) {
            Answer::Ok(v) => v,
            Answer::BadToken(m) | Answer::Failed(Failure::Unavailable(m))
                if m.contains("authentication failed")
                    || m.contains("HTTP 400")
                    || m.contains("HTTP 401") =>
            {
                return Err(Failure::Invalid(format!(
                    "etcd refused user {user:?}: {m}. Check plugin.settings.user and the password in capabilities.secrets.{secret}"
                )));
            }
            Answer::BadToken(m) => return Err(Failure::Unavailable(m)),
            Answer::Failed(f) => return Err(f),
        };
        let token = v["token"].as_str().filter(|t| !t.is_empty()).ok_or_else(|| {
            Failure::Invalid(format!(
                "etcd answered /v3/auth/authenticate for user {user:?} without a token: is authentication enabled on it (etcdctl auth enable)? Without it, unset plugin.settings.user"
            ))
        })?;
        if let Some(a) = &mut self.auth {
            a.token = Some(token.to_string());
        }
        Ok(())
    }

    /// `call`, authenticated: with the token (fetched first if there is
    /// none), and once more with a new one if etcd refuses it.
    fn call(&mut self, path: &str, body: Value, idempotent: bool) -> Result<Value> {
        for attempt in 0..2 {
            if self.auth.as_ref().is_some_and(|a| a.token.is_none()) {
                self.authenticate()?;
            }
            match self.request(path, &body, idempotent, true) {
                Answer::Ok(v) => return Ok(v),
                Answer::Failed(f) => return Err(f),
                Answer::BadToken(m) => {
                    if let Some(a) = &mut self.auth {
                        a.token = None;
                    }
                    if attempt == 1 || self.auth.is_none() {
                        let hint = if self.auth.is_none() {
                            "etcd has authentication enabled: set plugin.settings.user and its password in capabilities.secrets"
                        } else {
                            "a new token was refused too"
                        };
                        return Err(Failure::Unavailable(format!("{m} ({hint})")));
                    }
                    log::info("etcd refused the auth token (expired?); authenticating again");
                }
            }
        }
        unreachable!("the loop returns")
    }

    /// One request. Reads (`idempotent`) move on to the next endpoint when
    /// one fails; a txn does not, because a request that got no answer may
    /// still have been applied, and repeating it elsewhere would report a
    /// conflict with our own write.
    fn request(&mut self, path: &str, body: &Value, idempotent: bool, with_token: bool) -> Answer {
        let mut request = Request::post(path, body.to_string().into_bytes()).json();
        if with_token && let Some(token) = self.auth.as_ref().and_then(|a| a.token.as_deref()) {
            request = request.header("authorization", token.as_bytes().to_vec());
        }
        let tries = if idempotent { self.endpoints.len() } else { 1 };
        let mut errors = Vec::new();
        for _ in 0..tries {
            let endpoint = &self.endpoints[self.current];
            match http::send(endpoint, &request, self.timeout) {
                Ok((200, bytes)) => {
                    return match serde_json::from_slice(&bytes) {
                        Ok(v) => Answer::Ok(v),
                        Err(e) => Answer::Failed(Failure::Unavailable(format!(
                            "etcd {endpoint}{path}: unreadable answer: {e}"
                        ))),
                    };
                }
                Ok((status, bytes)) => {
                    let message = serde_json::from_slice::<Value>(&bytes)
                        .ok()
                        .and_then(|v| {
                            v.get("message")
                                .or(v.get("error"))
                                .and_then(Value::as_str)
                                .map(str::to_string)
                        })
                        .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
                    let m = format!("etcd {endpoint}{path}: HTTP {status}: {message}");
                    // A token etcd does not know (any more), or none where one is needed.
                    if message.contains("invalid auth token")
                        || message.contains("user name is empty")
                        || message.contains("token is not provided")
                    {
                        return Answer::BadToken(m);
                    }
                    if message.contains("permission denied") {
                        let user = self.auth.as_ref().map_or("(none)", |a| a.user.as_str());
                        return Answer::Failed(Failure::Unavailable(format!(
                            "{m}: etcd user {user:?} needs a role with readwrite permission on the key prefix (etcdctl role grant-permission --prefix <role> readwrite <prefix>)"
                        )));
                    }
                    return Answer::Failed(Failure::Unavailable(m));
                }
                Err(e) => {
                    log::warn(&format!("etcd {endpoint}: {e}"));
                    errors.push(e.to_string());
                    self.current = (self.current + 1) % self.endpoints.len();
                }
            }
        }
        let unknown = if idempotent {
            ""
        } else {
            " (the write may or may not have been applied)"
        };
        Answer::Failed(Failure::Unavailable(format!(
            "etcd unreachable{unknown}: {}",
            errors.join("; ")
        )))
    }

    pub fn range(&mut self, key: &str) -> Result<Option<Kv>> {
        let v = self.call("/v3/kv/range", json!({ "key": B64.encode(key) }), true)?;
        Ok(kvs(&v)?.into_iter().next().map(|(_, kv)| kv))
    }

    /// Every key starting with `prefix`, sorted.
    pub fn keys(&mut self, prefix: &str) -> Result<Vec<String>> {
        let v = self.call(
            "/v3/kv/range",
            json!({
                "key": B64.encode(prefix),
                "range_end": B64.encode(prefix_end(prefix)),
                "keys_only": true,
            }),
            true,
        )?;
        Ok(kvs(&v)?.into_iter().map(|(k, _)| k).collect())
    }

    /// `Ok(revision)` when the compares held and `op` was applied;
    /// `Err(current)` with the `read_back` keys as they are when one did not.
    pub fn txn(
        &mut self,
        compare: &[Compare<'_>],
        op: Op<'_>,
        read_back: &[&str],
    ) -> Result<std::result::Result<u64, HashMap<String, Kv>>> {
        let compare: Vec<Value> = compare
            .iter()
            .map(|Compare::ModRevision(key, rev)| {
                json!({ "key": B64.encode(key), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string() })
            })
            .collect();
        let success = match op {
            Op::Put(key, value) => {
                json!({ "request_put": { "key": B64.encode(key), "value": B64.encode(value) } })
            }
            Op::Delete(key) => json!({ "request_delete_range": { "key": B64.encode(key) } }),
        };
        let failure: Vec<Value> = read_back
            .iter()
            .map(|key| json!({ "request_range": { "key": B64.encode(key) } }))
            .collect();
        let v = self.call(
            "/v3/kv/txn",
            json!({ "compare": compare, "success": [success], "failure": failure }),
            false,
        )?;
        if v.get("succeeded").and_then(Value::as_bool).unwrap_or(false) {
            return Ok(Ok(revision(&v["header"])?));
        }
        let mut current = HashMap::new();
        for response in v["responses"].as_array().into_iter().flatten() {
            current.extend(kvs(&response["response_range"])?);
        }
        Ok(Err(current))
    }

    /// Waits up to `wait` for an event on `key` after revision `seen` (none:
    /// from now). Any trouble just ends the wait early: the caller re-reads.
    pub fn watch(&mut self, key: &str, seen: Option<u64>, wait: Duration) -> Result<()> {
        let deadline = Instant::now() + wait;
        let mut request = json!({ "key": B64.encode(key) });
        if let Some(rev) = seen {
            request["start_revision"] = json!((rev + 1).to_string());
        }
        let body = json!({ "create_request": request })
            .to_string()
            .into_bytes();
        let endpoint = &self.endpoints[self.current];
        let mut request = Request::post("/v3/watch", body).json();
        if let Some(token) = self.auth.as_ref().and_then(|a| a.token.as_deref()) {
            request = request.header("authorization", token.as_bytes().to_vec());
        }
        let mut stream = match Stream::request(endpoint, &request, self.timeout.min(wait)) {
            Ok(s) if s.status == 200 => s,
            Ok(_) | Err(_) => {
                // Do not spin against a failing endpoint: sleep out a little.
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                return Ok(());
            }
        };
        let mut pending = Vec::new();
        while let Ok(Some(bytes)) = stream.read(deadline) {
            pending.extend_from_slice(&bytes);
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let Ok(message) = serde_json::from_slice::<Value>(&line) else {
                    continue;
                };
                let result = &message["result"];
                let has_events = result["events"].as_array().is_some_and(|e| !e.is_empty());
                let canceled = result["canceled"].as_bool().unwrap_or(false);
                if has_events || canceled || message.get("error").is_some() {
                    return Ok(());
                }
            }
        }
        Ok(())
    }
}

fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

fn revision(header: &Value) -> Result<u64> {
    match number(&header["revision"]) {
        0 => Err(Failure::Unavailable(format!(
            "etcd answered without a revision: {header}"
        ))),
        r => Ok(r),
    }
}

fn decode(v: &Value, what: &str) -> Result<Vec<u8>> {
    match v.as_str() {
        None => Ok(Vec::new()),
        Some(s) => B64.decode(s).map_err(|e| {
            Failure::Unavailable(format!("etcd returned a {what} that is not base64: {e}"))
        }),
    }
}

/// The `kvs` of a range response, by key.
fn kvs(v: &Value) -> Result<Vec<(String, Kv)>> {
    let mut out = Vec::new();
    for kv in v["kvs"].as_array().into_iter().flatten() {
        let key = String::from_utf8(decode(&kv["key"], "key")?)
            .map_err(|_| Failure::Unavailable("etcd returned a key that is not UTF-8".into()))?;
        out.push((
            key,
            Kv {
                value: decode(&kv["value"], "value")?,
                mod_revision: number(&kv["mod_revision"]),
            },
        ));
    }
    Ok(out)
}

/// The smallest key after every key starting with `prefix` (etcd's range end).
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}
