//! The memory budget on one host (issue 17): every instance reserves its
//! type's declared limit; one that does not fit sheds idle actors, oldest
//! first, or is refused with `limit-exceeded`; past the high watermark
//! idle actors are shed down to the low one, busy ones kept. Across
//! hosts: new activations go where they fit.

use std::time::Duration;

use quark::runtime::memory::MemoryConfig;
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::{Value, json};

use crate::cli_process::stderr;
use crate::cluster_calls::Hosts;
use crate::support::*;

const MIB: u64 = 1 << 20;

/// A host with a memory budget of `budget_mib` and the misbehave actor
/// deployed with a 16 MiB limit and `turn_timeout`.
async fn budget_host(dir: &std::path::Path, budget_mib: u64, turn_timeout: &str) -> Node {
    let mut config = NodeConfig::new(dir);
    // Strict reservations; the RSS is this test process's, shared by every test's hosts.
    config.host.memory = MemoryConfig { budget: budget_mib * MIB, overcommit: None, shed_on_rss: false };
    let host = host_with_config(config).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("16MiB", turn_timeout)).await.unwrap();
    host
}

fn live(host: &Node) -> Vec<String> {
    host.host().actors().into_iter().map(|a| a.id).collect()
}

async fn put(host: &Node, actor: &str) {
    ask(host, actor, "put", json!({"key": "k", "value": 1})).await.unwrap();
    // Activations are ordered by their last message, on a coarse clock.
    tokio::time::sleep(Duration::from_millis(40)).await;
}

/// With overcommit, the first instance of a type reserves its declared
/// limit only until it exists: then it holds what every later instance
/// of the type reserves (twice the observed high water), not the limit
/// for as long as it lives. Before, one 16 MiB reservation stood for a
/// dozen counters, and the rebalancer balanced hosts by it.
#[tokio::test]
async fn the_first_instance_of_a_type_keeps_no_more_than_the_later_ones_reserve() {
    let dir = tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.memory = MemoryConfig { budget: 1024 * MIB, overcommit: Some(2.0), shed_on_rss: false };
    let host = host_with_config(config).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("16MiB", "2s")).await.unwrap();
    put(&host, "misbehave/first").await;
    let first = host.host().memory().reserved;
    put(&host, "misbehave/second").await;
    let both = host.host().memory().reserved;
    assert!(first < 16 * MIB, "the first instance gave back what it reserved past 2x its high water: {first} bytes");
    assert_eq!(both, 2 * first, "the first holds what the second reserves");
}

#[tokio::test]
async fn a_new_activation_sheds_the_oldest_idle_one_to_fit_and_is_refused_when_none_is_idle() {
    let dir = tempdir().unwrap();
    // 40 MiB: two 16 MiB activations fit (32 MiB, not past the 80% mark), a third does not.
    let host = budget_host(dir.path(), 40, "2s").await;
    put(&host, "misbehave/a").await;
    put(&host, "misbehave/b").await;
    assert_eq!(host.host().memory().reserved, 32 * MIB);
    put(&host, "misbehave/c").await;
    assert_eq!(live(&host), ["misbehave/b", "misbehave/c"], "a, the oldest idle, was shed to make room for c");
    let memory = host.host().memory();
    assert_eq!((memory.reserved, memory.budget), (32 * MIB, 40 * MIB));
    assert_eq!(memory.types.len(), 1);
    assert_eq!((memory.types[0].activations, memory.types[0].reserved), (2, 32 * MIB));
    assert!(memory.shed >= 1, "{memory:?}");

    // Both live actors busy (each spins until its 2 s turn limit): nothing idle to shed.
    let spins: Vec<_> = ["misbehave/b", "misbehave/c"]
        .into_iter()
        .map(|actor| {
            let host = host.clone();
            tokio::spawn(async move { ask(&host, actor, "spin", json!(null)).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let e = ask(&host, "misbehave/d", "dump", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
    assert!(e.message.contains("misbehave/d") && e.message.contains("memory budget of 40"), "the error names the actor and the budget: {e}");
    assert_eq!(host.host().memory().refused, 1);
    for spin in spins {
        assert_eq!(spin.await.unwrap().unwrap_err().kind, ErrorKind::Timeout);
    }
    // Room again: the shed actor comes back with its committed state, and d serves.
    assert_eq!(ask(&host, "misbehave/a", "dump", json!(null)).await.unwrap(), json!({"k": 1}));
    assert_eq!(ask(&host, "misbehave/d", "dump", json!(null)).await.unwrap(), json!({}));
    assert!(host.host().memory().reserved <= 40 * MIB);
}

// Multi-threaded: the busy actor's turn holds a core for its length.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_high_watermark_idle_actors_are_shed_oldest_first_and_busy_ones_kept() {
    let dir = tempdir().unwrap();
    // 100 MiB: six 16 MiB activations fit (96 MiB), past the 80 MiB mark;
    // shedding stops at 75 MiB, so two of the idle ones go.
    let host = budget_host(dir.path(), 100, "5s").await;
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { ask(&host, "misbehave/busy", "hold", json!({"ms": 3000})).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 1..=5 {
        put(&host, &format!("misbehave/m{i}")).await;
    }
    eventually("shedding under pressure", async || host.host().memory(), |m| m.reserved <= 75 * MIB).await;
    assert_eq!(live(&host), ["misbehave/busy", "misbehave/m3", "misbehave/m4", "misbehave/m5"], "the two oldest idle actors went; the busy one stayed");
    assert_eq!(host.host().memory().reserved, 64 * MIB);
    busy.await.unwrap().expect("the busy actor's turn ran to its end");
    assert_eq!(ask(&host, "misbehave/m1", "dump", json!(null)).await.unwrap(), json!({"k": 1}), "a shed actor keeps its state");
}

// ---- Across hosts: placement by free memory ----

/// `POST {url}/v1/actors/{actor}/{method}`: status and body (0 when the host did not answer).
async fn post(http: &reqwest::Client, url: &str, actor: &str, method: &str, body: Value) -> (u16, Value) {
    match http.post(format!("{url}/v1/actors/{actor}/{method}")).json(&body).send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.json().await.unwrap_or(Value::Null))
        }
        Err(e) => (0, json!(e.to_string())),
    }
}

/// Three hosts with 64 MiB budgets each and a type whose activations
/// reserve 16 MiB (its declared limit, `--memory-overcommit none`) and
/// grow to 6 MiB, placed on the calling host while they fit there. Eight
/// activations, twice the first host's budget, asked for at once through
/// it: the new activations go where they fit, so
/// every call succeeds and no host reserves past its budget; sixteen more
/// (past what the cluster holds) each succeed or are refused with
/// `limit-exceeded`, the hosts shed idle actors rather than die, and no
/// committed value is lost. Every host reports every host's memory.
fn activations_go_where_they_fit(store: &str) {
    // Placed on the calling host while it fits: the budget alone sends the rest elsewhere.
    let hosts = Hosts::start(store, 3, &["--memory-budget", "64MiB", "--memory-overcommit", "none", "--placement", "local"]);
    let path = root().join("target/test-actors/misbehave.wasm");
    let out = hosts.host(0).quark(&["deploy", "misbehave", path.to_str().unwrap(), "--memory-limit", "16MiB"]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = reqwest::Client::new();
    let url = hosts.urls[0].clone();
    let grow_and_put = |actors: std::ops::Range<usize>| {
        let calls = actors.map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let actor = format!("misbehave/m{i}");
                let grown = post(&http, &url, &actor, "alloc", json!({"mib": 6})).await;
                if grown.0 != 200 {
                    return (i, grown);
                }
                (i, post(&http, &url, &actor, "put", json!({"key": "k", "value": i})).await)
            }
        });
        runtime.block_on(futures::future::join_all(calls))
    };
    let first = grow_and_put(0..8);
    assert!(first.iter().all(|(_, (status, _))| *status == 200), "2x one host's budget fits on three: {first:?}\n{}", hosts.log(0));

    let more = grow_and_put(8..24);
    for (i, (status, body)) in &more {
        let refused = body["error"]["kind"] == "limit-exceeded";
        assert!(*status == 200 || refused, "m{i}: {status} {body}");
        if refused {
            assert!(body["error"]["message"].as_str().unwrap_or("").contains("memory budget of 64"), "m{i}: {body}");
        }
    }
    let served = more.iter().filter(|(_, (status, _))| *status == 200).count();
    eprintln!("past the cluster's budget: {served} of 16 more activations served, the rest refused limit-exceeded");

    // Every host sees every host's memory, within its budget, and all alive.
    std::thread::sleep(Duration::from_millis(700));
    for i in 0..3 {
        let view: Value = serde_json::from_str(&reqwest_get(&format!("{}/v1/cluster", hosts.urls[i]))).unwrap();
        let listed = view["hosts"].as_array().unwrap();
        assert_eq!(listed.len(), 3, "{view}");
        for h in listed {
            assert_eq!(h["state"], "active", "{view}");
            let m = &h["memory"];
            assert_eq!(m["budget"].as_u64(), Some(64 * MIB), "{view}");
            assert!(m["reserved"].as_u64().unwrap() <= 64 * MIB && m["used"].as_u64().unwrap() <= 64 * MIB, "{view}");
        }
        let holding = listed.iter().filter(|h| h["activations"].as_u64().unwrap_or(0) > 0).count();
        assert_eq!(holding, 3, "the activations spread over every host: {view}");
    }
    // Nothing committed was lost, shed or not.
    for i in (0..8).chain(more.iter().filter(|(_, (s, _))| *s == 200).map(|(i, _)| *i)) {
        let (status, body) = runtime.block_on(post(&http, &hosts.urls[i % 3], &format!("misbehave/m{i}"), "dump", Value::Null));
        if status == 200 {
            assert_eq!(body, json!({"k": i}), "m{i}");
        } else {
            assert_eq!(body["error"]["kind"], "limit-exceeded", "m{i}: {status} {body}");
        }
    }
}

fn reqwest_get(url: &str) -> String {
    crate::cli_process::reqwest::blocking_get(url).unwrap_or_else(|| panic!("GET {url} failed"))
}

#[tokio::test(flavor = "multi_thread")]
async fn activations_go_where_they_fit_on_postgres() {
    let Some(store) = shared_store_url("postgres", "activations_go_where_they_fit_on_postgres").await else { return };
    tokio::task::spawn_blocking(move || activations_go_where_they_fit(&store)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn activations_go_where_they_fit_on_redis() {
    let Some(store) = shared_store_url("redis", "activations_go_where_they_fit_on_redis").await else { return };
    tokio::task::spawn_blocking(move || activations_go_where_they_fit(&store)).await.unwrap();
}

#[test]
fn memory_placement_takes_the_most_free_memory_and_hosts_agree_on_ties() {
    use quark::cluster::placement::{Candidate, MemoryPlacement, Placement};
    let hosts = |free: &[(&'static str, u64)]| free.iter().map(|&(id, free)| Candidate { id, free }).collect::<Vec<_>>();
    let actor = id("counter/a");
    assert_eq!(MemoryPlacement.place(&actor, "a", &hosts(&[("a", 10), ("b", 30), ("c", 20)])), "b");
    let tied = hosts(&[("a", 5), ("b", 5)]);
    assert_eq!(MemoryPlacement.place(&actor, "a", &tied), MemoryPlacement.place(&actor, "b", &tied));
}

/// Two hosts with 64 MiB budgets; four misbehave actors on the first
/// (placed where they are called while they fit), each kept busy by three
/// callers napping in turns back to back, each grown to ~15 MiB: 60 MiB,
/// past the 80% watermark, with nothing idle to shed. The first host moves
/// busy actors to the second until it is back under the watermark, and
/// then stops; every call succeeds, and each actor's committed count of
/// naps equals the naps its callers were answered.
async fn a_host_past_its_watermark_with_nothing_idle_moves_busy_actors_to_a_host_with_room(store: &str) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use crate::cluster_calls::post;

    const ACTORS: usize = 4;
    const HIGH: u64 = 64 * MIB * 8 / 10;
    let hosts = tokio::task::block_in_place(|| {
        Hosts::start(store, 2, &["--memory-budget", "64MiB", "--memory-overcommit", "1", "--placement", "local"])
    });
    let path = root().join("target/test-actors/misbehave.wasm");
    let out = hosts.host(0).quark(&["deploy", "misbehave", path.to_str().unwrap(), "--memory-limit", "32MiB"]);
    assert!(out.status.success(), "deploy: {}", stderr(&out));
    let http = reqwest::Client::new();
    let url = hosts.urls[0].clone();
    for i in 0..ACTORS {
        let reply = post(&http, &url, &format!("misbehave/p{i}"), "nap", r#"{"ms":1}"#, None).await;
        assert_eq!(reply.as_ref().map(|r| r.0), Some(200), "p{i}: {reply:?}");
    }
    let cluster = |i: usize| {
        let (http, url) = (http.clone(), hosts.urls[i].clone());
        async move { http.get(format!("{url}/v1/cluster")).send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let me = |view: &Value, id: &str| view["hosts"].as_array().unwrap().iter().find(|h| h["id"] == id).cloned().unwrap();
    let first = cluster(0).await;
    assert_eq!(me(&first, "h0")["activations"], json!(ACTORS), "all placed on the calling host: {first}");

    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..ACTORS * 3)
        .map(|c| {
            let (http, url, stop) = (http.clone(), url.clone(), stop.clone());
            tokio::spawn(async move {
                let actor = format!("misbehave/p{}", c % ACTORS);
                if c < ACTORS {
                    let grown = post(&http, &url, &actor, "alloc", r#"{"mib":14}"#, None).await;
                    assert_eq!(grown.as_ref().map(|r| r.0), Some(200), "{actor}: {grown:?}");
                }
                let mut answered = 0u64;
                while !stop.load(Ordering::Acquire) {
                    match post(&http, &url, &actor, "nap", r#"{"ms":40}"#, None).await {
                        Some((200, _)) => answered += 1,
                        other => panic!("{actor}: a nap failed while the host was under pressure: {other:?}"),
                    }
                }
                (c % ACTORS, answered)
            })
        })
        .collect();

    let migrated = |text: String| {
        text.lines().find_map(|l| l.strip_prefix("quark_actor_migrations_total ")).and_then(|v| v.trim().parse::<f64>().ok()).unwrap_or(0.0)
    };
    let metrics = || {
        let (http, url) = (http.clone(), url.clone());
        async move { migrated(http.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap()) }
    };
    let relieved = eventually(
        "the first host moves busy actors until it is under its watermark",
        async || {
            let view = cluster(0).await;
            (me(&view, "h0")["memory"]["reserved"].as_u64().unwrap(), me(&view, "h1")["activations"].as_u64().unwrap(), metrics().await)
        },
        |&(reserved, elsewhere, moved)| reserved <= HIGH && elsewhere >= 1 && moved >= 1.0,
    )
    .await;
    // Stable: no more moves once it is under the watermark.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (moved, view) = (metrics().await, cluster(0).await);
    stop.store(true, Ordering::Release);
    let mut answered = [0u64; ACTORS];
    for caller in callers {
        let (actor, n) = caller.await.unwrap();
        answered[actor] += n;
    }
    eprintln!("relieved: {relieved:?}; after 3 s more: {moved} migrations, {view}");
    assert_eq!(moved, relieved.2, "no move once under the watermark: {view}\n{}", hosts.log(0));
    assert!(me(&view, "h0")["memory"]["reserved"].as_u64().unwrap() <= HIGH && me(&view, "h1")["memory"]["reserved"].as_u64().unwrap() <= HIGH, "{view}");
    for (i, answered) in answered.iter().enumerate() {
        let (status, body) = post(&http, &hosts.urls[1], &format!("misbehave/p{i}"), "dump", "null", None).await.unwrap();
        assert_eq!(status, 200, "p{i}: {body}");
        let naps = serde_json::from_str::<Value>(&body).unwrap()["naps"].as_u64().unwrap();
        assert_eq!(naps, answered + 1, "p{i}: every answered nap committed once (plus the first)");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_past_its_watermark_with_nothing_idle_moves_busy_actors_to_a_host_with_room_on_postgres() {
    let Some(store) = shared_store_url("postgres", "a_host_past_its_watermark_moves_busy_actors_on_postgres").await else { return };
    a_host_past_its_watermark_with_nothing_idle_moves_busy_actors_to_a_host_with_room(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_past_its_watermark_with_nothing_idle_moves_busy_actors_to_a_host_with_room_on_redis() {
    let Some(store) = shared_store_url("redis", "a_host_past_its_watermark_moves_busy_actors_on_redis").await else { return };
    a_host_past_its_watermark_with_nothing_idle_moves_busy_actors_to_a_host_with_room(&store).await;
}
