//! Data written by an earlier version of Quark, opened by this one: each
//! backend's migration carries it over. Message ids became unique per
//! sender (inbox and outbox); entries written before keep working.

use std::sync::Arc;

use quark::storage::outbox::{Destination, OutboxMessage};
use quark::storage::{Store, TurnCommit};

use crate::support::*;

/// The SQL migrations up to `version`, read from the source tree.
async fn migrations_up_to(backend: &str, version: i64) -> sqlx::migrate::Migrator {
    let dir = root().join("host/store/src/migrations").join(backend);
    let mut migrator = sqlx::migrate::Migrator::new(dir).await.unwrap();
    migrator.migrations = migrator.migrations.iter().filter(|m| m.version <= version).cloned().collect::<Vec<_>>().into();
    migrator
}

/// The rows of layout 1 every backend gets: a pending message `m1` from
/// `c/s` to `c/r` whose turn ran (inbox entry `m1`), and an HTTP
/// idempotency key `k1` on `c/r`.
const LEGACY_SQL: [&str; 4] = [
    "INSERT INTO outbox (id, sender, kind, target, method, payload, status, attempts, next_at_ms, created_at_ms) \
     VALUES ('m1', 'c/s', 'actor', 'c/r', 'm', '{}', 'pending', 0, 1, 1)",
    "INSERT INTO outbox_lanes (sender, kind, target, next_at_ms) VALUES ('c/s', 'actor', 'c/r', 1)",
    "INSERT INTO inbox (actor, message_id, reply, at_ms) VALUES ('c/r', 'm1', 'r1', 1)",
    "INSERT INTO inbox (actor, message_id, reply, at_ms) VALUES ('c/r', 'k1', 'r2', 1)",
];

/// What must hold once the legacy rows are migrated.
async fn legacy_rows_are_per_sender(store: Arc<dyn Store>) {
    let r = id("c/r");
    assert_eq!(store.inbox_reply(&r, "c/s", "m1").await.unwrap(), Some(b"r1".to_vec()), "the entry took its message's sender");
    assert_eq!(store.inbox_reply(&r, "", "k1").await.unwrap(), Some(b"r2".to_vec()), "an HTTP key stays an HTTP key");
    assert_eq!(store.inbox_reply(&r, "", "m1").await.unwrap(), None);
    let outbox = store.outbox_store().unwrap();
    let messages = outbox.messages(None, 10).await.unwrap();
    assert_eq!(messages.len(), 1);
    assert_eq!((messages[0].message.id.as_str(), messages[0].message.sender.as_str()), ("m1", "c/s"));
    // Another sender may now use the same id.
    let other = OutboxMessage {
        id: "m1".into(),
        sender: "c/t".into(),
        destination: Destination::Actor { actor: "c/r".into(), method: "m".into() },
        payload: b"{}".to_vec(),
        event_type: None,
        created_at_ms: 2,
    };
    store.commit(&[TurnCommit { messages: vec![other], ..TurnCommit::state_only(id("c/t"), vec![]) }]).await.unwrap();
    assert_eq!(outbox.messages(None, 10).await.unwrap().len(), 2);
    // The migrated message is claimed and deleted by its key.
    let lanes = outbox.claim_lanes(10, 10, 10, 60_000, &[], &[]).await.unwrap();
    assert_eq!(lanes.len(), 2, "a lane per sender");
    let keys: Vec<String> = lanes.iter().flat_map(|l| l.messages.iter().map(|m| m.message.key())).collect();
    assert!(keys.contains(&"c/s\nm1".to_string()), "{keys:?}");
    outbox.claim_lanes(20, 0, 10, 60_000, &keys, &[]).await.unwrap();
    assert!(outbox.messages(None, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn sqlite_rows_of_layout_1_are_migrated() {
    use sqlx::Connection;
    let dir = crate::support::tempdir().unwrap();
    let db = dir.path().join("quark.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=rwc", db.display())).await.unwrap();
    migrations_up_to("sqlite", 6).await.run(&mut conn).await.unwrap();
    for sql in LEGACY_SQL {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = quark::storage::sqlite::SqliteStore::open(&db).await.unwrap();
    legacy_rows_are_per_sender(Arc::new(store)).await;
}

#[tokio::test]
async fn postgres_rows_of_layout_1_are_migrated() {
    use sqlx::{ConnectOptions, Connection};
    let url = postgres_url();
    let schema = unique("quark_test");
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let mut conn = match options.connect().await {
        Ok(conn) => conn,
        Err(e) if !backends_required() => {
            eprintln!("SKIP postgres_rows_of_layout_1_are_migrated: PostgreSQL is not reachable at {url} ({e})");
            return;
        }
        Err(e) => panic!("PostgreSQL is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    };
    sqlx::query(&format!("CREATE SCHEMA {schema}")).execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    let mut conn = options.options([("search_path", schema.as_str())]).connect().await.unwrap();
    migrations_up_to("postgres", 6).await.run(&mut conn).await.unwrap();
    for sql in LEGACY_SQL {
        sqlx::query(&sql.replace("'{}'", "'{}'::bytea").replace("'r1'", "'r1'::bytea").replace("'r2'", "'r2'::bytea")).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = quark::storage::postgres::PostgresStore::connect(&url, Some(&schema)).await.unwrap();
    legacy_rows_are_per_sender(Arc::new(store)).await;
}

#[tokio::test]
async fn redis_keys_of_layout_1_are_migrated() {
    let url = redis_url();
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = match client.get_multiplexed_async_connection().await {
        Ok(conn) => conn,
        Err(e) if !backends_required() => {
            eprintln!("SKIP redis_keys_of_layout_1_are_migrated: Redis is not reachable at {url} ({e})");
            return;
        }
        Err(e) => panic!("Redis is required (QUARK_REQUIRE_BACKENDS=1) but not reachable at {url}: {e}"),
    };
    let p = unique("quark_test");
    let lane = "c/s\nactor\nc/r";
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(format!("{p}:om:m1"))
        .arg(&[
            ("id", "m1"),
            ("sender", "c/s"),
            ("kind", "actor"),
            ("target", "c/r"),
            ("method", "m"),
            ("payload", "{}"),
            ("event_type", ""),
            ("created", "1"),
            ("status", "pending"),
            ("attempts", "0"),
            ("next_at", "1"),
            ("seq", "1"),
            ("lane", lane),
        ])
        .cmd("SET").arg(format!("{p}:oseq")).arg(1)
        .cmd("ZADD").arg(format!("{p}:oall")).arg(1).arg("m1")
        .cmd("ZADD").arg(format!("{p}:ol:{lane}")).arg(1).arg("m1")
        .cmd("ZADD").arg(format!("{p}:olanes")).arg(1).arg(lane)
        .cmd("HSET").arg(format!("{p}:ib:c/r")).arg("m1").arg("r1")
        .cmd("HSET").arg(format!("{p}:ib:c/r")).arg("k1").arg("r2")
        .cmd("ZADD").arg(format!("{p}:ibt")).arg(1).arg("c/r\nm1")
        .cmd("ZADD").arg(format!("{p}:ibt")).arg(1).arg("c/r\nk1");
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    let store = quark::storage::redis::RedisStore::connect(&url, Some(&p)).await.unwrap();
    legacy_rows_are_per_sender(Arc::new(store)).await;
    // Connecting again migrates nothing twice.
    let again = quark::storage::redis::RedisStore::connect(&url, Some(&p)).await.unwrap();
    assert_eq!(quark::storage::InboxStore::inbox_reply(&again, &id("c/r"), "", "k1").await.unwrap(), Some(b"r2".to_vec()));
}
