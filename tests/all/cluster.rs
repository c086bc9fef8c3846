//! Hosts on one shared store as a cluster, with real `quark serve`
//! processes: membership (join, heartbeats, `quark cluster`), a killed host
//! declared dead, a stopped host leaving, a taken host id refused.
//! (Routing calls between hosts comes next; see issue 16.)

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::cli_process::{QUARK, Server, free_port, reqwest, stderr, stdout};
use crate::support::*;

/// Each host's state as `host` sees the cluster.
fn states(host: &Server) -> BTreeMap<String, String> {
    let Some(body) = reqwest::blocking_get(&format!("{}/v1/cluster", host.url)) else { return BTreeMap::new() };
    let view: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(view["mode"], "cluster", "{view}");
    view["hosts"].as_array().unwrap().iter().map(|h| (h["id"].as_str().unwrap().to_string(), h["state"].as_str().unwrap().to_string())).collect()
}

/// Polls `states(host)` until `want` holds; how long it took.
fn wait_for_states(host: &Server, within: Duration, want: impl Fn(&BTreeMap<String, String>) -> bool) -> Duration {
    let start = Instant::now();
    loop {
        let seen = states(host);
        if want(&seen) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "after {within:?}, {} sees {seen:?}", host.url);
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn three_hosts_join_die_and_leave(store: &str) {
    let dirs: Vec<_> = (0..3).map(|_| tempdir().unwrap()).collect();
    let mut hosts: Vec<Server> = dirs
        .iter()
        .enumerate()
        .map(|(i, dir)| Server::start_with(dir.path(), free_port(), &["--store", store, "--host-id", &format!("h{i}"), "--lease", "1s"]))
        .collect();
    let all_active = |s: &BTreeMap<String, String>| s.len() == 3 && s.values().all(|v| v == "active");
    for host in &hosts {
        wait_for_states(host, Duration::from_secs(10), all_active);
    }
    let listed = stdout(&hosts[1].quark(&["cluster"]));
    for id in ["h0", "h1 ", "h2"] {
        assert!(listed.contains(id), "{listed}");
    }
    assert!(listed.contains("(this host)") && listed.contains("3 host(s), cluster"), "{listed}");

    // Another process cannot take a live member's id.
    let dup_dir = tempdir().unwrap();
    let dup = Command::new(&*QUARK)
        .args(["serve", "--data-dir"])
        .arg(dup_dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--store", store, "--host-id", "h0"])
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("belongs to a live member"), "{}", stderr(&dup));

    // kill -9: declared dead once its lease (1 s) lapsed a lease ago.
    hosts.pop().unwrap().kill9();
    let took = wait_for_states(&hosts[0], Duration::from_secs(15), |s| s.get("h2").map(String::as_str) == Some("dead"));
    eprintln!("a killed host was declared dead {took:?} after kill -9 (lease 1 s)");
    assert_eq!(states(&hosts[1]).get("h1").map(String::as_str), Some("active"));

    // SIGTERM: the host leaves; its row goes at once.
    let leaving = hosts.pop().unwrap();
    let pid = leaving.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut leaving = leaving;
    let exited = (0..200).find_map(|_| {
        let status = leaving.child.try_wait().unwrap();
        if status.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        status
    });
    assert!(exited.is_some_and(|s| s.success()), "SIGTERM: {exited:?}");
    wait_for_states(&hosts[0], Duration::from_secs(2), |s| !s.contains_key("h1") && s.get("h0").map(String::as_str) == Some("active"));
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_on_postgres_join_die_and_leave() {
    let Some(store) = shared_store_url("postgres", "three_hosts_on_postgres_join_die_and_leave").await else { return };
    tokio::task::spawn_blocking(move || three_hosts_join_die_and_leave(&store)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn three_hosts_on_redis_join_die_and_leave() {
    let Some(store) = shared_store_url("redis", "three_hosts_on_redis_join_die_and_leave").await else { return };
    tokio::task::spawn_blocking(move || three_hosts_join_die_and_leave(&store)).await.unwrap();
}

/// A host on its own (SQLite) answers `GET /v1/cluster` with itself, and
/// refuses `--host-id`, which only means something in a cluster.
#[test]
fn a_single_host_lists_itself_and_refuses_a_host_id() {
    let dir = tempdir().unwrap();
    let host = Server::start(dir.path(), free_port());
    let view: Value = serde_json::from_str(&reqwest::blocking_get(&format!("{}/v1/cluster", host.url)).unwrap()).unwrap();
    assert_eq!((view["mode"].as_str(), view["hosts"].as_array().map(Vec::len)), (Some("single-host"), Some(1)), "{view}");
    assert_eq!(view["hosts"][0]["state"], "active");
    let other = tempdir().unwrap();
    let refused = Command::new(&*QUARK)
        .args(["serve", "--data-dir"])
        .arg(other.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port()), "--host-id", "h0"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(stderr(&refused).contains("single-host"), "{}", stderr(&refused));
}
