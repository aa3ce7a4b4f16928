//! Which stores the flags name: for the records, the embedded SQLite file in the data directory
//! (the default) or a PostgreSQL database that several nodes share (`--database-url`); for
//! the files, the data directory (the default) or an S3-compatible bucket (`--blob-store`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use br_cti_store::{BlobStore, RecordStore};
use br_cti_store_local::{FsBlobStore, SqliteStore};
use br_cti_store_pg::PgStore;
use br_cti_store_s3::S3BlobStore;

/// Opens the blob store: the data directory, or the bucket of `s3://bucket/prefix` (checked
/// writable before the node starts).
pub fn open_blobs(
    data_dir: &Path,
    url: Option<&str>,
    options: &[String],
) -> anyhow::Result<Arc<dyn BlobStore>> {
    Ok(match url {
        None => Arc::new(FsBlobStore::open(data_dir)?),
        Some(url) => Arc::new(S3BlobStore::open(url, options)?),
    })
}

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

    /// The TAXII publisher's handle: on SQLite a connection whose large commits leave the
    /// checkpoints to a thread of their own; the shared pool on PostgreSQL.
    pub fn connect_publisher(&self) -> anyhow::Result<Arc<dyn RecordStore>> {
        Ok(match self {
            RecordBackend::Sqlite(path) => Arc::new(SqliteStore::open_bulk_writer(path)?),
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
