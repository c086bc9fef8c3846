//! The outbox: messages committed with the sending turn, delivered after
//! it as a turn of the receiver, once (the receiver's inbox), in order per
//! sender and receiver, retried and dead-lettered when the receiver fails.

use std::time::Duration;

use quark_host::{ErrorKind, Host, HostConfig};
use serde_json::{Value, json};

use crate::support::*;

async fn courier_host(dir: &std::path::Path, configure: impl FnOnce(&mut HostConfig)) -> Host {
    let mut config = HostConfig::new(dir);
    configure(&mut config);
    let host = host_with_config(config).await;
    host.deploy("courier", component("courier"), manifest()).await.unwrap();
    host
}

/// Polls `what` every 20 ms until `done` holds; fails after 15 s.
pub(crate) async fn eventually<T: std::fmt::Debug>(what: &str, mut probe: impl AsyncFnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let mut last = probe().await;
    for _ in 0..750 {
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        last = probe().await;
    }
    panic!("{what} never happened: {last:?}");
}

async fn received(host: &Host, actor: &str) -> Vec<Value> {
    ask(host, actor, "received", json!(null)).await.unwrap().as_array().cloned().unwrap_or_default()
}

#[tokio::test]
async fn a_failed_turn_sends_nothing_and_an_oversized_message_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let host = courier_host(dir.path(), |_| {}).await;
    let e = ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": 1, "fail": true})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::Rejected);
    assert!(host.outbox_messages(None, 10).await.unwrap().is_empty(), "the failed turn's message was never committed");
    assert_eq!(ask(&host, "courier/a", "send", json!({"to": "courier/b", "bytes": 2 << 20})).await.unwrap_err().kind, ErrorKind::LimitExceeded);
    let e = ask(&host, "courier/a", "send", json!({"to": "nosuch/b", "payload": 1})).await.unwrap_err();
    assert_eq!(e.kind, ErrorKind::NotFound, "{e}");
    // The sender is still fine.
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": "ok"})).await.unwrap();
    eventually("delivery", async || received(&host, "courier/b").await, |r| r.len() == 1).await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_then_dead_lettered_and_the_sender_is_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let host = courier_host(dir.path(), |c| {
        c.message_max_attempts = 3;
        c.message_backoff = Duration::from_millis(10);
    })
    .await;
    let ids = ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": {"fail": true}})).await.unwrap();
    let id = ids[0].as_str().unwrap().to_string();
    let dead = eventually("dead-lettering", async || host.outbox_messages(Some("dead"), 10).await.unwrap(), |d| !d.is_empty()).await;
    assert_eq!((dead[0].message.id.as_str(), dead[0].attempts), (id.as_str(), 3));
    assert!(dead[0].last_error.as_deref().is_some_and(|e| e.contains("fails on purpose")), "{:?}", dead[0].last_error);
    assert!(received(&host, "courier/b").await.is_empty());
    // A later message of the same pair is not held up by the dead one.
    ask(&host, "courier/a", "send", json!({"to": "courier/b", "payload": "next"})).await.unwrap();
    eventually("the next delivery", async || received(&host, "courier/b").await, |r| r.len() == 1).await;
    host.retry_message(&id).await.unwrap();
    assert_eq!(host.retry_message("nosuch").await.unwrap_err().kind, ErrorKind::Rejected);
    eventually("dead again", async || host.outbox_messages(Some("dead"), 10).await.unwrap(), |d| d.len() == 1 && d[0].attempts == 3).await;
    assert_eq!(host.purge_dead_messages().await.unwrap(), 1);
    assert!(host.outbox_messages(None, 10).await.unwrap().is_empty());
}
