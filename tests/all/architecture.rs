//! The crates' dependency rules (issue 15, docs/architecture.md), checked
//! on the resolved dependency graph: the core stays free of any async
//! runtime, wasm engine or database, and the store of the wasm engine.

use std::collections::BTreeSet;
use std::sync::Arc;

use quark::runtime::router::{LocalRouter, Route, Router};
use quark::storage::Store;
use quark::storage::sqlite::SqliteStore;
use quark::{ActorError, Node, NodeConfig};
use serde_json::json;

use crate::support::{ask, component, eventually, id, manifest};

/// Every package `package` pulls in through normal (not dev or build)
/// dependencies, by name, as `cargo tree` resolves them for this machine.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--package", package, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let mut names: BTreeSet<String> = text.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect();
    names.remove(package);
    names
}

#[test]
fn the_crates_depend_one_way() {
    let core = normal_dependencies("quark-core");
    assert!(core.contains("serde"), "the graph was read: {core:?}");
    for banned in ["tokio", "wasmtime", "sqlx", "redis", "axum", "quark-store", "quark-runtime", "quark"] {
        assert!(!core.contains(banned), "quark-core must not depend on {banned}: {core:?}");
    }
    let store = normal_dependencies("quark-store");
    assert!(store.contains("quark-core") && store.contains("sqlx"), "{store:?}");
    for banned in ["wasmtime", "wasmtime-wasi", "axum", "quark-runtime", "quark"] {
        assert!(!store.contains(banned), "quark-store must not depend on {banned}: {store:?}");
    }
    // The runtime runs actors; serving HTTP, the CLI and talking to
    // outbox sinks belong to the server (`quark`).
    let runtime = normal_dependencies("quark-runtime");
    assert!(runtime.contains("quark-store") && runtime.contains("wasmtime"), "{runtime:?}");
    for banned in ["axum", "hyper-util", "clap", "reqwest", "async-nats", "quark"] {
        assert!(!runtime.contains(banned), "quark-runtime must not depend on {banned}: {runtime:?}");
    }
    // The cluster sits between the runtime and the server: it routes and
    // transports requests, and serves no HTTP and parses no command line.
    let cluster = normal_dependencies("quark-cluster");
    assert!(cluster.contains("quark-runtime") && cluster.contains("tokio-util"), "{cluster:?}");
    for banned in ["axum", "hyper", "clap", "reqwest", "async-nats", "quark"] {
        assert!(!cluster.contains(banned), "quark-cluster must not depend on {banned}: {cluster:?}");
    }
    let server = normal_dependencies("quark");
    assert!(server.contains("quark-cluster") && server.contains("axum"), "{server:?}");
}

/// A router that records every request it routes, and runs all here.
#[derive(Default)]
struct RecordingRouter {
    seen: parking_lot::Mutex<Vec<(String, String)>>,
}

impl RecordingRouter {
    fn saw(&self, target: &str, method: &str) -> bool {
        self.seen.lock().iter().any(|(t, m)| t == target && m == method)
    }
}

impl Router for RecordingRouter {
    fn route(&self, request: &quark::runtime::Request) -> Result<Route, ActorError> {
        self.seen.lock().push((request.target.to_string(), request.method.clone()));
        LocalRouter.route(request)
    }
}

/// The router is the one way to an actor: an outside ask and tell, a
/// guest's call, a job's turn and an outbox delivery all go through it
/// (the cluster's router will decide there which host runs them).
#[tokio::test]
async fn every_message_goes_through_the_router() {
    let dir = crate::support::tempdir().unwrap();
    let router = Arc::new(RecordingRouter::default());
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("quark.db")).await.unwrap());
    let host = Node::start_with_router(NodeConfig::new(dir.path()), store, router.clone()).await.unwrap();
    for name in ["pingpong", "worker", "courier"] {
        host.host().deploy(name, component(name), manifest()).await.unwrap();
    }
    ask(&host, "pingpong/a", "ping", json!({"peer": "pingpong/b", "depth": 1})).await.unwrap();
    host.host().tell(id("pingpong/t"), "pings", b"null".to_vec()).unwrap();
    ask(&host, "worker/x", "schedule", json!({"target": "worker/b", "method": "work"})).await.unwrap();
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": 1})).await.unwrap();
    eventually("the job and the outbox message are delivered", async || (router.saw("worker/b", "work"), router.saw("courier/b", "receive")), |seen| *seen == (true, true)).await;
    for (target, method) in [("pingpong/a", "ping"), ("pingpong/b", "ping"), ("pingpong/t", "pings"), ("worker/x", "schedule")] {
        assert!(router.saw(target, method), "{target} {method} went around the router: {:?}", router.seen.lock());
    }
}
