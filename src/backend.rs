//! Which record store the flags name: the embedded SQLite file in the data directory (the
//! default), or a PostgreSQL database that several nodes share (`--database-url`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use br_cti_store::RecordStore;
use br_cti_store_local::SqliteStore;
use br_cti_store_pg::PgStore;

pub enum RecordBackend {
    /// `<data-dir>/br-cti.sqlite`: each part of the node opens its own connection.
    Sqlite(PathBuf),
    /// One pool of connections that every part of the node shares.
    Postgres(Arc<PgStore>),
}

impl RecordBackend {
    /// Opens the database (creating or migrating its schema).
    pub fn open(data_dir: &Path, database_url: Option<&str>) -> anyhow::Result<Self> {
        Ok(match database_url {
            None => {
                let path = data_dir.join("br-cti.sqlite");
                drop(SqliteStore::open(&path)?);
                RecordBackend::Sqlite(path)
            }
            Some(url) => RecordBackend::Postgres(Arc::new(PgStore::open(url)?)),
        })
    }

    /// A handle for one part of the node (the API, TAXII, the publisher): a connection of its
    /// own on SQLite, so that none waits behind another; the shared pool on PostgreSQL.
    pub fn connect(&self) -> anyhow::Result<Arc<dyn RecordStore>> {
        Ok(match self {
            RecordBackend::Sqlite(path) => Arc::new(SqliteStore::open(path)?),
            RecordBackend::Postgres(store) => store.clone(),
        })
    }

    /// What it is, for the log (no password).
    pub fn describe(&self) -> String {
        match self {
            RecordBackend::Sqlite(path) => format!("sqlite:{}", path.display()),
            RecordBackend::Postgres(store) => store.target().to_string(),
        }
    }
}
