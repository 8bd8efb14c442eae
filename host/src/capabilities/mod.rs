//! Host capabilities a plugin can be granted beyond logging: a directory
//! (WASI preopen, see `runtime/host.rs`) and ZooKeeper. Each owns its
//! connection and credentials; the plugin sees only the operations.

pub mod zookeeper;
mod zookeeper_ops;
