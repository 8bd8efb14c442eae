//! The Kubernetes backend against the in-repo test API server
//! (`tests/support/kube_api.rs`), with real sidecar processes that reach it
//! through `kube`, each with its own service-account token in a kubeconfig.

#[path = "support/kube_api.rs"]
mod kube_api;
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_api::{Access, KubeApiServer, Rule};
use serde_json::{Value, json};
use support::*;

const NAMESPACE: &str = "ha-test";
const RETRY: Duration = Duration::from_millis(400);
const RENEW_DEADLINE: Duration = Duration::from_millis(1500);
const CONFIG_MAP: &str = "test-cluster-config-map";

fn server(ids: &[&str]) -> KubeApiServer {
    let tokens: Vec<(&str, Access)> = ids.iter().map(|id| (*id, Access::ReadWrite)).collect();
    KubeApiServer::start(&tokens, &[NAMESPACE, "default"])
}

/// A sidecar config on the Kubernetes backend; the token is the member id.
fn k8s_config(cluster: &Cluster, api: &KubeApiServer, id: &str, port: u16, extra: &str) -> PathBuf {
    let kubeconfig = api.kubeconfig(cluster.path(), id, NAMESPACE);
    let yaml = SidecarYaml::new(id, port, "ha_plugin_kubernetes")
        .settings("cluster-id: test")
        .capability(&format!(
            "kubernetes: {{kubeconfig: '{}'{extra}}}",
            kubeconfig.display()
        ))
        .build();
    cluster.write_config(id, &yaml)
}

fn start(cluster: &Cluster, api: &KubeApiServer, id: &str) -> Sidecar {
    let port = free_port();
    let cfg = k8s_config(cluster, api, id, port, "");
    Sidecar::start(id, port, &cfg, &cluster.path().join(format!("{id}.log")))
}

fn three(cluster: &Cluster, api: &KubeApiServer) -> Vec<Sidecar> {
    ["k1", "k2", "k3"]
        .iter()
        .map(|id| start(cluster, api, id))
        .collect()
}

/// The leader record the ConfigMap holds now.
fn leader_record(api: &KubeApiServer) -> Value {
    let cm = api
        .object(NAMESPACE, "configmaps", CONFIG_MAP)
        .expect("the ConfigMap exists");
    let text = cm["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"]
        .as_str()
        .expect("Flink's leader annotation")
        .to_string();
    serde_json::from_str(&text).expect("the annotation is JSON")
}

fn holder_of(object: &Value) -> Option<String> {
    let text =
        object["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"].as_str()?;
    let record: Value = serde_json::from_str(text).ok()?;
    record["holderIdentity"].as_str().map(str::to_string)
}

fn api_request(
    api: &KubeApiServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: &Value,
) -> Response {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("content-type", "application/json")];
    if let Some(a) = &auth {
        headers.push(("authorization", a.as_str()));
    }
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    request_within(
        api.port,
        method,
        path,
        &headers,
        &body,
        Duration::from_secs(10),
    )
    .expect("the test API server answers")
}

/// The body of a chunked response (the harness client reads raw HTTP/1.1).
fn dechunk(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::new();
    let mut rest = text.as_ref();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
        if n == 0 {
            break;
        }
        out.push_str(&after[..n]);
        rest = &after[n + 2..];
    }
    out
}

#[test]
fn the_test_api_server_answers_as_a_real_one_does() {
    let api = KubeApiServer::start(
        &[("rw", Access::ReadWrite), ("ro", Access::ReadOnly)],
        &[NAMESPACE],
    );
    let cms = format!("/api/v1/namespaces/{NAMESPACE}/configmaps");
    let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases");
    let rw = Some("rw");

    let r = api_request(&api, None, "GET", &format!("{cms}/x"), &Value::Null);
    assert_eq!(r.status, 401, "{}", r.text());
    let r = api_request(
        &api,
        Some("stranger"),
        "GET",
        &format!("{cms}/x"),
        &Value::Null,
    );
    assert_eq!(r.status, 401);

    let r = api_request(&api, rw, "GET", &format!("{cms}/x"), &Value::Null);
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (404, Some("NotFound"))
    );
    let r = api_request(
        &api,
        rw,
        "GET",
        "/api/v1/namespaces/nowhere/configmaps/x",
        &Value::Null,
    );
    assert_eq!(r.status, 404);
    assert!(
        r.text().contains("namespaces \\\"nowhere\\\" not found"),
        "{}",
        r.text()
    );

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"a": "1"}});
    let r = api_request(&api, rw, "POST", &cms, &cm);
    assert_eq!(r.status, 201, "{}", r.text());
    let rv1 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api_request(&api, rw, "POST", &cms, &cm);
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (409, Some("AlreadyExists"))
    );
    let r = api_request(
        &api,
        Some("ro"),
        "POST",
        &cms,
        &json!({"metadata": {"name": "y"}}),
    );
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (403, Some("Forbidden"))
    );

    // A watch from rv1 sees the next change, as one JSON line.
    let port = api.port;
    let watch_path = format!(
        "/api/v1/namespaces/{NAMESPACE}/configmaps?watch=1&fieldSelector=metadata.name%3Dx&resourceVersion={rv1}&timeoutSeconds=1"
    );
    let watcher = std::thread::spawn(move || {
        request_within(
            port,
            "GET",
            &watch_path,
            &[("authorization", "Bearer rw")],
            b"",
            Duration::from_secs(10),
        )
        .unwrap()
    });
    std::thread::sleep(Duration::from_millis(200));
    let mut update = cm.clone();
    update["metadata"]["resourceVersion"] = json!(rv1);
    update["data"]["a"] = json!("2");
    let r = api_request(&api, rw, "PUT", &format!("{cms}/x"), &update);
    assert_eq!(r.status, 200, "{}", r.text());
    let rv2 = r.json()["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(rv2.parse::<u64>().unwrap() > rv1.parse::<u64>().unwrap());
    let events = watcher.join().unwrap();
    assert_eq!(events.status, 200);
    assert_eq!(events.header("transfer-encoding"), Some("chunked"));
    let lines: Vec<Value> = dechunk(&events.body)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["type"], "MODIFIED");
    assert_eq!(lines[0]["object"]["data"]["a"], "2");
    assert_eq!(
        lines[0]["object"]["metadata"]["resourceVersion"],
        rv2.as_str()
    );

    // A stale resourceVersion is a 409 Conflict; without one, a ConfigMap update goes through.
    update["data"]["a"] = json!("3");
    let r = api_request(&api, rw, "PUT", &format!("{cms}/x"), &update);
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (409, Some("Conflict"))
    );
    assert!(r.text().contains("the object has been modified"));
    update["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let r = api_request(&api, rw, "PUT", &format!("{cms}/x"), &update);
    assert_eq!(r.status, 200);

    // Keys and size are validated.
    let r = api_request(
        &api,
        rw,
        "POST",
        &cms,
        &json!({"metadata": {"name": "bad"}, "data": {"a/b": "x"}}),
    );
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (422, Some("Invalid"))
    );
    let big = "x".repeat(600 << 10);
    let r = api_request(
        &api,
        rw,
        "POST",
        &cms,
        &json!({"metadata": {"name": "big"}, "data": {"a": big, "b": big}}),
    );
    assert_eq!(r.status, 422);
    assert!(
        r.text()
            .contains("Too long: must have at most 1048576 bytes"),
        "{}",
        r.text()
    );

    // Leases: MicroTime with six digits, and no update without a resourceVersion.
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
        "spec": {"holderIdentity": "a", "renewTime": "2026-11-21T05:25:45Z"}});
    let r = api_request(&api, rw, "POST", &leases, &lease);
    assert_eq!(r.status, 422, "{}", r.text());
    let mut lease = lease;
    lease["spec"]["renewTime"] = json!("2026-11-21T05:25:45.459640Z");
    let r = api_request(&api, rw, "POST", &leases, &lease);
    assert_eq!(r.status, 201, "{}", r.text());
    let r = api_request(&api, rw, "PUT", &format!("{leases}/l"), &lease);
    assert_eq!(r.status, 422);
    assert!(
        r.text().contains("must be specified for an update"),
        "{}",
        r.text()
    );

    // Delete with a stale precondition, then for real.
    let pre = json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"resourceVersion": rv1}});
    let r = api_request(&api, rw, "DELETE", &format!("{cms}/x"), &pre);
    assert_eq!(
        (r.status, r.json()["reason"].as_str()),
        (409, Some("Conflict"))
    );
    let r = api_request(&api, rw, "DELETE", &format!("{cms}/x"), &Value::Null);
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("Success"))
    );
    let r = api_request(&api, rw, "DELETE", &format!("{cms}/x"), &Value::Null);
    assert_eq!(r.status, 404);
}

/// The conformance suite's config: the sidecar's own with a shorter lease,
/// since the suite waits out leases several times.
fn conformance_config(cluster: &Cluster, api: &KubeApiServer) -> std::path::PathBuf {
    let yaml = std::fs::read_to_string(k8s_config(cluster, api, "conformance", free_port(), ""))
        .unwrap()
        .replace(
            "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms",
            "timing: {lease: 1s, renew-deadline: 750ms, retry-period: 250ms",
        );
    cluster.write_config("conformance", &yaml)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_backend_passes_the_conformance_suite() {
    let api = server(&["conformance"]);
    let cluster = Cluster::new();
    assert_conformance(&conformance_config(&cluster, &api)).await;
}

/// The same backend built for contract 0.1, served through the host's
/// adapter for the old `ha:sidecar/kubernetes` interface.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kubernetes_backend_built_for_contract_0_1_passes_the_conformance_suite() {
    let api = server(&["conformance"]);
    let cluster = Cluster::new();
    let cfg = conformance_config(&cluster, &api);
    assert_conformance(&with_contract_0_1_build(&cfg)).await;
}

#[test]
fn one_leader_among_three_in_flinks_configmap() {
    let api = server(&["k1", "k2", "k3"]);
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &api);
    let leader = agreed_leader(&sidecars);
    let term = sidecars[leader].term();
    let cm = api
        .object(NAMESPACE, "configmaps", CONFIG_MAP)
        .expect("Flink's cluster ConfigMap");
    assert_eq!(
        cm["metadata"]["labels"]["configmap-type"],
        "high-availability"
    );
    let record = leader_record(&api);
    assert_eq!(record["leaderTransitions"].as_u64(), Some(term));
    let renew = record["renewTime"].as_str().unwrap();
    assert_eq!(
        renew.len(),
        27,
        "MicroTime with six fractional digits: {renew}"
    );
    let id = &sidecars[leader].id;
    let dispatcher = cm["data"]["org.apache.flink.k8s.leader.dispatcher"]
        .as_str()
        .expect("the dispatcher's leader key");
    let (uuid, address) = dispatcher.split_once(',').unwrap();
    // The leader session id the sidecar reports, which the Flink HA plugin
    // hands to Flink: a Flink component reading the ConfigMap fences with it.
    assert_eq!(Some(uuid), sidecars[leader].leader()["session"].as_str());
    assert_eq!(address, format!("http://{id}.example:8081"));
    // The record is renewed: it changes while the leader stays.
    let before = leader_record(&api)["renewTime"].clone();
    std::thread::sleep(3 * RETRY);
    assert_ne!(leader_record(&api)["renewTime"], before);
    assert_eq!(sidecars[leader].term(), term);
}

#[test]
fn kill_9_fails_over_after_the_lease_and_sigterm_within_a_retry_period() {
    let api = server(&["k1", "k2", "k3"]);
    let cluster = Cluster::new();
    // SIGTERM: the leader empties the holder and a watching standby takes
    // over; kill -9: nothing is released, a standby waits out a lease of silence.
    let Takeovers { graceful, crash } =
        sigterm_then_kill9(three(&cluster, &api), LEASE + Duration::from_secs(10));
    println!(
        "Kubernetes takeover: SIGTERM {graceful:?}, kill -9 {crash:?} (lease {LEASE:?}, retry {RETRY:?})"
    );
    assert!(
        graceful < Duration::from_secs(2),
        "graceful takeover took {graceful:?}"
    );
    // The standby counts the lease from the last renewal it saw, at most
    // one retry period before the kill.
    assert!(
        crash + RETRY >= LEASE,
        "took over {crash:?} after a kill -9, before a lease of silence"
    );
}

#[test]
fn a_leader_cut_off_from_the_api_server_steps_down_before_anyone_can_take_over() {
    let api = server(&["k1", "k2", "k3"]);
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &api);
    let leader = sole_leader(&sidecars, Duration::from_secs(20));
    let old_term = sidecars[leader].term();
    let old_holder = leader_record(&api)["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let id = sidecars[leader].id.clone();
    assert_eq!(
        sidecars[leader]
            .put(
                "jobs/j1/graph",
                b"v1",
                &[("x-ha-term", &old_term.to_string())]
            )
            .status,
        200
    );
    // Its requests get no answer from now on: a partition, as the leader sees it.
    let cut = Instant::now();
    api.cut_off(&id);
    wait_for(
        "the cut-off leader to step down",
        Duration::from_secs(10),
        || (!sidecars[leader].leads()).then_some(()),
    );
    let stepped_down = Instant::now();
    let others: Vec<&Sidecar> = sidecars
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, s)| s)
        .collect();
    wait_for("a new leader", LEASE + Duration::from_secs(10), || {
        others.iter().any(|s| s.leads()).then_some(())
    });
    // When the record changed hands, by the API server's own clock.
    let taken = api
        .history()
        .into_iter()
        .find(|c| {
            c.name == CONFIG_MAP
                && c.at > cut
                && holder_of(&c.object).is_some_and(|h| !h.is_empty() && h != old_holder)
        })
        .expect("the record changed hands")
        .at;
    println!(
        "cut off: the leader stepped down {:?} after the cut; another took over {:?} after it (renew deadline {RENEW_DEADLINE:?}, lease {LEASE:?})",
        stepped_down - cut,
        taken - cut
    );
    assert!(
        stepped_down < taken,
        "the old leader still called itself leader when another acquired the record"
    );
    assert!(
        sidecars[leader].log_text().contains("renew deadline"),
        "{}",
        sidecars[leader].log_text()
    );
    // Back on the network, the deposed leader's write under its old term is fenced off.
    api.restore(&id);
    let r = sidecars[leader].put(
        "jobs/j1/graph",
        b"stale",
        &[("x-ha-term", &old_term.to_string())],
    );
    assert_eq!(r.status, 409, "{}", r.text());
    let new = others.iter().find(|s| s.leads()).unwrap();
    assert_eq!(new.get("/state/jobs/j1/graph").unwrap().body, b"v1");
    wait_for(
        "the old leader to see the new one",
        Duration::from_secs(10),
        || (sidecars[leader].leader()["term"].as_u64() == Some(new.term())).then_some(()),
    );
}

#[test]
fn a_fenced_write_from_a_deposed_leader_is_rejected() {
    let api = server(&["k1", "k2", "k3"]);
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &api);
    let a = sole_leader(&sidecars, Duration::from_secs(20));
    let old = sidecars[a].term().to_string();
    assert_eq!(
        sidecars[a]
            .put("jobs/j1/graph", b"v1", &[("x-ha-term", &old)])
            .status,
        200
    );
    let resigned = request(
        sidecars[a].port,
        "POST",
        "/leader/resign?holdoff=60s",
        &[],
        b"",
    )
    .unwrap();
    assert_eq!(resigned.status, 200, "{}", resigned.text());
    let b = sole_leader(&sidecars, Duration::from_secs(10));
    assert_deposed_write_rejected(&sidecars, &sidecars[b], &old);
}

#[test]
fn kubernetes_settings_and_permissions_are_checked_with_clear_errors() {
    let api = KubeApiServer::start(&[("reader", Access::ReadOnly)], &[NAMESPACE]);
    let cluster = Cluster::new();
    // A request timeout that could outlast the renew deadline is refused.
    let cfg = k8s_config(
        &cluster,
        &api,
        "reader",
        free_port(),
        ", request-timeout: 2s",
    );
    let (code, out) = run_cli(&["validate", &cfg.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(
        out.contains("capabilities.kubernetes.request-timeout") && out.contains("renew-deadline"),
        "{out}"
    );
    // A kubeconfig that is not there.
    let yaml = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(", request-timeout: 2s", "")
        .replace("kubeconfig-reader", "kubeconfig-missing");
    let missing = cluster.write_config("missing", &yaml);
    let (code, out) = run_cli(&["validate", &missing.to_string_lossy()]);
    assert_ne!(code, 0);
    assert!(out.contains("capabilities.kubernetes.kubeconfig"), "{out}");
    // Without write permission the sidecar stops at start and says why.
    let port = free_port();
    let cfg = k8s_config(&cluster, &api, "reader", port, "");
    let mut s = Sidecar::spawn(
        "reader",
        port,
        &cfg,
        &cluster.path().join("reader.log"),
        &[],
    );
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(!status.success(), "{status}");
    let log = s.log_text();
    assert!(
        log.contains("Forbidden") && log.contains("rbac.yaml") && log.contains("refuses create"),
        "{log}"
    );
    assert!(!log.contains("became leader"), "{log}");
}

#[test]
fn a_write_past_the_configmap_size_limit_is_refused_and_changes_nothing() {
    let api = server(&["k1"]);
    let cluster = Cluster::new();
    let s = start(&cluster, &api, "k1");
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    let term = s.term().to_string();
    // Values at the default inline limit stay in the ConfigMap (base64: about 22 KB each).
    let value = vec![7u8; 16 << 10];
    let mut refused = None;
    for i in 0..80 {
        let r = s.put(&format!("big/{i}"), &value, &[("x-ha-term", &term)]);
        if r.status != 200 {
            refused = Some((i, r));
            break;
        }
    }
    let (i, r) = refused.expect("the ConfigMap filled up");
    assert_eq!(r.status, 400, "{}\n{}", r.text(), s.log_text());
    assert!(r.text().contains("1 MiB"), "{}", r.text());
    assert_eq!(s.get(&format!("/state/big/{i}")).unwrap().status, 404);
    assert_eq!(s.get("/state/big/0").unwrap().body, value);
    // Deleting makes room again; leadership carried on throughout.
    let r = request(
        s.port,
        "DELETE",
        "/state/big/0",
        &[("x-ha-term", &term)],
        b"",
    )
    .unwrap();
    assert_eq!(r.status, 204, "{}", r.text());
    assert_eq!(
        s.put(&format!("big/{i}"), &value, &[("x-ha-term", &term)])
            .status,
        200
    );
    assert_eq!(s.term().to_string(), term);
}

/// The Role, its namespace and the service account it is bound to, as
/// examples/kubernetes/rbac.yaml ships them.
struct ShippedRole {
    namespace: String,
    service_account: String,
    rules: Vec<Rule>,
}

fn shipped_role() -> ShippedRole {
    let text = std::fs::read_to_string(repo_root().join("examples/kubernetes/rbac.yaml"))
        .expect("read examples/kubernetes/rbac.yaml");
    let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("a YAML document"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("rbac.yaml has no {k}"))
    };
    let strings = |v: &serde_yaml::Value| -> Vec<String> {
        v.as_sequence()
            .map(|s| {
                s.iter()
                    .map(|x| x.as_str().expect("a string").to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let role = kind("Role");
    let binding = kind("RoleBinding");
    let subject = &binding["subjects"][0];
    assert_eq!(subject["kind"].as_str(), Some("ServiceAccount"));
    assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
    ShippedRole {
        namespace: role["metadata"]["namespace"].as_str().unwrap().into(),
        service_account: format!(
            "system:serviceaccount:{}:{}",
            subject["namespace"].as_str().unwrap(),
            subject["name"].as_str().unwrap()
        ),
        rules: role["rules"]
            .as_sequence()
            .expect("rules")
            .iter()
            .map(|r| Rule {
                api_groups: strings(&r["apiGroups"]),
                resources: strings(&r["resources"]),
                verbs: strings(&r["verbs"]),
                resource_names: strings(&r["resourceNames"]),
            })
            .collect(),
    }
}

impl ShippedRole {
    /// The cluster-id whose ConfigMap the Role names.
    fn cluster_id(&self) -> String {
        self.rules
            .iter()
            .flat_map(|r| &r.resource_names)
            .find_map(|n| n.strip_suffix("-cluster-config-map"))
            .expect("the Role names <cluster-id>-cluster-config-map")
            .to_string()
    }

    fn grants(&self) -> Vec<(&str, Rule)> {
        self.rules
            .iter()
            .map(|r| (self.namespace.as_str(), r.clone()))
            .collect()
    }

    /// The Role without `verb`.
    fn without(&self, verb: &str) -> Vec<(&str, Rule)> {
        self.grants()
            .into_iter()
            .map(|(ns, mut r)| {
                r.verbs.retain(|v| v != verb);
                (ns, r)
            })
            .filter(|(_, r)| !r.verbs.is_empty())
            .collect()
    }
}

/// A sidecar config with `token`'s kubeconfig in `namespace` and `cluster_id`.
fn rbac_config(
    cluster: &Cluster,
    api: &KubeApiServer,
    token: &str,
    namespace: &str,
    cluster_id: &str,
    port: u16,
) -> PathBuf {
    let kubeconfig = api.kubeconfig(cluster.path(), token, namespace);
    let yaml = SidecarYaml::new(token, port, "ha_plugin_kubernetes")
        .settings(&format!("cluster-id: {cluster_id}"))
        .capability(&format!(
            "kubernetes: {{kubeconfig: '{}'}}",
            kubeconfig.display()
        ))
        .build();
    cluster.write_config(token, &yaml)
}

/// Starts a sidecar that must stop by itself at start; returns its log.
fn refused_at_start(cluster: &Cluster, config: &Path, id: &str) -> String {
    let port = free_port();
    let log = cluster.path().join(format!("{id}.log"));
    let mut s = Sidecar::spawn(id, port, config, &log, &[]);
    let status = s.wait_exit(Duration::from_secs(30));
    assert!(
        !status.success(),
        "{id} should stop at start, exited {status}"
    );
    s.log_text()
}

#[test]
fn a_sidecar_refused_its_permissions_stops_at_start_with_the_api_servers_words() {
    let role = shipped_role();
    let ns = role.namespace.clone();
    let api = KubeApiServer::start(&[], &[&ns]);
    let cluster = Cluster::new();
    let cm = format!("{}-cluster-config-map", role.cluster_id());

    // No Role at all: the service account, named as the API server named it.
    api.grant("no-role", &role.service_account, &[]);
    let cfg = rbac_config(
        &cluster,
        &api,
        "no-role",
        &ns,
        &role.cluster_id(),
        free_port(),
    );
    let log = refused_at_start(&cluster, &cfg, "no-role");
    let (sa_ns, sa) = role
        .service_account
        .trim_start_matches("system:serviceaccount:")
        .split_once(':')
        .unwrap();
    for needle in [
        "permission refused".to_string(),
        format!("User \"{}\" cannot get resource", role.service_account),
        format!("service account \"{sa}\" of namespace \"{sa_ns}\""),
        "examples/kubernetes/rbac.yaml".to_string(),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in:\n{log}");
    }
    assert!(!log.contains("became leader"), "{log}");
    assert!(
        api.object(&ns, "configmaps", &cm).is_none(),
        "a refused sidecar created the ConfigMap"
    );

    // A user (not a service account) whose Role lacks watch: discovery
    // could never work, so it must not campaign either.
    api.grant("alice", "alice", &role.without("watch"));
    let cfg = rbac_config(
        &cluster,
        &api,
        "alice",
        &ns,
        &role.cluster_id(),
        free_port(),
    );
    let log = refused_at_start(&cluster, &cfg, "alice");
    for needle in [
        format!("refuses watch on configmap {cm}"),
        format!(
            "configmaps \"{cm}\" is forbidden: User \"alice\" cannot watch resource \"configmaps\" in API group \"\" in the namespace \"{ns}\""
        ),
        "The user \"alice\" needs get, create, update and watch".to_string(),
    ] {
        assert!(log.contains(&needle), "{needle:?} not in:\n{log}");
    }
    assert!(!log.contains("service account"), "{log}");
    assert!(!log.contains("became leader"), "{log}");
    assert!(api.object(&ns, "configmaps", &cm).is_none());

    // Without update, with the ConfigMap there: refused too, and it is unchanged.
    api.grant("full", &role.service_account, &role.grants());
    let port = free_port();
    let mut leader = Sidecar::start(
        "full",
        port,
        &rbac_config(&cluster, &api, "full", &ns, &role.cluster_id(), port),
        &cluster.path().join("full.log"),
    );
    wait_for("the leader", Duration::from_secs(20), || {
        leader.leads().then_some(())
    });
    leader.signal(libc::SIGTERM);
    leader.wait_exit(Duration::from_secs(10));
    let before = api.object(&ns, "configmaps", &cm).expect("the ConfigMap");
    api.grant("no-update", "bob", &role.without("update"));
    let cfg = rbac_config(
        &cluster,
        &api,
        "no-update",
        &ns,
        &role.cluster_id(),
        free_port(),
    );
    let log = refused_at_start(&cluster, &cfg, "no-update");
    assert!(
        log.contains(&format!("refuses update on configmap {cm}")),
        "{log}"
    );
    assert_eq!(api.object(&ns, "configmaps", &cm), Some(before));
}

#[test]
fn a_permission_refused_later_backs_off_and_turns_health_red_until_granted_again() {
    let role = shipped_role();
    let ns = role.namespace.clone();
    let api = KubeApiServer::start(&[], &[&ns]);
    let cluster = Cluster::new();
    api.grant("sa", &role.service_account, &role.grants());
    let port = free_port();
    let cfg = rbac_config(&cluster, &api, "sa", &ns, &role.cluster_id(), port);
    let s = Sidecar::start("sa", port, &cfg, &cluster.path().join("sa.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        s.leads().then_some(())
    });
    // Flink's lock identity is a dashed UUID.
    let holder = leader_record_in(&api, &ns, &role.cluster_id())["holderIdentity"]
        .as_str()
        .unwrap()
        .to_string();
    let groups: Vec<usize> = holder.split('-').map(str::len).collect();
    assert_eq!(groups, [8, 4, 4, 4, 12], "{holder}");
    assert!(holder.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert_eq!(s.get("/healthz").unwrap().status, 200);

    // The Role loses update: renewals are refused, the leader steps down,
    // and it retries ever more slowly while its health says why.
    api.grant("sa", &role.service_account, &role.without("update"));
    wait_for("/healthz to turn red", Duration::from_secs(10), || {
        let r = s.get("/healthz").ok()?;
        (r.status == 503).then_some(r)
    });
    let r = s.get("/healthz").unwrap();
    assert_eq!(r.json()["error"], "permission_refused", "{}", r.text());
    let message = r.json()["message"].as_str().unwrap_or_default().to_string();
    assert!(
        message.contains(&format!("User \"{}\" cannot update", role.service_account)),
        "{message}"
    );
    assert_eq!(s.get("/readyz").unwrap().status, 503);
    wait_for("the step-down", Duration::from_secs(5), || {
        (!s.leads()).then_some(())
    });
    let metrics = s.get("/metrics").unwrap().text();
    assert!(
        metrics.contains("ha_sidecar_backend_refused 1"),
        "{metrics}"
    );
    let counted = |log: &str| {
        log.matches("the backend refuses what campaigning needs")
            .count()
    };
    let before = counted(&s.log_text());
    std::thread::sleep(Duration::from_secs(6));
    let retries = counted(&s.log_text()) - before;
    // At the retry period (400 ms) that would be 15; backing off from it
    // (0.4, 0.8, 1.6, 3.2, 6.4 s) it is at most 4.
    assert!(
        (1..=4).contains(&retries),
        "{retries} campaign retries in 6 s while refused:\n{}",
        s.log_text()
    );
    assert!(!s.leads());

    // Granted again: it leads again at its next attempt, and is healthy.
    api.grant("sa", &role.service_account, &role.grants());
    wait_for("leadership again", Duration::from_secs(40), || {
        s.leads().then_some(())
    });
    assert_eq!(s.get("/healthz").unwrap().status, 200);
    let metrics = s.get("/metrics").unwrap().text();
    assert!(
        metrics.contains("ha_sidecar_backend_refused 0"),
        "{metrics}"
    );
}

fn leader_record_in(api: &KubeApiServer, ns: &str, cluster_id: &str) -> Value {
    let cm = api
        .object(
            ns,
            "configmaps",
            &format!("{cluster_id}-cluster-config-map"),
        )
        .expect("the ConfigMap exists");
    serde_json::from_str(
        cm["metadata"]["annotations"]["control-plane.alpha.kubernetes.io/leader"]
            .as_str()
            .expect("Flink's leader annotation"),
    )
    .expect("the annotation is JSON")
}

#[test]
fn plugin_check_passes_with_the_shipped_role_and_cleans_up_after_itself() {
    let role = shipped_role();
    let ns = role.namespace.clone();
    let api = KubeApiServer::start(&[], &[&ns]);
    let cluster = Cluster::new();
    api.grant("sa", &role.service_account, &role.grants());
    let cfg = rbac_config(&cluster, &api, "sa", &ns, &role.cluster_id(), free_port());
    let wasm = plugin("ha_plugin_kubernetes");
    let cm = format!("{}-cluster-config-map", role.cluster_id());
    for run in 1..=2 {
        let (code, out) = run_cli(&[
            "plugin",
            "check",
            &wasm.to_string_lossy(),
            "--config",
            &cfg.to_string_lossy(),
        ]);
        assert_eq!(code, 0, "run {run}:\n{out}");
        assert!(out.contains("11 checks, 11 passed, 0 failed"), "{out}");
        // Only the cluster's own ConfigMap was ever touched, and it is left
        // released and without keys.
        let names: std::collections::BTreeSet<String> =
            api.history().into_iter().map(|c| c.name).collect();
        assert_eq!(names, [cm.clone()].into(), "run {run}");
        let object = api.object(&ns, "configmaps", &cm).expect("the ConfigMap");
        let keys: Vec<&String> = object["data"]
            .as_object()
            .map(|d| d.keys().collect())
            .unwrap_or_default();
        assert!(keys.is_empty(), "run {run} left data behind: {keys:?}");
        assert_eq!(
            leader_record_in(&api, &ns, &role.cluster_id())["holderIdentity"],
            "",
            "run {run} left a leader behind"
        );
    }
    // A cluster that is in use is refused, and left alone.
    let port = free_port();
    let live_cfg = rbac_config(&cluster, &api, "sa", &ns, &role.cluster_id(), port);
    let live = Sidecar::start("live", port, &live_cfg, &cluster.path().join("live.log"));
    wait_for("leadership", Duration::from_secs(20), || {
        live.leads().then_some(())
    });
    let term = live.term();
    let (code, out) = run_cli(&[
        "plugin",
        "check",
        &wasm.to_string_lossy(),
        "--config",
        &cfg.to_string_lossy(),
    ]);
    assert_ne!(code, 0, "{out}");
    assert!(out.contains("is in use"), "{out}");
    assert!(live.leads());
    assert_eq!(live.term(), term);
}

#[test]
fn members_and_a_handover_to_a_chosen_standby() {
    let api = server(&["k1", "k2", "k3"]);
    let cluster = Cluster::new();
    let sidecars = three(&cluster, &api);
    support::roster::assert_members_and_targeted_handover(&sidecars, LEASE);
}
