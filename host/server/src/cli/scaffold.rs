//! `quark new NAME`: a new Rust actor crate from a template, built for
//! `wasm32-wasip2` and deployed to the host, so a first actor of one's own
//! is one command away.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;

/// Where this `quark` was built from: the SDK the new crate depends on.
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk");

/// The new crate's `Cargo.toml`. Its own `[workspace]` keeps it out of any
/// workspace it is created in; the release profile makes a small component.
fn cargo_toml(name: &str, sdk: &Path) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
quark-sdk = {{ path = "{sdk}" }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

[profile.release]
opt-level = "s"
lto = true
strip = true
codegen-units = 1

# Not part of an enclosing workspace.
[workspace]
"#,
        sdk = sdk.display()
    )
}

/// The new crate's actor: a counter with a greeting, to edit.
fn lib_rs(name: &str) -> String {
    format!(
        r#"//! `{name}`: a Quark actor. Each method takes and returns JSON; what
//! it writes to `state` commits with the turn, or not at all.
use quark_sdk::{{Deserialize, Result, Serialize, state}};

#[derive(Deserialize)]
struct Add {{
    by: i64,
}}

#[derive(Serialize)]
struct Total {{
    total: i64,
    actor: String,
}}

struct Actor;

impl Actor {{
    /// `add {{"by": 2}}`: adds to this actor's total and returns it.
    fn add(Add {{ by }}: Add) -> Result<Total> {{
        let total = state::get::<i64>("total")?.unwrap_or(0) + by;
        state::set("total", &total)?;
        Ok(Total {{ total, actor: quark_sdk::self_id() }})
    }}

    /// `get`: the total so far.
    fn get(_: ()) -> Result<i64> {{
        Ok(state::get("total")?.unwrap_or(0))
    }}
}}

quark_sdk::actor!(Actor {{ add, get }});
"#
    )
}

/// Writes the crate at `dir` (which must not exist yet); returns the path
/// of the component a release build makes.
pub(super) fn create(name: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    crate::id::validate_type_name(name).map_err(|e| anyhow::anyhow!("{}", e.message))?;
    anyhow::ensure!(!dir.exists(), "{} exists already: pick another name or --path", dir.display());
    let sdk = std::fs::canonicalize(SDK_DIR)
        .with_context(|| format!("the Rust SDK this quark was built from is not at {SDK_DIR} (build quark from its repository)"))?;
    std::fs::create_dir_all(dir.join("src")).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(dir.join("Cargo.toml"), cargo_toml(name, &sdk))?;
    std::fs::write(dir.join("src/lib.rs"), lib_rs(name))?;
    std::fs::write(dir.join(".gitignore"), "/target\n")?;
    Ok(component_path(name, dir))
}

/// Where `cargo build --release --target wasm32-wasip2` leaves the component.
fn component_path(name: &str, dir: &Path) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| dir.join("target"));
    target.join("wasm32-wasip2/release").join(format!("{}.wasm", name.replace('-', "_")))
}

/// Builds the crate at `dir` for `wasm32-wasip2` (adding the target with
/// rustup first if it is missing), saying what it runs.
pub(super) fn build(dir: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup").args(["target", "list", "--installed"]).output();
    if installed.is_ok_and(|o| !String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == "wasm32-wasip2")) {
        eprintln!(">> installing the Rust target wasm32-wasip2 (rustup target add wasm32-wasip2)");
        let status = Command::new("rustup").args(["target", "add", "wasm32-wasip2"]).status()?;
        anyhow::ensure!(status.success(), "rustup target add wasm32-wasip2 failed");
    }
    eprintln!(">> building {}: cargo build --release --target wasm32-wasip2 (the first build takes a minute)", dir.display());
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(dir)
        .status()
        .context("running cargo (is Rust installed?)")?;
    anyhow::ensure!(status.success(), "the build failed; fix {} and run `quark new` again, or build it yourself", dir.join("src/lib.rs").display());
    Ok(())
}
