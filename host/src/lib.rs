//! ha-sidecar: one leader and hot standbys, with the coordination backend as a
//! WebAssembly plugin. The README describes the architecture; in short:
//!
//! - `config`: the YAML file, validated strictly at start (`section`: what
//!   parsing any section of it needs);
//! - `capabilities`: what a plugin can be granted, one module per capability
//!   (config section, connection, per-instance context, linking, health);
//! - `runtime`: loads and checks the plugin, runs supervised instances of it
//!   (`bindings`: the host side of the WIT); `wiring`: loads the configured
//!   plugin with its capabilities, for every command that needs one;
//! - `leadership`: the state machine that decides when this sidecar may call itself leader;
//! - `discovery`: who leads, as the backend says, kept in memory;
//! - `state`: fenced, versioned state requests;
//! - `roster`: who is in the cluster, and whether a member may be handed the leadership;
//! - `http`: the localhost API, its connections capped within the file-descriptor
//!   budget of `descriptors`; `metrics`: Prometheus text;
//! - `candidacy`: a client-owned candidacy (Flink's JobManager opens it);
//! - `components`: per-component leader information (Flink's dispatcher, JobMasters, ...);
//! - `refusals`: whether the backend refuses this sidecar's credentials;
//! - `shared`: the facade the HTTP handlers work through;
//! - `sidecar`: starts and stops all of the above.
//!
//! Imports run one way (a module uses only those below it): `bindings` and
//! `section` import nothing of the crate; `capabilities` uses them (and
//! `metrics`); `config` uses `section` and `capabilities`; `runtime` uses
//! those three; `wiring` uses `config`, `capabilities` and `runtime`;
//! `shared` is the facade both `http` and `sidecar` use, and `sidecar`
//! uses `http`, never the reverse.

pub mod bindings;
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
pub mod operator;
pub mod refusals;
pub mod roster;
pub mod runtime;
pub mod section;
pub mod shared;
pub mod sidecar;
pub mod state;
pub mod storage;
pub mod systemd;
pub mod wiring;
