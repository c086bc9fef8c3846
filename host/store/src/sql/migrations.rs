//! The schema migrations, embedded in the binary (`build.rs` lists the
//! files). `sqlx::migrate!` does the same, but its proc macro links sqlx's
//! SQLite and PostgreSQL drivers, SQLite's C source included, and so made
//! every fresh build compile them twice.

use futures::future::BoxFuture;
use sqlx::error::BoxDynError;
use sqlx::migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator};

include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// The migrator for one backend's files ([`SQLITE`] or [`POSTGRES`]).
pub(crate) async fn migrator(files: &'static [(&'static str, &'static str)]) -> Result<Migrator, MigrateError> {
    Migrator::new(Embedded(files)).await
}

#[derive(Debug)]
struct Embedded(&'static [(&'static str, &'static str)]);

impl MigrationSource<'static> for Embedded {
    fn resolve(self) -> BoxFuture<'static, Result<Vec<Migration>, BoxDynError>> {
        Box::pin(async move { self.0.iter().map(|&(file, sql)| migration(file, sql)).collect() })
    }
}

/// One file, read by the rules of sqlx's directory source (so the
/// checksums and descriptions recorded in existing databases still match):
/// `<version>_<description>.sql`, underscores in the description read as
/// spaces, `-- no-transaction` on the first line to run it outside one.
fn migration(file: &str, sql: &'static str) -> Result<Migration, BoxDynError> {
    let (version, name) = file
        .split_once('_')
        .ok_or_else(|| -> BoxDynError { format!("migration {file:?}: expected <version>_<name>.sql").into() })?;
    let kind = MigrationType::from_filename(name);
    let description = name.trim_end_matches(kind.suffix()).replace('_', " ");
    Ok(Migration::new(version.parse()?, description.into(), kind, sql.into(), sql.starts_with("-- no-transaction")))
}
