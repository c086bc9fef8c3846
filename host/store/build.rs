//! Lists the schema migrations, `src/migrations/<backend>/<version>_<name>.sql`,
//! for `src/sql/migrations.rs` to embed: adding a file is all a new migration takes.

use std::{env, fs, path::Path};

fn main() {
    let mut out = String::new();
    for backend in ["sqlite", "postgres"] {
        let dir = Path::new("src/migrations").join(backend);
        println!("cargo::rerun-if-changed={}", dir.display());
        let mut files: Vec<String> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a migration file").file_name().into_string().expect("a UTF-8 file name"))
            .filter(|name| name.ends_with(".sql"))
            .collect();
        files.sort();
        out += &format!("/// The {backend} migrations: (file name, SQL), oldest first.\n");
        out += &format!("pub(crate) const {}: &[(&str, &str)] = &[\n", backend.to_uppercase());
        for file in files {
            out += &format!("    ({file:?}, include_str!(concat!(env!(\"CARGO_MANIFEST_DIR\"), \"/src/migrations/{backend}/{file}\"))),\n");
        }
        out += "];\n";
    }
    let path = Path::new(&env::var("OUT_DIR").expect("OUT_DIR is set by cargo")).join("migrations.rs");
    fs::write(&path, out).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}
