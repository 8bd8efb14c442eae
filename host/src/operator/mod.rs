//! What the person on call runs against a sidecar, in the habits of
//! `patronictl` and `etcdctl`: `status` (who leads, at which term, this
//! sidecar's own state, every member the backend records), `leader --watch`
//! (a line per change of leader) and `handover [--to ID]` (the leader steps
//! down and a standby, or the named one, takes over). Human text
//! by default, `--output json` for scripts, and exit codes a script can
//! test: 0 done, 1 an error (the message says what), 3 no leader.

mod api;

use std::time::{Duration, Instant};

use serde_json::Value;

pub use api::Api;

/// Exit code: nobody leads (status), or nobody took over in time (handover).
pub const NO_LEADER: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The leader as `GET /leader` reports it: (id, address, term), none if nobody leads.
fn leader_of(v: &Value) -> Option<(&str, &str, u64)> {
    Some((
        v["leader"]["id"].as_str()?,
        v["leader"]["address"].as_str().unwrap_or(""),
        v["term"].as_u64()?,
    ))
}

fn ago(since: &str) -> String {
    humantime::parse_rfc3339(since)
        .ok()
        .and_then(|t| t.elapsed().ok())
        .map(|d| {
            format!(
                " ({} ago)",
                humantime::format_duration(Duration::from_secs(d.as_secs()))
            )
        })
        .unwrap_or_default()
}

/// `ha-sidecar status`.
pub async fn status(api: &Api, output: Output) -> anyhow::Result<u8> {
    let leader = api.call("GET", "/leader", Duration::from_secs(5)).await?;
    anyhow::ensure!(
        leader.status == 200,
        "GET /leader: {} {}",
        leader.status,
        leader.body
    );
    let ready = api.call("GET", "/readyz", Duration::from_secs(5)).await?;
    let members = api.call("GET", "/members", Duration::from_secs(5)).await?;
    let v = &leader.body;
    let code = if leader_of(v).is_some() { 0 } else { NO_LEADER };
    match output {
        Output::Json => {
            let out = serde_json::json!({
                "sidecar": api.address,
                "leader": v,
                "ready": ready.status == 200,
                "not_ready": (ready.status != 200).then(|| ready.body["message"].clone()),
                "members": members.body,
            });
            println!("{out}");
        }
        Output::Table => {
            let role = if v["leading"] == true {
                "leader"
            } else {
                "standby"
            };
            let readiness = if ready.status == 200 {
                "ready".to_string()
            } else {
                format!(
                    "not ready: {}",
                    ready.body["message"].as_str().unwrap_or("?")
                )
            };
            println!(
                "member    {} (this sidecar, at {}: {role}, {readiness})",
                v["member"].as_str().unwrap_or("?"),
                api.address
            );
            match leader_of(v) {
                Some((id, address, term)) => {
                    println!("leader    {id} at {address}");
                    let since = v["since"].as_str().unwrap_or("");
                    println!("term      {term}, since {since}{}", ago(since));
                    if let Some(s) = v["session"].as_str() {
                        println!("session   {s}");
                    }
                    if let Some(ms) = v["valid_for_ms"].as_u64() {
                        println!("valid     {ms} ms more without a renewal (this sidecar leads)");
                    }
                }
                None => println!("leader    none: nobody leads now"),
            }
            print_members(&members.status, &members.body);
        }
    }
    Ok(code)
}

/// The members table of `status`.
fn print_members(status: &u16, body: &Value) {
    if *status != 200 {
        println!(
            "members   unknown: GET /members answered {status} {}",
            body["message"].as_str().unwrap_or("")
        );
        return;
    }
    if body["recorded"] != true {
        println!(
            "members   only the leader is known: {}",
            body["note"].as_str().unwrap_or("")
        );
        return;
    }
    let ago_ms = |ms: Option<u64>| {
        ms.map_or("-".to_string(), |ms| {
            format!(
                "{} ago",
                humantime::format_duration(Duration::from_secs(ms / 1000))
            )
        })
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let rows: Vec<[String; 5]> = body["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let role = m["role"].as_str().unwrap_or("?");
            [
                m["id"].as_str().unwrap_or("?").to_string(),
                if m["live"] == false {
                    format!("{role} (gone?)")
                } else {
                    role.to_string()
                },
                m["address"].as_str().unwrap_or("").to_string(),
                ago_ms(m["since_ms"].as_u64().map(|s| now.saturating_sub(s))),
                match m["seen_ago_ms"].as_u64() {
                    Some(ms) => ago_ms(Some(ms)),
                    None => "live session".to_string(),
                },
            ]
        })
        .collect();
    let header = ["MEMBER", "ROLE", "ADDRESS", "JOINED", "LAST SEEN"];
    let widths: Vec<usize> = (0..5)
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    println!("members");
    for row in std::iter::once(header.map(String::from)).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("  {}", cells.join("  ").trim_end());
    }
}

/// `ha-sidecar leader --watch`: prints the leader, then a line on every
/// change, until `count` changes were printed (none: forever). A sidecar
/// that stops answering is reported once, and watched again when it is back.
pub async fn watch(api: &Api, output: Output, count: Option<u64>) -> anyhow::Result<u8> {
    let mut known: Option<Option<u64>> = None;
    let mut printed = 0u64;
    let mut unreachable = false;
    loop {
        let path = match known {
            None => "/leader".to_string(),
            Some(term) => format!(
                "/leader?wait=30s&known={}",
                term.map_or("none".to_string(), |t| t.to_string())
            ),
        };
        let answer = match api.call("GET", &path, Duration::from_secs(35)).await {
            Ok(a) if a.status == 200 => a,
            Ok(a) => anyhow::bail!("GET {path}: {} {}", a.status, a.body),
            Err(e) => {
                if !unreachable {
                    eprintln!("{e:#}; retrying every second");
                    unreachable = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        unreachable = false;
        let v = &answer.body;
        let term = v["term"].as_u64();
        if known == Some(term) {
            continue;
        }
        known = Some(term);
        match output {
            Output::Json => println!("{v}"),
            Output::Table => {
                let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
                match leader_of(v) {
                    Some((id, address, term)) => {
                        println!("{now}  leader {id} at {address}, term {term}")
                    }
                    None => println!("{now}  no leader"),
                }
            }
        }
        printed += 1;
        if count.is_some_and(|c| printed >= c) {
            return Ok(0);
        }
    }
}

/// `ha-sidecar handover [--to ID]`: the sidecar at `api` must lead; it
/// resigns (staying out of the next election for its holdoff), or with `to`
/// hands its term to that member only, and this waits until another member
/// leads, at most `timeout`.
pub async fn handover(
    api: &Api,
    output: Output,
    to: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<u8> {
    let before = api.call("GET", "/leader", Duration::from_secs(5)).await?;
    let v = &before.body;
    let Some((old, _, old_term)) = leader_of(v) else {
        anyhow::bail!("nobody leads now, so there is nothing to hand over");
    };
    if v["leading"] != true {
        anyhow::bail!(
            "the sidecar at {} ({}) does not lead; {old} does (term {old_term}): run the handover against its sidecar",
            api.address,
            v["member"].as_str().unwrap_or("?")
        );
    }
    let old = old.to_string();
    let started = Instant::now();
    let path = match to {
        Some(id) => format!("/leader/handover?to={}", percent_encode(id)),
        None => "/leader/resign".to_string(),
    };
    let resign = api.call("POST", &path, Duration::from_secs(10)).await?;
    if resign.status != 200 {
        anyhow::bail!(
            "POST {path}: {} {}",
            resign.status,
            resign.body["message"].as_str().unwrap_or("")
        );
    }
    let mut known = old_term.to_string();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            eprintln!("{old} resigned term {old_term}, but no other member led within {timeout:?}");
            return Ok(NO_LEADER);
        }
        let wait = left.min(Duration::from_secs(10));
        let path = format!("/leader?wait={}ms&known={known}", wait.as_millis());
        let answer = api
            .call("GET", &path, wait + Duration::from_secs(5))
            .await?;
        let v = &answer.body;
        known = v["term"]
            .as_u64()
            .map_or("none".to_string(), |t| t.to_string());
        if let Some((new, _, new_term)) = leader_of(v)
            && new_term != old_term
        {
            let took = started.elapsed();
            if let Some(to) = to
                && new != to
            {
                anyhow::bail!(
                    "{old} handed term {old_term} to {to}, but {new} leads (term {new_term}): {to} did not take over within a lease"
                );
            }
            match output {
                Output::Json => println!(
                    "{}",
                    serde_json::json!({"from": old, "from_term": old_term, "to": new, "to_term": new_term, "took_ms": took.as_millis() as u64})
                ),
                Output::Table => println!(
                    "{old} (term {old_term}) handed over to {new} (term {new_term}) in {} ms",
                    took.as_millis()
                ),
            }
            return Ok(0);
        }
    }
}

/// A member id as a query value (ids are A-Z a-z 0-9 . _ - :, so only `:`
/// needs it, but a mistyped id should reach the sidecar as typed).
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
