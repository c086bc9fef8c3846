//! One set of assertions, run against every storage backend.

use std::sync::Arc;

use quark_host::storage::sqlite::SqliteStore;
use quark_host::storage::{StateWrite, Store, TurnCommit};
use quark_host::{Host, HostConfig};
use serde_json::json;

use crate::support::*;

fn write(key: &str, value: Option<&str>) -> StateWrite {
    StateWrite { key: key.into(), value: value.map(|v| v.as_bytes().to_vec()) }
}

async fn commit_and_load(store: Arc<dyn Store>) {
    let (a, b) = (id("t/a"), id("t/b"));
    assert!(store.load_state(&a).await.unwrap().is_empty());
    let batch = vec![
        TurnCommit { actor: a.clone(), state: vec![write("x", Some("1")), write("y", Some("2"))] },
        TurnCommit { actor: b.clone(), state: vec![write("x", Some("b"))] },
        // A later turn in the same batch: last write wins, deletes apply.
        TurnCommit { actor: a.clone(), state: vec![write("x", Some("3")), write("y", None), write("z", Some("4"))] },
    ];
    store.commit(&batch).await.unwrap();
    let state = store.load_state(&a).await.unwrap();
    assert_eq!(state, vec![("x".into(), b"3".to_vec()), ("z".into(), b"4".to_vec())]);
    assert_eq!(store.load_state(&b).await.unwrap(), vec![("x".into(), b"b".to_vec())]);
    // Binary values and many rows in one batch.
    let many: Vec<TurnCommit> = (0..1500)
        .map(|i| TurnCommit {
            actor: id(&format!("t/m{i}")),
            state: vec![StateWrite { key: "v".into(), value: Some(vec![0, 255, (i % 256) as u8]) }],
        })
        .collect();
    store.commit(&many).await.unwrap();
    assert_eq!(store.load_state(&id("t/m1499")).await.unwrap(), vec![("v".into(), vec![0, 255, (1499 % 256) as u8])]);
    store.commit(&[TurnCommit { actor: a.clone(), state: vec![write("x", None), write("z", None)] }]).await.unwrap();
    assert!(store.load_state(&a).await.unwrap().is_empty());
}

async fn component_versions(store: Arc<dyn Store>) {
    let m = manifest();
    assert!(store.active_versions().await.unwrap().is_empty());
    let v1 = store.add_component_version("svc", "h1", b"one", &m).await.unwrap();
    let v2 = store.add_component_version("svc", "h2", b"two", &manifest_with("16MiB", "2s")).await.unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    let listed = store.component_versions("svc").await.unwrap();
    assert_eq!(listed, vec![v1.clone(), v2.clone()]);
    assert_eq!(store.active_versions().await.unwrap(), vec![v2.clone()]);
    assert_eq!(store.component_bytes("svc", 1).await.unwrap().as_deref(), Some(&b"one"[..]));
    assert_eq!(store.component_bytes("svc", 3).await.unwrap(), None);
    store.set_active_version("svc", 1).await.unwrap();
    assert_eq!(store.active_versions().await.unwrap(), vec![v1]);
    // The same bytes under a new version share one blob.
    let v3 = store.add_component_version("svc", "h1", b"one", &m).await.unwrap();
    assert_eq!(v3.version, 3);
    assert!(store.component_versions("other").await.unwrap().is_empty());
}

async fn host_turns_commit_and_reload(store: Arc<dyn Store>) {
    let dir = tempfile::tempdir().unwrap();
    let host = Host::start(HostConfig::new(dir.path()), store.clone()).await.unwrap();
    host.deploy("counter", component("counter"), manifest()).await.unwrap();
    let names: Vec<String> = (0..50).map(|i| format!("counter/c{}", i % 10)).collect();
    let calls = names.iter().map(|name| ask(&host, name, "increment", json!({"by": 1})));
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    drop(host);
    // A second host on the same store: deployed component and state are there.
    let host = Host::start(HostConfig::new(dir.path()), store).await.unwrap();
    for i in 0..10 {
        assert_eq!(ask(&host, &format!("counter/c{i}"), "get", json!(null)).await.unwrap(), json!(5));
    }
}

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $case() {
                    let dir = tempfile::tempdir().unwrap();
                    let store = super::SqliteStore::open(&dir.path().join("quark.db")).await.unwrap();
                    super::$case(super::Arc::new(store)).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $case() {
                    let Some(store) = crate::support::postgres_store(concat!("postgres::", stringify!($case))).await else { return };
                    super::$case(super::Arc::new(store)).await;
                }
            )*
        }
    };
}

conformance!(commit_and_load, component_versions, host_turns_commit_and_reload);
