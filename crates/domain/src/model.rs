//! The records the node keeps: uploaded files and their tasks and steps, jobs and their
//! progress, STIX and CTI records, reporting users and hidden dangers, TAXII objects and
//! statuses. Plain values: the storage traits (`br-cti-store`) take and answer them.

use serde::Serialize;

use crate::hash::Sha256Hex;
use crate::job::JobParams;
use crate::vocab::{
    DataType, IncentiveMechanism, IocKind, IssueLevel, JudgeState, NoticeState, OpenSource, Tag,
    Tlp, TrafficType,
};

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
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// The file was uploaded (finished with the task).
    Upload,
    /// Converted to STIX files.
    Stix,
    /// CTI records built.
    Cti,
    /// Put on a sharing chain (by a publisher outside the node).
    Chain,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 4] = [Step::Upload, Step::Stix, Step::Cti, Step::Chain];

    /// The number the front ends (and the database) know the step by.
    pub fn number(self) -> u8 {
        self as u8
    }

    pub fn from_number(n: u8) -> Option<Self> {
        Self::ALL.get(usize::from(n)).copied()
    }
}

/// As its number.
impl Serialize for Step {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.number())
    }
}

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
    pub step: Step,
    pub status: StepState,
    pub total_num: u64,
}

/// A task record exactly as the front ends read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub source_file_hash: Sha256Hex,
    pub step_status: Vec<StepStatus>,
    /// Creation time, milliseconds since the Unix epoch.
    pub timestamp: i64,
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

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    /// A dataset's conversion to STIX files.
    Stix,
    /// The CTI records of a converted dataset.
    Cti,
}

impl JobKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stix => "stix",
            Self::Cti => "cti",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "stix" => Self::Stix,
            "cti" => Self::Cti,
            _ => return None,
        })
    }

    /// The step of a task the job fills (its state follows the job's).
    pub fn step(self) -> Step {
        match self {
            Self::Stix => Step::Stix,
            Self::Cti => Step::Cti,
        }
    }
}

impl std::fmt::Display for JobKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A persisted long operation (a conversion, a CTI build) and its progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: i64,
    pub file_hash: Sha256Hex,
    pub process_id: String,
    /// The validated request: everything needed to run (or resume) the job, its kind too.
    pub params: JobParams,
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

impl Job {
    pub fn kind(&self) -> JobKind {
        self.params.kind()
    }
}

/// The fence of a job's lease: a node that claims a job gets a new one, and the store refuses
/// writes for the job that carry an older one. A node that lost its lease (it stalled, or was
/// cut off, past the lease's end, and another node took the job over) cannot commit a step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fence(i64);

impl Fence {
    /// A backend's own value (a counter of the job's claims).
    pub fn from_backend(raw: i64) -> Self {
        Fence(raw)
    }

    pub fn to_backend(self) -> i64 {
        self.0
    }
}

/// What renewing a lease found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Still this node's; `cancel_requested`: someone (on any node) asked the job to stop.
    Held { cancel_requested: bool },
    /// Another node claimed the job, or it ended.
    Lost,
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
    pub source_file_hash: Sha256Hex,
    pub stix_file_hash: Sha256Hex,
    pub job_id: i64,
    pub batch: u64,
    pub file_size: u64,
    pub rows: u64,
    pub objects: u64,
    pub stix_type: DataType,
    pub stix_tags: Vec<Tag>,
    pub stix_iocs: Vec<IocKind>,
    /// IP address → occurrences, in address order.
    pub ioc_ips_map: Vec<(String, u64)>,
    pub created_at: i64,
    pub onchain: bool,
    pub cti_file_path: Option<String>,
}

/// A CTI record: one per STIX record, with the fields of the chain payload.
#[derive(Clone, Debug, PartialEq)]
pub struct CtiRecord {
    pub source_file_hash: Sha256Hex,
    /// The STIX file's SHA-256 (also its `stix_file_hash`).
    pub cti_hash: Sha256Hex,
    pub job_id: i64,
    pub cti_name: String,
    pub cti_type: DataType,
    pub cti_traffic_type: TrafficType,
    pub open_source: OpenSource,
    pub description: String,
    pub tags: Vec<Tag>,
    pub iocs: Vec<IocKind>,
    pub value: f64,
    pub incentive_mechanism: IncentiveMechanism,
    /// Size of the STIX file, bytes.
    pub data_size: u64,
    /// Where the STIX file is (the publisher uploads it to IPFS from there).
    pub stix_data: String,
    pub stix_ipfs_hash: String,
    /// The statistics, as JSON text.
    pub statistic_info: String,
    pub data_source_hash: Sha256Hex,
    pub data_source_ipfs_hash: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub onchain: bool,
    /// The id the chain assigned, once published.
    pub cti_id: Option<String>,
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
    /// The most restricted TLP level the user may read over TAXII.
    pub tlp: Tlp,
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
    pub raw_event_sha256: Sha256Hex,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One past or current version of a hidden danger.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenDangerRevision {
    pub revision: i64,
    pub data: String,
    pub raw_event_sha256: Sha256Hex,
    pub received_at: i64,
}

/// Filters of the hidden-danger listing; `None` matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HiddenDangerFilter {
    pub user: Option<String>,
    pub unit_name: Option<String>,
    pub issue_level: Option<IssueLevel>,
    pub judge_state: Option<JudgeState>,
    pub notice_state: Option<NoticeState>,
    /// Findings that end at or after this time (ms).
    pub since_ms: Option<i64>,
    /// Findings that start at or before this time (ms).
    pub until_ms: Option<i64>,
    /// issueIP or one of the asset addresses.
    pub ip: Option<String>,
}

/// A STIX file as the TAXII publisher follows them: where its record stands in the
/// publisher's order, and what names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecordedStixFile {
    pub position: Position,
    pub stix_file_hash: Sha256Hex,
    pub source_file_hash: Sha256Hex,
    /// Its place among its conversion's files (0-based).
    pub batch: u64,
    pub data_type: DataType,
    /// The indicator validity its conversion asked for (`None`: the node's).
    pub indicator_valid_days: Option<u32>,
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
    /// The object's JSON text, or where it is.
    pub body: TaxiiBody,
    /// Its most restricted TLP marking (none: clear): who may read it.
    pub tlp: Tlp,
}

/// Where the JSON text of a TAXII object version is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum TaxiiBody {
    /// In the database, with the version (objects pushed by peers, hidden dangers, the
    /// groupings and indicator versions the node builds).
    Text(String),
    /// A line of a STIX file the node wrote from a dataset: served from the file, which is
    /// stored under the hash of its bytes and never changes. The database keeps 44 bytes
    /// instead of the object.
    InFile(BodyRef),
}

impl TaxiiBody {
    /// The text held in the database (`""` for a body in a file).
    pub fn text(&self) -> &str {
        match self {
            TaxiiBody::Text(t) => t,
            TaxiiBody::InFile(_) => "",
        }
    }

    /// The stored form of a reference (`None` for a text).
    pub fn reference(&self) -> Option<[u8; BodyRef::STORED_LEN]> {
        match self {
            TaxiiBody::Text(_) => None,
            TaxiiBody::InFile(r) => Some(r.to_bytes()),
        }
    }

    /// Back from a store's two columns: the text, and the reference when there is one.
    pub fn from_stored(text: String, reference: Option<&[u8]>) -> Result<Self, BadBodyRef> {
        match reference {
            None => Ok(TaxiiBody::Text(text)),
            Some(bytes) => BodyRef::from_bytes(bytes).map(TaxiiBody::InFile),
        }
    }
}

/// The bytes `offset..offset + len` of the STIX file `file`: one object's JSON text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyRef {
    pub file: Sha256Hex,
    pub offset: u64,
    pub len: u32,
}

/// A stored reference that is not 44 bytes: the database was changed by hand or is damaged.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("a stored TAXII body reference has {0} bytes, not 44")]
pub struct BadBodyRef(pub usize);

impl BodyRef {
    /// The digest (32 bytes), the offset (8, big-endian) and the length (4, big-endian).
    pub const STORED_LEN: usize = 44;

    pub fn to_bytes(&self) -> [u8; Self::STORED_LEN] {
        let mut out = [0u8; Self::STORED_LEN];
        hex::decode_to_slice(self.file.as_str(), &mut out[..32])
            .expect("a Sha256Hex is 64 hexadecimal characters");
        out[32..40].copy_from_slice(&self.offset.to_be_bytes());
        out[40..].copy_from_slice(&self.len.to_be_bytes());
        out
    }

    pub fn from_bytes(b: &[u8]) -> Result<Self, BadBodyRef> {
        if b.len() != Self::STORED_LEN {
            return Err(BadBodyRef(b.len()));
        }
        Ok(BodyRef {
            file: Sha256Hex::from_digest(&b[..32]),
            offset: u64::from_be_bytes(b[32..40].try_into().expect("8 bytes")),
            len: u32::from_be_bytes(b[40..].try_into().expect("4 bytes")),
        })
    }
}

/// A place in an order a backend keeps: where an object stands in a TAXII collection, how far
/// the publisher has read the node's own records. Opaque above the store: compared, saved and
/// handed back, never computed on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Position(i64);

impl Position {
    /// Before everything.
    pub const START: Position = Position(0);

    /// A backend's own value (SQLite: a rowid, greater than 0). For backends and for the
    /// encoding of cursors only.
    pub fn from_backend(raw: i64) -> Self {
        Position(raw)
    }

    /// The backend's value (see [`Position::from_backend`]).
    pub fn to_backend(self) -> i64 {
        self.0
    }
}

/// An object version stored in a TAXII collection.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiiObject {
    /// Where it stands in the collection's insertion order: the paging key.
    pub position: Position,
    pub id: String,
    pub kind: String,
    pub version: String,
    pub spec_version: String,
    /// Microseconds since the epoch; unique and increasing with `position`.
    pub date_added: i64,
    pub body: TaxiiBody,
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

/// A page request of a collection: objects after `after`, filtered.
#[derive(Clone, Debug, PartialEq)]
pub struct TaxiiQuery {
    pub after: Position,
    /// Only objects marked at most this TLP level (what the reader is granted).
    pub max_tlp: Tlp,
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

/// A signed request of the report interface: what the replay protection keys on (the sign in
/// lower case).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReportKey<'a> {
    pub user: &'a str,
    /// As sent (its spelling is what was signed).
    pub timestamp: &'a str,
    pub sign: &'a str,
}

/// What the store knows of a signed request within the replay window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReportClaim {
    /// Not seen: this call claimed it. Process it, then settle or release it.
    Claimed,
    /// Seen with the same body and being processed (here or on another node).
    Pending,
    /// Seen with the same body and answered: the answer to give again.
    Answered { outcome: String, answer: String },
    /// Seen with another body.
    OtherBody,
}

impl ReportClaim {
    /// What a stored claim (`stored_body`, its answer once there is one) says to a request
    /// with `body`.
    pub fn seen(
        body: &Sha256Hex,
        stored_body: &str,
        outcome: Option<String>,
        answer: Option<String>,
    ) -> Self {
        if stored_body != body.as_str() {
            return ReportClaim::OtherBody;
        }
        match (outcome, answer) {
            (Some(outcome), Some(answer)) => ReportClaim::Answered { outcome, answer },
            _ => ReportClaim::Pending,
        }
    }
}

/// A token bucket: `rate` requests per second on average, bursts of `burst`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TokenBucket {
    pub rate: f64,
    pub burst: f64,
}

impl TokenBucket {
    /// Takes one token from a bucket that held `tokens` at `at_ms`, at `now_ms`: answers the
    /// bucket's new state and `Err(seconds to wait)` when it is empty. A bucket never seen is
    /// full; a rate of 0 is no limit.
    pub fn take(self, state: Option<(f64, i64)>, now_ms: i64) -> ((f64, i64), Result<(), f64>) {
        let burst = self.burst.max(1.0);
        if self.rate <= 0.0 {
            return ((burst, now_ms), Ok(()));
        }
        let (tokens, at) = state.unwrap_or((burst, now_ms));
        let elapsed = (now_ms - at).max(0) as f64 / 1000.0;
        let tokens = (tokens + elapsed * self.rate).min(burst);
        if tokens >= 1.0 {
            ((tokens - 1.0, now_ms), Ok(()))
        } else {
            ((tokens, now_ms), Err((1.0 - tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod bucket_tests {
    use super::TokenBucket;

    #[test]
    fn buckets_fill_at_their_rate_up_to_their_burst() {
        let b = TokenBucket {
            rate: 1.0,
            burst: 2.0,
        };
        let (s, r) = b.take(None, 0);
        assert!(r.is_ok());
        let (s, r) = b.take(Some(s), 0);
        assert!(r.is_ok());
        let (s, r) = b.take(Some(s), 0);
        assert_eq!(r, Err(1.0));
        let (s, r) = b.take(Some(s), 500);
        assert_eq!(r, Err(0.5));
        let (s, r) = b.take(Some(s), 1000);
        assert!(r.is_ok());
        // A long pause fills the bucket to its burst, no more.
        let (s, _) = b.take(Some(s), 100_000);
        assert_eq!(s.0, 1.0);
        let off = TokenBucket {
            rate: 0.0,
            burst: 1.0,
        };
        assert!((0..10).all(|i| off.take(Some((0.0, 0)), i).1.is_ok()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_reference_round_trips_through_its_44_bytes() {
        let r = BodyRef {
            file: Sha256Hex::parse(&"0f".repeat(32)).unwrap(),
            offset: 0x0102_0304_0506_0708,
            len: u32::MAX,
        };
        let body = TaxiiBody::InFile(r.clone());
        let stored = body.reference().unwrap();
        assert_eq!(stored.len(), BodyRef::STORED_LEN);
        assert_eq!(&stored[32..40], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(
            TaxiiBody::from_stored(String::new(), Some(&stored)),
            Ok(body)
        );
        assert_eq!(
            TaxiiBody::from_stored("{}".into(), None),
            Ok(TaxiiBody::Text("{}".into()))
        );
        assert_eq!(TaxiiBody::Text("{}".into()).reference(), None);
        assert_eq!(
            TaxiiBody::from_stored(String::new(), Some(&stored[..43])),
            Err(BadBodyRef(43))
        );
    }
}
