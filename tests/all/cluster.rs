//! Hosts on one shared store as a cluster, with real `quark serve`
//! processes: membership (join, heartbeats, `quark cluster`), a killed host
//! declared dead, a stopped host leaving, a taken host id refused, and one
//! owner per actor through a pause and a kill. (Calls across hosts under
//! load: `cluster_calls`.)

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
pub(crate) fn wait_for_states(host: &Server, within: Duration, want: impl Fn(&BTreeMap<String, String>) -> bool) -> Duration {
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
        .map(|(i, dir)| Server::start_with(dir.path(), free_port(), &["--store", store, "--host-id", &format!("h{i}"), "--lease", "2s"]))
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

    // kill -9: declared dead once its lease (2 s) lapsed a lease ago.
    hosts.pop().unwrap().kill9();
    let took = wait_for_states(&hosts[0], Duration::from_secs(15), |s| s.get("h2").map(String::as_str) == Some("dead"));
    eprintln!("a killed host was declared dead {took:?} after kill -9 (lease 2 s)");
    wait_for_states(&hosts[1], Duration::from_secs(5), |s| s.get("h1").map(String::as_str) == Some("active"));

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

/// `quark call` through `host`: (succeeded, stdout, stderr).
fn call(host: &Server, actor: &str, method: &str, body: &str) -> (bool, String, String) {
    let out = host.quark(&["call", actor, method, body]);
    (out.status.success(), stdout(&out).trim().to_string(), stderr(&out))
}

fn signal(host: &Server, sig: &str) {
    assert!(Command::new("kill").args([sig, &host.child.id().to_string()]).status().unwrap().success());
}

/// One actor, two hosts: the host that activated it first serves it and
/// the other forwards its calls there; a paused owner (SIGSTOP past its
/// lease) loses the actor to the other host, which goes on from the
/// committed state; resumed, the paused host never answers from its stale
/// copy (its calls reach the new owner); and after kill -9 of the new
/// owner the first host takes it back, with every acknowledged increment
/// there once.
fn one_owner_across_pause_and_kill(store: &str) {
    let dirs: Vec<_> = (0..2).map(|_| tempdir().unwrap()).collect();
    // A 2 s lease: heartbeats every 200 ms keep it through the load of the
    // other tests running beside this one. A 1 s call timeout: a call
    // forwarded to the paused host gives up quickly.
    let start = |i: usize| {
        Server::start_with(dirs[i].path(), free_port(), &["--store", store, "--host-id", &format!("h{i}"), "--lease", "2s", "--call-timeout", "1s", "--placement", "local"])
    };
    let h0 = start(0);
    let counter = root().join("target/samples/counter.wasm");
    let out = h0.quark(&["deploy", "counter", counter.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let h1 = start(1);
    wait_for_states(&h0, Duration::from_secs(10), |s| s.len() == 2 && s.values().all(|v| v == "active"));

    assert_eq!(call(&h0, "counter/a", "increment", r#"{"by": 1}"#).1, "1");
    // Through h1, the call reaches the owner h0.
    assert_eq!(call(&h1, "counter/a", "increment", r#"{"by": 1}"#).1, "2");

    // h0 pauses past its lease: h1 takes the actor and goes on from 2.
    // (Until the lease lapses h1's forwarded calls fail: h0 answers nothing.)
    signal(&h0, "-STOP");
    let paused = Instant::now();
    let mut failed = 0;
    let value = loop {
        let (ok, value, err) = call(&h1, "counter/a", "increment", r#"{"by": 1}"#);
        if ok {
            break value;
        }
        failed += 1;
        assert!(paused.elapsed() < Duration::from_secs(15), "h1 did not take the actor: {err}");
        std::thread::sleep(Duration::from_millis(200));
    };
    // Not at once: while the paused owner's lease held, h1 ran nothing.
    assert!(failed > 0, "h1 took the actor while its owner's lease still held");
    // A call that timed out may still have committed on h0 before the
    // pause, never after it: h0's commits are fenced once h1 claimed.
    let value: i64 = value.parse().unwrap();
    assert!(value == 3, "h1 went on from {} instead of 2", value - 1);
    signal(&h0, "-CONT");
    // Resumed, h0 never answers from its stale copy (2): its calls fail
    // until it sees it lost the actor, then reach h1.
    let resumed = Instant::now();
    loop {
        let (ok, value, err) = call(&h0, "counter/a", "get", "null");
        if ok {
            assert_eq!(value, "3", "h0 answered from a stale copy");
            break;
        }
        assert!(resumed.elapsed() < Duration::from_secs(15), "h0 never reached the new owner: {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call(&h0, "counter/a", "increment", r#"{"by": 1}"#).1, "4");
    assert_eq!(call(&h1, "counter/a", "get", "null").1, "4");

    // h1 is killed: h0 takes the actor back.
    h1.kill9();
    let started = Instant::now();
    let value = loop {
        let (ok, value, err) = call(&h0, "counter/a", "get", "null");
        if ok {
            break value;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "h0 did not take the actor back: {err}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("the actor served again {:?} after kill -9 of its owner (lease 2 s)", started.elapsed());
    assert_eq!(value, "4", "every acknowledged increment, once");
    assert_eq!(call(&h0, "counter/a", "increment", r#"{"by": 1}"#).1, "5");
}

#[tokio::test(flavor = "multi_thread")]
async fn one_owner_across_pause_and_kill_on_postgres() {
    let Some(store) = shared_store_url("postgres", "one_owner_across_pause_and_kill_on_postgres").await else { return };
    tokio::task::spawn_blocking(move || one_owner_across_pause_and_kill(&store)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn one_owner_across_pause_and_kill_on_redis() {
    let Some(store) = shared_store_url("redis", "one_owner_across_pause_and_kill_on_redis").await else { return };
    tokio::task::spawn_blocking(move || one_owner_across_pause_and_kill(&store)).await.unwrap();
}

/// A host cut off from the store (its store connections fall silent, as
/// across a partition, through a TCP relay) stops serving its actors
/// before another host takes them: no answer through the cut-off host is
/// staler than a write the new owner acknowledged before it was asked.
/// Healed, it joins again and its calls reach the new owner.
fn cut_off_host_stops_serving_first(store: &str, relay: &Relay) {
    let dirs: Vec<_> = (0..2).map(|_| tempdir().unwrap()).collect();
    let start = |i: usize, store: &str| {
        Server::start_with(dirs[i].path(), free_port(), &["--store", store, "--host-id", &format!("h{i}"), "--lease", "2s", "--call-timeout", "1s", "--placement", "local"])
    };
    let h0 = start(0, &relay.url(store));
    let h1 = start(1, store);
    wait_for_states(&h0, Duration::from_secs(10), |s| s.len() == 2 && s.values().all(|v| v == "active"));
    let counter = root().join("target/samples/counter.wasm");
    let out = h1.quark(&["deploy", "counter", counter.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    // h0 serves the deploy within a second; counter/a lives on h0.
    let deployed = Instant::now();
    let first = loop {
        let (ok, value, err) = call(&h0, "counter/a", "increment", r#"{"by": 1}"#);
        if ok {
            break value;
        }
        assert!(deployed.elapsed() < Duration::from_secs(5), "h0 never served the deploy: {err}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(first, "1");
    assert_eq!(call(&h1, "counter/a", "increment", r#"{"by": 1}"#).1, "2");

    relay.partition();
    let cut = Instant::now();
    // Reads through h0 while h1 takes the actor: (invoked, completed, answer).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (url, stop) = (h0.url.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let invoked = Instant::now();
                let answer = reqwest::blocking_post(&format!("{url}/v1/actors/counter/a/get"), "null");
                seen.push((invoked, Instant::now(), answer));
                std::thread::sleep(Duration::from_millis(20));
            }
            seen
        })
    };
    let taken = loop {
        let (ok, value, err) = call(&h1, "counter/a", "increment", r#"{"by": 1}"#);
        if ok {
            assert_eq!(value, "3", "h1 went on from the committed state");
            break Instant::now();
        }
        assert!(cut.elapsed() < Duration::from_secs(15), "h1 did not take the actor: {err}");
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("a host cut off from the store lost its actor to another {:?} after the cut (lease 2 s)", taken - cut);
    std::thread::sleep(Duration::from_millis(1000));
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = reader.join().unwrap();
    let refused = seen.iter().filter(|(_, _, answer)| !matches!(answer, Some((200, _)))).count();
    assert!(refused > 0, "the cut-off host went on serving: {seen:?}");
    for (invoked, completed, answer) in &seen {
        if let Some((200, value)) = answer {
            // An answer of 2 is h0 serving as owner: only before h1's write of 3 completed.
            assert!(value != "2" || *invoked < taken, "a stale read through the cut-off host, invoked {:?} after the new owner's write", *invoked - taken);
            assert!(["2", "3"].contains(&value.as_str()), "{value}");
        } else {
            assert!(*completed > cut, "h0 refused before the cut: {answer:?}");
        }
    }
    let stale = seen.iter().filter(|(_, _, a)| matches!(a, Some((200, v)) if v == "2")).count();
    eprintln!("through the cut-off host: {stale} answers as owner, then {refused} refusals");

    // h1 declares h0 dead; healed, h0 joins again and reaches h1.
    wait_for_states(&h1, Duration::from_secs(10), |s| s.get("h0").map(String::as_str) == Some("dead"));
    relay.restore();
    let healed = Instant::now();
    loop {
        let (ok, value, err) = call(&h0, "counter/a", "get", "null");
        if ok {
            assert_eq!(value, "3", "h0 answered from a stale copy");
            break;
        }
        assert!(healed.elapsed() < Duration::from_secs(15), "h0 never came back: {err}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(call(&h0, "counter/a", "increment", r#"{"by": 1}"#).1, "4");
    wait_for_states(&h1, Duration::from_secs(10), |s| s.get("h0").map(String::as_str) == Some("active"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_from_postgres_stops_serving_first() {
    let Some(store) = shared_store_url("postgres", "a_host_cut_off_from_postgres_stops_serving_first").await else { return };
    let relay = std::sync::Arc::new(Relay::start("127.0.0.1:5432").await);
    tokio::task::spawn_blocking(move || cut_off_host_stops_serving_first(&store, &relay)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_cut_off_from_redis_stops_serving_first() {
    let Some(store) = shared_store_url("redis", "a_host_cut_off_from_redis_stops_serving_first").await else { return };
    let relay = std::sync::Arc::new(Relay::start("127.0.0.1:6379").await);
    tokio::task::spawn_blocking(move || cut_off_host_stops_serving_first(&store, &relay)).await.unwrap();
}
