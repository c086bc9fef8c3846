//! DESIGN.md's failure table: each failure gives a clear error, commits
//! nothing, and leaves the host serving.

use std::sync::Arc;
use std::time::Duration;

use quark::storage::sqlite::SqliteStore;
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::json;
use sqlx::Connection;

use crate::support::*;

async fn misbehave_host(dir: &std::path::Path) -> Node {
    let host = sqlite_host(dir).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("16MiB", "1s")).await.unwrap();
    host
}

async fn dump(host: &Node, actor: &str) -> serde_json::Value {
    ask(host, actor, "dump", json!(null)).await.unwrap()
}

#[tokio::test]
async fn guest_panic_fails_the_turn_and_commits_nothing() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    ask(&host, "misbehave/p", "put", json!({"key": "kept", "value": 1})).await.unwrap();
    let e = ask(&host, "misbehave/p", "panic", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Internal, "{e}");
    assert!(e.message.contains("trapped"), "{e}");
    assert!(e.message.contains("misbehave/p"), "the error names the actor: {e}");
    assert!(e.message.contains("misbehave: panic on purpose"), "the error quotes the panic message: {e}");
    assert_eq!(dump(&host, "misbehave/p").await, json!({"kept": 1}), "the panicking turn's write is gone");
}

#[tokio::test]
async fn infinite_loop_is_stopped_by_the_turn_time_limit() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    let e = ask(&host, "misbehave/loop", "spin", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Timeout, "{e}");
    // Stopped inside the guest by epoch interruption at the 1 s turn limit,
    // not abandoned by the caller at its 30 s call deadline.
    assert!(e.message.contains("and was stopped"), "{e}");
    assert_eq!(dump(&host, "misbehave/loop").await, json!({}), "nothing committed");
    assert_eq!(ask(&host, "misbehave/other", "echo", json!("still here")).await.unwrap(), json!("still here"));
}

#[tokio::test]
async fn growing_memory_past_the_limit_fails_only_that_turn() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    let e = ask(&host, "misbehave/hog", "alloc", json!({"mib": 64})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded, "{e}");
    assert!(e.message.contains("memory"), "{e}");
    // Below the limit it works, on a fresh instance of the same actor.
    assert_eq!(ask(&host, "misbehave/hog", "alloc", json!({"mib": 2})).await.unwrap(), json!(2 << 20));
}

#[tokio::test]
async fn handler_error_commits_nothing() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    let e = ask(&host, "misbehave/e", "write_then_fail", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert_eq!(e.message, "misbehave: refused on purpose");
    assert_eq!(dump(&host, "misbehave/e").await, json!({}));
}

#[tokio::test]
async fn deploys_of_things_that_are_not_actors_are_bad_requests() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let cases: [(&str, Vec<u8>, &str); 3] = [
        ("random", (0..4096u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(), "not WebAssembly"),
        ("core", b"\0asm\x01\0\0\0".to_vec(), "core WebAssembly module"),
        ("nohandler", component("no-handler"), "quark:actor/handler"),
    ];
    for (actor_type, bytes, expected) in cases {
        let e = host.host().deploy(actor_type, bytes, manifest()).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{actor_type}: {e}");
        assert!(e.message.contains(expected), "{actor_type}: {e}");
        assert_eq!(host.host().versions(actor_type).await.unwrap_err().kind, ErrorKind::NotFound, "nothing stored for {actor_type}");
    }
    assert!(host.host().actor_types().is_empty());
    // The host still deploys and runs a real actor.
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/a", "increment", json!({"by": 1})).await.unwrap(), json!(1));
}

#[tokio::test]
async fn component_that_cannot_start_within_its_memory_limit_is_rejected() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let e = host.host().deploy("counter", component("counter"), manifest_with("128KiB", "5s")).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert!(e.message.contains("memory"), "{e}");
}

#[tokio::test]
async fn unknown_type_unknown_method_bad_json_and_oversized_payloads() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter")]).await;

    let e = ask(&host, "nosuch/a", "get", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("unknown actor type `nosuch`") && e.message.contains("counter"), "{e}");

    let e = ask(&host, "counter/a", "explode", json!(null)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound);
    assert!(e.message.contains("unknown method `explode`"), "{e}");

    let e = host.host().ask(id("counter/a"), "increment", b"{not json".to_vec()).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::BadRequest);
    assert!(e.message.contains("bad request for `increment`"), "{e}");

    let e = host.host().ask(id("counter/a"), "increment", vec![b' '; (1 << 20) + 1]).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::PayloadTooLarge);

    assert_eq!(ask(&host, "counter/a", "increment", json!({"by": 4})).await.unwrap(), json!(4));
}

#[tokio::test]
async fn sqlite_locked_by_another_process_fails_durable_turns_only() {
    let dir = crate::support::tempdir().unwrap();
    let db = dir.path().join("quark.db");
    let store = Arc::new(SqliteStore::open_with_busy_timeout(&db, Duration::from_millis(200)).await.unwrap());
    let host = Node::start(NodeConfig::new(dir.path()), store).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/a", "increment", json!({"by": 1})).await.unwrap(), json!(1));

    // Another process takes the write lock: the store is unwritable for us.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();

    let e = ask(&host, "counter/a", "increment", json!({"by": 10})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("could not be committed"), "{e}");
    // Turns that write nothing keep working.
    assert_eq!(ask(&host, "counter/b", "get", json!(null)).await.unwrap(), json!(0));

    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    // The failed turn never happened: 1 + 1, not 1 + 10 + 1.
    assert_eq!(ask(&host, "counter/a", "increment", json!({"by": 1})).await.unwrap(), json!(2));
}

/// An actor runs its next turn while the last one commits. A turn that
/// read a write whose commit then fails must not show it to anyone.
#[tokio::test]
async fn pipelined_turns_never_expose_a_write_that_failed_to_commit() {
    let dir = crate::support::tempdir().unwrap();
    let db = dir.path().join("quark.db");
    let store = Arc::new(SqliteStore::open_with_busy_timeout(&db, Duration::from_millis(300)).await.unwrap());
    let host = Node::start(NodeConfig::new(dir.path()), store).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/p", "increment", json!({"by": 1})).await.unwrap(), json!(1));

    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();
    // Ten increments queue on one actor; each runs on the uncommitted
    // result of the one before, then a read.
    let writes: Vec<_> = (0..10)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { ask(&host, "counter/p", "increment", json!({"by": 10})).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let read = ask(&host, "counter/p", "get", json!(null)).await;
    for w in writes {
        let e = w.await.unwrap().unwrap_err();
        assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Conflict), "{e}");
    }
    match read {
        Ok(v) => assert_eq!(v, json!(1), "a read may only see committed state"),
        Err(e) => assert!(matches!(e.kind, ErrorKind::Unavailable | ErrorKind::Conflict), "{e}"),
    }
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    // None of them happened; the actor goes on from the store.
    assert_eq!(ask(&host, "counter/p", "increment", json!({"by": 1})).await.unwrap(), json!(2));

    // With the store healthy, pipelined turns all commit, in order.
    let writes: Vec<_> = (0..50)
        .map(|_| {
            let host = host.clone();
            tokio::spawn(async move { ask(&host, "counter/p", "increment", json!({"by": 1})).await.unwrap() })
        })
        .collect();
    let mut replies = Vec::new();
    for w in writes {
        replies.push(w.await.unwrap().as_i64().unwrap());
    }
    replies.sort();
    assert_eq!(replies, (3..=52).collect::<Vec<i64>>(), "every increment once");
    host.host().deactivate_all();
    assert_eq!(ask(&host, "counter/p", "get", json!(null)).await.unwrap(), json!(52));
}

#[tokio::test]
async fn postgres_going_down_fails_durable_turns_and_recovers() {
    let relay = Relay::start("127.0.0.1:5432").await;
    let url = postgres_url().replace("127.0.0.1:5432", &relay.addr.to_string());
    let Some(store) = postgres_store_at(&url, "postgres_going_down_fails_durable_turns_and_recovers").await else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), Arc::new(store)).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/pg", "increment", json!({"by": 1})).await.unwrap(), json!(1));

    relay.cut();
    let e = ask(&host, "counter/pg", "increment", json!({"by": 10})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Unavailable, "{e}");
    assert_eq!(ask(&host, "counter/pg", "get", json!(null)).await.unwrap(), json!(1), "volatile turns still serve from memory");

    relay.restore();
    let mut result = ask(&host, "counter/pg", "increment", json!({"by": 1})).await;
    for _ in 0..20 {
        if result.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        result = ask(&host, "counter/pg", "increment", json!({"by": 1})).await;
    }
    assert_eq!(result.unwrap(), json!(2), "recovered, and the failed turn never happened");
}

#[tokio::test]
async fn a_failed_turn_sends_none_of_its_tells() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let tell = |fail: bool| json!({"target": "counter/told", "method": "increment", "payload": {"by": 1}, "fail": fail});

    let e = ask(&host, "misbehave/t", "tell", tell(true)).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    ask(&host, "misbehave/t", "tell", tell(false)).await.unwrap();
    // Told messages are delivered after the commit; wait for the one that counts.
    let mut value = json!(0);
    for _ in 0..100 {
        value = ask(&host, "counter/told", "get", json!(null)).await.unwrap();
        if value != json!(0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(ask(&host, "counter/told", "get", json!(null)).await.unwrap(), json!(1), "only the committed turn's tell arrived");
    assert_eq!(value, json!(1));

    let e = ask(&host, "misbehave/t", "tell", json!({"target": "nosuch/x", "method": "m", "payload": null, "fail": false}))
        .await
        .unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "telling an unknown type fails at once: {e}");
}

#[tokio::test]
async fn keys_with_nul_and_limits_out_of_range_are_refused() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    let e = ask(&host, "misbehave/k", "put", json!({"key": "a\0b", "value": 1})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert_eq!(dump(&host, "misbehave/k").await, json!({}));

    for (memory, timeout) in [(None, Some("300000000000years")), (None, Some("2h")), (None, Some("0s")), (Some("8GiB"), None)] {
        let e = quark::Manifest::parse(memory, timeout).unwrap_err();
        assert_eq!(e.kind, ErrorKind::BadRequest, "{memory:?} {timeout:?}: {e}");
    }
}

#[tokio::test]
async fn a_caller_that_goes_away_mid_turn_leaves_the_actor_serving() {
    let dir = crate::support::tempdir().unwrap();
    let host = misbehave_host(dir.path()).await;
    // The actor is idle, so this turn runs in the caller's own task; the
    // caller then gives up (as an HTTP client that disconnects does).
    let gave_up = tokio::time::timeout(Duration::from_millis(100), ask(&host, "misbehave/c", "spin", json!(null))).await;
    assert!(gave_up.is_err(), "the spin is still running when the caller leaves");
    assert_eq!(ask(&host, "misbehave/c", "echo", json!("next")).await.unwrap(), json!("next"));
    assert_eq!(dump(&host, "misbehave/c").await, json!({}), "the abandoned turn committed nothing");
    assert_eq!(host.host().actors().iter().find(|a| a.id == "misbehave/c").map(|a| a.pending), Some(0));
}

/// A TCP relay to PostgreSQL that, once armed, lets through the COMMIT of
/// a transaction that carried `marker` and then cuts the connection: the
/// server commits, the client never hears it (a lost acknowledgement).
struct CommitCutter {
    addr: std::net::SocketAddr,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl CommitCutter {
    async fn start(upstream: &'static str, marker: &'static [u8]) -> CommitCutter {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let armed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let armed2 = armed.clone();
        let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).rposition(|w| w == needle);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let armed = armed2.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(upstream).await else { return };
                    let (mut client_read, mut client_write) = inbound.into_split();
                    let (mut server_read, mut server_write) = outbound.into_split();
                    let back = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut server_read, &mut client_write).await;
                    });
                    let mut marked = false;
                    let mut buffer = vec![0u8; 64 << 10];
                    loop {
                        let n = match client_read.read(&mut buffer).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        let chunk = &buffer[..n];
                        match (find(chunk, b"BEGIN"), find(chunk, marker)) {
                            (Some(begin), Some(m)) => marked = m > begin,
                            (Some(_), None) => marked = false,
                            (None, Some(_)) => marked = true,
                            (None, None) => {}
                        }
                        if server_write.write_all(chunk).await.is_err() {
                            break;
                        }
                        if marked && find(chunk, b"COMMIT").is_some() && armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                            // Let the server commit, then cut before the answer.
                            back.abort();
                            tokio::time::sleep(Duration::from_millis(300)).await;
                            return;
                        }
                    }
                    back.abort();
                });
            }
        });
        CommitCutter { addr, armed }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// PostgreSQL commits a turn but the acknowledgement is lost: the caller
/// is told the outcome is unknown (not "nothing happened"), and a retry
/// with the same idempotency key gets the first reply without running the
/// turn again.
#[tokio::test]
async fn a_lost_commit_acknowledgement_is_an_unknown_outcome() {
    let relay = CommitCutter::start("127.0.0.1:5432", b"counter/cut").await;
    let url = postgres_url().replace("127.0.0.1:5432", &relay.addr.to_string());
    let Some(store) = postgres_store_at(&url, "a_lost_commit_acknowledgement_is_an_unknown_outcome").await else {
        return;
    };
    let dir = crate::support::tempdir().unwrap();
    let host = Node::start(NodeConfig::new(dir.path()), Arc::new(store)).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/cut", "increment", json!({"by": 1})).await.unwrap(), json!(1));

    relay.arm();
    let pay = || host.host().ask_idempotent(id("counter/cut"), "increment", br#"{"by": 10}"#.to_vec(), "pay-7");
    let e = pay().await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::UnknownOutcome, "{e}");
    assert!(e.message.contains("Idempotency-Key"), "{e}");

    let mut retry = pay().await;
    for _ in 0..40 {
        if retry.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        retry = pay().await;
    }
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&retry.unwrap()).unwrap(), json!(11), "the first reply: it had committed");
    assert_eq!(ask(&host, "counter/cut", "get", json!(null)).await.unwrap(), json!(11), "the turn ran once, and the cache knows it");
}

/// Refuses every batch of more than one turn (so the committer retries
/// them one by one) and panics on the turn of `c/panic`.
struct PanickingStore;

#[async_trait::async_trait]
impl quark::storage::StateStore for PanickingStore {
    async fn load_state(&self, _: &quark::ActorId) -> Result<Vec<(String, Vec<u8>)>, quark::storage::StoreError> {
        Ok(Vec::new())
    }

    async fn commit(&self, batch: &[quark::storage::TurnCommit]) -> Result<(), quark::storage::StoreError> {
        if batch.len() > 1 {
            return Err(quark::storage::StoreError::Rejected("one turn of the batch is refused".into()));
        }
        if batch[0].actor.as_str() == "c/panic" {
            panic!("the backend panics on purpose");
        }
        Ok(())
    }
}

/// A backend panic on the committer's one-by-one path fails that turn
/// only: its neighbours commit, and so does every later turn.
#[tokio::test]
async fn a_panic_while_retrying_turns_one_by_one_fails_only_that_turn() {
    use quark::runtime::committer::Committer;
    use quark::storage::{StateWrite, StoreError, TurnCommit};
    let commit = |actor: &str| TurnCommit::state_only(id(actor), vec![StateWrite { key: "k".into(), value: Some(b"1".to_vec()) }]);
    let committer = Committer::spawn(Arc::new(PanickingStore), Arc::new(quark::runtime::metrics::Metrics::new()));
    // Enqueued together, before the committer runs: one batch.
    let first = committer.enqueue(commit("c/a"), None).await.unwrap();
    let panics = committer.enqueue(commit("c/panic"), None).await.unwrap();
    let last = committer.enqueue(commit("c/b"), None).await.unwrap();
    assert!(first.await.unwrap().is_ok());
    let e = panics.await.expect("the committer answered").unwrap_err();
    assert!(matches!(*e, StoreError::Unavailable(ref m) if m.contains("panicked")), "{e}");
    assert!(last.await.expect("the committer answered").is_ok());
    assert!(committer.commit(commit("c/later")).await.is_ok(), "the committer still runs");
}
