//! The crates' dependency rules (issue 15, docs/architecture.md), checked
//! on the resolved dependency graph: the core stays free of any async
//! runtime, wasm engine or database, and the store of the wasm engine.

use std::collections::BTreeSet;

/// Every package `package` pulls in through normal (not dev or build)
/// dependencies, by name, as `cargo tree` resolves them for this machine.
fn normal_dependencies(package: &str) -> BTreeSet<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["tree", "--offline", "--edges", "normal", "--prefix", "none", "--package", package, "--manifest-path"])
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml"))
        .output()
        .expect("cargo tree runs");
    assert!(output.status.success(), "cargo tree -p {package}: {}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    let mut names: BTreeSet<String> = text.lines().filter_map(|line| line.split_whitespace().next()).map(str::to_string).collect();
    names.remove(package);
    names
}

#[test]
fn the_crates_depend_one_way() {
    let core = normal_dependencies("quark-core");
    assert!(core.contains("serde"), "the graph was read: {core:?}");
    for banned in ["tokio", "wasmtime", "sqlx", "redis", "axum", "quark-store", "quark-host"] {
        assert!(!core.contains(banned), "quark-core must not depend on {banned}: {core:?}");
    }
    let store = normal_dependencies("quark-store");
    assert!(store.contains("quark-core") && store.contains("sqlx"), "{store:?}");
    for banned in ["wasmtime", "wasmtime-wasi", "axum", "quark-host"] {
        assert!(!store.contains(banned), "quark-store must not depend on {banned}: {store:?}");
    }
}
