//! Hot swap: new versions take over between turns with the same state;
//! versions are listed and rolled back.

use std::time::{Duration, Instant};

use quark::ErrorKind;
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn versions_rollback_and_restart_keep_the_active_version() {
    let dir = crate::support::tempdir().unwrap();
    {
        let host = host_with(dir.path(), &[("counter", "counter")]).await;
        assert_eq!(ask(&host, "counter/v", "increment", json!({"by": 5})).await.unwrap(), json!(5));
        assert_eq!(ask(&host, "counter/v", "version", json!(null)).await.unwrap_err().kind, ErrorKind::NotFound);

        let v2 = host.host().deploy("counter", component("counter-v2"), manifest()).await.unwrap();
        assert!(v2.created);
        assert_eq!(v2.version.version, 2);
        assert_eq!(ask(&host, "counter/v", "version", json!(null)).await.unwrap(), json!(2));
        assert_eq!(ask(&host, "counter/v", "get", json!(null)).await.unwrap(), json!(5), "same state on the new code");

        // Deploying the same bytes again is a no-op.
        let again = host.host().deploy("counter", component("counter-v2"), manifest()).await.unwrap();
        assert!(!again.created);
        assert_eq!(again.version.version, 2);

        let (versions, active) = host.host().versions("counter").await.unwrap();
        assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(active, 2);

        assert_eq!(host.host().rollback("counter").await.unwrap().version, 1);
        assert_eq!(ask(&host, "counter/v", "version", json!(null)).await.unwrap_err().kind, ErrorKind::NotFound);
        assert_eq!(ask(&host, "counter/v", "increment", json!({"by": 1})).await.unwrap(), json!(6));
        let e = host.host().rollback("counter").await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::Rejected);
        assert!(e.message.contains("first version"), "{e}");

        host.host().deploy("counter", component("counter-v2"), manifest()).await.unwrap();
    }
    // After a restart the host runs the version that was active, loaded
    // from the on-disk compiled cache rather than recompiled.
    let host = sqlite_host(dir.path()).await;
    let metrics = host.metrics_text();
    assert!(metrics.contains("quark_component_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("quark_component_compiles_total 0"), "{metrics}");
    assert_eq!(ask(&host, "counter/v", "version", json!(null)).await.unwrap(), json!(2));
    assert_eq!(ask(&host, "counter/v", "get", json!(null)).await.unwrap(), json!(6));
}

#[tokio::test]
async fn swap_under_load_loses_and_duplicates_nothing() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter")]).await;
    const CLIENTS: usize = 8;
    const CALLS: i64 = 150;
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let host = host.clone();
        clients.push(tokio::spawn(async move {
            let actor = format!("counter/load-{}", c % 4); // two clients per actor
            let mut seen = Vec::new();
            let mut longest = Duration::ZERO;
            for _ in 0..CALLS {
                let started = Instant::now();
                let v = ask(&host, &actor, "increment", json!({"by": 1})).await.unwrap();
                longest = longest.max(started.elapsed());
                seen.push(v.as_i64().unwrap());
            }
            (actor, seen, longest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    host.host().deploy("counter", component("counter-v2"), manifest()).await.unwrap();

    let mut per_actor: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let mut longest = Duration::ZERO;
    for c in clients {
        let (actor, seen, l) = c.await.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "each client sees its own increments in order");
        per_actor.entry(actor).or_default().extend(seen);
        longest = longest.max(l);
    }
    for (actor, mut values) in per_actor {
        values.sort();
        let expected: Vec<i64> = (1..=2 * CALLS).collect();
        assert_eq!(values, expected, "{actor}: every increment applied exactly once");
        assert_eq!(ask(&host, &actor, "get", json!(null)).await.unwrap(), json!(2 * CALLS));
        assert_eq!(ask(&host, &actor, "version", json!(null)).await.unwrap(), json!(2));
    }
    eprintln!("hot swap under load: longest call {longest:?}");
}

/// Deployed versions do not pile up: in memory a type keeps its active
/// version, the newest few and any in use; on disk, compiled files no
/// version uses are pruned once unused for an hour. An evicted version
/// still rolls back (loaded again on demand).
#[tokio::test]
async fn old_versions_are_evicted_from_memory_and_disk() {
    use quark::NodeConfig;
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_config(NodeConfig::new(dir.path())).await;
    for mib in 16..24 {
        host.host().deploy("counter", component("counter"), manifest_with(&format!("{mib}MiB"), "5s")).await.unwrap();
        ask(&host, "counter/v", "increment", json!({"by": 1})).await.unwrap();
    }
    let loaded = host.host().loaded_versions("counter");
    assert!(loaded.len() <= quark::runtime::registry::KEEP_LOADED_VERSIONS + 1 && loaded.contains(&8), "{loaded:?}");
    assert!(!loaded.contains(&1), "{loaded:?}");
    for _ in 0..7 {
        host.host().rollback("counter").await.unwrap();
    }
    assert_eq!(host.host().active_version("counter").unwrap().version, 1, "rolled back to an evicted version");
    assert_eq!(ask(&host, "counter/v", "get", json!(null)).await.unwrap(), json!(8));

    // A compiled file no version uses, last used two hours ago, goes at the next deploy.
    let compiled = dir.path().join("compiled");
    let stale = compiled.join("0000000000000000000000000000000000000000000000000000000000000000-0000000000000000.cwasm");
    std::fs::write(&stale, b"old").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(two_hours_ago).unwrap();
    let fresh = compiled.join("1111111111111111111111111111111111111111111111111111111111111111-0000000000000000.cwasm");
    std::fs::write(&fresh, b"recent").unwrap();
    host.host().deploy("counter", component("counter-v2"), manifest()).await.unwrap();
    eventually("the stale file pruned", async || stale.exists(), |exists| !exists).await;
    assert!(fresh.exists(), "a recently used file stays (another host may use it)");
    assert!(std::fs::read_dir(&compiled).unwrap().count() >= 2, "the versions in use keep theirs");
}
