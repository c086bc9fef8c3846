//! Moving an actor between hosts (issue 17): `quark migrate` / `POST
//! /v1/cluster/migrations`. The actor's queued turns finish where it is,
//! the directory entry goes to the target under a new epoch, and the
//! requests that waited meanwhile run there: nothing lost, nothing run
//! twice, each caller's order kept.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

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
