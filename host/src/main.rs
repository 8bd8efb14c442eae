//! The `ha-sidecar` command.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use ha_sidecar::capabilities::filesystem;
use ha_sidecar::config::Config;
use ha_sidecar::runtime::inspect;

#[derive(Parser)]
#[command(
    name = "ha-sidecar",
    version,
    about = "Leader election, discovery and fenced state for one active process and hot standbys"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sidecar with the given config file.
    #[command(after_help = "\
Runs until SIGTERM or SIGINT, then releases leadership at once (a standby takes over within a
retry period) and exits 0. Under systemd (Type=notify) it reports READY=1 once it serves and
pings WatchdogSec= while /healthz is healthy: see examples/systemd/.

Examples:
  ha-sidecar run /etc/ha-sidecar/sidecar.yaml
  HA_SIDECAR_LOG=info,ha_sidecar=debug ha-sidecar run sidecar.yaml   # more detail in the log")]
    Run {
        /// The sidecar config (YAML): member, http, plugin, capabilities, timing; see the
        /// README's Configuration section and examples/*.yaml.
        config: PathBuf,
    },
    /// Check a config file (and load its plugin) without starting.
    #[command(after_help = "\
Exits 0 with a one-line summary (member, listen address, plugin, timing) when the config is
valid and its plugin loads with the capabilities it grants; otherwise exits 1 naming the key,
the value and what to do.

Example:
  ha-sidecar validate /etc/ha-sidecar/sidecar.yaml")]
    Validate {
        /// The sidecar config (YAML) to check.
        config: PathBuf,
    },
    /// Who leads, at which term, and this sidecar's own state.
    #[command(after_help = "\
Exit codes: 0 a leader is known, 3 nobody leads, 1 the sidecar cannot be asked (the message
says why).

Examples:
  ha-sidecar status
  ha-sidecar status --address jm-2:4040 --output json")]
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// The current leader; with --watch, a line on every change.
    #[command(after_help = "\
With --watch it long-polls GET /leader and prints a line each time the leader or its term
changes (no leader included), until interrupted or --count lines were printed; a sidecar that
stops answering is reported once and watched again when it is back.

Examples:
  ha-sidecar leader --watch
  ha-sidecar leader --watch --output json --count 2   # the leader now, and the next change")]
    Leader {
        #[command(flatten)]
        target: Target,
        /// Keep printing each change of leader.
        #[arg(long)]
        watch: bool,
        /// With --watch: stop after this many lines.
        #[arg(long, requires = "watch")]
        count: Option<u64>,
    },
    /// Hand leadership over: the leader (the sidecar at --address) resigns and
    /// stays out of the next election for its resign holdoff; a standby (with
    /// --to, that member only) takes over.
    #[command(after_help = "\
Run it against the leader's sidecar; against a standby it fails and names the leader. With
--to, the leader first checks that the member is a live standby (`ha-sidecar status` lists
them) and changes nothing if not. Exit codes: 0 another member (the named one) leads, 3
nobody took over within --timeout, 1 an error.

Examples:
  ha-sidecar handover --address jm-1:4040
  ha-sidecar handover --address jm-1:4040 --to jm-3")]
    Handover {
        #[command(flatten)]
        target: Target,
        /// The member id of the standby that is to lead next.
        #[arg(long)]
        to: Option<String>,
        /// How long to wait for another member to lead.
        #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCmd,
    },
}

/// Which sidecar an operator command asks, and how it answers.
#[derive(clap::Args)]
struct Target {
    /// The sidecar's API (its http.listen).
    #[arg(long, default_value = "127.0.0.1:4040")]
    address: String,
    /// Human text, or JSON for scripts.
    #[arg(long, value_enum, default_value = "table")]
    output: ha_sidecar::operator::Output,
    /// A file with the sidecar's bearer token (its http.token-file): handover writes.
    #[arg(long)]
    token_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum PluginCmd {
    /// Print the contract version, exports and imports of a plugin.
    #[command(after_help = "\
Example:
  ha-sidecar plugin inspect plugins/target/wasm32-wasip2/release/ha_plugin_etcd.wasm")]
    Inspect {
        /// The plugin: a WebAssembly component (.wasm).
        plugin: PathBuf,
    },
    /// Run the backend conformance suite against a plugin, with the
    /// capabilities, plugin settings and timing of a sidecar config.
    #[command(after_help = "\
Exits 0 when every check passes, 1 otherwise (or when the plugin cannot load). Short timings in
the config make it quick (lease 1s: about 6 s).

Examples:
  ha-sidecar plugin check ha_plugin_mystore.wasm --config check.yaml
  ha-sidecar plugin check ha_plugin_mystore.wasm --config check.yaml --only fencing")]
    Check {
        /// The plugin: a WebAssembly component (.wasm).
        plugin: PathBuf,
        /// A sidecar config whose capabilities, plugin settings and timing the checks use
        /// (its plugin.path is replaced by PLUGIN).
        #[arg(long)]
        config: PathBuf,
        /// Run only the checks whose name contains this.
        #[arg(long)]
        only: Option<String>,
    },
}

fn main() -> ExitCode {
    ha_sidecar::capabilities::ensure_tls_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HA_SIDECAR_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    if !matches!(cli.command, Cmd::Run { .. }) {
        quiet_on_closed_stdout();
    }
    if let Some(result) = operator_command(&cli.command) {
        return match result {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        };
    }
    let result = match cli.command {
        Cmd::Status { .. } | Cmd::Leader { .. } | Cmd::Handover { .. } => unreachable!("run above"),
        Cmd::Run { config } => run(&config),
        Cmd::Validate { config } => validate(&config),
        Cmd::Plugin {
            command: PluginCmd::Inspect { plugin },
        } => inspect_plugin(&plugin),
        Cmd::Plugin {
            command:
                PluginCmd::Check {
                    plugin,
                    config,
                    only,
                },
        } => check_plugin(&plugin, &config, only.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// `status`, `leader` and `handover`, which ask a running sidecar: their
/// exit code (see `operator`), or none for the other commands.
fn operator_command(cmd: &Cmd) -> Option<anyhow::Result<u8>> {
    use ha_sidecar::operator;
    let (Cmd::Status { target } | Cmd::Leader { target, .. } | Cmd::Handover { target, .. }) = cmd
    else {
        return None;
    };
    let token = match target.token_file.as_deref().map(operator::Api::read_token) {
        None => None,
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => return Some(Err(e)),
    };
    let api = operator::Api {
        address: target.address.clone(),
        token,
    };
    let out = target.output;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return Some(Err(e.into())),
    };
    Some(runtime.block_on(async {
        match cmd {
            Cmd::Leader { watch, count, .. } => {
                operator::watch(&api, out, if *watch { *count } else { Some(1) }).await
            }
            Cmd::Handover { timeout, to, .. } => {
                operator::handover(&api, out, to.as_deref(), *timeout).await
            }
            _ => operator::status(&api, out).await,
        }
    }))
}

/// The commands that print a report (`validate`, `plugin inspect`, `plugin
/// check`) end quietly when their reader goes away (`| head`), as command
/// line tools do, instead of panicking in `println!` on a broken pipe: the
/// default SIGPIPE action, which Rust's runtime replaces with "ignore". Not
/// for `run`, whose writes to a client socket that closed must fail, not
/// kill the sidecar.
fn quiet_on_closed_stdout() {
    // SAFETY: called before any thread starts; SIG_DFL is a valid action.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sets the environment the capabilities' libraries read (see
/// `Capability::process_env`). Called before the runtime starts: no other
/// thread exists yet that could read the environment meanwhile.
fn set_process_env(config: &Config) {
    for (name, value) in config.grants.process_env() {
        tracing::debug!(name, value = ?value, "setting for the capabilities' libraries");
        // SAFETY: single-threaded here (before the tokio runtime is built).
        unsafe { std::env::set_var(name, value) };
    }
}

/// The error and its causes, each once: our errors already quote their
/// source in their own message, which `{:#}` would print a second time.
fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text = format!("{text}: {cause}");
        }
    }
    text
}

fn run(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    set_process_env(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(ha_sidecar::sidecar::run(config))
}

fn validate(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    ha_sidecar::wiring::check(&config, Default::default())?;
    let t = &config.timing;
    println!(
        "{}: ok (member {}, listen {}, plugin {}, lease {:?} / renew deadline {:?} / retry {:?})",
        path.display(),
        config.member_id,
        config.listen,
        config.plugin.path.display(),
        t.lease,
        t.renew_deadline,
        t.retry_period
    );
    Ok(())
}

fn check_plugin(plugin: &Path, config: &Path, only: Option<&str>) -> anyhow::Result<()> {
    let mut config = Config::load(config)?;
    config.plugin.path = plugin.to_path_buf();
    config.plugin.sha256 = None;
    // Checks write throwaway namespaces: keep them out of the configured directory.
    let scratch = std::env::temp_dir().join(format!("ha-sidecar-check-{}", std::process::id()));
    config.grants.replace(filesystem::Dir(scratch.clone()));
    // A plugin that cannot load fails here, once, with the reason; not in
    // every check.
    ha_sidecar::wiring::check(&config, Default::default())?;
    set_process_env(&config);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let outcomes = runtime.block_on(async {
        let subject = ha_sidecar::conformance::Subject::for_config(&config);
        ha_sidecar::conformance::run(&subject, only).await
    });
    let _ = std::fs::remove_dir_all(&scratch);
    println!(
        "{}: conformance with the timing of {} (lease {:?})\n",
        plugin.display(),
        config.source.display(),
        config.timing.lease
    );
    print!("{}", ha_sidecar::conformance::render(&outcomes));
    let failed = outcomes.iter().filter(|o| o.result.is_err()).count();
    if failed > 0 {
        anyhow::bail!("{failed} of {} checks failed", outcomes.len());
    }
    Ok(())
}

fn inspect_plugin(path: &Path) -> anyhow::Result<()> {
    let wasm =
        std::fs::read(path).map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let engine = ha_sidecar::runtime::engine::new_engine()?;
    let component = wasmtime::component::Component::new(&engine, &wasm)
        .map_err(|e| anyhow::anyhow!("{} is not a WebAssembly component: {e:#}", path.display()))?;
    let info = inspect::inspect(&engine, &component);
    println!("plugin:   {}", path.display());
    println!("sha256:   {}", ha_sidecar::runtime::sha256_hex(&wasm));
    let speaks = ha_sidecar::runtime::contract::supported_list();
    match (info.contract(), info.contract_version()) {
        (Some((export, _)), Some(_)) => {
            println!("contract: {export} (this sidecar speaks {speaks})")
        }
        (Some((export, _)), None) => println!(
            "contract: {export}, which this sidecar does not speak (it speaks {speaks}): it will be refused"
        ),
        (None, _) => println!("contract: none (not an ha-sidecar backend plugin)"),
    }
    let needed = info.capabilities();
    let never = info.never_granted();
    let needs = needed
        .iter()
        .map(|c| format!("capabilities.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    match (needs.is_empty(), never.is_empty()) {
        (true, true) => println!("needs:    no capabilities"),
        (false, true) => println!("needs:    {needs}"),
        (_, false) => {
            if !needs.is_empty() {
                println!("needs:    {needs}");
            }
            println!(
                "refused:  this sidecar will not load the plugin, whatever the config grants:"
            );
            // One line per reason: a socket user imports seven interfaces.
            let mut reasons: Vec<&str> = Vec::new();
            for (_, r) in &never {
                if !reasons.contains(r) {
                    reasons.push(r);
                }
            }
            for reason in reasons {
                let interfaces: Vec<&str> = never
                    .iter()
                    .filter(|(_, r)| *r == reason)
                    .map(|(i, _)| *i)
                    .collect();
                println!("  {}: {reason}", interfaces.join(", "));
            }
        }
    }
    println!("exports:");
    for e in &info.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &info.imports {
        println!("  {i}");
    }
    Ok(())
}
