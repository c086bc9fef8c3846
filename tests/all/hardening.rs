//! The host tried as an attacker or an unlucky client would: callers that
//! go away, replies held back, cross-site requests, slow clients, bad
//! input of every shape. Each test failed before its fix.

use std::sync::Arc;
use std::time::Duration;

use quark::storage::sqlite::SqliteStore;
use quark::{Node, NodeConfig};
use serde_json::{Value, json};
use sqlx::Connection;

use crate::support::*;

/// A caller whose future is dropped while its turn's commit is in flight
/// (an HTTP client that disconnects): the commit still completes on its
/// own, its tells go out, and the actor is deactivated when idle.
#[tokio::test]
async fn a_caller_that_goes_away_during_the_commit_does_not_stop_it() {
    let dir = crate::support::tempdir().unwrap();
    let db = dir.path().join("quark.db");
    let store = Arc::new(SqliteStore::open_with_busy_timeout(&db, Duration::from_secs(20)).await.unwrap());
    let mut config = NodeConfig::new(dir.path());
    config.host.idle_timeout = Duration::from_millis(300);
    let host = Node::start(config, store).await.unwrap();
    host.host().deploy("misbehave", component("misbehave"), manifest()).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();

    // Another process holds the write lock: the commit waits for it.
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut other).await.unwrap();
    let tell = json!({"target": "counter/told", "method": "increment", "payload": {"by": 1}, "fail": false, "write": true});
    let gave_up = tokio::time::timeout(Duration::from_millis(500), ask(&host, "misbehave/c", "tell", tell)).await;
    assert!(gave_up.is_err(), "the commit is still waiting when the caller leaves");
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();

    eventually("the committed turn's tell", async || ask(&host, "counter/told", "get", json!(null)).await.unwrap(), |v| *v == json!(1)).await;
    assert_eq!(ask(&host, "misbehave/c", "dump", json!(null)).await.unwrap(), json!({"told": 1}), "the turn committed once");
    eventually("misbehave/c deactivated when idle", async || host.host().actors().iter().any(|a| a.id == "misbehave/c"), |active| !active).await;
}

/// A turn that committed answers as soon as its commit is durable, not
/// when the actor's next (long) turn ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_reply_goes_out_while_the_next_turn_runs() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("64MiB", "2s")).await.unwrap();
    let call = |method: &'static str, payload: Value| {
        let host = host.clone();
        tokio::spawn(async move {
            let reply = ask(&host, "misbehave/q", method, payload).await;
            (reply, std::time::Instant::now())
        })
    };
    // A long turn holds the actor; a write and another long turn (2 s,
    // its time limit) queue behind it.
    let first_spin = call("spin", json!(null));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let write = call("put", json!({"key": "k", "value": 1}));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second_spin = call("spin", json!(null));
    let (written, write_done) = write.await.unwrap();
    written.unwrap();
    let (_, spin_done) = second_spin.await.unwrap();
    let _ = first_spin.await;
    let ahead = spin_done.saturating_duration_since(write_done);
    assert!(ahead > Duration::from_secs(1), "the write's reply came only {ahead:?} before the next turn's end: it waited for it");
}

async fn serve_api(host: &Node, access: quark::api::ApiConfig) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let host = host.clone();
    tokio::spawn(async move { quark::api::serve_with(host, listener, access).await.unwrap() });
    base
}

async fn error_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_else(|e| panic!("status {status}: the body is not JSON: {e}"));
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    (status, body)
}

/// Every error is `{"error": {"kind", "message"}}`, axum's own rejections
/// included; bodies and bulk requests are bounded.
#[tokio::test]
async fn every_error_is_a_json_body() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter")]).await;
    let base = serve_api(&host, Default::default()).await;
    let http = reqwest::Client::new();
    let cases = [
        (http.get(format!("{base}/v1/jobs?limit=abc")), 400, "bad-request"),
        (http.patch(format!("{base}/v1/jobs")), 405, "bad-request"),
        (http.delete(format!("{base}/v1/components/counter")), 405, "bad-request"),
        (http.post(format!("{base}/v1/actors/counter/%FF/get")), 400, "bad-request"),
        (http.get(format!("{base}/v1/nosuch")), 404, "not-found"),
        (http.get(format!("{base}/nosuch")), 404, "not-found"),
        (http.post(format!("{base}/v1/jobs")).header("content-type", "application/json").body(vec![b' '; 65 << 20]), 413, "payload-too-large"),
        (http.post(format!("{base}/v1/projections")).header("content-type", "application/json").body("{"), 400, "bad-request"),
    ];
    for (request, status, kind) in cases {
        let (got, body) = error_of(request.send().await.unwrap()).await;
        assert_eq!((got, body["error"]["kind"].as_str().unwrap()), (status, kind), "{body}");
    }
    let too_many: Vec<Value> = (0..100_001).map(|_| json!({"target": "counter/x", "method": "get"})).collect();
    let (status, body) = error_of(http.post(format!("{base}/v1/jobs")).json(&too_many).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["kind"].as_str().unwrap()), (507, "limit-exceeded"), "{body}");
    assert!(host.jobs().list(None, None, 10).await.unwrap().is_empty(), "nothing of it was stored");
}

/// A page on another origin, or a request for a name this host does not
/// serve (DNS rebinding), is refused on every route, token or not; the
/// host's own origin, and clients that send no `Origin`, are served.
#[tokio::test]
async fn cross_site_and_rebound_requests_are_refused() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter")]).await;
    let access = quark::api::ApiConfig { allowed_origins: vec!["https://console.example".into()], ..Default::default() };
    let base = serve_api(&host, access).await;
    let authority = base.trim_start_matches("http://").to_string();
    let http = reqwest::Client::new();
    let increment = || http.post(format!("{base}/v1/actors/counter/csrf/increment")).header("content-type", "text/plain").body(r#"{"by": 1}"#);

    let (status, body) = error_of(increment().header("origin", "https://evil.example").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["kind"].as_str().unwrap()), (403, "forbidden"), "{body}");
    let (status, body) = error_of(increment().header("host", "evil.example").send().await.unwrap()).await;
    assert_eq!((status, body["error"]["kind"].as_str().unwrap()), (403, "forbidden"), "{body}");
    let (status, _) = error_of(
        http.post(format!("{base}/v1/jobs"))
            .header("origin", "null")
            .json(&json!({"target": "counter/csrf", "method": "increment", "cron": "* * * * *"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
    assert!(host.jobs().list(None, None, 10).await.unwrap().is_empty(), "no cron job was created");
    assert_eq!(ask(&host, "counter/csrf", "get", json!(null)).await.unwrap(), json!(0), "no turn ran");

    // Same origin, an allowed origin, no origin, `localhost`: served.
    for request in [
        increment().header("origin", format!("http://{authority}")),
        increment().header("origin", "https://console.example"),
        increment(),
        increment().header("host", format!("localhost:{}", authority.rsplit(':').next().unwrap())),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{:?}", response.text().await);
    }
    assert_eq!(ask(&host, "counter/csrf", "get", json!(null)).await.unwrap(), json!(4));
}

/// With a token, `/metrics` needs it too (it names actor types and
/// sinks); `/healthz` stays open for probes.
#[tokio::test]
async fn metrics_need_the_token_and_healthz_does_not() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let base = serve_api(&host, quark::api::ApiConfig { token: Some("s3cret".into()), ..Default::default() }).await;
    let http = reqwest::Client::new();
    let (status, body) = error_of(http.get(format!("{base}/metrics")).send().await.unwrap()).await;
    assert_eq!((status, body["error"]["kind"].as_str().unwrap()), (401, "unauthorized"));
    let (status, _) = error_of(http.get(format!("{base}/metrics")).bearer_auth("s3cre").send().await.unwrap()).await;
    assert_eq!(status, 401, "a prefix of the token is not the token");
    assert_eq!(http.get(format!("{base}/metrics")).bearer_auth("s3cret").send().await.unwrap().status().as_u16(), 200);
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status().as_u16(), 200);
}

/// A connection that never finishes its headers is closed after the
/// header-read timeout, before authentication could even start.
#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let base = serve_api(&host, Default::default()).await;
    let mut slow = tokio::net::TcpStream::connect(base.trim_start_matches("http://")).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ").await.unwrap();
    let mut buffer = [0u8; 256];
    let closed = tokio::time::timeout(quark::api::HEADER_READ_TIMEOUT + Duration::from_secs(5), slow.read(&mut buffer)).await;
    assert!(closed.is_ok(), "the connection is still open after the header-read timeout");
    // The host still serves.
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status().as_u16(), 200);
}

/// A method that takes nothing accepts `{}`, `null` and an empty body in
/// every language: `quark call counter/alice get '{}'` is what people type.
#[tokio::test]
async fn a_method_without_argument_accepts_an_empty_object() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for actor_type in counters_in_every_language(&host, "a_method_without_argument_accepts_an_empty_object").await {
        let actor = format!("{actor_type}/empty");
        for payload in [&b"{}"[..], b"null", b""] {
            let reply = host.host().ask(id(&actor), "get", payload.to_vec()).await;
            assert_eq!(reply.map(|r| serde_json::from_slice::<Value>(&r).unwrap()), Ok(json!(0)), "{actor} get {:?}", String::from_utf8_lossy(payload));
        }
    }
}

/// A Redis that may evict keys is refused at start, with what to do.
#[tokio::test]
async fn a_redis_that_evicts_keys_is_refused() {
    let Some(server) = RedisServer::start_or_skip("a_redis_that_evicts_keys_is_refused", &["--maxmemory-policy", "allkeys-lru"]).await else { return };
    let e = quark::storage::redis::RedisStore::connect(&server.url, Some("evict")).await.err().expect("refused");
    let message = e.to_string();
    assert!(message.contains("allkeys-lru") && message.contains("noeviction"), "{message}");
}

/// A private `redis-server` on a free loopback port, stopped on drop.
struct RedisServer {
    url: String,
    child: std::process::Child,
}

impl RedisServer {
    /// [`RedisServer::start`], or `None` after printing SKIP when
    /// `redis-server` is not installed (a failure where backends are required).
    async fn start_or_skip(test: &str, args: &[&str]) -> Option<RedisServer> {
        let server = Self::start(args).await;
        if server.is_none() {
            let why = "redis-server is not installed";
            assert!(!backends_required(), "{test}: {why}; QUARK_REQUIRE_BACKENDS=1 requires it");
            eprintln!("SKIP {test}: {why}");
        }
        server
    }

    async fn start(args: &[&str]) -> Option<RedisServer> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").ok()?.local_addr().ok()?.port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let server = RedisServer { url: format!("redis://127.0.0.1:{port}"), child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return Some(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        None
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one turn buffers for its commit sits in host memory, outside the
/// guest's memory limit: it is bounded (bytes, counts) with
/// `limit-exceeded`, and nothing of such a turn is committed. Writing one
/// key again and again does not add up.
#[tokio::test]
async fn a_turn_cannot_buffer_unbounded_effects() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    host.host().deploy("misbehave", component("misbehave"), manifest()).await.unwrap();
    let e = ask(&host, "misbehave/f", "flood", json!({"count": 40, "bytes": 1_000_000})).await.unwrap_err();
    assert_eq!(e.kind, quark::ErrorKind::LimitExceeded, "{e}");
    assert!(e.message.contains("buffer"), "{e}");
    assert_eq!(ask(&host, "misbehave/f", "dump", json!(null)).await.unwrap(), json!({}), "nothing of it was committed");
    let n = ask(&host, "misbehave/f", "flood", json!({"count": 100, "bytes": 1_000_000, "same_key": true})).await.unwrap();
    assert_eq!(n, json!(100), "rewriting one key holds one value");
}

/// A mailbox is bounded: past it, messages to that actor are refused with
/// `unavailable` (backpressure) instead of growing the host; a told
/// message that fails is logged and counted, not lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mailboxes_are_bounded_and_dropped_tells_are_counted() {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    host.host().deploy("misbehave", component("misbehave"), manifest_with("64MiB", "2s")).await.unwrap();
    let busy = {
        let host = host.clone();
        tokio::spawn(async move { ask(&host, "misbehave/m", "spin", json!(null)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut refused = None;
    for i in 0..20_000 {
        if let Err(e) = host.host().tell(id("misbehave/m"), "echo", b"1".to_vec()) {
            refused = Some((i, e));
            break;
        }
    }
    let (at, e) = refused.expect("the mailbox was never full");
    assert_eq!(e.kind, quark::ErrorKind::Unavailable, "{e}");
    assert!(e.message.contains("mailbox") && at >= 9_000, "refused at message {at}: {e}");
    assert!(counter(&host, "quark_mailbox_full_total") >= 1, "counted");
    let _ = busy.await;

    host.host().tell(id("misbehave/d"), "write_then_fail", b"null".to_vec()).unwrap();
    eventually("the failed tell counted", async || counter(&host, "quark_tells_dropped_total"), |n| *n >= 1).await;
}

/// A counter's value in the host's metrics text.
fn counter(host: &Node, name: &str) -> u64 {
    let text = host.metrics_text();
    let line = text.lines().find(|l| l.split(' ').next() == Some(name)).unwrap_or_else(|| panic!("no {name} in\n{text}"));
    line.rsplit(' ').next().unwrap().parse().unwrap()
}

/// A bounded fuzz pass over the HTTP API: random routes, methods, path
/// segments, query strings, headers and bodies (a seeded generator, so a
/// failure reproduces). No response may be a 5xx other than `unavailable`
/// or `unknown-outcome`, every error must be a JSON body, and the host
/// must still serve afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fuzzing_the_http_api_finds_no_server_error() {
    const CASES: usize = 10_000;
    let dir = crate::support::tempdir().unwrap();
    let host = host_with(dir.path(), &[("counter", "counter"), ("bank", "bank")]).await;
    let base = serve_api(&host, Default::default()).await;
    let authority = base.trim_start_matches("http://").to_string();
    let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
    let mut seed: u64 = std::env::var("QUARK_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_cafe_f00d_d00d);
    eprintln!("fuzzing the HTTP API: {CASES} cases, seed {seed} (QUARK_FUZZ_SEED)");
    let mut next = move || {
        // xorshift64*: small, seeded, good enough to pick cases.
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let segments = ["counter", "bank", "nosuch", "Counter", "a%2Fb", "%FF", "%00", "..", "%20", "x".repeat(300).leak(), "alice", "k\u{e9}"];
    let methods = ["get", "increment", "deposit", "balance", "nosuch", "journal", "replay", "%FF"];
    let queries = ["", "?limit=abc", "?limit=5", "?limit=-1", "?status=dead", "?status=bogus", "?from=-1&to=x", "?to_version=x", "?at=yesterday",
        "?memory_limit=1TB", "?turn_timeout=0s", "?retention=forever", "?sender=%FF", "?%zz", "?limit=99999999999999999999"];
    let bodies: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{}".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        br#"{"by": 1}"#.to_vec(),
        br#"{"by": "two"}"#.to_vec(),
        br#"{"amount": 1e400}"#.to_vec(),
        br#"{"target": "counter/f", "method": "get"}"#.to_vec(),
        br#"[{"target": "counter/f", "method": "increment", "payload": {"by": 1}, "cron": "not a cron"}]"#.to_vec(),
        br#"{"target": "nosuch/x", "method": "m", "run_at": "tomorrow"}"#.to_vec(),
        br#"{"name": "p", "source_type": "bank", "target": "counter/p", "method": "get"}"#.to_vec(),
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        b"\0asm\x01\0\0\0".to_vec(),
        b"\0asm\x0d\0\x01\0garbage".to_vec(),
        vec![0xff, 0xfe, 0x00, 0x80],
        "\"\u{1F600}\"".as_bytes().to_vec(),
    ];
    let mut statuses = std::collections::BTreeMap::new();
    for case in 0..CASES {
        let mut pick = |n: usize| (next() % n as u64) as usize;
        let segment = |i: usize| segments[i].to_string();
        // Half the time a deployed type and a plain key, so turns run.
        let t = if pick(2) == 0 { ["counter", "bank"][pick(2)].to_string() } else { segment(pick(segments.len())) };
        let k = if pick(2) == 0 { format!("f{}", pick(20)) } else { segment(pick(segments.len())) };
        let m = methods[pick(methods.len())].to_string();
        let id = ["nosuch", "%FF", "k0123", "j0"][pick(4)];
        let (natural, path) = match pick(19) {
            0 => ("GET", "/v1/components".to_string()),
            1 => ("PUT", format!("/v1/components/{t}")),
            2 => ("GET", format!("/v1/components/{t}/versions")),
            3 => ("POST", format!("/v1/components/{t}/rollback")),
            4 => ("GET", "/v1/actors".to_string()),
            5..=8 => (["POST", "GET"][pick(2)], format!("/v1/actors/{t}/{k}/{m}")),
            9 => ("POST", format!("/v1/snapshots/{t}/{k}")),
            10 => (["GET", "POST"][pick(2)], "/v1/projections".to_string()),
            11 => ("DELETE", format!("/v1/projections/{k}")),
            12 => (["GET", "POST", "DELETE"][pick(3)], "/v1/jobs".to_string()),
            13 => ("GET", format!("/v1/jobs/{id}")),
            14 => ("POST", format!("/v1/jobs/{id}/{}", ["cancel", "retry", "nosuch"][pick(3)])),
            15 => (["GET", "DELETE"][pick(2)], "/v1/outbox".to_string()),
            16 => ("POST", format!("/v1/outbox/{id}/retry")),
            17 => ("GET", ["/healthz", "/metrics", "/ui", "/"][pick(4)].to_string()),
            _ => ("GET", format!("/{t}/{k}")),
        };
        let query = queries[pick(queries.len())];
        // Mostly the route's own method, sometimes any.
        let method = if pick(4) == 0 { ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"][pick(7)] } else { natural };
        let mut request = http.request(method.parse().unwrap(), format!("{base}{path}{query}"));
        request = request.body(bodies[pick(bodies.len())].clone());
        match pick(12) {
            0 => request = request.header("origin", "https://evil.example"),
            1 => request = request.header("origin", format!("http://{authority}")),
            2 => request = request.header("host", ["evil.example", "localhost", "[::1]:1", "127.0.0.1"][pick(4)]),
            _ => {}
        }
        if pick(4) == 0 {
            request = request.header("idempotency-key", ["k", "", &"x".repeat(300), "é"][pick(4)]);
        }
        if pick(3) == 0 {
            request = request.header("content-type", ["application/json", "text/plain", "application/x-www-form-urlencoded"][pick(3)]);
        }
        let response = request.send().await.unwrap_or_else(|e| panic!("case {case}: {method} {path}{query}: no response: {e}"));
        let status = response.status().as_u16();
        *statuses.entry(status).or_insert(0) += 1;
        if status < 400 || method == "HEAD" {
            continue;
        }
        let text = response.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("case {case}: {method} {path}{query}: {status} body is not JSON ({e}): {text:?}"));
        let kind = body["error"]["kind"].as_str().unwrap_or_else(|| panic!("case {case}: {method} {path}{query}: {status} without an error kind: {body}"));
        assert!(status < 500 || kind == "unavailable" || kind == "unknown-outcome", "case {case}: {method} {path}{query}: {status} {body}");
    }
    eprintln!("fuzzing the HTTP API: {CASES} cases, statuses {statuses:?}");
    assert_eq!(reqwest::get(format!("{base}/healthz")).await.unwrap().status().as_u16(), 200, "the host still serves");
    assert_eq!(ask(&host, "counter/after", "increment", json!({"by": 1})).await.unwrap(), json!(1));
}

/// A wrong argument is the caller's mistake in every language:
/// `bad-request` (not the actor's `rejected`), a message naming the missing
/// field, and nothing committed (JavaScript used to store `null`, Python to
/// answer `internal` with a KeyError).
#[tokio::test]
async fn a_missing_field_is_a_bad_request_alike_in_every_language() {
    let dir = crate::support::tempdir().unwrap();
    let host = host_with_shared_compiled_cache(dir.path()).await;
    for actor_type in counters_in_every_language(&host, "a_missing_field_is_a_bad_request_alike_in_every_language").await {
        let actor = format!("{actor_type}/wrong");
        assert_eq!(ask(&host, &actor, "increment", json!({"by": 5})).await.unwrap(), json!(5), "{actor}");
        let e = ask(&host, &actor, "increment", json!({"amount": 2})).await.unwrap_err();
        assert_eq!(e.kind, quark::ErrorKind::BadRequest, "{actor}: {e}");
        assert_eq!(e.message, "bad request for `increment`: missing field `by`", "{actor}: the same words in every language");
        assert_eq!(ask(&host, &actor, "get", json!(null)).await.unwrap(), json!(5), "{actor}: nothing committed");
    }
}

/// Deploys the counter sample in Rust, Python and JavaScript (the last two
/// where their toolchains could be installed); returns the types deployed.
async fn counters_in_every_language(host: &Node, test: &str) -> Vec<&'static str> {
    let mut types = vec!["counter"];
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    for name in ["counter-py", "counter-js"] {
        if let Some(bytes) = guest_in_other_language(name, test) {
            host.host().deploy(name, bytes, manifest()).await.unwrap();
            types.push(name);
        }
    }
    types
}

/// Redis stops answering while a commit script is in flight (SIGSTOP):
/// past the client's response timeout the caller hears `unknown-outcome`,
/// not `unavailable`, and rightly so: once Redis runs again, the script
/// has committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_commit_past_its_timeout_is_an_unknown_outcome() {
    let Some(server) = RedisServer::start_or_skip("a_redis_commit_past_its_timeout_is_an_unknown_outcome", &[]).await else { return };
    let store = quark::storage::redis::RedisStore::connect(&server.url, Some("stop")).await.unwrap();
    let dir = crate::support::tempdir().unwrap();
    let mut config = NodeConfig::new(dir.path());
    config.host.call_timeout = Duration::from_secs(60);
    let host = Node::start(config, Arc::new(store)).await.unwrap();
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    assert_eq!(ask(&host, "counter/r", "increment", json!({"by": 1})).await.unwrap(), json!(1));

    let signal = |sig: &str| {
        let status = std::process::Command::new("kill").args([sig, &server.child.id().to_string()]).status().unwrap();
        assert!(status.success(), "kill {sig}");
    };
    // The actor is active and its state cached: the turn reads nothing,
    // and only its commit meets the stopped server.
    signal("-STOP");
    let e = ask(&host, "counter/r", "increment", json!({"by": 10})).await.unwrap_err();
    signal("-CONT");
    assert_eq!(e.kind, quark::ErrorKind::UnknownOutcome, "{e}");
    assert!(e.message.contains("Idempotency-Key"), "{e}");
    let value = eventually("the state readable again", async || ask(&host, "counter/r", "get", json!(null)).await.ok(), Option::is_some).await;
    assert_eq!(value, Some(json!(11)), "the script ran after all: the outcome was indeed unknown, not a failure");
}
