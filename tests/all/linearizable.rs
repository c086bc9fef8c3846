//! Jepsen-style: concurrent clients read, write and compare-and-set
//! register actors through random hosts of a three-host cluster while a
//! nemesis kills one host (kill -9, then a new host joins), pauses another
//! past its lease (SIGSTOP/SIGCONT) and cuts a third off from the store
//! (a TCP relay). Every invocation and completion is recorded with its
//! time; each register's history is checked for linearizability by
//! stateright's `LinearizabilityTester` (registers are independent, and
//! linearizability is local, so checking each alone checks them all).
//!
//! Outcomes: a 200 is a return; a refused connection or an answer that
//! says nothing ran (4xx, 503 `unavailable`) is a failure, left out of the
//! history; anything else (a timeout, `unknown-outcome`, a dropped
//! connection) is unknown: the operation stays in flight for ever (it may
//! or may not have happened) and its client goes on as a new process.
//!
//! Bounded for `make test` (about 16 s of load); `QUARK_JEPSEN_SECONDS=N`
//! runs longer and prints its figures for BENCHMARKS.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{Value, json};
use stateright::semantics::{ConsistencyTester, LinearizabilityTester, SequentialSpec};

use crate::cli_process::{Server, free_port, stderr};
use crate::cluster::wait_for_states;
use crate::support::*;

/// The register actors the clients share.
const REGISTERS: usize = 8;
/// Concurrent clients.
const CLIENTS: usize = 4;

/// What the register actor promises, sequentially.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct CasRegister(Option<i64>);

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Op {
    Read,
    Write(i64),
    Cas(Option<i64>, i64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Ret {
    Read(Option<i64>),
    Write,
    Cas(bool),
}

impl SequentialSpec for CasRegister {
    type Op = Op;
    type Ret = Ret;
    fn invoke(&mut self, op: &Op) -> Ret {
        match *op {
            Op::Read => Ret::Read(self.0),
            Op::Write(v) => {
                self.0 = Some(v);
                Ret::Write
            }
            Op::Cas(from, to) if self.0 == from => {
                self.0 = Some(to);
                Ret::Cas(true)
            }
            Op::Cas(..) => Ret::Cas(false),
        }
    }
}

#[derive(Debug, Clone)]
enum Outcome {
    Returned(Ret),
    /// Nothing ran: the HTTP status, 0 for a refused connection.
    Failed(u16),
    Unknown,
}

/// One operation as a client saw it.
#[derive(Debug, Clone)]
struct Entry {
    process: u32,
    register: usize,
    op: Op,
    invoked: Instant,
    completed: Instant,
    outcome: Outcome,
}

/// One call of `op` on register `r` through `url`.
async fn perform(http: &reqwest::Client, url: &str, r: usize, op: &Op) -> Outcome {
    let (method, body) = match op {
        Op::Read => ("read", json!(null)),
        Op::Write(v) => ("write", json!({ "value": v })),
        Op::Cas(from, to) => ("cas", json!({ "from": from, "to": to })),
    };
    let sent = http.post(format!("{url}/v1/actors/register/r{r}/{method}")).json(&body).send().await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Outcome::Failed(0),
        Err(_) => return Outcome::Unknown,
    };
    let status = response.status().as_u16();
    let Ok(text) = response.text().await else { return Outcome::Unknown };
    match status {
        200 => {
            let reply: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("a 200 that is not JSON ({e}): {text}"));
            Outcome::Returned(match op {
                Op::Read => Ret::Read(reply.as_i64()),
                Op::Write(_) => Ret::Write,
                Op::Cas(..) => Ret::Cas(reply.as_bool().unwrap_or_else(|| panic!("cas answered {reply}"))),
            })
        }
        400..=499 | 503 => Outcome::Failed(status),
        _ => Outcome::Unknown,
    }
}

/// A client: random operations on random registers through random hosts
/// until `stop`; a new process id after each unknown outcome.
async fn client(urls: Arc<Mutex<Vec<String>>>, stop: Arc<AtomicBool>, processes: Arc<AtomicU32>, values: Arc<AtomicI64>, seed: u64) -> Vec<Entry> {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let mut process = processes.fetch_add(1, Ordering::SeqCst);
    let mut last_read = [None; REGISTERS];
    let mut history = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let r = next(REGISTERS as u64) as usize;
        let op = match next(10) {
            0..=3 => Op::Read,
            4..=6 => Op::Write(values.fetch_add(1, Ordering::SeqCst)),
            _ => Op::Cas(last_read[r], values.fetch_add(1, Ordering::SeqCst)),
        };
        let url = {
            let urls = urls.lock();
            urls[next(urls.len() as u64) as usize].clone()
        };
        let invoked = Instant::now();
        let outcome = perform(&http, &url, r, &op).await;
        if let Outcome::Returned(Ret::Read(v)) = &outcome {
            last_read[r] = *v;
        }
        let unknown = matches!(outcome, Outcome::Unknown);
        history.push(Entry { process, register: r, op, invoked, completed: Instant::now(), outcome });
        if unknown {
            process = processes.fetch_add(1, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(10 + next(30))).await;
    }
    history
}

/// Checks one register's history: events replayed in real-time order
/// (an invocation before a completion at the same instant), failures left
/// out, unknown outcomes never completed.
fn linearizable(history: &[&Entry]) -> Result<usize, String> {
    enum Event<'a> {
        Invoke(&'a Entry),
        Return(&'a Entry, &'a Ret),
    }
    let mut events: Vec<(Instant, u8, Event)> = Vec::new();
    for entry in history {
        match &entry.outcome {
            Outcome::Failed(_) => {}
            Outcome::Unknown => events.push((entry.invoked, 0, Event::Invoke(entry))),
            Outcome::Returned(ret) => {
                events.push((entry.invoked, 0, Event::Invoke(entry)));
                events.push((entry.completed, 1, Event::Return(entry, ret)));
            }
        }
    }
    events.sort_by_key(|(at, order, _)| (*at, *order));
    let mut tester = LinearizabilityTester::new(CasRegister::default());
    for (_, _, event) in &events {
        match event {
            Event::Invoke(e) => tester.on_invoke(e.process, e.op.clone())?,
            Event::Return(e, ret) => tester.on_return(e.process, (*ret).clone())?,
        };
    }
    tester.serialized_history().map(|h| h.len()).ok_or_else(|| "no linearization exists".to_string())
}

/// Hosts of the test: `h0` reaches the store through `relay`; `h1` and
/// `h2` directly; a killed host is replaced by a new one.
struct Cluster {
    hosts: Vec<Option<Server>>,
    dirs: Vec<TempDir>,
}

fn start_host(dir: &TempDir, id: &str, store: &str) -> Server {
    Server::start_with(dir.path(), free_port(), &["--store", store, "--host-id", id, "--lease", "2s", "--call-timeout", "2s"])
}

fn signal(host: &Server, sig: &str) {
    assert!(std::process::Command::new("kill").args([sig, &host.child.id().to_string()]).status().unwrap().success());
}

async fn register_history_is_linearizable(store: &str, upstream: &'static str) {
    let seconds: u64 = std::env::var("QUARK_JEPSEN_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(16);
    let relay = Relay::start(upstream).await;
    let mut cluster = tokio::task::block_in_place(|| {
        let dirs: Vec<TempDir> = (0..3).map(|_| tempdir().unwrap()).collect();
        let hosts = vec![
            Some(start_host(&dirs[0], "h0", &relay.url(store))),
            Some(start_host(&dirs[1], "h1", store)),
            Some(start_host(&dirs[2], "h2", store)),
        ];
        for host in hosts.iter().flatten() {
            wait_for_states(host, Duration::from_secs(15), |s| s.len() == 3 && s.values().all(|v| v == "active"));
        }
        let path = root().join("target/test-actors/register.wasm");
        let out = hosts[1].as_ref().unwrap().quark(&["deploy", "register", path.to_str().unwrap()]);
        assert!(out.status.success(), "deploy: {}", stderr(&out));
        Cluster { hosts, dirs }
    });
    let urls = Arc::new(Mutex::new(cluster.hosts.iter().flatten().map(|h| h.url.clone()).collect::<Vec<_>>()));
    let stop = Arc::new(AtomicBool::new(false));
    let (processes, values) = (Arc::new(AtomicU32::new(0)), Arc::new(AtomicI64::new(1)));
    let clients: Vec<_> = (0..CLIENTS as u64)
        .map(|seed| tokio::spawn(client(urls.clone(), stop.clone(), processes.clone(), values.clone(), seed + 1)))
        .collect();

    // The nemesis: a cycle of pause, kill, cut, each healed before the next.
    let started = Instant::now();
    let mut faults = Vec::new();
    let mut generation = 0;
    while started.elapsed() < Duration::from_secs(seconds.saturating_sub(4)) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        signal(cluster.hosts[1].as_ref().unwrap(), "-STOP");
        faults.push("pause h1 3 s (lease 2 s)");
        tokio::time::sleep(Duration::from_secs(3)).await;
        signal(cluster.hosts[1].as_ref().unwrap(), "-CONT");
        tokio::time::sleep(Duration::from_secs(1)).await;

        generation += 1;
        let killed = cluster.hosts[2].take().unwrap();
        let killed_url = killed.url.clone();
        killed.kill9();
        faults.push("kill -9 h2, a new host joins");
        tokio::time::sleep(Duration::from_millis(500)).await;
        let fresh = tokio::task::block_in_place(|| {
            cluster.dirs[2] = tempdir().unwrap();
            start_host(&cluster.dirs[2], &format!("h2-{generation}"), store)
        });
        {
            let mut urls = urls.lock();
            urls.retain(|u| *u != killed_url);
            urls.push(fresh.url.clone());
        }
        cluster.hosts[2] = Some(fresh);
        tokio::time::sleep(Duration::from_secs(1)).await;

        relay.cut();
        faults.push("cut h0 off the store 3 s");
        tokio::time::sleep(Duration::from_secs(3)).await;
        relay.restore();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::SeqCst);
    let mut history = Vec::new();
    for c in clients {
        history.extend(c.await.unwrap());
    }

    let count = |f: fn(&Outcome) -> bool| history.iter().filter(|e| f(&e.outcome)).count();
    let (ok, failed, unknown) =
        (count(|o| matches!(o, Outcome::Returned(_))), count(|o| matches!(o, Outcome::Failed(_))), count(|o| matches!(o, Outcome::Unknown)));
    let mut failures = std::collections::BTreeMap::new();
    for e in &history {
        if let Outcome::Failed(status) = e.outcome {
            *failures.entry(if status == 0 { "refused".to_string() } else { status.to_string() }).or_insert(0) += 1;
        }
    }
    let check_started = Instant::now();
    let mut linearized = 0;
    for r in 0..REGISTERS {
        let of_r: Vec<&Entry> = history.iter().filter(|e| e.register == r).collect();
        match linearizable(&of_r) {
            Ok(n) => linearized += n,
            Err(e) => {
                for (i, host) in cluster.hosts.iter().enumerate() {
                    if host.is_some() {
                        eprintln!("--- log of host {i}:\n{}", std::fs::read_to_string(cluster.dirs[i].path().join("serve.log")).unwrap_or_default());
                    }
                }
                panic!("register r{r} is not linearizable ({e}); its history:\n{of_r:#?}");
            }
        }
    }
    println!(
        "linearizability on {store}: {} operations ({ok} ok, {failed} failed {failures:?}, {unknown} unknown) by {} processes over {seconds} s, \
         {} faults ({}), {REGISTERS} histories checked in {:?}: linearizable ({linearized} operations ordered)",
        history.len(),
        processes.load(Ordering::SeqCst),
        faults.len(),
        faults.join(", "),
        check_started.elapsed(),
    );
    assert!(ok > 100, "the load made progress: {ok} operations succeeded");
    assert!(history.iter().any(|e| matches!(e.op, Op::Cas(..)) && matches!(e.outcome, Outcome::Returned(Ret::Cas(true)))), "some cas succeeded");
    assert!(faults.len() >= 3, "the nemesis ran: {faults:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn register_history_is_linearizable_on_postgres() {
    let Some(store) = shared_store_url("postgres", "register_history_is_linearizable_on_postgres").await else { return };
    register_history_is_linearizable(&store, "127.0.0.1:5432").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn register_history_is_linearizable_on_redis() {
    let Some(store) = shared_store_url("redis", "register_history_is_linearizable_on_redis").await else { return };
    register_history_is_linearizable(&store, "127.0.0.1:6379").await;
}

/// The checker can fail: a read that misses an acknowledged write, and a
/// cas that succeeds from a value the register never held, are rejected;
/// a read concurrent with a write may see either value.
#[test]
fn the_checker_rejects_what_is_not_linearizable() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let entry = |process, op, invoked, completed, outcome| Entry { process, register: 0, op, invoked: at(invoked), completed: at(completed), outcome };
    let write = entry(0, Op::Write(1), 0, 10, Outcome::Returned(Ret::Write));
    let stale = entry(1, Op::Read, 20, 30, Outcome::Returned(Ret::Read(None)));
    assert!(linearizable(&[&write, &stale]).is_err(), "a stale read after an acknowledged write");
    let bad_cas = entry(1, Op::Cas(Some(7), 2), 20, 30, Outcome::Returned(Ret::Cas(true)));
    assert!(linearizable(&[&write, &bad_cas]).is_err(), "a cas from a value never written");
    let concurrent = entry(1, Op::Read, 5, 8, Outcome::Returned(Ret::Read(None)));
    assert_eq!(linearizable(&[&write, &concurrent]), Ok(2), "a concurrent read may see the old value");
    // An unknown write may have happened (or not); a failed one did not.
    let unknown = entry(0, Op::Write(5), 0, 10, Outcome::Unknown);
    let sees_it = entry(1, Op::Read, 20, 30, Outcome::Returned(Ret::Read(Some(5))));
    assert!(linearizable(&[&unknown, &sees_it]).is_ok(), "an unknown write may have happened");
    let failed = entry(0, Op::Write(5), 0, 10, Outcome::Failed(503));
    assert!(linearizable(&[&failed, &sees_it]).is_err(), "a failed write must not be seen");
}
