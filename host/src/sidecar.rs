//! Starts the pieces and ties them together: the plugin, three supervised
//! instances (election, discovery, state), the HTTP API, and signal handling.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::candidacy::Candidacies;
use crate::capabilities::Capability as _;
use crate::components::Components;
use crate::config::Config;
use crate::discovery::{self, Discovered};
use crate::http::Face;
use crate::jobs::{Cleanup, JobStore, LeaderDuties, Lifecycle};
use crate::leadership::{self, Election, Progress};
use crate::metrics::Metrics;
use crate::runtime::{CallError, Member, Setup, Slot, Timing};
use crate::shared::Shared;
use crate::state::StateService;
use crate::storage::{BlobStore, FileBlobStore, ValueStore};

fn setup(config: &Config) -> Setup {
    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
    Setup {
        me: Member {
            id: config.member_id.clone(),
            address: config.member_address.clone(),
        },
        // One per process run: lets the plugin tell this run's records from an
        // earlier run's under the same member id.
        session: uuid::Uuid::new_v4().simple().to_string(),
        timing: Timing {
            lease_ms: ms(config.timing.lease),
            renew_deadline_ms: ms(config.timing.renew_deadline),
            retry_ms: ms(config.timing.retry_period),
        },
        settings: config.plugin.settings.clone(),
    }
}

/// How many state calls may run at once (`plugin.state-instances`).
///
/// One for a plugin granted a directory: a file backend's writes in one term
/// are made by one writer at a time. The file plugin, for one, numbers a new
/// version from a listing of its term's directory and publishes it with an
/// exclusive link, so two overlapping writes would both pick the same number
/// and one would fail as "unavailable" instead of being ordered; nothing in
/// a directory grant lets instances agree on more than what the directory
/// shows them.
///
/// One for a plugin granted Kubernetes too: its state is one ConfigMap, so
/// overlapping writes only make each other retry (the benchmark saw them run
/// out of retries and answer 503 at 4 and 16 connections).
fn state_instances(config: &Config) -> usize {
    let serial = [
        crate::capabilities::filesystem::Filesystem.name(),
        crate::capabilities::kubernetes::Kubernetes.name(),
    ];
    if serial.iter().any(|c| config.grants.is_granted(c)) {
        1
    } else {
        config.plugin.state_instances
    }
}

pub async fn run(config: Config) -> anyhow::Result<()> {
    let started = Instant::now();
    // First: a budget that does not fit refuses the start before anything is created.
    let nofile = crate::descriptors::raise_nofile().context("read RLIMIT_NOFILE")?;
    let max_connections = crate::descriptors::connection_cap(config.max_connections, nofile)?;
    tracing::info!(
        nofile = nofile.soft,
        raised_from = nofile.was,
        max_connections,
        reserve = crate::descriptors::RESERVE,
        "file-descriptor budget"
    );
    let metrics = Arc::new(Metrics::default());
    // Connected, loaded, checked and readied (its directory made only now:
    // a refused plugin leaves no trace on disk).
    let plugin = crate::wiring::open(&config, metrics.clone()).await?;
    let connections = plugin.connections().clone();
    let contract = plugin
        .inspection
        .contract()
        .map(|(i, _)| i.to_string())
        .unwrap_or_default();
    tracing::info!(path = %config.plugin.path.display(), sha256 = %plugin.sha256, %contract, from = ?plugin.source, "plugin loaded");
    for (capability, granted) in plugin.granted() {
        if let Some(granted) = granted {
            tracing::info!(capability, "{granted}");
        }
    }

    let setup = setup(&config);
    let p = &config.plugin;
    let slot = |role| {
        Slot::new(
            plugin.clone(),
            role,
            setup.clone(),
            p.restart_backoff,
            p.restart_backoff_max,
        )
    };
    let mut election_slot = slot("election");
    // Bad plugin settings surface here, at start, not later in a retry loop.
    // So do missing permissions (a plugin checks them when configured):
    // a refusal at start stops the sidecar with the backend's message.
    match election_slot.instance().await {
        Ok(_) => {}
        Err(CallError::Failure(f)) if metrics.refusals.is_refused() => {
            bail!("permission refused: {}", crate::runtime::describe(&f))
        }
        Err(CallError::Failure(f)) => bail!(
            "the plugin refused its configuration: {}",
            crate::runtime::describe(&f)
        ),
        Err(e) => bail!("the plugin failed to start: {e}"),
    }
    if let Some(refused) = metrics.refusals.current() {
        bail!("permission refused: the backend refuses this sidecar's requests: {refused}");
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("http.listen: cannot listen on {}", config.listen))?;
    let probe_listener = match config.probe_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("http.probe-listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    if !config.listen.ip().is_loopback() && config.token.is_none() {
        tracing::warn!(
            listen = %config.listen,
            "http.listen is not a loopback address and http.token-file is not set: anyone who reaches it can write fenced state and change leadership; keep it on 127.0.0.1 and let probes use http.probe-listen, or set http.token-file"
        );
    }
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (local_tx, local_rx) = watch::channel(leadership::initial(config.election.candidacy));
    let candidacies = Arc::new(Candidacies::new(config.election.candidacy_ttl));
    tokio::spawn({
        let c = candidacies.clone();
        let shutdown = shutdown_rx.clone();
        async move { c.expire(shutdown).await }
    });
    let (discovered_tx, discovered_rx) = watch::channel(Discovered::default());
    let (commands_tx, commands_rx) = mpsc::channel(8);
    let progress = Arc::new(Progress::new());

    let blobs: Option<Arc<dyn BlobStore>> = match &config.storage.dir {
        Some(dir) => Some(Arc::new(FileBlobStore::open(dir.clone()).with_context(
            || format!("storage.dir: cannot create {}", dir.display()),
        )?)),
        None => None,
    };
    let values = Arc::new(ValueStore::new(
        StateService::new(
            (0..state_instances(&config))
                .map(|_| slot("state"))
                .collect(),
        ),
        blobs,
        config.storage.inline_limit as usize,
    ));
    let j = &config.jobs;
    let jobs = Arc::new(JobStore::new(values.clone(), j.retained_checkpoints));
    let cleanup = Cleanup {
        initial_backoff: j.cleanup_initial_backoff,
        max_backoff: j.cleanup_max_backoff,
        attempts: j.cleanup_attempts,
    };
    let lifecycle = Arc::new(Lifecycle::new(
        jobs.clone(),
        cleanup,
        j.delete_result_on_commit,
    ));
    tokio::spawn(
        LeaderDuties {
            lifecycle: lifecycle.clone(),
            values: values.clone(),
            local: local_rx.clone(),
            shutdown: shutdown_rx.clone(),
            sweep_interval: config.storage.sweep_interval,
            sweep_grace: config.storage.sweep_grace,
        }
        .run(),
    );

    let components = Arc::new(Components::new(values.clone(), config.timing.retry_period));
    let shared = Arc::new(Shared {
        candidacies: candidacies.clone(),
        components,
        values,
        jobs,
        lifecycle,
        config: config.clone(),
        metrics: metrics.clone(),
        progress: progress.clone(),
        local: local_rx,
        discovered: discovered_rx,
        commands: commands_tx,
        shutting_down: AtomicBool::new(false),
        shutdown: shutdown_rx.clone(),
    });

    tokio::spawn(discovery::run(
        slot("discovery"),
        discovered_tx,
        shutdown_rx.clone(),
        metrics.clone(),
        config.timing.retry_period,
    ));
    let election = tokio::spawn(
        Election {
            slot: election_slot,
            timing: config.timing,
            local: local_tx,
            commands: commands_rx,
            shutdown: shutdown_rx.clone(),
            metrics,
            progress,
            session: connections.session_health(),
            candidacy: config.election.candidacy,
            open: candidacies.watch(),
        }
        .run(),
    );
    let drain = config.plugin.call_timeout + Duration::from_secs(1);
    let mut listeners = vec![(
        listener
            .into_std()
            .context("http.listen: hand the listener to the HTTP runtime")?,
        Face::Api {
            token: config.token.clone(),
        },
    )];
    if let Some(probe) = probe_listener {
        listeners.push((
            probe
                .into_std()
                .context("http.probe-listen: hand the listener to the HTTP runtime")?,
            Face::Probe,
        ));
    }
    let http = spawn_http(crate::http::serve(
        listeners,
        shared.clone(),
        shutdown_rx.clone(),
        drain,
        max_connections as usize,
        tokio::runtime::Handle::current(),
    ))?;
    tracing::info!(listen = %config.listen, probe_listen = ?config.probe_listen, token = config.token.is_some(), member = %config.member_id, took_ms = started.elapsed().as_millis() as u64, "serving");
    // Under systemd (a Type=notify unit): ready now, and a watchdog that
    // pings while the sidecar is healthy.
    let notifier = crate::systemd::Notifier::from_env().map(Arc::new);
    if let Some(n) = &notifier {
        n.send(&format!("READY=1\nSTATUS=serving on {}", config.listen));
        if let Some(every) = crate::systemd::watchdog_interval() {
            let (n, shared) = (n.clone(), shared.clone());
            tokio::spawn(async move { crate::systemd::watchdog(&n, &shared, every).await });
        }
    }

    wait_for_signal().await?;
    if let Some(n) = &notifier {
        n.send("STOPPING=1\nSTATUS=releasing leadership and stopping");
    }
    tracing::info!("shutting down: releasing leadership if held");
    shared.shutting_down.store(true, Relaxed);
    let _ = shutdown_tx.send(true);
    // Leadership is released while the API stops accepting and drains.
    let grace =
        config.timing.retry_period + 2 * config.plugin.call_timeout + Duration::from_secs(1);
    let stopped = async {
        let _ = election.await;
        // Closing a session removes this sidecar's ephemeral nodes now,
        // not after the session timeout.
        connections.shut_down().await;
        let _ = http.await;
    };
    tokio::select! {
        r = tokio::time::timeout(grace, stopped) => {
            if r.is_err() {
                tracing::warn!("shutdown did not finish in time; exiting anyway");
            }
        }
        _ = wait_for_signal() => tracing::warn!("second signal: exiting at once"),
    }
    Ok(())
}

/// Runs the HTTP API on a runtime and thread of its own (see `http::serve`
/// for why); the receiver resolves once it has stopped.
fn spawn_http(
    serve: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .thread_name("http")
        .enable_all()
        .build()
        .context("start the HTTP runtime")?;
    let (done, stopped) = oneshot::channel();
    std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            runtime.block_on(serve);
            let _ = done.send(());
        })
        .context("start the HTTP thread")?;
    Ok(stopped)
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("install SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("install SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}
