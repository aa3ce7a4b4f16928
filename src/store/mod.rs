//! Storage behind narrow interfaces: [`BlobStore`] for file bytes (content-addressed) and
//! [`MetaStore`] for metadata. The HTTP layer and the jobs only see these traits, so another
//! backend (PostgreSQL, an object store) can be added without touching them.

mod blob;
mod sqlite;

pub use blob::FsBlobStore;
pub use sqlite::SqliteStore;

use std::io::{self, Read, Seek, Write};

use serde::Serialize;

use crate::hash::Sha256Hex;

/// Something a dataset reader can read and seek (a local file, or a spooled remote object).
pub trait ReadSeek: Read + Seek + Send {}
impl<T: Read + Seek + Send> ReadSeek for T {}

/// Content-addressed storage of file bytes: a blob's name is the SHA-256 of its bytes.
pub trait BlobStore: Send + Sync {
    /// Starts a new blob. The bytes are hashed as they are written; nothing is visible under
    /// the final name until [`StagedBlob::commit`], and a staged blob that is dropped leaves
    /// nothing behind.
    fn stage(&self) -> io::Result<Box<dyn StagedBlob>>;
    /// Opens a stored blob, or `None` when no blob has that hash.
    fn open(&self, hash: &Sha256Hex) -> io::Result<Option<Box<dyn ReadSeek>>>;
    /// The size of a stored blob, or `None` when no blob has that hash.
    fn size(&self, hash: &Sha256Hex) -> io::Result<Option<u64>>;
}

/// A blob being written.
pub trait StagedBlob: Write + Send {
    /// Bytes written so far.
    fn written(&self) -> u64;
    /// Makes the blob durable and visible under its hash. Storing bytes that are already
    /// stored is harmless: the existing blob is kept and the staged copy discarded.
    fn commit(self: Box<Self>) -> io::Result<StoredBlob>;
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredBlob {
    pub hash: Sha256Hex,
    pub size: u64,
    /// True when these bytes were already stored before this commit.
    pub deduplicated: bool,
}

/// An uploaded dataset file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileMeta {
    pub hash: Sha256Hex,
    pub size: u64,
    /// The client's file name, sanitised; metadata only, never a path.
    pub original_name: Option<String>,
    pub created_at_ms: i64,
}

/// Steps of a task, as the front ends number them.
pub const STEP_UPLOAD: u8 = 0;
pub const STEP_STIX: u8 = 1;
pub const STEP_CTI: u8 = 2;
pub const STEP_CHAIN: u8 = 3;
pub const STEPS: [u8; 4] = [STEP_UPLOAD, STEP_STIX, STEP_CTI, STEP_CHAIN];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepState {
    Pending,
    Running,
    Finished,
    Failed,
}

impl StepState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Running => "running",
            Self::Finished => "finished",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "running" => Self::Running,
            "finished" => Self::Finished,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StepStatus {
    pub step: u8,
    pub status: StepState,
    pub total_num: u64,
}

/// A task record exactly as the front ends read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub source_file_hash: String,
    pub step_status: Vec<StepStatus>,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task_id {task_id:?} already belongs to another file ({existing_file})")]
    TaskConflict {
        task_id: String,
        existing_file: String,
    },
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
}

/// Metadata: files, tasks and their steps.
pub trait MetaStore: Send + Sync {
    /// Records an uploaded file and a task for it, in one transaction. Uploading the same file
    /// under the same `task_id` again returns the existing record; a `task_id` that belongs to
    /// another file is a [`StoreError::TaskConflict`].
    fn record_upload(&self, file: &FileMeta, task_id: &str) -> Result<TaskRecord, StoreError>;
    fn file(&self, hash: &Sha256Hex) -> Result<Option<FileMeta>, StoreError>;
    fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// All tasks of one file, oldest first.
    fn tasks_for_file(&self, hash: &Sha256Hex) -> Result<Vec<TaskRecord>, StoreError>;
    /// Sets one step of every task of a file (conversion and CTI work is per file).
    fn set_step_for_file(
        &self,
        hash: &Sha256Hex,
        step: u8,
        state: StepState,
        total_num: u64,
    ) -> Result<(), StoreError>;
}
