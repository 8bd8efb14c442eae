//! Connection floods: a local client that opens idle and half-sent
//! connections beyond the sidecar's file-descriptor limit must not depose the
//! leader. The leader runs under a low RLIMIT_NOFILE (set in the child before
//! exec); the test process floods it from a raised limit of its own.
//!
//! Without the connection cap, the flood takes every descriptor, the file
//! backend's renewals fail with "Too many open files", the leader steps down
//! after the renew deadline and the standby takes over.

mod support;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// The leader's descriptor limit (soft = hard, so the sidecar cannot raise it).
const NOFILE: u64 = 512;
/// What the sidecar keeps beside the connections (`descriptors::RESERVE`).
const RESERVE: u64 = 256;
/// Connections the flood opens: well beyond the leader's limit.
const FLOOD: usize = 1200;

/// Raises this process's soft descriptor limit to its hard limit.
fn raise_own_nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    lim.rlim_cur
}

/// Sets the child's descriptor limit (soft and hard) before it execs.
fn limit_nofile(cmd: &mut Command, n: u64) {
    // SAFETY: setrlimit is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// One keep-alive connection that sends a request at a time and reads the
/// whole response (by its Content-Length).
struct KeepAlive {
    reader: BufReader<TcpStream>,
}

impl KeepAlive {
    fn open(port: u16) -> Self {
        let s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Self {
            reader: BufReader::new(s),
        }
    }

    /// (status, body) of `GET path`; an error if the connection broke.
    fn get(&mut self, path: &str) -> std::io::Result<(u16, String)> {
        let req = format!("GET {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n");
        self.reader.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let status: u16 = line
            .split(' ')
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
        let mut length = 0usize;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// A sample of `/metrics` by name (labels included, as printed).
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

const BECAME_LEADER: &str = "ha_sidecar_leadership_transitions_total{to=\"leader\"}";
const TERM: &str = "ha_sidecar_term";
const OPEN: &str = "ha_sidecar_http_connections";
const CAP: &str = "ha_sidecar_http_connections_max";
const OVER_CAP: &str = "ha_sidecar_http_connections_closed_total{reason=\"over_cap\"}";
const IDLE: &str = "ha_sidecar_http_connections_closed_total{reason=\"idle_near_cap\"}";

/// Whether the server has closed `c` (EOF or reset, after any 503 it sent),
/// and whether it said 503 first.
fn closed_by_server(c: &mut TcpStream) -> (bool, bool) {
    c.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    let closed = loop {
        match c.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    c.set_nonblocking(false).unwrap();
    (closed, got.starts_with(b"HTTP/1.1 503"))
}

#[test]
fn a_connection_flood_beyond_the_descriptor_limit_does_not_depose_the_leader() {
    let own = raise_own_nofile();
    assert!(
        own >= FLOOD as u64 + 200,
        "the test needs a descriptor limit of at least {} for its flood; this process may open {own} (raise the hard limit: ulimit -Hn)",
        FLOOD + 200
    );
    let cluster = Cluster::new();
    let port = free_port();
    let cfg = cluster.write_config("s1", &cluster.file_config("s1", port, ""));
    let log = cluster.path().join("s1.log");
    let mut cmd = Sidecar::command(&cfg, &log, &[]);
    limit_nofile(&mut cmd, NOFILE);
    let leader = Sidecar::start_command("s1", port, &log, cmd);
    wait_for("s1 to lead", Duration::from_secs(20), || {
        leader.leads().then_some(())
    });
    // A standby with normal limits: it takes over if the leader's renewals fail.
    let standby = cluster.start("s2");
    let term = leader.term();
    wait_for("s2 to see s1 lead", Duration::from_secs(10), || {
        (standby.leader()["term"].as_u64() == Some(term)).then_some(())
    });

    // Opened before the flood: the test's view of the leader throughout.
    let mut probe = KeepAlive::open(port);
    let (status, before) = probe.get("/metrics").expect("metrics before the flood");
    assert_eq!(status, 200);
    let cap = metric(&before, CAP);
    assert_eq!(cap, NOFILE - RESERVE, "the default cap leaves the reserve");
    let became = metric(&before, BECAME_LEADER);
    assert_eq!(metric(&before, TERM), term);

    // A long poll in flight through the flood: busy, so never shed as idle.
    let long_poll = std::thread::spawn(move || {
        let asked = Instant::now();
        let r = request_within(
            port,
            "GET",
            "/leader?wait=7s",
            &[],
            b"",
            Duration::from_secs(30),
        );
        (r.map(|r| r.status), asked.elapsed())
    });

    // The flood, from another thread while the probe asks the leader: half
    // the connections send nothing, half a header that never ends.
    let started = Instant::now();
    let mut flooding = Some(std::thread::spawn(move || {
        let mut flood = Vec::with_capacity(FLOOD);
        let mut refused = 0;
        for i in 0..FLOOD {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(mut c) => {
                    if i % 2 == 1 {
                        let _ = c.write_all(b"GET /leader HTTP/1.1\r\nhost: x\r\nx-slow: ");
                    }
                    flood.push(c);
                }
                // The accept backlog full for a moment: the kernel refused it.
                Err(_) => refused += 1,
            }
        }
        (flood, refused, started.elapsed())
    }));

    // Hold the flood for three renew deadlines, asking the leader all along.
    let mut polls = 0;
    let mut flooded = None;
    while started.elapsed() < Duration::from_secs(5) || flooded.is_none() {
        let (status, body) = probe
            .get("/leader/self")
            .expect("the probe opened before the flood is served");
        assert_eq!(status, 200, "the leader stopped leading: {body}");
        polls += 1;
        if let Some(done) = flooding.take_if(|t| t.is_finished()) {
            flooded = Some(done.join().unwrap());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (mut flood, refused, opened) = flooded.unwrap();
    let (closed, said_503) = flood
        .iter_mut()
        .map(closed_by_server)
        .fold((0, 0), |(c, s), (closed, s503)| {
            (c + closed as usize, s + s503 as usize)
        });
    let (_, during) = probe.get("/metrics").unwrap();
    println!(
        "flood: {} connections opened in {opened:?} ({refused} refused by the kernel), {closed} closed by the sidecar ({said_503} with a 503), {polls} probes; metrics: open {}, over cap {}, idle near cap {}",
        flood.len(),
        metric(&during, OPEN),
        metric(&during, OVER_CAP),
        metric(&during, IDLE)
    );
    assert!(
        metric(&during, OPEN) <= cap,
        "more connections open than the cap"
    );
    let beyond = flood.len().saturating_sub(cap as usize);
    assert!(
        closed >= beyond,
        "only {closed} of the {} flood connections were closed; the cap is {cap}",
        flood.len()
    );
    assert!(
        metric(&during, OVER_CAP) + metric(&during, IDLE) >= beyond as u64,
        "{during}"
    );
    assert!(metric(&during, OVER_CAP) > 0, "{during}");
    assert!(said_503 > 0, "no over-limit connection read the 503");
    // Near the cap, idle connections were shed: a new client gets in while the flood lasts.
    assert!(metric(&during, IDLE) > 0, "{during}");
    let r = request_within(port, "GET", "/leader", &[], b"", Duration::from_secs(10))
        .expect("a new client is served while the flood lasts");
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["term"], term);

    drop(flood);
    let (answer, waited) = long_poll.join().unwrap();
    assert_eq!(
        answer.ok(),
        Some(200),
        "the long poll was cut off after {waited:?}"
    );
    assert!(waited >= Duration::from_secs(6), "{waited:?}");

    // Served normally after the flood: reads, a fenced write, and no lost term.
    let t = term.to_string();
    let w = leader.put("after/flood", b"ok", &[("x-ha-term", &t)]);
    assert_eq!(w.status, 200, "{}", w.text());
    assert_eq!(leader.get("/state/after/flood").unwrap().body, b"ok");
    let (_, after) = probe.get("/metrics").unwrap();
    assert_eq!(
        metric(&after, BECAME_LEADER),
        became,
        "the leader lost and regained leadership"
    );
    assert_eq!(metric(&after, TERM), term, "the term changed");
    assert_eq!(standby.leader()["term"].as_u64(), Some(term));
    assert!(!standby.leads());
    wait_for(
        "the flood's connections to be gone",
        Duration::from_secs(10),
        || {
            let (_, m) = probe.get("/metrics").ok()?;
            (metric(&m, OPEN) <= 2).then_some(())
        },
    );
    let text = leader.log_text();
    assert!(
        !text.contains("Too many open files") && !text.contains("os error 24"),
        "the leader ran out of descriptors:\n{text}"
    );
}

#[test]
fn a_cap_that_does_not_leave_the_reserve_is_refused_at_start() {
    let cluster = Cluster::new();
    let port = free_port();
    let yaml = cluster
        .file_config("s1", port, "")
        .replace("http: {", "http: {max-connections: 400, ");
    let cfg = cluster.write_config("s1", &yaml);
    let log = cluster.path().join("s1.log");
    let mut cmd = Sidecar::command(&cfg, &log, &[]);
    limit_nofile(&mut cmd, NOFILE);
    let out = cmd
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("run the sidecar");
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for needle in [
        "http.max-connections = 400",
        "limit of 512",
        "at most 256 connections",
    ] {
        assert!(text.contains(needle), "no {needle:?} in:\n{text}");
    }
    assert!(
        !cluster.path().join("data").exists(),
        "the refused start created the backend directory"
    );
}
