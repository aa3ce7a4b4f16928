//! Storage behind narrow interfaces: [`BlobStore`] for file bytes (content-addressed) and
//! [`MetaStore`] for metadata. The HTTP layer and the jobs only see these traits, so another
//! backend (PostgreSQL, an object store) can be added without touching them.

mod blob;
mod direct;
mod sqlite;
mod sqlite_taxii;

pub use blob::FsBlobStore;
pub use sqlite::{SqliteStore, backup_database};

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
    /// Stores bytes held in memory, durably, as [`BlobStore::stage`] then
    /// [`StagedBlob::commit`] would.
    fn put(&self, bytes: &[u8]) -> io::Result<StoredBlob> {
        let mut staged = self.stage()?;
        staged.write_all(bytes)?;
        staged.commit()
    }
    /// Opens a stored blob, or `None` when no blob has that hash.
    fn open(&self, hash: &Sha256Hex) -> io::Result<Option<Box<dyn ReadSeek>>>;
    /// The size of a stored blob, or `None` when no blob has that hash.
    fn size(&self, hash: &Sha256Hex) -> io::Result<Option<u64>>;
    /// Where the blob lives, for display (a path, or an object-store URL).
    fn locate(&self, hash: &Sha256Hex) -> String;
    /// Readiness: the store can create and remove a file; answers the free space left to it in
    /// bytes, when the backend knows it.
    fn check(&self) -> io::Result<Option<u64>>;
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
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migration(#[from] rusqlite_migration::Error),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// The database file is not the one the node opened (deleted, moved or replaced): writing
    /// on would lose what it acknowledges.
    #[error(
        "the database file {0} was deleted or replaced while the node ran; nothing more is \
         written to it: restore it or restart the node"
    )]
    Replaced(String),
}

/// Metadata: files, tasks and their steps; jobs and records (see [`JobStore`], [`CtiStore`]).
pub trait MetaStore: JobStore + CtiStore + HiddenDangerStore + TaxiiStore + Send + Sync {
    /// Records an uploaded file and a task for it, in one transaction. Uploading the same file
    /// under the same `task_id` again returns the existing record; a `task_id` that belongs to
    /// another file is a [`StoreError::TaskConflict`].
    /// Readiness: the database answers a query on its schema.
    fn check(&self) -> Result<(), StoreError>;
    /// At a clean stop: everything committed moves into the main database file (for SQLite,
    /// out of the write-ahead log), so that a copy of that file alone is complete.
    fn checkpoint(&self) -> Result<(), StoreError>;
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

/// The state of a persisted job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "canceled" => Self::Canceled,
            _ => return None,
        })
    }

    pub fn is_finished(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Canceled)
    }
}

/// A persisted long operation (a conversion, a CTI build) and its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub kind: String,
    pub file_hash: String,
    pub process_id: String,
    /// The validated request, as JSON: everything needed to run (or resume) the job.
    pub params: String,
    pub status: JobStatus,
    pub total_steps: u64,
    pub rows_total: u64,
    /// What the job has committed so far.
    pub progress: JobProgress,
    pub message: Option<String>,
    pub cancel_requested: bool,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    /// How many times a process started running it (counted before each run).
    pub attempts: u32,
}

/// The progress a job commits with each step (and resumes from).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct JobProgress {
    pub steps_done: u64,
    pub rows_done: u64,
    pub rows_rejected: u64,
    pub objects: u64,
    pub files: u64,
    /// The first row errors (at most 100), as `row N: reason`.
    pub errors: Vec<String>,
    /// The most recent finished steps (at most 100).
    pub recent_steps: Vec<u64>,
    /// Run time over all runs (a resumed job adds up), milliseconds.
    pub run_ms: i64,
}

/// A STIX file produced from a dataset.
#[derive(Clone, Debug, PartialEq)]
pub struct StixRecord {
    pub source_file_hash: String,
    pub stix_file_hash: String,
    pub job_id: i64,
    pub batch: u64,
    pub file_size: u64,
    pub rows: u64,
    pub objects: u64,
    pub stix_type: u8,
    pub stix_tags: Vec<String>,
    pub stix_iocs: Vec<String>,
    /// IP address → occurrences, in address order.
    pub ioc_ips_map: Vec<(String, u64)>,
    pub created_at: i64,
    pub onchain: bool,
    pub cti_file_path: Option<String>,
}

/// Jobs and the STIX records they commit.
pub trait JobStore: Send + Sync {
    /// Saves a queued job and marks `step` of the file's tasks running, in one transaction.
    /// At most one job of a kind per file is queued or running, which the database enforces:
    /// a second one is a [`StoreError::Conflict`] naming the first.
    #[allow(clippy::too_many_arguments)]
    fn create_job(
        &self,
        kind: &str,
        file_hash: &Sha256Hex,
        process_id: &str,
        params: &str,
        total_steps: u64,
        rows_total: u64,
        step: u8,
    ) -> Result<Job, StoreError>;
    fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;
    /// The newest job of `kind` for a file.
    fn latest_job(&self, kind: &str, file_hash: &Sha256Hex) -> Result<Option<Job>, StoreError>;
    /// Queued and running jobs, oldest first (to resume after a restart).
    fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Marks a job running and counts the attempt, durably, before it runs; answers the
    /// attempts so far, this one included.
    fn start_attempt(&self, id: i64) -> Result<u32, StoreError>;
    fn request_cancel(&self, id: i64) -> Result<(), StoreError>;
    /// Ends a job; `message` says why it failed or was canceled.
    fn finish_job(
        &self,
        id: i64,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Commits steps: the STIX records of the files they wrote and the job's progress, in one
    /// transaction. A record that exists already (same file, same bytes) keeps its on-chain
    /// state and CTI link; its descriptive fields are updated.
    fn commit_stix_steps(
        &self,
        job_id: i64,
        records: &[StixRecord],
        progress: &JobProgress,
    ) -> Result<(), StoreError>;
    /// STIX records of a file, in creation order; `page` is 1-based. Returns the page and the
    /// total count.
    fn stix_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StixRecord>, u64), StoreError>;
    fn stix_record(
        &self,
        file_hash: &Sha256Hex,
        stix_hash: &Sha256Hex,
    ) -> Result<Option<StixRecord>, StoreError>;
}

/// A CTI record: one per STIX record, with the fields of the chain payload.
#[derive(Clone, Debug, PartialEq)]
pub struct CtiRecord {
    pub source_file_hash: String,
    /// The STIX file's SHA-256 (also its `stix_file_hash`).
    pub cti_hash: String,
    pub job_id: i64,
    pub cti_name: String,
    pub cti_type: u8,
    pub cti_traffic_type: u8,
    pub open_source: u8,
    pub description: String,
    pub tags: Vec<String>,
    pub iocs: Vec<String>,
    pub value: f64,
    pub incentive_mechanism: u8,
    /// Size of the STIX file, bytes.
    pub data_size: u64,
    /// Where the STIX file is (the publisher uploads it to IPFS from there).
    pub stix_data: String,
    pub stix_ipfs_hash: String,
    /// The statistics, as JSON text.
    pub statistic_info: String,
    pub data_source_hash: String,
    pub data_source_ipfs_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub onchain: bool,
    /// The id the chain assigned, once published.
    pub cti_id: Option<String>,
}

/// CTI records.
pub trait CtiStore: Send + Sync {
    /// Commits CTI records and the job's progress in one transaction, and links each STIX
    /// record to its CTI record (each record comes with the `cti_file_path` its STIX record gets). A record that exists already keeps its
    /// creation time, on-chain state, chain id and IPFS hashes; its descriptive fields and
    /// statistics are updated.
    fn commit_cti_steps(
        &self,
        job_id: i64,
        records: &[(CtiRecord, String)],
        progress: &JobProgress,
    ) -> Result<(), StoreError>;
    /// CTI records of a file, in the order of their STIX records; `page` is 1-based. Returns
    /// the page and the total count.
    fn cti_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<CtiRecord>, u64), StoreError>;
    fn cti_record(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
    ) -> Result<Option<CtiRecord>, StoreError>;
    /// Records that a CTI record was published: its chain id (and IPFS hashes when given).
    /// Marks the STIX record on chain too. Returns false when there is no such record.
    fn mark_cti_onchain(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
        publication: &Publication,
    ) -> Result<bool, StoreError>;
}

/// What a publisher reports after putting a CTI record on chain.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Publication {
    pub cti_id: String,
    pub stix_ipfs_hash: Option<String>,
    pub data_source_ipfs_hash: Option<String>,
}

/// A reporting user (its token is never listed).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct UserInfo {
    pub name: String,
    pub created_at: i64,
    pub rotated_at: i64,
}

/// What storing one hidden danger did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Upsert {
    Created,
    Updated,
    /// The same content again (a retry): nothing changed.
    Unchanged,
}

/// A stored hidden danger: the current revision.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredHiddenDanger {
    pub id: i64,
    pub user: String,
    pub risk_id: String,
    pub revision: i64,
    /// The validated fields as JSON (wire names), rawEvent apart.
    pub data: String,
    pub raw_event: String,
    pub raw_event_sha256: String,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One past or current version of a hidden danger.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenDangerRevision {
    pub revision: i64,
    pub data: String,
    pub raw_event_sha256: String,
    pub received_at: i64,
}

/// Filters of the hidden-danger listing; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HiddenDangerFilter {
    pub user: Option<String>,
    pub unit_name: Option<String>,
    pub issue_level: Option<u8>,
    pub judge_state: Option<String>,
    pub notice_state: Option<String>,
    /// Findings that end at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Findings that start at or before this time (ms).
    pub until_ms: Option<i64>,
    /// issueIP or one of the asset addresses.
    pub ip: Option<String>,
}

/// Reporting users and the hidden dangers they report.
pub trait HiddenDangerStore: Send + Sync {
    /// Adds a user; a [`StoreError::Conflict`] when the name is taken.
    fn add_user(&self, name: &str, token: &str) -> Result<(), StoreError>;
    fn user_token(&self, name: &str) -> Result<Option<String>, StoreError>;
    fn users(&self) -> Result<Vec<UserInfo>, StoreError>;
    /// Replaces a user's token; false when there is no such user.
    fn rotate_user(&self, name: &str, token: &str) -> Result<bool, StoreError>;
    /// Removes a user (its reports stay); false when there is no such user.
    fn remove_user(&self, name: &str) -> Result<bool, StoreError>;
    /// Stores a batch of one user's validated hidden dangers in one durable transaction:
    /// `riskId` is unique per user, a repeat updates the record and adds a revision (unless
    /// nothing changed).
    fn upsert_hidden_dangers(
        &self,
        user: &str,
        items: &[crate::hidden_danger::HiddenDanger],
    ) -> Result<Vec<Upsert>, StoreError>;
    /// A page (1-based) of the hidden dangers matching `filter`, newest report first, and the
    /// total; `page` `None`: all of them.
    fn hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StoredHiddenDanger>, u64), StoreError>;
    fn hidden_danger(
        &self,
        user: &str,
        risk_id: &str,
    ) -> Result<Option<(StoredHiddenDanger, Vec<HiddenDangerRevision>)>, StoreError>;
    /// Calls `f` with every hidden danger matching `filter`, in the order of
    /// [`HiddenDangerStore::hidden_dangers`], one at a time from one consistent snapshot (what
    /// is stored meanwhile is not seen), without holding the store's other readers and writers.
    fn scan_hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        f: &mut dyn FnMut(StoredHiddenDanger) -> io::Result<()>,
    ) -> Result<(), StoreError>;
}

/// An object to add to a TAXII collection.
#[derive(Clone, Debug, PartialEq)]
pub struct NewTaxiiObject {
    pub id: String,
    pub kind: String,
    /// `modified`, else `created`, as written in the object; `""` for unversioned objects.
    pub version: String,
    /// The version as microseconds since the epoch (ordering); 0 when unversioned.
    pub version_us: i64,
    pub spec_version: String,
    /// The object's JSON text.
    pub object: String,
}

/// An object version stored in a TAXII collection.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiiObject {
    /// Insertion order within the node's database: the paging key.
    pub seq: i64,
    pub id: String,
    pub kind: String,
    pub version: String,
    pub spec_version: String,
    /// Microseconds since the epoch; unique and increasing with `seq`.
    pub date_added: i64,
    pub object: String,
}

/// One `match[version]` value.
#[derive(Clone, Debug, PartialEq)]
pub enum VersionMatch {
    Last,
    First,
    All,
    /// The version of this instant (microseconds since the epoch), however it was written.
    At(i64),
}

/// A page request of a collection: objects after `after_seq`, filtered.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiiQuery {
    pub after_seq: i64,
    /// Only objects added after this time (microseconds).
    pub added_after: Option<i64>,
    pub limit: u64,
    pub ids: Vec<String>,
    pub types: Vec<String>,
    pub versions: Vec<VersionMatch>,
    pub spec_versions: Vec<String>,
}

/// The status of a TAXII add request.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiiStatus {
    pub id: String,
    pub collection: String,
    pub request_timestamp: i64,
    pub total: u64,
    /// JSON arrays of `{id, version, message?}`.
    pub successes: String,
    pub failures: String,
    pub success_count: u64,
    pub failure_count: u64,
}

/// TAXII collections, their access grants, add-request statuses, and the positions up to which
/// the node's own STIX (dataset files, hidden dangers) has been published into them.
pub trait TaxiiStore: Send + Sync {
    /// Adds objects to a collection (an id and version already there is kept as it is) and,
    /// in the same transaction, moves a sync watermark. Returns, per object, whether it was new.
    fn taxii_add(
        &self,
        collection: &str,
        objects: &[NewTaxiiObject],
        watermark: Option<(&str, i64)>,
    ) -> Result<Vec<bool>, StoreError>;
    /// A page of at most `query.limit` objects in insertion order, and whether more follow.
    fn taxii_page(
        &self,
        collection: &str,
        query: &TaxiiQuery,
    ) -> Result<(Vec<TaxiiObject>, bool), StoreError>;
    /// Deletes the matching versions of an object; returns how many were deleted.
    fn taxii_delete(
        &self,
        collection: &str,
        id: &str,
        versions: &[VersionMatch],
    ) -> Result<u64, StoreError>;
    fn taxii_save_status(&self, status: &TaxiiStatus) -> Result<(), StoreError>;
    fn taxii_status(&self, id: &str) -> Result<Option<TaxiiStatus>, StoreError>;
    /// The user whose token this is.
    fn user_by_token(&self, token: &str) -> Result<Option<String>, StoreError>;
    /// Collections (or `all`) a user may write to.
    fn taxii_grants(&self, user: &str) -> Result<Vec<String>, StoreError>;
    fn taxii_grant(&self, user: &str, collection: &str) -> Result<(), StoreError>;
    fn taxii_revoke(&self, user: &str, collection: &str) -> Result<bool, StoreError>;
    fn taxii_watermark(&self, source: &str) -> Result<i64, StoreError>;
    /// STIX files recorded after `watermark` (by record order): `(position, stix_file_hash)`.
    fn stix_files_after(
        &self,
        watermark: i64,
        limit: u64,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// Hidden dangers with a revision recorded after `watermark`: `(position, current record)`.
    fn hidden_dangers_after(
        &self,
        watermark: i64,
        limit: u64,
    ) -> Result<Vec<(i64, StoredHiddenDanger)>, StoreError>;
}
