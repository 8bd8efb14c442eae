//! The benchmark command: failover, the leader endpoint, fenced state and
//! the plugin's overhead, per backend, against real sidecar processes (and
//! real backend services), printed as one table per section and optionally
//! written as JSON. docs/benchmarks.md has today's figures and what they
//! mean; `./scripts/bench.sh --help` lists the options.
//!
//! These are measurements for a person to judge, not assertions: nothing
//! here fails because a figure misses its target (the table says so), only
//! because something did not work at all.

#[path = "../../../tests/support/etcd.rs"]
mod etcd;
#[path = "../../../tests/support/kube_api.rs"]
mod kube_api;
#[path = "../../../tests/support/mod.rs"]
mod support;
#[path = "../../../tests/support/zk.rs"]
mod zk;
#[path = "../../../tests/support/zk_member_pause.rs"]
mod zk_member_pause;

mod backends;
mod endpoint;
mod failover;
mod flink;
mod group;
mod loadgen;
mod machine;
mod member_pause;
mod overhead;
mod procfs;
mod report;
mod state;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use clap::builder::PossibleValuesParser;
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;

use machine::Machine;
use report::Report;

/// Measures failover, the leader endpoint, state and overhead of ha-sidecar
/// per backend, and prints one table.
#[derive(Parser, Debug)]
#[command(
    name = "bench",
    bin_name = "./scripts/bench.sh",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Trials of each kind of failover (kill -9, SIGTERM, resign) per backend.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    trials: u32,
    /// Also write the table, with the raw figures, to this JSON file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Backends to run, in this order (the first also serves the endpoint load).
    #[arg(long, value_delimiter = ',', default_values_t = backends::NAMES.iter().map(|s| s.to_string()), value_parser = PossibleValuesParser::new(backends::NAMES))]
    backends: Vec<String>,
    /// Sections to run (default: all).
    #[arg(long, value_delimiter = ',', value_enum)]
    only: Vec<Part>,
    /// Keep-alive connections of the load generator.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=1024))]
    connections: u32,
    /// How long each endpoint load is measured (after a 1 s warm-up).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    load_time: Duration,
    /// How long each state load is measured.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    state_time: Duration,
    /// Trials of each fault per setup in the Flink section (each starts a Flink cluster once per setup).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=10))]
    flink_trials: u32,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Internal: the load generator process the endpoint and state sections start.
    #[command(hide = true)]
    Loadgen(loadgen::LoadSpec),
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Failover,
    Endpoint,
    State,
    Overhead,
    Flink,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Sub::Loadgen(spec)) = cli.command {
        return match loadgen::child_main(spec) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadgen: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runs = |p: Part| cli.only.is_empty() || cli.only.contains(&p);
    let machine = Machine::describe();
    let began = Instant::now();
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    eprintln!("bench: {}", machine.render());
    let mut report = Report::default();

    if runs(Part::Overhead) {
        overhead::boundary(&mut report);
    }
    // The Flink section starts its own sidecars and services.
    let sidecar_sections = cli.only.is_empty() || cli.only.iter().any(|p| *p != Part::Flink);
    for (i, name) in cli.backends.iter().enumerate().filter(|_| sidecar_sections) {
        let backend = backends::start(name);
        let backend = backend.as_ref();
        // Compiling first also warms the shared compile cache, so that no
        // later sidecar start pays for it: it runs whatever the sections.
        let mut scratch = Report::default();
        let compiles = if runs(Part::Overhead) {
            &mut report
        } else {
            &mut scratch
        };
        overhead::compile(compiles, backend);
        if i == 0 && runs(Part::Endpoint) {
            let load = endpoint::Load {
                connections: cli.connections as usize,
                duration: cli.load_time,
            };
            endpoint::run(&mut report, backend, &load);
        }
        if runs(Part::Failover) {
            failover::run(&mut report, backend, cli.trials as usize);
            if backend.name() == "zookeeper" {
                member_pause::run(&mut report, cli.trials as usize);
            }
        }
        if runs(Part::State) {
            state::run(
                &mut report,
                backend,
                cli.connections as usize,
                cli.state_time,
            );
        }
        if runs(Part::Overhead) {
            overhead::starts(&mut report, backend);
        }
    }

    if runs(Part::Flink) {
        flink::run(&mut report, cli.flink_trials as usize);
    }

    let took = began.elapsed();
    let load_at_end = machine::load_average();
    let settings = format!(
        "trials {}, Flink trials {}, connections {}, endpoint load {}, state load {}, backends {}",
        cli.trials,
        cli.flink_trials,
        cli.connections,
        humantime::format_duration(cli.load_time),
        humantime::format_duration(cli.state_time),
        cli.backends.join(", ")
    );
    println!("## ha-sidecar benchmark, {started_at}\n");
    println!("- machine: {}", machine.render());
    println!("- settings: {settings}");
    println!(
        "- run time: {:.0} s; load average at the end {load_at_end}",
        took.as_secs_f64()
    );
    print!("{}", report.render());

    if let Some(path) = &cli.json {
        let doc = json!({
            "started_at": started_at,
            "machine": machine,
            "settings": {
                "trials": cli.trials,
                "flink_trials": cli.flink_trials,
                "connections": cli.connections,
                "endpoint_load_s": cli.load_time.as_secs_f64(),
                "state_load_s": cli.state_time.as_secs_f64(),
                "backends": cli.backends,
            },
            "run_time_s": took.as_secs_f64(),
            "load_at_end": load_at_end,
            "rows": report.rows,
        });
        let text = serde_json::to_string_pretty(&doc).expect("serialize the report");
        if let Err(e) = std::fs::write(path, text + "\n") {
            eprintln!("bench: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
        eprintln!("bench: wrote {}", path.display());
    }
    eprintln!("bench: done in {:.0} s", took.as_secs_f64());
    ExitCode::SUCCESS
}
