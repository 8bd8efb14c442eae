//! Host capabilities a plugin can be granted beyond logging: a directory
//! (WASI preopen, see `runtime/host.rs`), ZooKeeper, Kubernetes, and outgoing
//! HTTP to listed endpoints. Each owns its connection and credentials; the
//! plugin sees only the operations.

pub mod outgoing_http;

pub mod kubernetes;
mod kubernetes_ops;
pub mod zookeeper;
mod zookeeper_ops;
