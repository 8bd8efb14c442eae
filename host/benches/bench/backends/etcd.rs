//! The etcd backend against a real etcd 3.4 (the tests' harness starts it on
//! free loopback ports). The plugin reaches it through the host's outgoing
//! HTTP over kept-alive connections, as the native figures below do too.

use std::path::Path;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::{Backend, Bound, NativeStore};
use crate::etcd::{Etcd, b64, unb64};
use crate::report::human;
use crate::support::{LEASE, TIMING, plugin};

pub struct EtcdBackend {
    server: Etcd,
}

impl EtcdBackend {
    pub fn start() -> Self {
        eprintln!("bench: starting etcd");
        EtcdBackend {
            server: Etcd::start(),
        }
    }
}

impl Backend for EtcdBackend {
    fn name(&self) -> &'static str {
        "etcd"
    }

    fn plugin(&self) -> &'static str {
        "ha_plugin_etcd"
    }

    fn config(&self, _dir: &Path, ns: &str, cache_dir: &Path) -> String {
        let endpoint = self.server.endpoint();
        format!(
            "plugin:\n  path: '{}'\n  cache-dir: '{}'\n  settings: {{endpoints: '{endpoint}', cluster-id: {ns}}}\ncapabilities:\n  outgoing-http: {{endpoints: ['{endpoint}']}}\n{TIMING}",
            plugin(self.plugin()).display(),
            cache_dir.display(),
        )
    }

    /// A lease store: a standby waits out a full lease of observed silence.
    fn detection_bound(&self) -> Bound {
        Bound {
            total: LEASE,
            made_of: format!("lease {}", human(LEASE)),
        }
    }

    fn native(&self, _dir: &Path) -> Option<Box<dyn NativeStore>> {
        Some(Box::new(EtcdNative::connect(self.server.port())))
    }
}

/// The JSON gateway over one kept-alive connection, doing what the plugin
/// does: a fenced write as one `txn` comparing a guard key's mod revision
/// (the leader's election key, for the plugin) and putting the value, with
/// the plugin's read-backs on failure; a read as one `range`.
struct EtcdNative {
    rt: tokio::runtime::Runtime,
    sender: SendRequest<Full<Bytes>>,
    guard_revision: u64,
}

const NATIVE_PREFIX: &str = "/bench-native/";

impl EtcdNative {
    fn connect(port: u16) -> Self {
        // The connection task runs only inside `block_on`: fine for
        // back-to-back calls.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("build a tokio runtime");
        let sender = rt.block_on(async {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap_or_else(|e| panic!("connect to etcd on port {port}: {e}"));
            stream.set_nodelay(true).expect("set TCP_NODELAY");
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("HTTP handshake with etcd");
            tokio::spawn(conn);
            sender
        });
        let mut native = EtcdNative {
            rt,
            sender,
            guard_revision: 0,
        };
        let guard = format!("{NATIVE_PREFIX}guard");
        let v = native.call(
            "/v3/kv/put",
            json!({ "key": b64(guard.as_bytes()), "value": b64(b"guard") }),
        );
        native.guard_revision = revision(&v["header"]);
        native
    }

    fn call(&mut self, path: &str, body: Value) -> Value {
        let sender = &mut self.sender;
        self.rt.block_on(async {
            sender
                .ready()
                .await
                .expect("the etcd connection stays open");
            let request = hyper::Request::post(path)
                .header("host", "127.0.0.1")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .expect("a valid request");
            let response = sender
                .send_request(request)
                .await
                .unwrap_or_else(|e| panic!("etcd {path}: {e}"));
            assert!(
                response.status().is_success(),
                "etcd {path}: {}",
                response.status()
            );
            let bytes = response
                .into_body()
                .collect()
                .await
                .unwrap_or_else(|e| panic!("etcd {path}: {e}"))
                .to_bytes();
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("etcd {path}: {e}"))
        })
    }
}

fn revision(header: &Value) -> u64 {
    header["revision"]
        .as_str()
        .and_then(|r| r.parse().ok())
        .expect("etcd answers with a revision")
}

impl NativeStore for EtcdNative {
    fn describe(&self, put: bool) -> &'static str {
        if put {
            "etcd /v3/kv/txn (compare the guard's revision, put), kept-alive"
        } else {
            "etcd /v3/kv/range, kept-alive"
        }
    }

    fn put(&mut self, key: &str, value: &[u8]) {
        let full = format!("{NATIVE_PREFIX}{key}");
        let guard = format!("{NATIVE_PREFIX}guard");
        let v = self.call(
            "/v3/kv/txn",
            json!({
                "compare": [{
                    "key": b64(guard.as_bytes()),
                    "target": "MOD",
                    "result": "EQUAL",
                    "mod_revision": self.guard_revision.to_string(),
                }],
                "success": [{ "request_put": { "key": b64(full.as_bytes()), "value": b64(value) } }],
                "failure": [
                    { "request_range": { "key": b64(full.as_bytes()) } },
                    { "request_range": { "key": b64(guard.as_bytes()) } },
                ],
            }),
        );
        assert_eq!(
            v["succeeded"],
            json!(true),
            "etcd txn on {full} failed: {v}"
        );
    }

    fn get(&mut self, key: &str) -> Vec<u8> {
        let full = format!("{NATIVE_PREFIX}{key}");
        let v = self.call("/v3/kv/range", json!({ "key": b64(full.as_bytes()) }));
        let value = v["kvs"][0]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("etcd has no {full}"));
        unb64(value)
    }
}
