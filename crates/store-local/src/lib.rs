//! The local backend of the storage traits (`br-cti-store`): records in one SQLite database
//! ([`SqliteStore`], TAXII tables in `sqlite_taxii.rs`) and blobs in a directory
//! ([`FsBlobStore`], whole files written with direct I/O in `direct.rs`); the online backup of
//! both.

mod blob;
mod direct;
mod sqlite;
mod sqlite_taxii;

pub use blob::FsBlobStore;
pub use sqlite::{SqliteStore, backup_database};
