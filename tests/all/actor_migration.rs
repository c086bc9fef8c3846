//! Moving an actor between hosts (issue 17): `quark migrate` / `POST
//! /v1/cluster/migrations`. The actor's queued turns finish where it is,
//! the directory entry goes to the target under a new epoch, and the
//! requests that waited meanwhile run there: nothing lost, nothing run
//! twice, each caller's order kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli_process::{Server, free_port};
use crate::cluster_calls::{Hosts, post};
use crate::support::*;

/// Which host runs `actor` now, by the hosts' lists of activations.
async fn active_on(http: &reqwest::Client, urls: &[String], actor: &str) -> Option<usize> {
    for (i, url) in urls.iter().enumerate() {
        let list: Value = http.get(format!("{url}/v1/actors")).send().await.ok()?.json().await.ok()?;
        if list["actors"].as_array()?.iter().any(|a| a["id"] == actor) {
            return Some(i);
        }
    }
    None
}

async fn migrate(http: &reqwest::Client, url: &str, actor: &str, to: &str) -> (u16, Value) {
    let reply = http.post(format!("{url}/v1/cluster/migrations")).json(&json!({"actor": actor, "to": to})).send().await.unwrap();
    (reply.status().as_u16(), reply.json().await.unwrap_or(Value::Null))
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms.get((ms.len() * 99 / 100).min(ms.len().saturating_sub(1))).copied().unwrap_or(0.0)
}

/// Four callers, one through each host and one more, increment one counter
/// back to back while it is moved 20 times around three hosts (each move
/// asked through the owner or through another host). Every increment
/// succeeds; the values each caller sees only grow; together they are
/// 1..=N with none twice; the final value is N.
async fn an_actor_moved_20_times_under_load_loses_and_doubles_nothing(store: &str) {
    const ACTOR: &str = "counter/moving";
    let cluster = tokio::task::block_in_place(|| Hosts::start(store, 3, &["--placement", "local"]));
    cluster.deploy(0, "counter", "samples/counter.wasm");
    let http = reqwest::Client::new();
    let urls = cluster.urls.clone();
    assert_eq!(post(&http, &urls[0], ACTOR, "increment", r#"{"by":1}"#, None).await.map(|r| r.0), Some(200));
    let mut owner = active_on(&http, &urls, ACTOR).await.expect("the counter is active somewhere");

    // The refusals, before the load: nothing changes.
    let (status, body) = migrate(&http, &urls[0], ACTOR, "nosuch").await;
    assert_eq!(status, 404, "an unknown host: {body}");
    let (status, body) = migrate(&http, &urls[1], "counter/never-called", "h0").await;
    assert_eq!(status, 404, "an actor no host serves: {body}");
    let (status, body) = migrate(&http, &urls[2], ACTOR, &format!("h{owner}")).await;
    assert_eq!(status, 400, "to where it is already: {body}");

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..4)
        .map(|c| {
            let (http, url, stop) = (http.clone(), urls[c % urls.len()].clone(), stop.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut latency_ms = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let started = Instant::now();
                    let reply = post(&http, &url, ACTOR, "increment", r#"{"by":1}"#, None).await;
                    latency_ms.push(started.elapsed().as_secs_f64() * 1e3);
                    match reply {
                        Some((200, body)) => seen.push(body.parse::<i64>().unwrap()),
                        other => panic!("caller {c}: an increment failed during the moves: {other:?}"),
                    }
                }
                (seen, latency_ms)
            })
        })
        .collect();
    let mut took_ms = Vec::new();
    for n in 0..20 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let to = (owner + 1) % 3;
        let through = if n % 2 == 0 { owner } else { (owner + 2) % 3 };
        let (status, moved) = migrate(&http, &urls[through], ACTOR, &format!("h{to}")).await;
        assert_eq!(status, 200, "move {n} from h{owner} to h{to} through h{through}: {moved}");
        assert_eq!((moved["from"].as_str(), moved["to"].as_str()), (Some(format!("h{owner}").as_str()), Some(format!("h{to}").as_str())), "{moved}");
        took_ms.push(moved["took_ms"].as_f64().unwrap());
        owner = to;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.store(true, Ordering::Release);
    let (mut all, mut latency_ms) = (Vec::new(), Vec::new());
    for (c, caller) in callers.into_iter().enumerate() {
        let (seen, latency) = caller.await.unwrap();
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "caller {c} saw its increments out of order: {seen:?}");
        all.extend(seen);
        latency_ms.extend(latency);
    }
    all.sort_unstable();
    let n = all.len() as i64;
    assert_eq!(all, (2..=n + 1).collect::<Vec<_>>(), "every acknowledged increment applied once");
    let value = post(&http, &urls[0], ACTOR, "get", "null", None).await.unwrap();
    assert_eq!(value, (200, (n + 1).to_string()), "the final value is every acknowledged increment");
    assert_eq!(active_on(&http, &urls, ACTOR).await, Some(owner), "it runs where it was moved last");
    let metrics = http.get(format!("{}/metrics", urls[0])).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("quark_actor_migrations_total"), "/metrics counts migrations");
    eprintln!(
        "20 moves under load: {n} increments, call p99 {:.1} ms (max {:.1}); a move took p50 {:.1} ms, max {:.1} ms",
        p99(latency_ms.clone()),
        latency_ms.iter().copied().fold(0.0, f64::max),
        { let mut t = took_ms.clone(); t.sort_by(f64::total_cmp); t[t.len() / 2] },
        took_ms.iter().copied().fold(0.0, f64::max)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_actor_moved_20_times_under_load_loses_and_doubles_nothing_on_postgres() {
    let Some(store) = shared_store_url("postgres", "an_actor_moved_20_times_under_load_loses_and_doubles_nothing_on_postgres").await else { return };
    an_actor_moved_20_times_under_load_loses_and_doubles_nothing(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_actor_moved_20_times_under_load_loses_and_doubles_nothing_on_redis() {
    let Some(store) = shared_store_url("redis", "an_actor_moved_20_times_under_load_loses_and_doubles_nothing_on_redis").await else { return };
    an_actor_moved_20_times_under_load_loses_and_doubles_nothing(&store).await;
}

/// The activations of `actor_type` on each host.
async fn activations_per_host(http: &reqwest::Client, urls: &[String], actor_type: &str) -> Vec<usize> {
    let mut counts = Vec::new();
    for url in urls {
        let list: Value = http.get(format!("{url}/v1/actors")).send().await.unwrap().json().await.unwrap();
        let prefix = format!("{actor_type}/");
        counts.push(list["actors"].as_array().unwrap().iter().filter(|a| a["id"].as_str().unwrap().starts_with(&prefix)).count());
    }
    counts
}

/// Migrations made by all the hosts so far, by their `/metrics`.
async fn migrations_total(http: &reqwest::Client, urls: &[String]) -> u64 {
    let mut total = 0;
    for url in urls {
        let text = http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
        total += text.lines().find_map(|l| l.strip_prefix("quark_actor_migrations_total ")).map_or(0, |v| v.trim().parse::<f64>().unwrap() as u64);
    }
    total
}

/// With `--rebalance`: 48 counters all activated on one host (placement
/// `local`, every first call through it) spread over the three hosts; a
/// fourth that joins receives its share; then, on the same steady load,
/// nothing moves any more. Every increment succeeds and counts once.
async fn the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops(store: &str) {
    const COUNTERS: usize = 48;
    let flags = ["--placement", "local", "--rebalance", "--rebalance-interval", "1s"];
    let mut cluster = tokio::task::block_in_place(|| Hosts::start(store, 3, &flags));
    // A small declared limit, so that the share is a few counters' worth
    // of memory even on a host whose first counter has not run yet.
    let counter = root().join("target/samples/counter.wasm");
    let out = cluster.host(0).quark(&["deploy", "counter", counter.to_str().unwrap(), "--memory-limit", "4MiB"]);
    assert!(out.status.success(), "deploy: {}", crate::cli_process::stderr(&out));
    let http = reqwest::Client::new();
    let names: Vec<String> = (0..COUNTERS).map(|i| format!("counter/r{i}")).collect();
    for name in &names {
        assert_eq!(post(&http, &cluster.urls[0], name, "increment", r#"{"by":1}"#, None).await.map(|r| r.0), Some(200));
    }
    // A steady load: every counter, round and round, through every host.
    let stop = Arc::new(AtomicBool::new(false));
    let urls = Arc::new(parking_lot::Mutex::new(cluster.urls.clone()));
    let load = {
        let (http, names, stop, urls) = (http.clone(), names.clone(), stop.clone(), urls.clone());
        tokio::spawn(async move {
            let mut acked = vec![1i64; names.len()];
            for round in 0usize.. {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                for (i, name) in names.iter().enumerate() {
                    let url = { let urls = urls.lock(); urls[(round + i) % urls.len()].clone() };
                    match post(&http, &url, name, "increment", r#"{"by":1}"#, None).await {
                        Some((200, body)) => {
                            acked[i] += 1;
                            assert_eq!(body.parse::<i64>().unwrap(), acked[i], "{name}: each increment once, in order");
                        }
                        other => panic!("{name}: an increment failed while the rebalancer moved actors: {other:?}"),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            acked
        })
    };
    let spread = eventually("the three hosts share the counters", async || activations_per_host(&http, &cluster.urls, "counter").await, |c| c.iter().all(|&n| n >= 12)).await;
    eprintln!("rebalanced over three hosts: {spread:?}");

    let dir = tempdir().unwrap();
    let args = [&["--store", store, "--host-id", "h3", "--lease", "2s", "--call-timeout", "5s"][..], &flags[..]].concat();
    let joined = Server::start_with(dir.path(), free_port(), &args);
    urls.lock().push(joined.url.clone());
    let all_urls = urls.lock().clone();
    let spread = eventually("the joining host receives its share", async || activations_per_host(&http, &all_urls, "counter").await, |c| c[3] >= 8).await;
    eprintln!("after a fourth host joined: {spread:?}");

    // Converged: a window of 8 periods in which no host moves anything.
    let mut settled = None;
    for _ in 0..6 {
        let before = migrations_total(&http, &all_urls).await;
        tokio::time::sleep(Duration::from_secs(8)).await;
        let after = migrations_total(&http, &all_urls).await;
        if after == before {
            settled = Some(after);
            break;
        }
        eprintln!("still moving: {} moves in 8 s", after - before);
    }
    let moves = settled.expect("the rebalancer stops moving once the load is even (no quiet 8 s window in 48 s)");
    let spread = activations_per_host(&http, &all_urls, "counter").await;
    let mut reserved = Vec::new();
    for url in &all_urls {
        let view: Value = http.get(format!("{url}/v1/cluster")).send().await.unwrap().json().await.unwrap();
        let this = view["hosts"].as_array().unwrap().iter().find(|h| h["id"] == view["this"]).unwrap().clone();
        reserved.push(this["memory"]["reserved"].as_u64().unwrap() >> 20);
        // (MiB, rounded down.)
    }
    eprintln!("converged at {spread:?} activations, {reserved:?} MiB reserved, after {moves} moves in all; then 0 moves in 8 s");
    // Even by memory, not by count: a host's first instance of a type
    // reserves the declared limit, later ones twice the observed high water.
    let mean = reserved.iter().sum::<u64>() as f64 / reserved.len() as f64;
    assert!(reserved.iter().all(|&r| r as f64 <= mean * 1.1 + 2.0), "every host within the band above its share ({mean:.0} MiB): {reserved:?}");
    stop.store(true, Ordering::Release);
    let acked = load.await.unwrap();
    for (name, acked) in names.iter().zip(acked) {
        let value = post(&http, &all_urls[0], name, "get", "null", None).await.unwrap();
        assert_eq!(value, (200, acked.to_string()), "{name}: every acknowledged increment");
    }
    cluster.hosts.push(Some(joined));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops_on_postgres() {
    let Some(store) = shared_store_url("postgres", "the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops_on_postgres").await else { return };
    the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops_on_redis() {
    let Some(store) = shared_store_url("redis", "the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops_on_redis").await else { return };
    the_rebalancer_spreads_activations_feeds_a_joining_host_then_stops(&store).await;
}

/// The rebalancer's plan: a host above its share by more than the band
/// gives to the host furthest below its share, no more than either gap;
/// within the band, nothing; shares follow the budgets.
#[test]
fn the_rebalancer_plans_within_its_band() {
    use quark::cluster::rebalance::{HostWeight, Plan, plan};
    let host = |id: &str, budget: u64, reserved: u64| HostWeight { id: id.into(), budget, reserved };
    let hosts = [host("a", 100, 60), host("b", 100, 30), host("c", 100, 0)];
    assert_eq!(plan(&hosts, "a", 1), Some(Plan { to: "c".into(), bytes: 30 }), "a's excess is 30, c's gap 30");
    assert_eq!(plan(&hosts, "b", 1), None, "b holds its share");
    assert_eq!(plan(&hosts, "c", 1), None, "c is below its share");
    let even = [host("a", 100, 31), host("b", 100, 30), host("c", 100, 29)];
    assert_eq!(plan(&even, "a", 1), None, "inside the 10% band");
    assert_eq!(plan(&[host("a", 100, 2), host("b", 100, 0)], "a", 2), None, "one activation apart never moves (no ping-pong)");
    let weighted = [host("big", 300, 40), host("small", 100, 40)];
    assert_eq!(plan(&weighted, "small", 1), Some(Plan { to: "big".into(), bytes: 20 }), "shares follow budgets: small's is 20");
    assert_eq!(plan(&weighted, "big", 1), None);
}
