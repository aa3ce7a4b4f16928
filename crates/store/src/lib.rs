//! Storage behind narrow interfaces: [`BlobStore`] for file bytes (content-addressed) and
//! [`RecordStore`] for the records. The HTTP layer and the jobs only see these traits, so another
//! backend (PostgreSQL, an object store) can be added without touching them.

#[cfg(feature = "contract")]
pub mod contract;

use std::io::{self, Read, Seek, Write};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::hidden_danger::HiddenDanger;
use br_cti_domain::io::ReadSeek;
use br_cti_domain::ioc::{IocSighting, IocState};
use br_cti_domain::job::JobParams;
use br_cti_domain::model::*;
use br_cti_domain::vocab::{IssueLevel, Tlp};

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
    /// The `len` bytes of a stored blob from `from`, or `None` when no blob has that hash;
    /// `UnexpectedEof` when the blob ends first. One request on an object store (`open` costs
    /// a `HEAD`, and its reads fetch ahead).
    fn read_range(&self, hash: &Sha256Hex, from: u64, len: u64) -> io::Result<Option<Vec<u8>>> {
        let Some(mut input) = self.open(hash)? else {
            return Ok(None);
        };
        let mut bytes = vec![0u8; usize::try_from(len).map_err(io::Error::other)?];
        input.seek(io::SeekFrom::Start(from))?;
        input.read_exact(&mut bytes)?;
        Ok(Some(bytes))
    }
    /// The size of a stored blob, or `None` when no blob has that hash.
    fn size(&self, hash: &Sha256Hex) -> io::Result<Option<u64>>;
    /// Where the blob lives, for display (a path, or an object-store URL).
    fn locate(&self, hash: &Sha256Hex) -> String;
    /// Readiness: the store can create and remove a file; answers the free space left to it in
    /// bytes, when the backend knows it.
    fn check(&self) -> io::Result<Option<u64>>;
    /// Each read is a request over the network (an object store), worth making ahead of need
    /// when the next one is known; a local directory's reads are not.
    fn is_remote(&self) -> bool {
        false
    }
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

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("task_id {task_id:?} already belongs to another file ({existing_file})")]
    TaskConflict {
        task_id: String,
        existing_file: String,
    },
    #[error("{0}")]
    Conflict(String),
    /// A value the backend cannot store or look up (PostgreSQL refuses the character U+0000
    /// in text): the request's fault, not the store's.
    #[error("{0}")]
    Unstorable(String),
    /// The backend failed (its own error, for the log).
    #[error("database error: {0}")]
    Backend(#[source] BoxError),
    /// The backend's storage is full: the same request may succeed once space is freed.
    #[error("database error: {0}")]
    Full(#[source] BoxError),
    #[error("storage I/O error: {0}")]
    Io(#[from] io::Error),
    /// A stored value does not parse: the store was written by something else, or damaged.
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    /// The database file is not the one the node opened (deleted, moved or replaced): writing
    /// on would lose what it acknowledges.
    #[error(
        "the database file {0} was deleted or replaced while the node ran; nothing more is \
         written to it: restore it or restart the node"
    )]
    Replaced(String),
    /// A write for a job carried the fence of a lease that another node has since taken over.
    #[error(
        "job {0} was taken over by another node (this node's lease on it ended): its write is \
         refused"
    )]
    LeaseLost(i64),
}

impl StoreError {
    /// The storage is full (the database's device, or a blob's): the request may succeed
    /// again once space is freed.
    pub fn is_full(&self) -> bool {
        match self {
            StoreError::Full(_) => true,
            StoreError::Io(e) => e.kind() == io::ErrorKind::StorageFull,
            _ => false,
        }
    }
}

/// A backend's own error.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every record the node keeps, in one database: uploads and their tasks, jobs and the STIX
/// records they commit, CTI records, reporting users and hidden dangers, TAXII collections.
/// What the application holds to reach them all; a backend implements each part.
pub trait RecordStore:
    UploadStore + JobStore + CtiStore + HiddenDangerStore + TaxiiStore + Send + Sync
{
    /// Readiness: the database answers a query on its schema.
    fn check(&self) -> Result<(), StoreError>;
    /// At a clean stop: everything committed moves into the main database file (for SQLite,
    /// out of the write-ahead log), so that a copy of that file alone is complete.
    fn checkpoint(&self) -> Result<(), StoreError>;
    /// What the console's overview shows: counts over the whole store, and what arrived since
    /// `since_ms`.
    fn summary(&self, since_ms: i64) -> Result<Summary, StoreError>;
}

/// Counts over the whole store, for the console's overview.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Summary {
    /// Uploaded files (distinct contents).
    pub files: u64,
    /// Bytes of the uploaded files and of the STIX files made from them.
    pub stored_bytes: u64,
    /// Jobs by state, every state present (zero counts included), in `JobStatus` order.
    pub jobs: Vec<(JobStatus, u64)>,
    /// Dataset rows in STIX records committed since the given time.
    pub stix_rows_since: u64,
    /// Hidden-danger revisions received since the given time.
    pub reports_since: u64,
    /// Every TAXII collection that holds objects: object versions and the newest
    /// `date_added` (microseconds), by collection id.
    pub taxii: Vec<CollectionCount>,
}

/// The objects of one TAXII collection.
#[derive(Clone, Debug, PartialEq)]
pub struct CollectionCount {
    pub collection: String,
    pub objects: u64,
    pub newest_added_us: i64,
}

/// Every job state, in the order the console lists them.
pub const JOB_STATES: [JobStatus; 5] = [
    JobStatus::Queued,
    JobStatus::Running,
    JobStatus::Succeeded,
    JobStatus::Failed,
    JobStatus::Canceled,
];

/// Uploaded dataset files and their tasks, with the steps the front ends show.
pub trait UploadStore: Send + Sync {
    /// Records an uploaded file and a task for it, in one transaction. Uploading the same file
    /// under the same `task_id` again returns the existing record; a `task_id` that belongs to
    /// another file is a [`StoreError::TaskConflict`].
    fn record_upload(&self, file: &FileMeta, task_id: &str) -> Result<TaskRecord, StoreError>;
    fn file(&self, hash: &Sha256Hex) -> Result<Option<FileMeta>, StoreError>;
    /// A page (1-based) of the uploaded files, newest first, and the total.
    fn files(&self, page: (u64, u64)) -> Result<(Vec<FileMeta>, u64), StoreError>;
    fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError>;
    /// All tasks of one file, oldest first.
    fn tasks_for_file(&self, hash: &Sha256Hex) -> Result<Vec<TaskRecord>, StoreError>;
    /// Sets one step of every task of a file (conversion and CTI work is per file).
    fn set_step_for_file(
        &self,
        hash: &Sha256Hex,
        step: Step,
        state: StepState,
        total_num: u64,
    ) -> Result<(), StoreError>;
}

/// Jobs and the STIX records they commit.
pub trait JobStore: Send + Sync {
    /// Saves a queued job and marks its kind's step of the file's tasks running, in one
    /// transaction. At most one job of a kind per file is queued or running, which the store
    /// enforces: a second one is a [`StoreError::Conflict`] naming the first.
    fn create_job(
        &self,
        file_hash: &Sha256Hex,
        process_id: &str,
        params: &JobParams,
        total_steps: u64,
        rows_total: u64,
    ) -> Result<Job, StoreError>;
    fn job(&self, id: i64) -> Result<Option<Job>, StoreError>;
    /// The newest job of `kind` for a file.
    fn latest_job(&self, kind: JobKind, file_hash: &Sha256Hex) -> Result<Option<Job>, StoreError>;
    /// Queued and running jobs, oldest first.
    fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError>;
    /// Claims the oldest job that is queued, or running under a lease that has ended (its node
    /// stopped or lost contact), for `owner` until `lease_ms` from now: marks it running,
    /// counts the attempt (durably, before it runs) and hands out a new fence. Of nodes
    /// claiming at once each gets another job. `None`: nothing to claim.
    fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<(Job, Fence)>, StoreError>;
    /// Extends the lease to `lease_ms` from now, if `fence` still holds it.
    fn renew_lease(&self, id: i64, fence: Fence, lease_ms: i64) -> Result<LeaseState, StoreError>;
    /// Ends every lease now: for a node that owns the database alone, at its start (whatever
    /// ran before it stopped with the process that ran it). Answers how many there were.
    fn expire_leases(&self) -> Result<u64, StoreError>;
    fn request_cancel(&self, id: i64) -> Result<(), StoreError>;
    /// Ends a job (and its lease); `message` says why it failed or was canceled.
    /// [`StoreError::LeaseLost`] when `fence` no longer holds the job.
    fn finish_job(
        &self,
        id: i64,
        fence: Fence,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError>;
    /// Commits steps: the STIX records of the files they wrote and the job's progress, in one
    /// transaction. A record that exists already (same file, same bytes) keeps its on-chain
    /// state and CTI link; its descriptive fields are updated. [`StoreError::LeaseLost`]
    /// (and nothing written) when `fence` no longer holds the job.
    fn commit_stix_steps(
        &self,
        job_id: i64,
        fence: Fence,
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

/// CTI records.
pub trait CtiStore: Send + Sync {
    /// Commits CTI records and the job's progress in one transaction, and links each STIX
    /// record to its CTI record (each record comes with the `cti_file_path` its STIX record gets). A record that exists already keeps its
    /// creation time, on-chain state, chain id and IPFS hashes; its descriptive fields and
    /// statistics are updated.
    fn commit_cti_steps(
        &self,
        job_id: i64,
        fence: Fence,
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
    /// The TLP marking of the hidden dangers a user (a reporting platform) reports; `None`:
    /// the node's default (or no such user).
    fn report_tlp(&self, name: &str) -> Result<Option<Tlp>, StoreError>;
    /// Sets (or, with `None`, clears) it; false when there is no such user.
    fn set_report_tlp(&self, name: &str, tlp: Option<Tlp>) -> Result<bool, StoreError>;
    /// Stores a batch of one user's validated hidden dangers in one durable transaction:
    /// `riskId` is unique per user, a repeat updates the record and adds a revision (unless
    /// nothing changed).
    fn upsert_hidden_dangers(
        &self,
        user: &str,
        items: &[HiddenDanger],
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
    /// How many hidden dangers match `filter`, by reporting user and issue level (sorted by
    /// user, then level).
    fn hidden_danger_counts(
        &self,
        filter: &HiddenDangerFilter,
    ) -> Result<Vec<(String, IssueLevel, u64)>, StoreError>;
    /// Calls `f` with every hidden danger matching `filter`, in the order of
    /// [`HiddenDangerStore::hidden_dangers`], one at a time from one consistent snapshot (what
    /// is stored meanwhile is not seen), without holding the store's other readers and writers.
    fn scan_hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        f: &mut dyn FnMut(StoredHiddenDanger) -> io::Result<()>,
    ) -> Result<(), StoreError>;
    /// Replay protection, shared by the nodes of one database: claims a signed request for
    /// `ttl_ms` (the clock window and a margin), or answers what is known of it. Claims that
    /// expired are dropped.
    fn claim_report(
        &self,
        key: &ReportKey<'_>,
        body_sha256: &Sha256Hex,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<ReportClaim, StoreError>;
    /// Records the answer of a claimed request (given again to an identical request).
    fn settle_report(
        &self,
        key: &ReportKey<'_>,
        outcome: &str,
        answer: &str,
    ) -> Result<(), StoreError>;
    /// Releases a claimed request that was not answered for good: it may be sent again.
    fn release_report(&self, key: &ReportKey<'_>) -> Result<(), StoreError>;
    /// Takes one request from a user's token bucket, shared by the nodes of one database;
    /// `Ok(Err(seconds))` when it is empty.
    fn take_report_token(
        &self,
        user: &str,
        bucket: TokenBucket,
        now_ms: i64,
    ) -> Result<Result<(), f64>, StoreError>;
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
        watermark: Option<(&str, Position)>,
    ) -> Result<Vec<bool>, StoreError>;
    /// A page of at most `query.limit` objects in insertion order, and whether more follow.
    fn taxii_page(
        &self,
        collection: &str,
        query: &TaxiiQuery,
    ) -> Result<(Vec<TaxiiObject>, bool), StoreError>;
    /// Deletes the matching versions of an object marked at most `max_tlp` (what the deleter
    /// may read); returns how many were deleted.
    fn taxii_delete(
        &self,
        collection: &str,
        id: &str,
        versions: &[VersionMatch],
        max_tlp: Tlp,
    ) -> Result<u64, StoreError>;
    fn taxii_save_status(&self, status: &TaxiiStatus) -> Result<(), StoreError>;
    fn taxii_status(&self, id: &str) -> Result<Option<TaxiiStatus>, StoreError>;
    /// The user whose token this is.
    fn user_by_token(&self, token: &str) -> Result<Option<String>, StoreError>;
    /// The most restricted TLP level a user may read (`None`: no such user).
    fn user_tlp(&self, user: &str) -> Result<Option<Tlp>, StoreError>;
    /// Sets the TLP level a user may read; false when there is no such user.
    fn set_user_tlp(&self, user: &str, tlp: Tlp) -> Result<bool, StoreError>;
    /// Collections (or `all`) a user may write to.
    fn taxii_grants(&self, user: &str) -> Result<Vec<String>, StoreError>;
    fn taxii_grant(&self, user: &str, collection: &str) -> Result<(), StoreError>;
    fn taxii_revoke(&self, user: &str, collection: &str) -> Result<bool, StoreError>;
    fn taxii_watermark(&self, source: &str) -> Result<Position, StoreError>;
    /// STIX files recorded after `watermark` (by record order).
    fn stix_files_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<RecordedStixFile>, StoreError>;
    /// The IOC registry ([`br_cti_domain::ioc`]): records each (indicator, file) sighting once
    /// (a file's bytes never change, so a sighting given again changes nothing) and answers the
    /// state of every indicator named, in the order first named. An indicator that a new
    /// sighting changed gets a new `modified_us`: `now_us`, or its last one plus 1 µs if that
    /// is not earlier. One transaction.
    fn ioc_fold(&self, sightings: &[IocSighting], now_us: i64)
    -> Result<Vec<IocState>, StoreError>;
    /// Hidden dangers with a revision recorded after `watermark`: `(position, current record)`.
    fn hidden_dangers_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<(Position, StoredHiddenDanger)>, StoreError>;
}
