//! The HTTP contract: status codes, JSON error bodies, tokens, inspection.

use serde_json::{Value, json};

use crate::support::*;

async fn serve(token: Option<&str>) -> (String, crate::support::TempDir, quark::Node) {
    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let router = quark::api::router(host.clone(), token.map(str::to_string));
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (base, dir, host)
}

async fn json_of(r: reqwest::Response) -> (u16, Value) {
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn assert_error(status: u16, body: &Value, expected_status: u16, kind: &str) {
    assert_eq!(status, expected_status, "{body}");
    assert_eq!(body["error"]["kind"], json!(kind), "{body}");
    assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
}

#[tokio::test]
async fn deploy_call_and_errors_over_http() {
    let (base, _dir, _host) = serve(None).await;
    let http = reqwest::Client::new();

    let (status, body) = json_of(http.put(format!("{base}/v1/components/counter")).body(component("counter")).send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], json!(1));
    let (status, body) = json_of(http.put(format!("{base}/v1/components/counter")).body(component("counter")).send().await.unwrap()).await;
    assert_eq!((status, &body["created"]), (200, &json!(false)));
    let (status, body) = json_of(
        http.put(format!("{base}/v1/components/counter?memory_limit=16MiB"))
            .header("x-quark-turn-timeout", "2s")
            .body(component("counter-v2"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["version"], json!(2));
    assert_eq!(
        body["manifest"],
        json!({"memory_limit": 16 << 20, "turn_timeout": 2000, "snapshot_every": 1000, "retention": "keep", "stateless_workers": 0})
    );

    let call = |path: &str, body: &'static str| http.post(format!("{base}/v1/actors/{path}")).body(body).send();
    let (status, body) = json_of(call("counter/alice/increment", r#"{"by": 2}"#).await.unwrap()).await;
    assert_eq!((status, body), (200, json!(2)));
    let (status, body) = json_of(call("counter/alice/get", "").await.unwrap()).await;
    assert_eq!((status, body), (200, json!(2)));

    let (status, body) = json_of(call("counter/alice/increment", "{oops").await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let (status, body) = json_of(call("nosuch/alice/get", "").await.unwrap()).await;
    assert_error(status, &body, 404, "not-found");
    let (status, body) = json_of(call("counter/alice/nosuch", "").await.unwrap()).await;
    assert_error(status, &body, 404, "not-found");
    let (status, body) = json_of(call("counter/alice/increment", r#"{"by": "two"}"#).await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let big = format!("\"{}\"", "x".repeat(2 << 20));
    let (status, body) =
        json_of(http.post(format!("{base}/v1/actors/counter/alice/increment")).body(big).send().await.unwrap()).await;
    assert_error(status, &body, 413, "payload-too-large");
    let (status, body) =
        json_of(http.put(format!("{base}/v1/components/junk")).body("not wasm").send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let (status, body) = json_of(
        http.put(format!("{base}/v1/components/counter?memory_limit=lots")).body(component("counter")).send().await.unwrap(),
    )
    .await;
    assert_error(status, &body, 400, "bad-request");

    // Nothing above changed the counter.
    let (_, body) = json_of(call("counter/alice/get", "").await.unwrap()).await;
    assert_eq!(body, json!(2));
}

#[tokio::test]
async fn inspection_health_and_metrics() {
    let (base, _dir, host) = serve(None).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let http = reqwest::Client::new();
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);
    http.post(format!("{base}/v1/actors/counter/m/increment")).body(r#"{"by":1}"#).send().await.unwrap();

    let (status, body) = json_of(http.get(format!("{base}/v1/actors")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let actors = body["actors"].as_array().unwrap();
    assert_eq!(actors.len(), 1);
    assert_eq!(actors[0]["id"], json!("counter/m"));
    assert!(actors[0]["memory_bytes"].as_u64().unwrap() > 0);

    let (status, body) = json_of(http.get(format!("{base}/v1/components/counter/versions")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(body["active_version"], json!(1));

    let metrics = http.get(format!("{base}/metrics")).send().await.unwrap().text().await.unwrap();
    for name in [
        "quark_turns_total{outcome=\"ok\"} 1",
        "quark_turn_duration_seconds_count 1",
        "quark_activations 1",
        "quark_commit_turns_total 1",
        "quark_guest_memory_bytes",
        "quark_host_resident_memory_bytes",
    ] {
        assert!(metrics.contains(name), "missing {name} in:\n{metrics}");
    }
}

#[tokio::test]
async fn token_guards_the_api_and_public_addresses_need_one() {
    let (base, _dir, _host) = serve(Some("s3cret")).await;
    let http = reqwest::Client::new();
    let (status, body) = json_of(http.get(format!("{base}/v1/actors")).send().await.unwrap()).await;
    assert_error(status, &body, 401, "unauthorized");
    let (status, body) = json_of(http.get(format!("{base}/v1/actors")).bearer_auth("wrong").send().await.unwrap()).await;
    assert_error(status, &body, 401, "unauthorized");
    let ok = http.get(format!("{base}/v1/actors")).bearer_auth("s3cret").send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(http.get(format!("{base}/healthz")).send().await.unwrap().status(), 200);

    let dir = crate::support::tempdir().unwrap();
    let host = sqlite_host(dir.path()).await;
    let public = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let e = quark::api::serve(host, public, None).await.unwrap_err();
    assert!(e.to_string().contains("without a token"), "{e}");
}

#[tokio::test]
async fn journal_replay_snapshot_and_projections_over_http() {
    let (base, _dir, _host) = serve(None).await;
    let http = reqwest::Client::new();
    for (name, component_name) in [("bank", "bank"), ("accounts-summary", "accounts-summary")] {
        let r = http.put(format!("{base}/v1/components/{name}?snapshot_every=2&retention=archive")).body(component(component_name)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 201);
    }
    let (status, body) =
        json_of(http.put(format!("{base}/v1/components/bank?retention=forever")).body(component("bank")).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    for amount in [10, 20, 30] {
        let r = http.post(format!("{base}/v1/actors/bank/alice/deposit")).body(format!(r#"{{"amount": {amount}}}"#)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let (status, body) = json_of(http.post(format!("{base}/v1/actors/bank/alice/withdraw")).body(r#"{"amount": 500}"#).send().await.unwrap()).await;
    assert_error(status, &body, 422, "rejected");

    let (status, body) = json_of(http.get(format!("{base}/v1/actors/bank/alice/journal?from=2")).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["version"], json!(3));
    assert_eq!(body["events"].as_array().unwrap().len(), 2);
    assert_eq!(body["events"][0]["data"], json!({"deposited": {"amount": 20}}));
    assert_eq!(body["events"][0]["method"], json!("deposit"));

    let (status, body) = json_of(http.get(format!("{base}/v1/actors/bank/alice/replay?to_version=2")).send().await.unwrap()).await;
    assert_eq!((status, &body["state"], &body["version"]), (200, &json!({"balance": 30}), &json!(2)), "{body}");
    let (status, body) = json_of(http.get(format!("{base}/v1/actors/bank/alice/replay?at=2001-01-01T00:00:00Z")).send().await.unwrap()).await;
    assert_eq!((status, &body["version"], &body["state"]), (200, &json!(0), &json!({"balance": 0})), "{body}");
    let (status, body) = json_of(http.get(format!("{base}/v1/actors/bank/alice/replay")).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let (status, body) = json_of(http.get(format!("{base}/v1/actors/bank/alice/balance")).send().await.unwrap()).await;
    assert_error(status, &body, 404, "not-found");

    let (status, body) = json_of(http.post(format!("{base}/v1/snapshots/bank/alice")).send().await.unwrap()).await;
    assert_eq!((status, &body["version"]), (200, &json!(3)), "{body}");

    // JSON of the wrong shape sent to the host itself is the caller's
    // mistake too: 400, like a body that is not JSON (axum says 422).
    let (status, body) = json_of(http.post(format!("{base}/v1/projections")).json(&json!({"name": "summary"})).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    assert!(body["error"]["message"].as_str().unwrap().contains("missing field `source`"), "{body}");

    let projection = json!({"name": "summary", "source": "bank", "target": "accounts-summary/all"});
    let (status, body) = json_of(http.post(format!("{base}/v1/projections")).json(&projection).send().await.unwrap()).await;
    assert_eq!((status, &body["method"]), (201, &json!("project")), "{body}");
    let mut caught_up = false;
    for _ in 0..500 {
        let (_, body) = json_of(http.get(format!("{base}/v1/projections")).send().await.unwrap()).await;
        if body["projections"][0]["lag"] == json!(0) && body["projections"][0]["checkpoint"].as_u64() > Some(0) {
            caught_up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(caught_up, "the projection never caught up");
    let (_, total) = json_of(http.post(format!("{base}/v1/actors/accounts-summary/all/total")).send().await.unwrap()).await;
    assert_eq!(total, json!(60));
    let r = http.delete(format!("{base}/v1/projections/summary")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 204);
    let (status, body) = json_of(http.delete(format!("{base}/v1/projections/summary")).send().await.unwrap()).await;
    assert_error(status, &body, 404, "not-found");
}

#[tokio::test]
async fn an_idempotency_key_runs_a_call_once() {
    let (base, _dir, host) = serve(None).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let http = reqwest::Client::new();
    let call = |key: &'static str| {
        http.post(format!("{base}/v1/actors/counter/bob/increment")).header("Idempotency-Key", key).body(r#"{"by": 3}"#).send()
    };
    assert_eq!(json_of(call("order-17").await.unwrap()).await, (200, json!(3)));
    assert_eq!(json_of(call("order-17").await.unwrap()).await, (200, json!(3)), "the repeat gets the first reply");
    assert_eq!(json_of(call("order-18").await.unwrap()).await, (200, json!(6)));
    assert_eq!(ask(&host, "counter/bob", "get", json!(null)).await.unwrap(), json!(6), "two turns ran, not three");
    let long = "k".repeat(300);
    let (status, body) =
        json_of(http.post(format!("{base}/v1/actors/counter/bob/get")).header("Idempotency-Key", long).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
}

#[tokio::test]
async fn inbox_entries_expire_after_the_retention() {
    let dir = crate::support::tempdir().unwrap();
    let mut config = quark::NodeConfig::new(dir.path());
    config.inbox_retention = std::time::Duration::from_secs(2);
    let host = host_with_config(config).await;
    host.host().deploy("counter", component("counter"), manifest()).await.unwrap();
    let inc = || host.host().ask_idempotent(id("counter/e"), "increment", br#"{"by": 1}"#.to_vec(), "once");
    assert_eq!(inc().await.unwrap(), b"1");
    assert_eq!(inc().await.unwrap(), b"1");
    // The expiry task forgets it (every 200 ms here); then the key runs again.
    let mut forgotten = false;
    for _ in 0..500 {
        if host.host().store().inbox_reply(&id("counter/e"), "", "once").await.unwrap().is_none() {
            forgotten = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(forgotten, "the inbox entry never expired");
    assert_eq!(inc().await.unwrap(), b"2");
}

#[tokio::test]
async fn the_outbox_over_http() {
    let (base, _dir, _host) = serve(None).await;
    let http = reqwest::Client::new();
    let (status, body) = json_of(http.get(format!("{base}/v1/outbox?status=pending")).send().await.unwrap()).await;
    assert_eq!((status, body), (200, json!({"messages": []})));
    let (status, body) = json_of(http.get(format!("{base}/v1/outbox?status=sent")).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let (status, body) = json_of(http.delete(format!("{base}/v1/outbox")).send().await.unwrap()).await;
    assert_error(status, &body, 400, "bad-request");
    let (status, body) = json_of(http.delete(format!("{base}/v1/outbox?status=dead")).send().await.unwrap()).await;
    assert_eq!((status, body), (200, json!({"purged": 0})));
    let (status, body) = json_of(http.post(format!("{base}/v1/outbox/nosuch/retry")).send().await.unwrap()).await;
    assert_error(status, &body, 404, "not-found");
}
