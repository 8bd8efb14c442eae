//! The backend conformance suite: what every plugin must do, checked against
//! the plugin itself (in-process instances standing in for sidecars), so the
//! same checks run on the file backend today and on every later backend.
//!
//! Checks must not see each other's leaders or keys. By default each runs in
//! a fresh namespace (the plugin setting named by `Subject::namespace_setting`,
//! `cluster-id` for our backends). Where the backend's permissions name the
//! one namespace a sidecar may use (Kubernetes: the Role names the ConfigMap
//! `<cluster-id>-cluster-config-map` and nothing else), the checks instead
//! take turns in the configured namespace, which must be unused (no leader,
//! no keys: the suite refuses to run on a live cluster's data), and each
//! cleans up after itself: its keys are deleted and its terms released, and
//! the namespace is checked to be as empty as it was. The Role has no
//! `delete` (the sidecar never deletes its ConfigMap), so what stays is the
//! cluster's own ConfigMap, released and without keys, as a sidecar that
//! resigned leaves it.

use std::collections::BTreeSet;
use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::runtime::{
    CallError, Failure, Instance, LoadedPlugin, Member as Member_, Setup, Term, Timing,
};

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!($($msg)+));
        }
    };
}

/// Gives each simulated sidecar its plugin. Lease backends can share one
/// loaded plugin; a backend on a capability holding a session (ZooKeeper)
/// needs one session, and so one loaded plugin, per member, as real
/// sidecars have.
pub type PluginSource = Box<
    dyn Fn() -> Pin<Box<dyn Future<Output = Result<Arc<LoadedPlugin>, String>> + Send>>
        + Send
        + Sync,
>;

impl Subject {
    /// What a sidecar config implies: its capabilities, plugin settings and
    /// timing, with checks namespaced by the `cluster-id` setting.
    pub fn for_config(config: &crate::config::Config) -> Self {
        let configured = config
            .plugin
            .settings
            .iter()
            .find(|(k, _)| k == "cluster-id")
            .map_or("default".to_string(), |(_, v)| v.clone());
        Self {
            plugins: source_for(config),
            settings: config.plugin.settings.clone(),
            namespace_setting: "cluster-id".into(),
            namespaces: if config
                .grants
                .iter()
                .any(|g| g.capability.confines_namespace())
            {
                Namespaces::Configured(configured)
            } else {
                Namespaces::PerCheck
            },
            lease: config.timing.lease,
            renew_deadline: config.timing.renew_deadline,
            retry: config.timing.retry_period,
        }
    }
}

/// The plugin source a sidecar config implies, wired as `ha-sidecar run`
/// wires it (`wiring::open`): when the capabilities keep something open (a
/// session), every member gets its own, and its own loaded plugin, as real
/// sidecars have; otherwise all share one loaded plugin.
pub fn source_for(config: &crate::config::Config) -> PluginSource {
    let config = Arc::new(config.clone());
    let shared_plugin: Arc<std::sync::OnceLock<Arc<LoadedPlugin>>> = Arc::default();
    Box::new(move || {
        let (config, shared_plugin) = (config.clone(), shared_plugin.clone());
        Box::pin(async move {
            if let Some(p) = shared_plugin.get() {
                return Ok(p.clone());
            }
            let metrics = Arc::new(crate::metrics::Metrics::default());
            let p = crate::wiring::open(&config, metrics)
                .await
                .map_err(|e| format!("{e:#}"))?;
            if !p.connections().is_empty() {
                return Ok(p);
            }
            Ok(shared_plugin.get_or_init(|| p).clone())
        })
    })
}

/// Where the checks run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Namespaces {
    /// Each in a namespace of its own, made up for the run.
    PerCheck,
    /// One after another in this one (it must be unused).
    Configured(String),
}

pub struct Subject {
    pub plugins: PluginSource,
    /// Settings every instance gets, before the namespace is added.
    pub settings: Vec<(String, String)>,
    pub namespace_setting: String,
    pub namespaces: Namespaces,
    pub lease: Duration,
    pub renew_deadline: Duration,
    pub retry: Duration,
}

#[derive(Debug)]
pub struct Outcome {
    pub name: &'static str,
    pub what: &'static str,
    pub result: Result<(), String>,
    pub took: Duration,
}

type CheckFn =
    for<'a> fn(
        &'a Check<'a>,
    ) -> std::pin::Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One check's run: the subject, its namespace, and what its members did
/// there (to clean up after it).
pub struct Check<'a> {
    s: &'a Subject,
    ns: String,
    ledger: Arc<Mutex<Ledger>>,
}

#[derive(Default)]
struct Ledger {
    /// Every term won, with the setup of the member that won it.
    terms: Vec<(Setup, Term)>,
    /// Every key written.
    keys: BTreeSet<String>,
}

/// Every check: name, what it establishes, the check.
pub fn checks() -> Vec<(&'static str, &'static str, CheckFn)> {
    vec![
        (
            "single-leader",
            "of three concurrent candidates exactly one wins; the others keep losing while it renews",
            |c| Box::pin(single_leader(c)),
        ),
        (
            "keep-and-resign",
            "the holder renews; after resigning its term is gone",
            |c| Box::pin(keep_and_resign(c)),
        ),
        (
            "token-grows",
            "every new leader gets a greater fencing token",
            |c| Box::pin(token_grows(c)),
        ),
        (
            "discovery",
            "an observer sees the leader and is woken when it changes",
            |c| Box::pin(discovery(c)),
        ),
        (
            "compare-and-set",
            "create-only, matching and stale versions; versions grow",
            |c| Box::pin(compare_and_set(c)),
        ),
        (
            "fencing",
            "a write carrying a superseded term is rejected and changes nothing",
            |c| Box::pin(fencing(c)),
        ),
        (
            "values",
            "binary values from empty to 64 KiB, and every key character, round trip",
            |c| Box::pin(values(c)),
        ),
        ("list-by-prefix", "keys are listed by prefix, sorted", |c| {
            Box::pin(list_by_prefix(c))
        }),
        (
            "bounded-calls",
            "calls that wait return by themselves within their bound",
            |c| Box::pin(bounded_calls(c)),
        ),
        (
            "expiry",
            "a renewing leader is never replaced; a silent one is, after the lease",
            |c| Box::pin(expiry(c)),
        ),
        (
            "handover",
            "members are listed; a handover lets only the named standby in at once, and one to a stranger changes nothing (roster export)",
            |c| Box::pin(handover(c)),
        ),
    ]
}

/// Runs every check (or those whose name contains `filter`), one after another.
pub async fn run(subject: &Subject, filter: Option<&str>) -> Vec<Outcome> {
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut out = Vec::new();
    if let Namespaces::Configured(ns) = &subject.namespaces
        && let Err(e) = unused(subject, ns).await
    {
        out.push(Outcome {
            name: "namespace",
            what: "the configured namespace is unused",
            result: Err(e),
            took: Duration::ZERO,
        });
        return out;
    }
    for (name, what, check) in checks() {
        if filter.is_some_and(|f| !name.contains(f)) {
            continue;
        }
        let ns = match &subject.namespaces {
            Namespaces::PerCheck => format!("conformance-{}-{name}", &run_id[..8]),
            Namespaces::Configured(ns) => ns.clone(),
        };
        let c = Check {
            s: subject,
            ns,
            ledger: Arc::default(),
        };
        let started = Instant::now();
        let result = check(&c).await;
        let cleaned = clean_up(&c).await;
        out.push(Outcome {
            name,
            what,
            result: result.and(cleaned),
            took: started.elapsed(),
        });
    }
    out
}

/// Whether `ns` holds no leader and no keys.
async fn unused(s: &Subject, ns: &str) -> Result<(), String> {
    let mut probe = instance(s, ns, "conformance-probe", None).await?;
    let leader = call("leader", probe.leader(None, Duration::ZERO).await)?;
    let keys = call("list", probe.list("").await)?;
    ensure!(
        leader.is_none() && keys.is_empty(),
        "{} {ns:?} is in use ({}, {} keys): the checks write, take over and delete there; run them before the cluster uses it, or with a config that names an unused {} (and permissions for it)",
        s.namespace_setting,
        leader.map_or("no leader".into(), |t| format!(
            "{} leads term {}",
            t.holder.id, t.token
        )),
        keys.len(),
        s.namespace_setting
    );
    Ok(())
}

/// In the configured namespace: releases the check's terms (each through an
/// instance with the setup of the member that won it, as if that sidecar
/// came back), deletes its keys, and checks that nothing of it is left.
async fn clean_up(c: &Check<'_>) -> Result<(), String> {
    if c.s.namespaces == Namespaces::PerCheck {
        // Nobody comes after it there: the namespace is thrown away.
        return Ok(());
    }
    let (terms, keys) = {
        let mut l = c.ledger.lock().unwrap_or_else(|e| e.into_inner());
        (std::mem::take(&mut l.terms), std::mem::take(&mut l.keys))
    };
    for (setup, term) in terms.iter().rev() {
        let mut holder = instance(c.s, &c.ns, &term.holder.id, Some(setup)).await?;
        // A term that was superseded is no longer the holder's to release.
        match holder.resign(term).await {
            Ok(()) | Err(CallError::Failure(Failure::NotLeader)) => {}
            Err(e) => return Err(format!("clean up: resign term {}: {e}", term.token)),
        }
    }
    let mut janitor = instance(c.s, &c.ns, "conformance-cleanup", None).await?;
    for key in &keys {
        call(
            &format!("clean up: delete {key}"),
            janitor.delete(key, None, None).await,
        )?;
    }
    let left = call("clean up: list", janitor.list("").await)?;
    ensure!(left.is_empty(), "left keys behind: {left:?}");
    let leader = call(
        "clean up: leader",
        janitor.leader(None, Duration::ZERO).await,
    )?;
    ensure!(
        leader.is_none(),
        "left a leader behind: {:?}",
        leader.map(|t| (t.holder.id, t.token))
    );
    Ok(())
}

/// A pass/fail table for people.
pub fn render(outcomes: &[Outcome]) -> String {
    let mut s = String::from("check              result  time     notes\n");
    for o in outcomes {
        let (result, note) = match &o.result {
            Ok(()) => ("pass", o.what.to_string()),
            Err(e) => ("FAIL", e.clone()),
        };
        s.push_str(&format!(
            "{:<18} {:<7} {:>6.2}s  {}\n",
            o.name,
            result,
            o.took.as_secs_f64(),
            note
        ));
    }
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    s.push_str(&format!(
        "{} checks, {} passed, {} failed\n",
        outcomes.len(),
        outcomes.len() - failed,
        failed
    ));
    s
}

/// A simulated sidecar: an instance with its own member id and session,
/// whose terms and writes are noted for the cleanup.
pub struct Member {
    /// The plugin it was made from (and what its capabilities keep open).
    plugin: Arc<LoadedPlugin>,
    instance: Instance,
    setup: Setup,
    ledger: Arc<Mutex<Ledger>>,
}

impl Deref for Member {
    type Target = Instance;
    fn deref(&self) -> &Instance {
        &self.instance
    }
}

impl DerefMut for Member {
    fn deref_mut(&mut self) -> &mut Instance {
        &mut self.instance
    }
}

impl Member {
    async fn campaign(&mut self, wait: Duration) -> Result<Option<Term>, CallError> {
        let r = self.instance.campaign(wait).await;
        if let Ok(Some(t)) = &r {
            self.ledger
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .terms
                .push((self.setup.clone(), t.clone()));
        }
        r
    }

    async fn put(
        &mut self,
        key: &str,
        value: &[u8],
        expected: Option<u64>,
        fence: Option<u64>,
    ) -> Result<u64, CallError> {
        self.ledger
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys
            .insert(key.to_string());
        self.instance.put(key, value, expected, fence).await
    }
}

fn setup_for(s: &Subject, namespace: &str, id: &str) -> Setup {
    let ms = |d: Duration| d.as_millis() as u32;
    let mut settings = s.settings.clone();
    settings.retain(|(k, _)| *k != s.namespace_setting);
    settings.push((s.namespace_setting.clone(), namespace.to_string()));
    Setup {
        me: Member_ {
            id: id.into(),
            address: format!("http://{id}.invalid:1"),
        },
        session: uuid::Uuid::new_v4().simple().to_string(),
        timing: Timing {
            lease_ms: ms(s.lease),
            renew_deadline_ms: ms(s.renew_deadline),
            retry_ms: ms(s.retry),
        },
        settings,
    }
}

/// A bare instance in `namespace` (the given setup, or a fresh one for
/// `id`), with the plugin it was made from.
async fn instance_of(
    s: &Subject,
    namespace: &str,
    id: &str,
    setup: Option<&Setup>,
) -> Result<(Arc<LoadedPlugin>, Instance), String> {
    let fresh;
    let setup = match setup {
        Some(setup) => setup,
        None => {
            fresh = setup_for(s, namespace, id);
            &fresh
        }
    };
    let plugin = (s.plugins)().await?;
    let instance = plugin
        .instantiate("election", setup)
        .await
        .map_err(|e| format!("cannot instantiate member {id}: {e}"))?;
    Ok((plugin, instance))
}

async fn instance(
    s: &Subject,
    namespace: &str,
    id: &str,
    setup: Option<&Setup>,
) -> Result<Instance, String> {
    Ok(instance_of(s, namespace, id, setup).await?.1)
}

async fn member(c: &Check<'_>, id: &str) -> Result<Member, String> {
    let setup = setup_for(c.s, &c.ns, id);
    let (plugin, instance) = instance_of(c.s, &c.ns, id, Some(&setup)).await?;
    Ok(Member {
        plugin,
        instance,
        setup,
        ledger: c.ledger.clone(),
    })
}

fn call<T>(what: &str, r: Result<T, CallError>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Campaigns until a term is won (up to `within`).
async fn win(m: &mut Member, within: Duration) -> Result<Term, String> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(t) = call("campaign", m.campaign(Duration::from_millis(100)).await)? {
            return Ok(t);
        }
        ensure!(Instant::now() < deadline, "no term won within {within:?}");
    }
}

async fn single_leader(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let (mut a, mut b, mut c) = (
        member(ck, "a").await?,
        member(ck, "b").await?,
        member(ck, "c").await?,
    );
    let wait = Duration::from_millis(200);
    let (ra, rb, rc) = tokio::join!(a.campaign(wait), b.campaign(wait), c.campaign(wait));
    let terms = [
        call("campaign a", ra)?,
        call("campaign b", rb)?,
        call("campaign c", rc)?,
    ];
    let winners = terms.iter().filter(|t| t.is_some()).count();
    ensure!(
        winners == 1,
        "{winners} candidates won a term at once: {:?}",
        terms
            .iter()
            .map(|t| t.as_ref().map(|t| (&t.holder.id, t.token)))
            .collect::<Vec<_>>()
    );
    let idx = terms.iter().position(Option::is_some).unwrap_or(0);
    let term = terms[idx].clone().ok_or("no winner")?;
    let mut members = vec![a, b, c];
    let mut leader = members.swap_remove(idx);
    // For two leases, the loser keep campaigning while the leader renews.
    let until = Instant::now() + 2 * s.lease;
    while Instant::now() < until {
        call("keep", leader.keep(&term).await)?;
        for m in members.iter_mut() {
            let r = call("campaign while held", m.campaign(s.retry / 2).await)?;
            ensure!(
                r.is_none(),
                "a second leader was elected while the first renewed: {:?}",
                r.map(|t| (t.holder.id, t.token))
            );
        }
    }
    Ok(())
}

/// The optional roster export. A plugin without it passes (it is optional,
/// and the host falls back to showing the leader only); one that has it must
/// honour its rules.
async fn handover(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    if !a.has_roster() {
        return Ok(());
    }
    let (mut b, mut c) = (member(ck, "b").await?, member(ck, "c").await?);
    let t = win(&mut a, 4 * s.lease).await?;
    for (name, m) in [("b", &mut b), ("c", &mut c)] {
        let won = call("campaign", m.campaign(Duration::ZERO).await)?;
        ensure!(won.is_none(), "{name} won term {:?} while a leads", won);
    }
    let members = match a.members().await {
        Some(Ok(m)) => m,
        // The SDK's default: the backend records no candidates.
        Some(Err(CallError::Failure(Failure::Invalid(_)))) => return Ok(()),
        Some(Err(e)) => return Err(format!("members: {e}")),
        None => return Ok(()),
    };
    for id in ["a", "b", "c"] {
        ensure!(
            members.iter().any(|m| m.member.id == id),
            "members does not list {id}: {:?}",
            members.iter().map(|m| &m.member.id).collect::<Vec<_>>()
        );
    }
    let leaders: Vec<&str> = members
        .iter()
        .filter(|m| m.leads)
        .map(|m| m.member.id.as_str())
        .collect();
    ensure!(leaders == ["a"], "members says {leaders:?} lead, a does");
    match a.hand_over(&t, "nobody-of-this-cluster").await {
        Some(Err(CallError::Failure(Failure::Invalid(_)))) => {}
        other => {
            return Err(format!(
                "a handover to a member that is not a candidate should be invalid, got {other:?}"
            ));
        }
    }
    call("keep after a refused handover", a.keep(&t).await)?;
    match a.hand_over(&t, "c").await {
        Some(r) => call("hand-over", r)?,
        None => return Err("the roster vanished".into()),
    }
    let started = Instant::now();
    let lost = call("campaign b", b.campaign(s.retry).await)?;
    ensure!(
        lost.is_none(),
        "b took term {:?} handed over to c",
        lost.map(|t| t.token)
    );
    let tc = call("campaign c", c.campaign(s.lease).await)?;
    let Some(tc) = tc else {
        return Err(format!(
            "c, the named successor, did not take over within a lease ({:?})",
            s.lease
        ));
    };
    ensure!(
        tc.token > t.token && tc.holder.id == "c",
        "c took term {} (holder {:?}) after a's {}",
        tc.token,
        tc.holder.id,
        t.token
    );
    ensure!(
        started.elapsed() < s.lease + s.retry,
        "c took over only after {:?}, as if it waited out a lease",
        started.elapsed()
    );
    call("resign", c.resign(&tc).await)?;
    Ok(())
}

async fn keep_and_resign(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    call("keep", a.keep(&t).await)?;
    call("resign", a.resign(&t).await)?;
    match a.keep(&t).await {
        Err(CallError::Failure(Failure::NotLeader)) => Ok(()),
        other => Err(format!(
            "keep after resign should be not-leader, got {other:?}"
        )),
    }
}

async fn token_grows(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let mut b = member(ck, "b").await?;
    let t1 = win(&mut a, 4 * s.lease).await?;
    call("resign", a.resign(&t1).await)?;
    let t2 = win(&mut b, 4 * s.lease).await?;
    ensure!(
        t2.token > t1.token,
        "second leader's token {} is not greater than the first's {}",
        t2.token,
        t1.token
    );
    call("resign", b.resign(&t2).await)?;
    let t3 = win(&mut a, 4 * s.lease).await?;
    ensure!(
        t3.token > t2.token,
        "third leader's token {} is not greater than {}",
        t3.token,
        t2.token
    );
    ensure!(
        t3.holder.id == "a",
        "term names holder {:?}, expected a",
        t3.holder.id
    );
    Ok(())
}

async fn discovery(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let mut observer = member(ck, "observer").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    let seen = call("leader", observer.leader(None, s.lease).await)?;
    ensure!(
        seen.as_ref().map(|t| t.token) == Some(t.token),
        "observer sees {:?}, leader holds term {}",
        seen.map(|t| t.token),
        t.token
    );
    ensure!(
        seen.as_ref().map(|t| t.holder.id.as_str()) == Some("a"),
        "observer sees the wrong holder"
    );
    // A change while the observer waits wakes it before its wait ends.
    let wait = 10 * s.lease;
    let started = Instant::now();
    let (woken, resigned) = tokio::join!(observer.leader(Some(t.token), wait), async {
        tokio::time::sleep(s.retry).await;
        a.resign(&t).await
    });
    call("resign", resigned)?;
    let woken = call("leader (waiting)", woken)?;
    ensure!(
        woken.as_ref().map(|x| x.token) != Some(t.token),
        "observer still reports the resigned term"
    );
    ensure!(
        started.elapsed() < wait,
        "observer was not woken by the change (waited {:?})",
        started.elapsed()
    );
    Ok(())
}

async fn compare_and_set(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    let f = Some(t.token);
    let v1 = call("create", a.put("jobs/j1/graph", b"one", Some(0), f).await)?;
    ensure!(v1 > 0, "version 0 was issued");
    match a.put("jobs/j1/graph", b"two", Some(0), f).await {
        Err(CallError::Failure(Failure::Conflict(Some(cur)))) => ensure!(
            cur.version == v1 && cur.value == b"one",
            "conflict carries {:?}",
            cur.version
        ),
        other => {
            return Err(format!(
                "create-only over an existing key should conflict, got {other:?}"
            ));
        }
    }
    let v2 = call(
        "put at matching version",
        a.put("jobs/j1/graph", b"two", Some(v1), f).await,
    )?;
    ensure!(v2 > v1, "version did not grow: {v1} -> {v2}");
    match a.put("jobs/j1/graph", b"three", Some(v1), f).await {
        Err(CallError::Failure(Failure::Conflict(Some(cur)))) => ensure!(
            cur.version == v2,
            "conflict carries version {}",
            cur.version
        ),
        other => {
            return Err(format!(
                "put at a stale version should conflict, got {other:?}"
            ));
        }
    }
    match a.delete("jobs/j1/graph", Some(v1), f).await {
        Err(CallError::Failure(Failure::Conflict(_))) => {}
        other => {
            return Err(format!(
                "delete at a stale version should conflict, got {other:?}"
            ));
        }
    }
    let got = call("get", a.get("jobs/j1/graph").await)?;
    ensure!(
        got.as_ref().map(|v| (v.value.as_slice(), v.version)) == Some((b"two".as_slice(), v2)),
        "lost update: read {:?}",
        got.map(|v| v.version)
    );
    call("delete", a.delete("jobs/j1/graph", Some(v2), f).await)?;
    ensure!(
        call("get", a.get("jobs/j1/graph").await)?.is_none(),
        "deleted key still readable"
    );
    call("delete absent", a.delete("jobs/j1/graph", None, f).await)?;
    let v3 = call(
        "re-create",
        a.put("jobs/j1/graph", b"again", Some(0), f).await,
    )?;
    ensure!(
        v3 > v2,
        "a re-created key repeated an old version ({v3} <= {v2})"
    );
    match a.put("jobs/j1/graph", b"x", Some(v2), f).await {
        Err(CallError::Failure(Failure::Conflict(_))) => Ok(()),
        other => Err(format!(
            "an expected version from before the delete must not match, got {other:?}"
        )),
    }
}

async fn fencing(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let mut b = member(ck, "b").await?;
    let ta = win(&mut a, 4 * s.lease).await?;
    let v = call("put", a.put("counter", b"1", None, Some(ta.token)).await)?;
    call("resign", a.resign(&ta).await)?;
    let tb = win(&mut b, 4 * s.lease).await?;
    for (who, m) in [("the old leader", &mut a), ("the new leader", &mut b)] {
        match m.put("counter", b"stale", None, Some(ta.token)).await {
            Err(CallError::Failure(Failure::NotLeader)) => {}
            other => {
                return Err(format!(
                    "a put fenced by the old term through {who} should be not-leader, got {other:?}"
                ));
            }
        }
        match m.delete("counter", None, Some(ta.token)).await {
            Err(CallError::Failure(Failure::NotLeader)) => {}
            other => {
                return Err(format!(
                    "a delete fenced by the old term through {who} should be not-leader, got {other:?}"
                ));
            }
        }
    }
    let cur = call("get", b.get("counter").await)?;
    ensure!(
        cur.as_ref().map(|c| (c.value.as_slice(), c.version)) == Some((b"1".as_slice(), v)),
        "a fenced write changed the state: {:?}",
        cur.map(|c| c.version)
    );
    call(
        "put with the current term",
        b.put("counter", b"2", Some(v), Some(tb.token)).await,
    )?;
    Ok(())
}

async fn values(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    // The host keeps values up to storage.inline-limit (at most 512 KiB) in
    // the backend; 64 KiB covers the default with room to spare.
    for (i, len) in [0usize, 1, 255, 16 << 10, 64 << 10].into_iter().enumerate() {
        let value: Vec<u8> = (0..len).map(|j| (j * 31 + i) as u8).collect();
        let key = format!("v/{i}/AZaz09._:-");
        let v = call("put", a.put(&key, &value, None, Some(t.token)).await)?;
        let got = call("get", a.get(&key).await)?.ok_or_else(|| format!("{key} vanished"))?;
        ensure!(
            got.version == v,
            "read version {} after writing {v}",
            got.version
        );
        ensure!(
            got.value == value,
            "a {len}-byte value came back as {} bytes{}",
            got.value.len(),
            if got.value.len() == len {
                " with different content"
            } else {
                ""
            }
        );
    }
    ensure!(
        call("get", a.get("v/absent").await)?.is_none(),
        "an absent key reads as present"
    );
    Ok(())
}

async fn list_by_prefix(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    for k in [
        "jobs/b/checkpoints/2",
        "jobs/a/graph",
        "jobs/b/graph",
        "results/a",
    ] {
        call("put", a.put(k, b"x", None, Some(t.token)).await)?;
    }
    let jobs = call("list", a.list("jobs/").await)?;
    ensure!(
        jobs == ["jobs/a/graph", "jobs/b/checkpoints/2", "jobs/b/graph"],
        "list(jobs/) = {jobs:?}"
    );
    let b = call("list", a.list("jobs/b/").await)?;
    ensure!(
        b == ["jobs/b/checkpoints/2", "jobs/b/graph"],
        "list(jobs/b/) = {b:?}"
    );
    let all = call("list", a.list("").await)?;
    ensure!(all.len() == 4, "list('') = {all:?}");
    ensure!(
        call("list", a.list("nothing/").await)?.is_empty(),
        "list of an unused prefix is not empty"
    );
    Ok(())
}

async fn bounded_calls(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let mut b = member(ck, "b").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    let wait = Duration::from_millis(300);
    // Generous slack: this checks that calls return by themselves, not how fast.
    let bound = wait + Duration::from_secs(3);
    let started = Instant::now();
    let r = call("campaign", b.campaign(wait).await)?;
    ensure!(r.is_none(), "won a term that is held");
    ensure!(
        started.elapsed() < bound,
        "campaign(wait={wait:?}) took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    call("leader", b.leader(Some(t.token), wait).await)?;
    ensure!(
        started.elapsed() < bound,
        "leader(wait={wait:?}) took {:?}",
        started.elapsed()
    );
    Ok(())
}

async fn expiry(ck: &Check<'_>) -> Result<(), String> {
    let s = ck.s;
    let mut a = member(ck, "a").await?;
    let mut b = member(ck, "b").await?;
    let t = win(&mut a, 4 * s.lease).await?;
    let until = Instant::now() + s.lease * 2;
    let mut last_keep = Instant::now();
    while Instant::now() < until {
        last_keep = Instant::now();
        call("keep", a.keep(&t).await)?;
        let r = call("campaign", b.campaign(s.retry).await)?;
        ensure!(r.is_none(), "took over from a leader that kept renewing");
    }
    // The leader crashes. With a session backend its session ends and b
    // takes over at once; with a lease backend it goes silent and b takes
    // over after about one lease, never before the leader's own renew
    // deadline has passed (the leader would still call itself leader until then).
    let connections = a.plugin.connections().clone();
    let session = connections.session_health().is_some();
    if session {
        connections.shut_down().await;
    }
    let tb = win(&mut b, 4 * s.lease).await?;
    let after = last_keep.elapsed();
    ensure!(
        tb.token > t.token,
        "new token {} not greater than {}",
        tb.token,
        t.token
    );
    ensure!(
        session || after >= s.renew_deadline,
        "took over {after:?} after the leader's last renewal began, before its renew deadline ({:?}) had passed",
        s.renew_deadline
    );
    if session {
        return Ok(()); // the old leader's session is closed: it cannot even ask
    }
    match a.keep(&t).await {
        Err(CallError::Failure(Failure::NotLeader)) => Ok(()),
        other => Err(format!(
            "the expired leader's keep should be not-leader, got {other:?}"
        )),
    }
}
