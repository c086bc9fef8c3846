//! The `quark` binary as a person uses it: serve, deploy, call, inspect,
//! and SIGKILL in the middle of traffic.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::support::*;

/// The `quark` binary of this build profile, beside the test binary's
/// `deps/` folder (`make test` builds it first).
pub(crate) static QUARK: std::sync::LazyLock<std::path::PathBuf> = std::sync::LazyLock::new(|| {
    let exe = std::env::current_exe().unwrap();
    let quark = exe.parent().and_then(|deps| deps.parent()).unwrap().join("quark");
    assert!(quark.exists(), "{} is missing: build it first (`cargo build --release -p quark`, which `make test` does)", quark.display());
    quark
});

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A `quark serve` process, killed when dropped.
pub(crate) struct Server {
    pub(crate) child: Child,
    pub(crate) url: String,
}

impl Server {
    pub(crate) fn start(data_dir: &Path, port: u16) -> Server {
        Self::start_with(data_dir, port, &[])
    }

    pub(crate) fn start_with(data_dir: &Path, port: u16, extra: &[&str]) -> Server {
        Server::start_with_env(data_dir, port, extra, &[])
    }

    /// [`Server::start_with`], with `env` set in the server's environment.
    pub(crate) fn start_with_env(data_dir: &Path, port: u16, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let child = Command::new(&*QUARK)
            .envs(env.iter().copied())
            .args(["serve", "--data-dir"])
            .arg(data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .stdout(Stdio::null())
            // Kept beside the data for a failing test to be read.
            .stderr(std::fs::File::create(data_dir.join("serve.log")).map(Stdio::from).unwrap_or_else(|_| Stdio::null()))
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        // Poll /healthz; give up (rather than hang) after 1,200 tries.
        let healthy = (0..1200).any(|_| {
            let ok = reqwest::blocking_get_ok(&format!("{url}/healthz"));
            if !ok {
                std::thread::sleep(Duration::from_millis(50));
            }
            ok
        });
        assert!(healthy, "quark serve did not become healthy");
        Server { child, url }
    }

    pub(crate) fn quark(&self, args: &[&str]) -> Output {
        Command::new(&*QUARK).args(args).env("QUARK_SERVER", &self.url).output().unwrap()
    }

    pub(crate) fn kill9(mut self) {
        // Child::kill sends SIGKILL on Unix: no shutdown code runs.
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) mod reqwest {
    /// A tiny blocking GET over std's TcpStream, so the poll loop needs no runtime.
    pub(crate) fn blocking_get_ok(url: &str) -> bool {
        blocking_get(url).is_some()
    }

    /// The body of a `200 OK` answer to a GET of `url`, if that is what came.
    pub(crate) fn blocking_get(url: &str) -> Option<String> {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let path = format!("/{}", url.trim_start_matches("http://").split_once('/').map(|x| x.1).unwrap_or(""));
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        let _ = write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if !out.starts_with("HTTP/1.1 200") {
            return None;
        }
        Some(out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default())
    }

    /// A POST of `body` to `url`: the status and body, or `None` when the
    /// host could not be reached or answered nothing.
    pub(crate) fn blocking_post(url: &str, body: &str) -> Option<(u16, String)> {
        use std::io::{Read, Write};
        let addr = url.trim_start_matches("http://").split('/').next().unwrap().to_string();
        let path = format!("/{}", url.trim_start_matches("http://").split_once('/').map(|x| x.1).unwrap_or(""));
        let mut s = std::net::TcpStream::connect(&addr).ok()?;
        s.set_read_timeout(Some(std::time::Duration::from_secs(10))).ok()?;
        let _ = write!(s, "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let status = out.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()?;
        Some((status, out.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default()))
    }
}

pub(crate) fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub(crate) fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn cli_deploy_call_versions_actors_rollback() {
    let dir = crate::support::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port());
    let counter = root().join("target/samples/counter.wasm");
    let v2 = root().join("target/test-actors/counter-v2.wasm");
    component("counter"); // fails clearly if not built

    let out = server.quark(&["deploy", "counter", counter.to_str().unwrap(), "--memory-limit", "16MiB", "--turn-timeout", "5s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("deployed counter v1"), "{}", stdout(&out));

    let out = server.quark(&["call", "counter/alice", "increment", r#"{"by": 2}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "2");

    let out = server.quark(&["deploy", "counter", v2.to_str().unwrap()]);
    assert!(stdout(&out).contains("deployed counter v2"), "{}", stdout(&out));
    let out = server.quark(&["versions", "counter"]);
    assert!(out.status.success());
    let listing = stdout(&out);
    assert!(listing.lines().any(|l| l.starts_with('*') && l.contains(" 2 ")), "{listing}");

    let out = server.quark(&["actors"]);
    assert!(stdout(&out).contains("counter/alice"), "{}", stdout(&out));

    let out = server.quark(&["rollback", "counter"]);
    assert!(stdout(&out).contains("now at v1"), "{}", stdout(&out));

    // Errors: non-zero exit and a message naming the cause.
    let out = server.quark(&["call", "nosuch/alice", "get"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("unknown actor type `nosuch`"), "{}", stderr(&out));
    let out = server.quark(&["call", "counter/alice", "increment", "{oops"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not valid JSON"), "{}", stderr(&out));
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"hello").unwrap();
    let out = server.quark(&["deploy", "junk", junk.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not WebAssembly"), "{}", stderr(&out));
}

/// Restarting `serve --deploy` (as `make run` does) never replaces what a
/// person deployed or rolled back to: settings given with `quark deploy`
/// stay, and so does a rollback; a type that is missing is deployed.
#[test]
fn serve_deploy_at_start_keeps_your_deploys_and_rollbacks() {
    let dir = crate::support::tempdir().unwrap();
    let port = free_port();
    let counter = root().join("target/samples/counter.wasm");
    let v2 = root().join("target/test-actors/counter-v2.wasm");
    component("counter");
    let deploy_flag = format!("counter={}", counter.display());
    let start = || Server::start_with(dir.path(), port, &["--deploy", &deploy_flag]);
    let active_line = |server: &Server| {
        let listing = stdout(&server.quark(&["versions", "counter"]));
        listing.lines().find(|l| l.starts_with('*')).unwrap_or_else(|| panic!("no active version in {listing}")).to_string()
    };

    let server = start();
    assert!(active_line(&server).contains(" 1 "), "the missing type was deployed");
    // The same bytes with your settings: a new version, active.
    let out = server.quark(&["deploy", "counter", counter.to_str().unwrap(), "--snapshot-every", "500", "--retention", "archive"]);
    assert!(stdout(&out).contains("deployed counter v2"), "{}", stdout(&out));
    drop(server);

    let server = start();
    let line = active_line(&server);
    assert!(line.contains(" 2 ") && line.contains("500") && line.contains("archive"), "a restart kept v2 and its settings: {line}");
    // A newer version, then a rollback: a restart leaves the rollback.
    server.quark(&["deploy", "counter", v2.to_str().unwrap()]);
    let out = server.quark(&["rollback", "counter"]);
    assert!(stdout(&out).contains("now at v2"), "{}", stdout(&out));
    drop(server);

    let server = start();
    assert!(active_line(&server).contains(" 2 "), "a restart undid the rollback");
    let versions = stdout(&server.quark(&["versions", "counter"]));
    assert_eq!(versions.lines().count(), 4, "no version was added: {versions}");
}

/// The jobs commands read like the rest: times in RFC 3339 everywhere, a
/// repeated `--key` says it named the existing job, and `purge` without a
/// flag purges the dead-letter list, like `quark outbox purge`.
#[test]
fn cli_jobs_show_times_and_repeated_keys_plainly() {
    let dir = crate::support::tempdir().unwrap();
    let counter = format!("counter={}", root().join("target/samples/counter.wasm").display());
    component("counter");
    let server = Server::start_with(dir.path(), free_port(), &["--deploy", &counter]);
    let add = || server.quark(&["jobs", "add", "counter/j", "increment", r#"{"by": 1}"#, "--in", "1h", "--key", "bonus"]);
    let first = stdout(&add());
    assert!(first.contains("added"), "{first}");
    let again = add();
    assert!(again.status.success(), "{}", stderr(&again));
    assert!(stdout(&again).contains("exists already"), "{}", stdout(&again));
    let id = first.split_whitespace().nth(1).unwrap().to_string();
    let shown = stdout(&server.quark(&["jobs", "show", &id]));
    assert!(!shown.contains("_at_ms\""), "epoch milliseconds in {shown}");
    assert!(shown.contains("\"run_at\": \"20"), "RFC 3339 times in {shown}");
    let purged = server.quark(&["jobs", "purge"]);
    assert!(purged.status.success(), "{}", stderr(&purged));
    assert!(stdout(&purged).contains("purged 0 dead job(s)"), "{}", stdout(&purged));
}

/// `quark new NAME` scaffolds a Rust actor crate, builds it for
/// wasm32-wasip2 and deploys it: a first actor of one's own in one command.
#[test]
fn quark_new_scaffolds_builds_and_deploys_an_actor() {
    let dir = crate::support::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port());
    let crate_dir = dir.path().join("hello");
    let out = Command::new(&*QUARK)
        .args(["new", "hello", "--path"])
        .arg(&crate_dir)
        .env("QUARK_SERVER", &server.url)
        // Shared across runs: the template's dependencies build once.
        .env("CARGO_TARGET_DIR", root().join("target/quark-new"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}\n{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("deployed hello v1"), "{}", stdout(&out));
    assert!(crate_dir.join("src/lib.rs").exists());
    let out = server.quark(&["call", "hello/first", "add", r#"{"by": 2}"#]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains(r#""total":2"#), "{}", stdout(&out));
    let again = Command::new(&*QUARK).args(["new", "hello", "--path"]).arg(&crate_dir).output().unwrap();
    assert!(!again.status.success() && stderr(&again).contains("exists already"), "{}", stderr(&again));
}

/// Help says what each command takes: `serve` lists no client-only
/// `--server`, env values show without a stray `=`, and logs written to a
/// file carry no ANSI colour codes.
#[test]
fn help_and_logs_read_plainly() {
    let help = |args: &[&str]| stdout(&Command::new(&*QUARK).args(args).output().unwrap());
    let serve = help(&["serve", "--help"]);
    assert!(!serve.contains("--server"), "{serve}");
    assert!(!serve.contains("=]"), "{serve}");
    assert!(serve.contains("redis://"), "--store names Redis too: {serve}");
    for command in [&["call", "--help"][..], &["jobs", "add", "--help"]] {
        let text = help(command);
        assert!(text.contains("--server") && text.contains("[env: QUARK_SERVER]"), "{command:?}: {text}");
    }

    let dir = crate::support::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("serve.log")).unwrap();
    let port = free_port();
    let mut child = Command::new(&*QUARK)
        .args(["serve", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("NO_COLOR")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}/healthz");
    let up = (0..600).any(|_| reqwest::blocking_get_ok(&url) || { std::thread::sleep(Duration::from_millis(50)); false });
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(up, "quark serve did not become healthy");
    let written = std::fs::read_to_string(dir.path().join("serve.log")).unwrap();
    assert!(written.contains("INFO"), "{written}");
    assert!(!written.contains('\x1b'), "ANSI codes in a log file: {written:?}");
}

/// SQLite is single-host: a second `quark serve` on the same data
/// directory is refused at start with a message that says so, and the
/// first one keeps serving.
#[test]
fn a_second_host_on_one_sqlite_data_dir_is_refused() {
    let dir = crate::support::tempdir().unwrap();
    let first = Server::start(dir.path(), free_port());
    let mut second = Command::new(&*QUARK)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = (0..200).find_map(|_| {
        let status = second.try_wait().unwrap();
        if status.is_none() {
            std::thread::sleep(Duration::from_millis(50));
        }
        status
    });
    if exited.is_none() {
        second.kill().unwrap();
    }
    let out = second.wait_with_output().unwrap();
    assert!(exited.is_some_and(|s| !s.success()), "the second host kept running on the same SQLite store");
    let message = stderr(&out);
    assert!(message.contains("single-host") && message.contains("--store"), "{message}");
    assert!(reqwest::blocking_get_ok(&format!("{}/healthz", first.url)), "the first host still serves");
}

#[test]
fn serve_refuses_a_public_address_without_a_token() {
    let dir = crate::support::tempdir().unwrap();
    let out = Command::new(&*QUARK)
        .args(["serve", "--data-dir"])
        .arg(dir.path())
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("QUARK_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("without --token"), "{}", stderr(&out));
}

/// Posts `body` to `path` from 4 threads until the server dies (SIGKILL
/// after 1.5 s); returns how many posts were acknowledged.
fn load_then_kill9(server: Server, path: &str, body: &'static str) -> i64 {
    let url = server.url.clone();
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|_| {
            let (url, acked, stop, path) = (url.clone(), acked.clone(), stop.clone(), path.to_string());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                rt.block_on(async {
                    let http = ::reqwest::Client::new();
                    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                        let r = http.post(format!("{url}/v1/actors/{path}")).body(body).send().await;
                        match r {
                            Ok(r) if r.status().is_success() => {
                                acked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            }
                            _ => break,
                        }
                    }
                })
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    let before_kill = acked.load(std::sync::atomic::Ordering::SeqCst);
    server.kill9();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for w in workers {
        w.join().unwrap();
    }
    assert!(before_kill > 10, "traffic ran before the kill ({before_kill} acknowledged)");
    acked.load(std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = crate::support::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(dir.path(), port);
    let counter = root().join("target/samples/counter.wasm");
    assert!(server.quark(&["deploy", "counter", counter.to_str().unwrap()]).status.success());
    // Acknowledged increments from several threads, then SIGKILL while more are in flight.
    let acknowledged = load_then_kill9(server, "counter/k/increment", r#"{"by":1}"#);

    let server = Server::start(dir.path(), port);
    let out = server.quark(&["call", "counter/k", "get"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let value: i64 = stdout(&out).trim().parse().unwrap();
    // Every acknowledged increment is there; at most the in-flight ones
    // (one per worker, committed but not yet acknowledged) are extra.
    assert!(value >= acknowledged && value <= acknowledged + 4, "value {value}, acknowledged {acknowledged}");
}

#[test]
fn sigkill_mid_append_leaves_no_partial_stream() {
    let dir = crate::support::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(dir.path(), port);
    let bank = root().join("target/samples/bank.wasm");
    assert!(server.quark(&["deploy", "bank", bank.to_str().unwrap(), "--snapshot-every", "50"]).status.success());
    let acknowledged = load_then_kill9(server, "bank/k/deposit", r#"{"amount":1}"#);

    let server = Server::start(dir.path(), port);
    let out = server.quark(&["journal", "bank/k", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let page: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    let events = page["events"].as_array().unwrap();
    let head = page["version"].as_i64().unwrap();
    // Versions 1..=head, each a whole event; every acknowledged deposit is
    // there, at most the in-flight ones (one per worker) are extra.
    assert_eq!(events.len() as i64, head);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["version"].as_i64(), Some(i as i64 + 1));
        assert_eq!(e["data"], serde_json::json!({"deposited": {"amount": 1}}));
    }
    assert!(head >= acknowledged && head <= acknowledged + 4, "head {head}, acknowledged {acknowledged}");
    // The rebuilt balance is the fold of exactly those events.
    let out = server.quark(&["call", "bank/k", "balance"]);
    let balance: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(balance["balance"].as_i64(), Some(head));
}

#[test]
fn cli_journal_replay_snapshot_and_projections() {
    let dir = crate::support::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port());
    for name in ["bank", "accounts-summary"] {
        let path = root().join(format!("target/samples/{name}.wasm"));
        let out = server.quark(&["deploy", name, path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    for (account, method, amount) in [("alice", "deposit", 100), ("alice", "withdraw", 25), ("bob", "deposit", 7)] {
        let out = server.quark(&["call", &format!("bank/{account}"), method, &format!(r#"{{"amount": {amount}}}"#)]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let out = server.quark(&["call", "bank/alice", "withdraw", r#"{"amount": 1000}"#]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("insufficient funds"), "{}", stderr(&out));

    let out = server.quark(&["journal", "bank/alice"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let listing = stdout(&out);
    assert!(listing.contains("deposited") && listing.contains("withdrawn") && listing.contains("(external)"), "{listing}");
    assert!(listing.contains("version 2, 2 event(s) shown"), "{listing}");
    let out = server.quark(&["journal", "bank/alice", "--from", "2", "--to", "2"]);
    assert!(stdout(&out).contains("1 event(s) shown"), "{}", stdout(&out));

    let out = server.quark(&["replay", "bank/alice", "--to-version", "1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let state: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(state, serde_json::json!({"balance": 100}));
    let out = server.quark(&["replay", "bank/alice", "--at", "2001-01-01T00:00:00Z"]);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&stdout(&out)).unwrap(), serde_json::json!({"balance": 0}));
    let out = server.quark(&["replay", "bank/alice", "--to-version", "99"]);
    assert!(!out.status.success() && stderr(&out).contains("at version 2"), "{}", stderr(&out));

    let out = server.quark(&["snapshot", "bank/alice"]);
    assert!(stdout(&out).contains("at version 2"), "{} {}", stdout(&out), stderr(&out));

    let out = server.quark(&["projections", "add", "summary", "--source", "bank", "--target", "accounts-summary/all"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let caught_up = (0..500).any(|_| {
        let out = server.quark(&["call", "accounts-summary/all", "total"]);
        let done = stdout(&out).trim() == "82";
        if !done {
            std::thread::sleep(Duration::from_millis(20));
        }
        done
    });
    assert!(caught_up, "the projection never reached the total of 82");
    let out = server.quark(&["projections"]);
    let listing = stdout(&out);
    assert!(listing.lines().any(|l| l.starts_with("summary") && l.contains("accounts-summary/all")), "{listing}");
    let out = server.quark(&["projections", "remove", "summary"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A host dies (SIGKILL) while it runs a job: the job's lease expires and
/// the restarted host runs it again; its effect lands once.
#[test]
fn a_job_whose_host_dies_runs_again_after_its_lease_expires() {
    let dir = crate::support::tempdir().unwrap();
    let port = free_port();
    // Long enough that the first host, busy with attempt 1, does not take
    // the job again itself before it is killed.
    let lease = ["--job-lease", "3s"];
    let server = Server::start_with(dir.path(), port, &lease);
    let worker = root().join("target/test-actors/worker.wasm");
    component("worker");
    assert!(server.quark(&["deploy", "worker", worker.to_str().unwrap()]).status.success());
    // Attempt 1 spins for 30 s: the host is killed in the middle of it.
    let out = server.quark(&["jobs", "add", "worker/k", "work", r#"{"slow_first_ms": 30000}"#, "--key", "survivor"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let running = (0..300).any(|_| {
        let listing = stdout(&server.quark(&["jobs", "--status", "running"]));
        let found = listing.contains("worker/k");
        if !found {
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    });
    assert!(running, "the job never started");
    server.kill9();

    let server = Server::start_with(dir.path(), port, &lease);
    let done = (0..500).any(|_| {
        let listing = stdout(&server.quark(&["jobs", "--status", "succeeded"]));
        let found = listing.contains("worker/k");
        if !found {
            std::thread::sleep(Duration::from_millis(20));
        }
        found
    });
    assert!(done, "the job never succeeded after the restart: {}", stdout(&server.quark(&["jobs"])));
    let out = server.quark(&["call", "worker/k", "runs"]);
    let runs: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(runs["runs"], 1, "one effect: {runs}");
    assert!(runs["attempts"][0].as_u64() >= Some(2), "from an attempt after the killed one: {runs}");
}

#[test]
fn cli_jobs_add_list_show_cancel_retry_purge() {
    let dir = crate::support::tempdir().unwrap();
    let server = Server::start(dir.path(), free_port());
    let worker = root().join("target/test-actors/worker.wasm");
    assert!(server.quark(&["deploy", "worker", worker.to_str().unwrap()]).status.success());

    let out = server.quark(&["jobs", "add", "worker/c", "work", "{}", "--in", "1h", "--priority", "3", "--queue", "reports"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let id = line.split_whitespace().nth(1).unwrap().to_string();
    assert!(line.contains("scheduled for worker/c `work`"), "{line}");
    let out = server.quark(&["jobs", "add", "worker/c", "work", "--cron", "*/5 * * * *", "--tz", "Europe/Paris", "--catch-up", "skip"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.quark(&["jobs", "add", "worker/c", "work", "--cron", "not a cron"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("invalid cron expression"), "{}", stderr(&out));

    let listing = stdout(&server.quark(&["jobs", "--target", "worker/c"]));
    assert!(listing.contains(&id) && listing.contains("*/5 * * * *") && listing.contains("2 job(s)"), "{listing}");
    let shown: serde_json::Value = serde_json::from_str(&stdout(&server.quark(&["jobs", "show", &id]))).unwrap();
    assert_eq!((shown["priority"].as_i64(), shown["queue"].as_str()), (Some(3), Some("reports")));
    assert!(stdout(&server.quark(&["jobs", "cancel", &id])).contains("cancelled"));
    let out = server.quark(&["jobs", "retry", &id]);
    assert!(!out.status.success() && stderr(&out).contains("only dead or failed jobs"), "{}", stderr(&out));
    assert!(stdout(&server.quark(&["jobs", "purge", "--cancelled"])).contains("purged 1 cancelled"));

    // Over HTTP: a bulk array; both jobs run.
    let url = format!("{}/v1/jobs", server.url);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let reply: serde_json::Value = rt.block_on(async {
        let body = serde_json::json!([{"target": "worker/h", "method": "work"}, {"target": "worker/h", "method": "work", "delay_ms": 10}]);
        ::reqwest::Client::new().post(&url).json(&body).send().await.unwrap().json().await.unwrap()
    });
    assert_eq!(reply["count"], serde_json::json!(2), "{reply}");
    let ran = (0..300).any(|_| {
        let done = stdout(&server.quark(&["call", "worker/h", "runs"])).contains(r#""runs":2"#);
        if !done {
            std::thread::sleep(Duration::from_millis(20));
        }
        done
    });
    assert!(ran, "both jobs ran");
}

/// Transfers between 100 accounts of the `transfer` sample (debit here,
/// credit there by an outbox message) while the host is SIGKILLed and
/// restarted ten times. At the end no message is stuck, the total is what
/// it was, and every acknowledged transfer was credited exactly once (its
/// id is in the receiver's inbox, which admits it at most once).
#[test]
fn transfers_survive_ten_sigkills_exactly_once() {
    const ACCOUNTS: usize = 100;
    const OPENING: i64 = 1_000;
    let dir = crate::support::tempdir().unwrap();
    let port = free_port();
    let server = Server::start(dir.path(), port);
    let wasm = root().join("target/samples/transfer.wasm");
    assert!(server.quark(&["deploy", "transfer", wasm.to_str().unwrap()]).status.success());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let http = ::reqwest::Client::new();
    rt.block_on(async {
        for a in 0..ACCOUNTS {
            let r = http.post(format!("{}/v1/actors/transfer/a{a}/open", server.url)).body(format!(r#"{{"balance": {OPENING}}}"#)).send().await.unwrap();
            assert!(r.status().is_success());
        }
    });

    let mut server = Some(server);
    let mut acknowledged: Vec<(String, usize, usize)> = Vec::new();
    for round in 0..10 {
        let live = server.take().unwrap_or_else(|| Server::start(dir.path(), port));
        let url = live.url.clone();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers: Vec<_> = (0..4)
            .map(|w| {
                let (url, stop) = (url.clone(), stop.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                    rt.block_on(async {
                        let http = ::reqwest::Client::new();
                        let mut acked = Vec::new();
                        let mut n: usize = 0;
                        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                            n += 1;
                            let seed = round * 1_000_003 + w * 10_007 + n * 7_919;
                            let (from, to, amount) = (seed % ACCOUNTS, (seed / ACCOUNTS + 1 + seed) % ACCOUNTS, 1 + seed % 10);
                            if from == to {
                                continue;
                            }
                            let id = format!("t{round}-{w}-{n}");
                            let body = format!(r#"{{"to": "transfer/a{to}", "amount": {amount}, "id": "{id}"}}"#);
                            match http.post(format!("{url}/v1/actors/transfer/a{from}/transfer")).body(body).send().await {
                                Ok(r) if r.status().is_success() => acked.push((id, from, to)),
                                Ok(r) if r.status().as_u16() == 422 => {} // insufficient funds: no transfer
                                _ => break,
                            }
                        }
                        acked
                    })
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400 + 50 * round as u64));
        live.kill9();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        for w in workers {
            acknowledged.extend(w.join().unwrap());
        }
    }
    assert!(acknowledged.len() > 100, "transfers ran between the kills ({} acknowledged)", acknowledged.len());

    // Restart; every committed credit is delivered, none is stuck or dead.
    let server = Server::start(dir.path(), port);
    let http = ::reqwest::Client::new(); // no pooled connection to a killed server
    let total = rt.block_on(async {
        let mut pending = serde_json::Value::Null;
        // Lanes leased by the killed host wait out its lease (30 s).
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            pending = http.get(format!("{}/v1/outbox", server.url)).send().await.unwrap().json().await.unwrap();
            if pending["messages"].as_array().is_some_and(|m| m.is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(pending["messages"], serde_json::json!([]), "messages stuck in the outbox");
        let mut total = 0;
        for a in 0..ACCOUNTS {
            let r = http.post(format!("{}/v1/actors/transfer/a{a}/balance", server.url)).send().await.unwrap();
            let balance: i64 = r.json().await.unwrap();
            assert!(balance >= 0, "account a{a} went negative: {balance}");
            total += balance;
        }
        total
    });
    assert_eq!(total, ACCOUNTS as i64 * OPENING, "money was created or lost");
    drop(server);

    // Each acknowledged transfer's credit ran: its id is in the receiver's inbox.
    let handled: std::collections::HashSet<(String, String)> = rt.block_on(async {
        let store = quark::storage::sqlite::SqliteStore::open(&dir.path().join("quark.db")).await.unwrap();
        let mut handled = std::collections::HashSet::new();
        for (transfer, from, to) in &acknowledged {
            let actor = id(&format!("transfer/a{to}"));
            let sender = format!("transfer/a{from}");
            if quark::storage::InboxStore::inbox_reply(&store, &actor, &sender, transfer).await.unwrap().is_some() {
                handled.insert((transfer.clone(), actor.to_string()));
            }
        }
        handled
    });
    assert_eq!(handled.len(), acknowledged.len(), "every acknowledged transfer was credited");
}
