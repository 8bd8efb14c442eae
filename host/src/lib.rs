//! ha-sidecar: one leader and hot standbys, with the coordination backend as a
//! WebAssembly plugin. The README describes the architecture; in short:
//!
//! - `config`: the YAML file, validated strictly at start;
//! - `runtime`: loads and checks the plugin, runs supervised instances of it;
//! - `leadership`: the state machine that decides when this sidecar may call itself leader;
//! - `discovery`: who leads, as the backend says, kept in memory;
//! - `state`: fenced, versioned state requests;
//! - `http`: the localhost API, its connections capped within the file-descriptor
//!   budget of `descriptors`; `metrics`: Prometheus text;
//! - `candidacy`: a client-owned candidacy (Flink's JobManager opens it);
//! - `components`: per-component leader information (Flink's dispatcher, JobMasters, ...);
//! - `refusals`: whether the backend refuses this sidecar's credentials;
//! - `shared`: the facade the HTTP handlers work through;
//! - `sidecar`: starts and stops all of the above.

pub mod candidacy;
pub mod capabilities;
pub mod components;
pub mod config;
pub mod conformance;
pub mod descriptors;
pub mod discovery;
pub mod failpoint;
pub mod http;
pub mod jobs;
pub mod leadership;
pub mod metrics;
pub mod refusals;
pub mod runtime;
pub mod shared;
pub mod sidecar;
pub mod state;
pub mod storage;
