//! ha-sidecar: one leader and hot standbys, with the coordination backend as a
//! WebAssembly plugin. See the README for the architecture.

pub mod config;
pub mod metrics;
pub mod runtime;
