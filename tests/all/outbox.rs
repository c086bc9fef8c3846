//! The outbox: messages committed with the sending turn, delivered after
//! it as a turn of the receiver, once (the receiver's inbox), in order per
//! sender and receiver, retried and dead-lettered when the receiver fails.

use std::time::Duration;

use quark::storage::postgres::PostgresStore;
use quark::storage::redis::RedisStore;
use quark::{ErrorKind, Node, NodeConfig};
use serde_json::{Value, json};

use crate::support::*;

async fn courier_host(dir: &std::path::Path, configure: impl FnOnce(&mut NodeConfig)) -> Node {
    let mut config = NodeConfig::new(dir);
    configure(&mut config);
    let host = host_with_config(config).await;
    host.host().deploy("courier", component("courier"), manifest()).await.unwrap();
    host
}

async fn received(host: &Node, actor: &str) -> Vec<Value> {
    ask(host, actor, "received", json!(null)).await.unwrap().as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_failed_turn_sends_nothing_and_an_oversized_message_is_refused() {
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |_| {}).await;
    let e = ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": 1, "fail": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(host.outbox().messages(None, 10).await.unwrap().is_empty(), "the failed turn's message was never committed");
    assert_eq!(ask(&host, "courier/a", "send", json!({"to": "courier/b", "bytes": 2 << 20})).await.unwrap_err().kind, ErrorKind::LimitExceeded);
    let e = ask(&host, "courier/a", "send", json!({"to": "nosuch/b", "payload": 1})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // The sender is still fine.
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": "ok"})).await.unwrap();
    eventually("delivery", async || received(&host, "courier/b").await, |r| r.len() == 1).await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_dead_lettered_and_the_sender_is_unaffected() {
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| {
        c.outbox.max_attempts = 3;
        c.outbox.backoff = Duration::from_millis(10);
    })
    .await;
    // One receiver traps, another returns an error: both are retried, then dead.
    let trapping = ask(&host, "courier/a", "send", json!({"to": "courier/t", "payload": {"trap": true}})).await.unwrap();
    let ids = ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"fail": true}})).await.unwrap();
    let id = ids[0].as_str().unwrap().to_string();
    let dead = eventually("dead-lettering", async || host.outbox().messages(Some("dead"), 10).await.unwrap(), |d| d.len() == 2).await;
    let trapped = dead.iter().find(|m| m.message.id == trapping[0].as_str().unwrap()).unwrap();
    assert_eq!(trapped.attempts, 3);
    assert!(trapped.last_error.as_deref().is_some_and(|e| e.contains("trapped")), "{:?}", trapped.last_error);
    let dead: Vec<_> = dead.into_iter().filter(|m| m.message.id == id).collect();
    assert_eq!((dead[0].message.id.as_str(), dead[0].attempts), (id.as_str(), 3));
    assert!(dead[0].last_error.as_deref().is_some_and(|e| e.contains("fails on purpose")), "{:?}", dead[0].last_error);
    assert_eq!(ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": 0})).await.unwrap().as_array().map(Vec::len), Some(1), "the sender is unaffected");
    // The failing message never counted (the one just sent may be in already).
    assert!(received(&host, "courier/b").await.iter().all(|m| m["payload"] == json!(0)));
    // A later message of the same pair is not held up by the dead one.
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": "next"})).await.unwrap();
    eventually("the next deliveries", async || received(&host, "courier/b").await, |r| r.len() == 2).await;
    assert_eq!(host.outbox().retry_message(&id, Some("courier/other")).await.unwrap_err().kind, ErrorKind::NotFound, "ids are per sender");
    assert_eq!(host.outbox().retry_message(&id, Some("courier/a")).await.unwrap(), 1);
    assert_eq!(host.outbox().retry_message("nosuch", None).await.unwrap_err().kind, ErrorKind::NotFound);
    eventually("dead again", async || host.outbox().messages(Some("dead"), 10).await.unwrap(), |d| d.len() == 2 && d.iter().all(|m| m.attempts == 3)).await;
    assert_eq!(host.outbox().purge_dead_messages().await.unwrap(), 2);
    assert!(host.outbox().messages(None, 10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lanes_opened_at_commit_wait_for_a_free_delivery_slot() {
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| c.outbox.concurrency = 3).await;
    // Twelve senders at once (their commits share batches), each opening a
    // lane to a receiver that takes 100 ms: at most three are delivered at
    // a time, and all of them arrive.
    let sends: Vec<_> = (0..12)
        .map(|i| {
            let host = host.clone();
            tokio::spawn(async move {
                ask(&host, &format!("courier/s{i}"), "send", json!({"to": format!("courier/r{i}"), "payload": {"sleep_ms": 100}})).await.unwrap()
            })
        })
        .collect();
    let mut most = 0;
    let mut receivers_done = 0;
    let give_up = std::time::Instant::now() + Duration::from_secs(60);
    while receivers_done < 12 {
        assert!(std::time::Instant::now() < give_up, "only {receivers_done} of 12 messages delivered in 60 s");
        most = most.max(host.outbox().lanes_in_flight());
        tokio::time::sleep(Duration::from_millis(2)).await;
        if sends.iter().all(|s| s.is_finished()) && host.outbox().lanes_in_flight() == 0 {
            receivers_done = 0;
            for i in 0..12 {
                receivers_done += received(&host, &format!("courier/r{i}")).await.len();
            }
        }
    }
    assert!((1..=3).contains(&most), "{most} lanes were delivered at once; the limit is 3");
    assert!(host.metrics_text().contains("quark_message_lanes_in_flight 0"), "the gauge is exported");
}

#[tokio::test]
async fn a_failed_message_holds_back_the_messages_queued_behind_it() {
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| c.outbox.backoff = Duration::from_millis(10)).await;
    // Six messages in one lane, queued on the receiver together; the third
    // fails once. The ones behind it must not run before its retry.
    let ids = ask(&host, "courier/a", "send", json!({"to": "courier/b", "count": 6, "payload": {"fail_n": 2}})).await.unwrap();
    let got = eventually("six deliveries", async || received(&host, "courier/b").await, |r| r.len() >= 6).await;
    let order: Vec<u64> = got.iter().map(|m| m["payload"]["n"].as_u64().unwrap()).collect();
    assert_eq!(order, [0, 1, 2, 3, 4, 5], "in the order sent, each once");
    let got_ids: Vec<&str> = got.iter().map(|m| m["id"].as_str().unwrap()).collect();
    let sent_ids: Vec<&str> = ids.as_array().unwrap().iter().map(|i| i.as_str().unwrap()).collect();
    assert_eq!(got_ids, sent_ids);
    eventually("the lane emptied", async || host.outbox().messages(None, 10).await.unwrap(), |m| m.is_empty()).await;
}

#[tokio::test]
async fn messages_sent_while_their_lane_is_delivered_follow_it_without_a_claim() {
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |_| {}).await;
    // The first message opens the lane and takes 2 s to handle; two
    // more, each its own turn, are committed meanwhile into that lane.
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"sleep_ms": 2000}})).await.unwrap();
    eventually("the first delivery under way", async || host.outbox().lanes_in_flight(), |n| *n == 1).await;
    for k in [2, 3] {
        ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"k": k}})).await.unwrap();
    }
    let got = eventually("three deliveries", async || received(&host, "courier/b").await, |r| r.len() >= 3).await;
    let payloads: Vec<&Value> = got.iter().map(|m| &m["payload"]).collect();
    assert_eq!(payloads, [&json!({"sleep_ms": 2000}), &json!({"k": 2}), &json!({"k": 3})], "in order, each once");
    let claimed = host.metrics_text().lines().find_map(|l| l.strip_prefix("quark_message_lanes_claimed_total ").map(str::to_string));
    assert_eq!(claimed.as_deref(), Some("0"), "the two later messages followed the running delivery; no lane was claimed");
    eventually("the lane emptied", async || host.outbox().messages(None, 10).await.unwrap(), |m| m.is_empty()).await;
}

/// Sends `payload` from courier/a to sink `sink`; returns the message id.
/// A router whose first answer for a delivery to `courier/b` is a lookup that takes a
/// moment (a claim in the shared store), and every later answer "here":
/// as a cluster's router answers once another lane's lookup has filled
/// its cache meanwhile.
#[derive(Default)]
struct SlowFirstLookup {
    looked_up: std::sync::atomic::AtomicBool,
}

impl quark::runtime::router::Router for SlowFirstLookup {
    fn route(&self, request: &quark::runtime::Request) -> Result<quark::runtime::router::Route, quark::ActorError> {
        use quark::runtime::router::Route;
        let delivery = request.target.to_string() == "courier/b" && request.method == "receive";
        if !delivery || self.looked_up.swap(true, std::sync::atomic::Ordering::AcqRel) {
            return Ok(Route::Here);
        }
        Ok(Route::Lookup(Box::pin(async {
            tokio::time::sleep(Duration::from_millis(50)).await;
            Ok(Route::Here)
        })))
    }
}

/// A lane's messages arrive in order even when the first one's route must
/// be looked up and the others' are known by the time they are queued.
/// Before the fix each message was routed on its own: the first waited for
/// its lookup while the rest were queued at once, so it arrived last (seen
/// on 3 hosts after a kill -9: messages 56-59 after 60-68).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lanes_messages_keep_their_order_when_the_first_waits_for_a_lookup() {
    let dir = crate::support::tempdir().unwrap();
    let store: std::sync::Arc<dyn quark::storage::Store> =
        std::sync::Arc::new(quark::storage::sqlite::SqliteStore::open(&dir.path().join("quark.db")).await.unwrap());
    let host = Node::start_with_router(NodeConfig::new(dir.path()), store, std::sync::Arc::new(SlowFirstLookup::default())).await.unwrap();
    host.host().deploy("courier", component("courier"), manifest()).await.unwrap();
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "count": 10})).await.unwrap();
    let got = eventually("ten deliveries", async || received(&host, "courier/b").await, |r| r.len() == 10).await;
    let order: Vec<u64> = got.iter().map(|m| m["payload"]["n"].as_u64().unwrap()).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "courier/a's messages, in the order sent");
}

async fn send_to_sink(host: &Node, sink: &str, payload: Value) -> String {
    let ids = ask(host, "courier/a", "send", json!({"sink": sink, "payload": payload})).await.unwrap();
    ids[0].as_str().unwrap().to_string()
}

fn assert_cloud_event(event: &Value, id: &str, data: &Value) {
    assert_eq!(event["specversion"], json!("1.0"), "{event}");
    assert_eq!(event["id"], json!(id), "{event}");
    assert_eq!(event["source"], json!("quark://actors/courier/a"), "{event}");
    assert_eq!(event["type"], json!("test.event"), "{event}");
    assert_eq!(event["datacontenttype"], json!("application/json"), "{event}");
    assert!(event["time"].as_str().is_some_and(|t| t.ends_with('Z')), "{event}");
    assert_eq!(&event["data"], data, "{event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_that_is_down_gets_the_event_once_it_is_up() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| {
        c.outbox.backoff = Duration::from_millis(20);
        c.outbox.max_attempts = 1000;
        c.outbox.sinks.insert("hooks".into(), format!("webhook:http://127.0.0.1:{port}/hook").parse().unwrap());
    })
    .await;
    assert_eq!(ask(&host, "courier/a", "send", json!({"sink": "nosuch", "payload": 1})).await.unwrap_err().kind, ErrorKind::NotFound);
    let id = send_to_sink(&host, "hooks", json!({"order": 17})).await;
    // Down: the delivery fails and is retried, with the error recorded.
    let failing = eventually("a failed delivery", async || host.outbox().messages(None, 10).await.unwrap(), |m| {
        m.first().is_some_and(|m| m.attempts >= 1 && m.last_error.as_deref().is_some_and(|e| e.contains("webhook")))
    })
    .await;
    assert_eq!(failing[0].status, "pending");
    // Up, answering 503 once and then 200.
    let seen = std::sync::Arc::new(parking_lot::Mutex::new(Vec::<(String, Value)>::new()));
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (seen, calls) = (seen.clone(), calls.clone());
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let (seen, calls) = (seen.clone(), calls.clone());
                async move {
                    if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                        return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                    }
                    let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                    seen.lock().push((key, serde_json::from_slice(&body).unwrap()));
                    axum::http::StatusCode::OK
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    eventually("the delivery", async || host.outbox().messages(None, 10).await.unwrap(), |m| m.is_empty()).await;
    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].0, id, "the Idempotency-Key header is the message id");
    assert_cloud_event(&seen[0].1, &id, &json!({"order": 17}));
}

#[tokio::test]
async fn redis_stream_and_nats_sinks_get_cloud_events_and_an_unreachable_one_is_retried() {
    let Some(_) = redis_store("redis_stream_and_nats_sinks").await else { return };
    let Some((nats_url, nats)) = nats_client("redis_stream_and_nats_sinks").await else { return };
    let (stream, subject) = (unique("quark_test_stream"), unique("quark.test.subject"));
    let mut subscriber = nats.subscribe(subject.clone()).await.unwrap();
    nats.flush().await.unwrap();
    let dir = crate::support::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| {
        c.outbox.backoff = Duration::from_millis(20);
        c.outbox.max_attempts = 2;
        c.outbox.sinks.insert("audit".into(), format!("redis:{}#{stream}", redis_url()).parse().unwrap());
        c.outbox.sinks.insert("events".into(), format!("nats:{nats_url}#{subject}").parse().unwrap());
        c.outbox.sinks.insert("nowhere".into(), "redis:redis://127.0.0.1:1#s".parse().unwrap());
    })
    .await;
    let to_redis = send_to_sink(&host, "audit", json!({"n": 1})).await;
    let to_nats = send_to_sink(&host, "events", json!({"n": 2})).await;
    let lost = send_to_sink(&host, "nowhere", json!({"n": 3})).await;

    let message = tokio::time::timeout(Duration::from_secs(15), futures::StreamExt::next(&mut subscriber)).await.unwrap().unwrap();
    assert_eq!(message.headers.as_ref().and_then(|h| h.get("Nats-Msg-Id")).map(|v| v.as_str().to_string()), Some(to_nats.clone()));
    assert_cloud_event(&serde_json::from_slice(&message.payload).unwrap(), &to_nats, &json!({"n": 2}));

    // The unreachable sink's message is retried, then dead, with its error.
    let dead = eventually("the dead letter", async || host.outbox().messages(Some("dead"), 10).await.unwrap(), |d| !d.is_empty()).await;
    assert_eq!((dead[0].message.id.as_str(), dead[0].attempts), (lost.as_str(), 2));
    assert!(dead[0].last_error.as_deref().is_some_and(|e| e.contains("redis sink")), "{:?}", dead[0].last_error);
    eventually("the deliveries", async || host.outbox().messages(Some("pending"), 10).await.unwrap(), |m| m.is_empty()).await;

    let client = redis::Client::open(redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    /// An XRANGE reply: (entry id, [(field, value)]) per entry.
    type StreamEntries = Vec<(String, Vec<(String, Vec<u8>)>)>;
    let entries: StreamEntries = redis::cmd("XRANGE").arg(&stream).arg("-").arg("+").query_async(&mut conn).await.unwrap();
    let _: () = redis::cmd("DEL").arg(&stream).query_async(&mut conn).await.unwrap();
    assert_eq!(entries.len(), 1, "one entry in the stream");
    let fields: std::collections::HashMap<String, Vec<u8>> = entries[0].1.iter().cloned().collect();
    assert_eq!(fields["id"], to_redis.as_bytes());
    assert_eq!(fields["type"], b"test.event");
    assert_cloud_event(&serde_json::from_slice(&fields["event"]).unwrap(), &to_redis, &json!({"n": 1}));
}

/// A commit on one host wakes an idle dispatcher on another sharing the
/// store (PostgreSQL NOTIFY, Redis PUBLISH) that would otherwise look only
/// once a minute: the message is delivered by the second host at once.
/// `store` is the host's; `elsewhere` is another connection to the same
/// data, as another host has.
async fn other_hosts_dispatchers_wake(store: std::sync::Arc<dyn quark::storage::Store>, elsewhere: std::sync::Arc<dyn quark::storage::Store>) {
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.outbox.poll = Duration::from_secs(60);
    let host = Node::start(config, store.clone()).await.unwrap();
    host.host().deploy("courier", component("courier"), manifest()).await.unwrap();
    // Let the dispatcher go idle on its one-minute poll.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Another writer of the store (no host, so no local wake-up) sends one.
    let message = quark::storage::outbox::OutboxMessage {
        id: "from-elsewhere".into(),
        sender: "courier/far".into(),
        destination: quark::storage::outbox::Destination::Actor { actor: "courier/near".into(), method: "receive".into() },
        payload: br#""hi""#.to_vec(),
        event_type: None,
        created_at_ms: quark::storage::now_ms(),
    };
    let commit = quark::storage::TurnCommit { messages: vec![message], ..quark::storage::TurnCommit::state_only(id("courier/far"), vec![]) };
    elsewhere.commit(&[commit]).await.unwrap();
    let got = eventually("the delivery", async || received(&host, "courier/near").await, |r| r.len() == 1).await;
    assert_eq!(got[0]["id"], json!("from-elsewhere"));
}

#[tokio::test]
async fn postgres_wakes_idle_dispatchers_on_other_hosts() {
    if postgres_store("outbox::postgres_wakes_idle_dispatchers_on_other_hosts").await.is_none() {
        return;
    }
    let schema = unique("quark_test");
    let connect = async || std::sync::Arc::new(PostgresStore::connect(&postgres_url(), Some(&schema)).await.unwrap());
    other_hosts_dispatchers_wake(connect().await, connect().await).await;
}

#[tokio::test]
async fn redis_wakes_idle_dispatchers_on_other_hosts() {
    if redis_store("outbox::redis_wakes_idle_dispatchers_on_other_hosts").await.is_none() {
        return;
    }
    let prefix = unique("quark_test");
    let connect = async || std::sync::Arc::new(RedisStore::connect(&redis_url(), Some(&prefix)).await.unwrap());
    other_hosts_dispatchers_wake(connect().await, connect().await).await;
}

#[tokio::test]
async fn bank_transfers_move_money_between_event_sourced_accounts_by_outbox() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("bank", "bank")]).await;
    ask(&host, "bank/alice", "deposit", json!({"amount": 100})).await.unwrap();
    assert_eq!(ask(&host, "bank/alice", "transfer", json!({"to": "bob", "amount": 30, "id": "t-1"})).await.unwrap(), json!({"balance": 70}));
    ask(&host, "bank/alice", "transfer", json!({"to": "bank/carol", "amount": 50})).await.unwrap();
    // Refused transfers withdraw nothing and send nothing.
    let e = ask(&host, "bank/alice", "transfer", json!({"to": "bob", "amount": 500})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected, "{e}");
    assert_eq!(ask(&host, "bank/alice", "transfer", json!({"to": "alice", "amount": 1})).await.unwrap_err().kind, ErrorKind::Rejected);

    let balance = async |account: &str| ask(&host, &format!("bank/{account}"), "balance", json!(null)).await.unwrap()["balance"].as_i64().unwrap();
    eventually("both credits", async || (balance("bob").await, balance("carol").await), |b| *b == (30, 50)).await;
    assert_eq!(balance("alice").await, 20, "the sum is still 100");
    eventually("the outbox emptied", async || host.outbox().messages(None, 10).await.unwrap(), Vec::is_empty).await;

    // A client that retries a transfer sends it with an idempotency key:
    // the repeat gets the first reply, and nothing moves twice.
    let transfer = serde_json::to_vec(&json!({"to": "bob", "amount": 5, "id": "t-2"})).unwrap();
    for _ in 0..3 {
        let reply = host.host().ask_idempotent(id("bank/alice"), "transfer", transfer.clone(), "client-retry-1").await.unwrap();
        assert_eq!(serde_json::from_slice::<Value>(&reply).unwrap(), json!({"balance": 15}));
    }
    eventually("the retried transfer", async || (balance("alice").await, balance("bob").await), |b| *b == (15, 35)).await;
    assert_eq!(balance("alice").await + balance("bob").await + balance("carol").await, 100, "no money made or lost");

    // Both sides are in the journals: alice's withdrawal and, caused by her
    // message, bob's deposit.
    let bob = host.host().journal(&id("bank/bob"), 1, None, 10).await.unwrap();
    let deposits: Vec<_> = bob.events.iter().map(|e| (e.event_type.as_str(), e.caller.as_deref())).collect();
    assert_eq!(deposits, [("deposited", Some("bank/alice")), ("deposited", Some("bank/alice"))]);
    let alice = host.host().journal(&id("bank/alice"), 1, None, 10).await.unwrap();
    let types: Vec<&str> = alice.events.iter().map(|e| e.event_type.as_str()).collect();
    assert_eq!(types, ["deposited", "withdrawn", "withdrawn", "withdrawn"]);
}

#[test]
fn sink_specs_parse_or_say_what_is_wrong() {
    use quark::outbox::sinks::SinkConfig;
    assert_eq!("webhook:http://127.0.0.1:9000/hook".parse(), Ok(SinkConfig::Webhook { url: "http://127.0.0.1:9000/hook".into() }));
    assert_eq!(
        "redis:redis://127.0.0.1:6379#orders".parse(),
        Ok(SinkConfig::RedisStream { url: "redis://127.0.0.1:6379".into(), stream: "orders".into() })
    );
    assert_eq!(
        "nats:nats://127.0.0.1:4222#orders.created".parse(),
        Ok(SinkConfig::Nats { url: "nats://127.0.0.1:4222".into(), subject: "orders.created".into() })
    );
    for (bad, says) in [
        ("kafka:x", "unknown sink kind"),
        ("redis:redis://127.0.0.1:6379", "after `#`"),
        ("webhook:ftp://x", "http(s) URL"),
        ("nothing", "KIND:TARGET"),
    ] {
        let e = bad.parse::<SinkConfig>().unwrap_err();
        assert!(e.contains(says), "{bad}: {e}");
    }
}
