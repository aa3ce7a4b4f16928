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

/// The store contract (`br-cti-store`'s scenarios) against SQLite and the blob directory.
#[cfg(test)]
mod contract {
    use std::ops::Deref;

    use super::{FsBlobStore, SqliteStore};

    /// A store on a fresh temporary directory, removed with it.
    struct Fresh<T> {
        store: T,
        _dir: tempfile::TempDir,
    }

    impl<T> Deref for Fresh<T> {
        type Target = T;
        fn deref(&self) -> &T {
            &self.store
        }
    }

    fn sqlite() -> Fresh<SqliteStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("br-cti.sqlite")).unwrap();
        Fresh { store, _dir: dir }
    }

    fn blobs() -> Fresh<FsBlobStore> {
        let dir = tempfile::tempdir().unwrap();
        let store = FsBlobStore::open(dir.path()).unwrap();
        Fresh { store, _dir: dir }
    }

    br_cti_store::record_store_contract!(sqlite);
    br_cti_store::blob_store_contract!(blobs);
}
