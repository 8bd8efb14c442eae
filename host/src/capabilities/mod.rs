//! Host capabilities a plugin can be granted beyond logging: a directory
//! (WASI preopen, see `runtime/host.rs`), ZooKeeper, and outgoing HTTP to
//! listed endpoints. Each owns its connection and credentials; the plugin sees
//! only the operations.

pub mod outgoing_http;
pub mod zookeeper;
mod zookeeper_ops;
