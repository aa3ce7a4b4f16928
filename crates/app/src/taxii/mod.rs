//! TAXII 2.1 sharing: the node's collections, what may be added to them, stateless cursors,
//! and the worker that publishes the node's own STIX (dataset conversions, hidden dangers) into
//! the read collections as it appears.

pub mod access;
mod bodies;

pub use bodies::{PageBodies, ReadAhead};

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use serde_json::value::RawValue;
use time::format_description::well_known::Rfc3339;

use br_cti_domain::error::Invalid;
use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::ioc::{Confidence, IndicatorPolicy, IocSighting, IocState};
use br_cti_domain::model::{BodyRef, NewTaxiiObject, Position, RecordedStixFile, TaxiiBody};
use br_cti_domain::time::{now_ms, now_us};
use br_cti_domain::vocab::Tlp;
use br_cti_engine::grouping;
use br_cti_engine::hidden_danger_stix::{self, UnreadableHiddenDanger};
use br_cti_store::{BlobStore, RecordStore, StoreError};

/// A collection of the node.
#[derive(Clone, Debug)]
pub struct Collection {
    pub id: String,
    pub title: &'static str,
    pub description: &'static str,
    /// Peers may add objects (with a grant); the others are filled by the node itself.
    pub writable: bool,
}

fn collection_id(name: &str) -> String {
    uuid::Uuid::new_v5(
        &uuid::Uuid::NAMESPACE_URL,
        format!("br-cti:taxii:{name}").as_bytes(),
    )
    .to_string()
}

pub(crate) fn datasets_id() -> String {
    collection_id("datasets")
}

pub(crate) fn hidden_dangers_id() -> String {
    collection_id("hidden-dangers")
}

pub(crate) fn inbox_id() -> String {
    collection_id("inbox")
}

pub fn collections() -> Vec<Collection> {
    vec![
        Collection {
            id: datasets_id(),
            title: "br-cti datasets",
            description: "Every STIX object this node produced from datasets, once per id and version.",
            writable: false,
        },
        Collection {
            id: hidden_dangers_id(),
            title: "br-cti hidden dangers",
            description: "Reported hidden dangers as sightings of vulnerabilities (one version per revision).",
            writable: false,
        },
        Collection {
            id: inbox_id(),
            title: "br-cti inbox",
            description: "STIX pushed by peers (writing takes `br-cti users grant NAME --write <id>`).",
            writable: true,
        },
    ]
}

/// Microsecond-precision TAXII timestamp (`2024-06-01T08:00:00.123456Z`).
pub fn format_us(us: i64) -> String {
    stix::Timestamp::from_micros(us).to_micros_string()
}

/// Parses an RFC 3339 timestamp to microseconds.
pub fn parse_us(s: &str) -> Option<i64> {
    time::OffsetDateTime::parse(s, &Rfc3339)
        .ok()
        .map(|t| (t.unix_timestamp_nanos() / 1000) as i64)
}

/// The opaque `next` of a page: the position after which the next page starts. It holds no
/// server state, so it stays valid across restarts and on every node sharing the database.
pub fn encode_cursor(after: Position) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("v1:{}", after.to_backend()))
}

pub fn decode_cursor(s: &str) -> Option<Position> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.strip_prefix("v1:")?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
        .map(Position::from_backend)
}

const SCO_TYPES: [&str; 18] = [
    "artifact",
    "autonomous-system",
    "directory",
    "domain-name",
    "email-addr",
    "email-message",
    "file",
    "ipv4-addr",
    "ipv6-addr",
    "mac-addr",
    "mutex",
    "network-traffic",
    "process",
    "software",
    "url",
    "user-account",
    "windows-registry-key",
    "x509-certificate",
];

fn valid_type_name(t: &str) -> bool {
    (3..=250).contains(&t.len())
        && t.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !t.starts_with('-')
        && !t.ends_with('-')
        && !t.contains("--")
}

/// Checks one object of an add request and describes it for storage.
pub fn parse_object(v: &Value) -> Result<NewTaxiiObject, Invalid> {
    check_object(v, None).map_err(Invalid)
}

/// The members of a STIX object that publishing reads: those `check_object` checks, and a
/// sighting's (`indicator_sighting`). The rest of the line is checked as JSON and skipped.
#[derive(serde::Deserialize)]
struct Members<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<&'a RawValue>,
    #[serde(borrow)]
    id: Option<&'a RawValue>,
    #[serde(borrow)]
    spec_version: Option<&'a RawValue>,
    #[serde(borrow)]
    created: Option<&'a RawValue>,
    #[serde(borrow)]
    modified: Option<&'a RawValue>,
    #[serde(borrow)]
    object_marking_refs: Option<&'a RawValue>,
    #[serde(borrow)]
    sighting_of_ref: Option<&'a RawValue>,
    #[serde(borrow)]
    first_seen: Option<&'a RawValue>,
    #[serde(borrow)]
    last_seen: Option<&'a RawValue>,
    #[serde(borrow)]
    count: Option<&'a RawValue>,
}

impl Members<'_> {
    /// The members present, as an object of their own.
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        let mut o = serde_json::Map::new();
        for (name, raw) in [
            ("type", self.kind),
            ("id", self.id),
            ("spec_version", self.spec_version),
            ("created", self.created),
            ("modified", self.modified),
            ("object_marking_refs", self.object_marking_refs),
            ("sighting_of_ref", self.sighting_of_ref),
            ("first_seen", self.first_seen),
            ("last_seen", self.last_seen),
            ("count", self.count),
        ] {
            if let Some(raw) = raw {
                o.insert(name.into(), serde_json::from_str(raw.get())?);
            }
        }
        Ok(Value::Object(o))
    }
}

/// `check_object` of an object that is one compact line of a STIX file the node wrote: the
/// body is the line as it is (`at`: where it is in its file, and so served from there),
/// instead of being written again from its parsed value. The value answered holds only the
/// members publishing reads ([`Members`]): building the whole line as a `Value` (a map per
/// object, a string per member) was most of the publisher's reading.
fn parse_line(line: &str, at: Option<BodyRef>) -> Result<(NewTaxiiObject, Value), String> {
    let v = serde_json::from_str::<Members<'_>>(line)
        .and_then(|m| m.to_value())
        .map_err(|e| e.to_string())?;
    let body = match at {
        Some(at) => TaxiiBody::InFile(at),
        None => TaxiiBody::Text(line.to_string()),
    };
    Ok((check_object(&v, Some(body))?, v))
}

fn check_object(v: &Value, body: Option<TaxiiBody>) -> Result<NewTaxiiObject, String> {
    let o = v.as_object().ok_or("not a JSON object")?;
    let kind = o
        .get("type")
        .and_then(Value::as_str)
        .ok_or("`type` is required")?;
    if !valid_type_name(kind) {
        return Err(format!("`type` {kind:?} is not a STIX type name"));
    }
    if kind == "bundle" {
        return Err("a bundle is not an object: send its objects".into());
    }
    let id = o
        .get("id")
        .and_then(Value::as_str)
        .ok_or("`id` is required")?;
    let uuid = id
        .strip_prefix(kind)
        .and_then(|rest| rest.strip_prefix("--"))
        .ok_or_else(|| format!("`id` {id:?} must be `{kind}--<uuid>`"))?;
    if uuid::Uuid::parse_str(uuid).is_err() || uuid.len() != 36 {
        return Err(format!("`id` {id:?} does not end with a UUID"));
    }
    let spec_version = match o.get("spec_version") {
        Some(Value::String(s)) if s == "2.1" => "2.1".to_string(),
        Some(other) => return Err(format!("`spec_version` {other} is not \"2.1\"")),
        None if SCO_TYPES.contains(&kind) => "2.1".to_string(),
        None => return Err("`spec_version` is required (\"2.1\")".into()),
    };
    let stamp = |k: &str| -> Result<Option<(String, i64)>, String> {
        match o.get(k) {
            None => Ok(None),
            Some(Value::String(s)) => parse_us(s)
                .map(|us| Some((s.clone(), us)))
                .ok_or_else(|| format!("`{k}` {s:?} is not an RFC 3339 timestamp")),
            Some(other) => Err(format!("`{k}` {other} is not a timestamp")),
        }
    };
    let created = stamp("created")?;
    let modified = stamp("modified")?;
    // Marking-definitions are never versioned: they have `created` only.
    if kind == "marking-definition" {
        if created.is_none() {
            return Err("`created` is required".into());
        }
        if modified.is_some() {
            return Err("a marking-definition has no `modified`".into());
        }
    } else if !SCO_TYPES.contains(&kind) && (created.is_none() || modified.is_none()) {
        return Err("`created` and `modified` are required".into());
    }
    if let (Some((_, c)), Some((_, m))) = (&created, &modified)
        && m < c
    {
        return Err("`modified` is before `created`".into());
    }
    let (version, version_us) = modified.or(created).unwrap_or((String::new(), 0));
    // Who may read it: the most restricted TLP marking it carries (none: TLP:CLEAR).
    let tlp = match o.get("object_marking_refs") {
        None => Tlp::Clear,
        Some(Value::Array(refs)) => refs
            .iter()
            .map(|r| {
                r.as_str()
                    .filter(|r| r.starts_with("marking-definition--"))
                    .ok_or_else(|| format!("`object_marking_refs` holds {r}, not a marking id"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Tlp::strictest)?
            .unwrap_or(Tlp::Clear),
        Some(other) => return Err(format!("`object_marking_refs` {other} is not a list")),
    };
    Ok(NewTaxiiObject {
        tlp,
        id: id.to_string(),
        kind: kind.to_string(),
        version,
        version_us,
        spec_version,
        body: body.unwrap_or_else(|| {
            TaxiiBody::Text(serde_json::to_string(v).expect("a JSON value serialises"))
        }),
    })
}

const SOURCE_DATASETS: &str = "datasets";
const SOURCE_HIDDEN_DANGERS: &str = "hidden-dangers";

/// What the publisher has not yet put into the read collections (counted up to a bound).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backlog {
    pub stix_files: u64,
    pub hidden_dangers: u64,
    /// Counts stop here: the backlog is at least this.
    pub bound: u64,
}

impl Backlog {
    fn text(n: u64, bound: u64) -> String {
        if n >= bound {
            format!("{bound}+")
        } else {
            n.to_string()
        }
    }

    /// `12`, or `1000+` at the bound.
    pub fn files_text(&self) -> String {
        Self::text(self.stix_files, self.bound)
    }

    pub fn hidden_dangers_text(&self) -> String {
        Self::text(self.hidden_dangers, self.bound)
    }
}

/// The publisher's backlog: dataset files and hidden-danger revisions recorded after its
/// watermarks, counted up to 1,000 each.
pub fn backlog(db: &dyn RecordStore) -> Result<Backlog, crate::error::AppError> {
    const BOUND: u64 = 1000;
    let store = |e| crate::error::AppError::store("reading the TAXII backlog", e);
    let files = db
        .stix_files_after(db.taxii_watermark(SOURCE_DATASETS).map_err(store)?, BOUND)
        .map_err(store)?;
    let hds = db
        .hidden_dangers_after(
            db.taxii_watermark(SOURCE_HIDDEN_DANGERS).map_err(store)?,
            BOUND,
        )
        .map_err(store)?;
    Ok(Backlog {
        stix_files: files.len() as u64,
        hidden_dangers: hds.len() as u64,
        bound: BOUND,
    })
}

/// Publishes the node's own STIX into the read collections: dataset files as their records
/// are committed, hidden dangers as their revisions arrive. Runs on its own thread with its
/// own database connection, at a lower priority, and gives way to the node's work: while
/// reports are arriving or a job is running it publishes one small round every few seconds at
/// most, and catches up as soon as the node is quiet (within half a second otherwise).
pub struct Publisher {
    busy_until_ms: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
}

/// How long after a report the node counts as busy.
const QUIET_MS: i64 = 300;
/// Under sustained load, still publish a round this often.
const MAX_DEFER_MS: i64 = 5_000;

impl Publisher {
    /// `hidden_danger_tlp` marks the hidden dangers' STIX of platforms that have no marking of
    /// their own; `indicators` says how long indicators stay valid and how sure each dataset
    /// type makes the node.
    pub fn start(
        db: Arc<dyn RecordStore>,
        blobs: Arc<dyn BlobStore>,
        hidden_danger_tlp: Tlp,
        indicators: IndicatorPolicy,
    ) -> Self {
        let busy_until_ms = Arc::new(AtomicI64::new(0));
        let busy = busy_until_ms.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        std::thread::Builder::new()
            .name("br-cti-taxii".into())
            .spawn(move || {
                lower_priority();
                let mut last_round = now_ms();
                // After a failed round (a full disk, a locked database) the publisher waits
                // longer each time, up to 30 s, and logs only when the error changes.
                let mut backoff = Duration::from_millis(500);
                let mut last_error = String::new();
                // Reports arrived a moment ago, or a job is queued or running.
                let loaded_now = || {
                    busy.load(Ordering::Relaxed) > now_ms()
                        || db.unfinished_jobs().map(|j| !j.is_empty()).unwrap_or(false)
                };
                while !stopping.load(Ordering::Relaxed) {
                    let now = now_ms();
                    let loaded = loaded_now();
                    if loaded && now - last_round < MAX_DEFER_MS {
                        std::thread::sleep(Duration::from_millis(100));
                        continue;
                    }
                    last_round = now;
                    // Supervised: a panic in one round is logged like an error, and the
                    // publisher goes on with the next round.
                    let failure = match br_cti_engine::supervise::catch(|| {
                        // A large round ends after the commit during which load came back.
                        let (size, give_way): (RoundSize, &dyn Fn() -> bool) = if loaded {
                            (LOADED_ROUND, &|| false)
                        } else {
                            (IDLE_ROUND, &loaded_now)
                        };
                        publish_once(
                            &*db,
                            &*blobs,
                            hidden_danger_tlp,
                            &indicators,
                            size,
                            give_way,
                        )
                    }) {
                        Ok(Ok(true)) => continue,
                        Ok(Ok(false)) => None,
                        Ok(Err(e)) => Some(e.to_string()),
                        Err(panic) => Some(format!("internal error: {panic}")),
                    };
                    match failure {
                        None => {
                            if !last_error.is_empty() {
                                tracing::info!("publishing to TAXII collections works again");
                                last_error.clear();
                            }
                            backoff = Duration::from_millis(500);
                        }
                        Some(e) => {
                            if e != last_error {
                                tracing::error!(
                                    "publishing to TAXII collections: {e} (retrying, at most \
                                     every 30 s)"
                                );
                                last_error = e;
                            }
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                    }
                    pause(&stopping, backoff);
                }
            })
            .expect("spawning the TAXII publisher");
        Publisher {
            busy_until_ms,
            stop,
        }
    }

    /// Stops publishing (at the end of the current round or pause).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    /// Reports are arriving: let them have the machine for a moment.
    pub(crate) fn note_activity(&self) {
        self.busy_until_ms
            .store(now_ms() + QUIET_MS, Ordering::Relaxed);
    }
}

/// Sleeps `total`, waking early when the publisher is told to stop.
fn pause(stop: &AtomicBool, total: Duration) {
    let until = std::time::Instant::now() + total;
    while !stop.load(Ordering::Relaxed) {
        let left = until.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}

/// Publishing is background work: on Linux the thread runs at nice 10, so requests (ingest,
/// conversions, pages) get the CPU first and the collections catch up when the node is idle.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    if rustix::process::setpriority_process(Some(rustix::thread::gettid()), 10).is_err() {
        tracing::debug!("could not lower the TAXII publisher's priority");
    }
}

/// Why a publishing round stopped (it is retried).
#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading STIX file {hash}: {source}")]
    Read {
        hash: Sha256Hex,
        source: std::io::Error,
    },
    #[error("STIX file {hash}: {detail}")]
    Object { hash: Sha256Hex, detail: String },
    #[error(transparent)]
    HiddenDanger(#[from] UnreadableHiddenDanger),
    /// An object the node builds itself is refused by its own check: a defect.
    #[error("an object of the node's own is invalid: {0}")]
    Own(Invalid),
}

/// How much one publishing round takes on: how many dataset files it reads, and how many
/// objects each of its transactions adds (at least one file's).
#[derive(Clone, Copy, Debug)]
struct RoundSize {
    files: u64,
    objects_per_commit: usize,
}

/// A round while the node is idle. Fewer, larger commits: each commit writes the pages of the
/// id-key index its objects land on, and with random keys that is most of the index whatever
/// the commit's size. Many files per round: the writer waits at each round's start until the
/// reader has its first batch. With the bodies left in the STIX files (`TaxiiBody::InFile`) an
/// object in memory is a few hundred bytes, so two batches in flight are tens of MiB (the
/// server's peak RSS during the lag rose from about 105 to 185 MiB). See docs/benchmarks.md,
/// "The TAXII lag: bodies in the STIX files, larger commits".
const IDLE_ROUND: RoundSize = RoundSize {
    files: 1_000,
    objects_per_commit: 100_000,
};

/// A round while jobs run or reports arrive: short transactions, because the database's
/// writers queue behind them (with rounds of the idle size a conversion ran 30 % slower).
const LOADED_ROUND: RoundSize = RoundSize {
    files: 20,
    objects_per_commit: 20_000,
};

/// The datasets' names for the groupings' titles, looked up once per dataset in a round. The
/// files of a round are read beside the transaction that adds the previous ones, on the same
/// connection: a lookup per file waited for each of those transactions to end, and the writer
/// then for the reader (a third of the publisher's time after a conversion of 1,000 files).
struct DatasetNames<'a> {
    db: &'a dyn RecordStore,
    known: HashMap<Sha256Hex, Option<String>>,
}

impl<'a> DatasetNames<'a> {
    fn new(db: &'a dyn RecordStore) -> Self {
        Self {
            db,
            known: HashMap::new(),
        }
    }

    fn of(&mut self, source: &Sha256Hex) -> Result<Option<String>, StoreError> {
        if let Some(name) = self.known.get(source) {
            return Ok(name.clone());
        }
        let name = self.db.file(source)?.and_then(|f| f.original_name);
        self.known.insert(source.clone(), name.clone());
        Ok(name)
    }
}

/// Dataset files read for one transaction: their objects, except the indicators, which go in
/// as the versions the IOC registry gives them.
#[derive(Default)]
struct FileBatch {
    objects: Vec<NewTaxiiObject>,
    /// What the files' sightings of indicators say, for the registry.
    sightings: Vec<IocSighting>,
    /// Each indicator as the files carry it (one line, the producer epoch's version), by id.
    indicators: HashMap<String, String>,
}

/// Adds the objects of one dataset STIX file (one per line) to `batch`, and its grouping named
/// after the dataset; a file that is gone is logged and skipped (its record is still passed by
/// the watermark). `policy` says how sure a dataset of the file's type makes the node and how
/// long its indicators stay valid.
fn read_stix_file(
    names: &mut DatasetNames<'_>,
    blobs: &dyn BlobStore,
    file: &RecordedStixFile,
    policy: &IndicatorPolicy,
    batch: &mut FileBatch,
) -> Result<(), PublishError> {
    let confidence = policy.confidence(file.data_type);
    let valid_for_us = policy.valid_for_us(file.indicator_valid_days);
    let hash = &file.stix_file_hash;
    let read = |source| PublishError::Read {
        hash: hash.clone(),
        source,
    };
    let bad = |detail| PublishError::Object {
        hash: hash.clone(),
        detail,
    };
    let Some(input) = blobs.open(hash).map_err(read)? else {
        tracing::warn!(file = %hash, "STIX file missing: not published");
        return Ok(());
    };
    let mut refs: Vec<String> = Vec::new();
    let mut tlp: Option<Tlp> = None;
    let mut input = BufReader::new(input);
    let mut text = String::new();
    // Where the line read next starts in the file.
    let mut at = 0u64;
    loop {
        text.clear();
        let n = input.read_line(&mut text).map_err(read)?;
        if n == 0 {
            break;
        }
        let start = at + (text.len() - text.trim_start().len()) as u64;
        at += n as u64;
        let line = text.trim();
        if line.is_empty() {
            continue;
        }
        let len = u32::try_from(line.len())
            .map_err(|_| bad(format!("a line of {} bytes", line.len())))?;
        let (object, value) = parse_line(
            line,
            Some(BodyRef {
                file: hash.clone(),
                offset: start,
                len,
            }),
        )
        .map_err(bad)?;
        if grouping::grouped(&object.kind) {
            refs.push(object.id.clone());
            let marked = value
                .get("object_marking_refs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str);
            tlp = tlp.max(Tlp::strictest(marked));
        }
        match object.kind.as_str() {
            "indicator" => {
                batch
                    .indicators
                    .entry(object.id)
                    .or_insert_with(|| line.to_string());
                continue;
            }
            "sighting" => {
                if let Some(s) =
                    indicator_sighting(&value, hash, confidence, valid_for_us).map_err(bad)?
                {
                    batch.sightings.push(s);
                }
            }
            _ => {}
        }
        batch.objects.push(object);
    }
    if !refs.is_empty() {
        let dataset = names.of(&file.source_file_hash)?;
        let title = grouping::FileTitle {
            dataset: dataset.as_deref(),
            cti_name: None,
            source: &file.source_file_hash,
            batch: Some(file.batch),
            data_type: file.data_type,
        };
        let mut head = grouping::grouping_head(hash.as_str(), &title, tlp);
        head.insert("object_refs".into(), Value::from(refs));
        batch
            .objects
            .push(parse_object(&Value::Object(head)).map_err(PublishError::Own)?);
    }
    Ok(())
}

/// What a file's sighting says of an indicator (`None` for a sighting of anything else); the
/// indicator stays valid `valid_for_us` after the sighting's end.
fn indicator_sighting(
    v: &Value,
    file: &Sha256Hex,
    confidence: Confidence,
    valid_for_us: i64,
) -> Result<Option<IocSighting>, String> {
    let Some(of) = v
        .get("sighting_of_ref")
        .and_then(Value::as_str)
        .filter(|r| r.starts_with("indicator--"))
    else {
        return Ok(None);
    };
    let time = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .and_then(parse_us)
            .ok_or_else(|| format!("the sighting of {of} has no `{k}` timestamp"))
    };
    // Rows without a time of their own (and a request without `observed_time`) are dated at
    // the Unix epoch in the file: to the registry, they were seen when it first records them.
    let (first, last) = (time("first_seen")?, time("last_seen")?);
    let now = now_us();
    let last_us = if last > 0 { last } else { now };
    let first_us = if first > 0 { first } else { last_us };
    Ok(Some(IocSighting {
        indicator: of.to_string(),
        file: file.clone(),
        first_us,
        last_us,
        count: v.get("count").and_then(Value::as_u64).unwrap_or(1),
        confidence,
        valid_until_us: last_us.saturating_add(valid_for_us),
    }))
}

/// The version of an indicator that a registry state describes: the files' indicator (one
/// line) with `modified` the state's, `valid_from` its first sighting, `valid_until` the
/// latest its sightings give, and `confidence` the highest of its datasets' types.
fn indicator_version(line: &str, state: &IocState) -> Result<NewTaxiiObject, PublishError> {
    let own = |detail: String| PublishError::Own(Invalid(detail));
    let mut v: serde_json::Map<String, Value> =
        serde_json::from_str(line).map_err(|e| own(e.to_string()))?;
    let created = v
        .get("created")
        .and_then(Value::as_str)
        .and_then(parse_us)
        .ok_or_else(|| own(format!("indicator {} has no `created`", state.indicator)))?;
    let stamp = |us: i64| Value::String(format_us(us));
    v.insert("modified".into(), stamp(state.modified_us.max(created)));
    v.insert("valid_from".into(), stamp(state.first_us));
    v.insert("valid_until".into(), stamp(state.valid_until_us));
    v.insert("confidence".into(), Value::from(state.confidence.get()));
    parse_object(&Value::Object(v)).map_err(PublishError::Own)
}

/// One round; true when there may be more to do at once.
fn publish_once(
    db: &dyn RecordStore,
    blobs: &dyn BlobStore,
    hidden_danger_tlp: Tlp,
    indicators: &IndicatorPolicy,
    size: RoundSize,
    give_way: &dyn Fn() -> bool,
) -> Result<bool, PublishError> {
    let mut busy = false;
    let mark = db.taxii_watermark(SOURCE_DATASETS)?;
    let files = db.stix_files_after(mark, size.files)?;
    busy |= files.len() as u64 == size.files;
    // The files of a round go in as few transactions as their objects allow: each commit
    // costs a sync of the log and rewrites the indexes' pages it touched, so one commit per
    // `size.objects_per_commit` objects instead of one per file. A second thread reads and
    // parses the next batch while the store writes this one (on PostgreSQL the machine sat a
    // third idle while the two took turns). The hand-over has no buffer: two batches in
    // memory at most.
    // A round stopped early (`give_way`): its files not yet committed are read again in the
    // next round, after the hidden dangers of this one.
    let stopped = AtomicBool::new(false);
    let stopped = &stopped;
    busy |= std::thread::scope(|scope| -> Result<bool, PublishError> {
        let (batches, received) = std::sync::mpsc::sync_channel(0);
        scope.spawn(move || {
            let mut batch = FileBatch::default();
            let mut last = None;
            let mut names = DatasetNames::new(db);
            for file in files {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                if let Err(e) = read_stix_file(&mut names, blobs, &file, indicators, &mut batch) {
                    let _ = batches.send(Err(e));
                    return;
                }
                let position = file.position;
                last = Some(position);
                if batch.objects.len() >= size.objects_per_commit {
                    if batches
                        .send(Ok((std::mem::take(&mut batch), position)))
                        .is_err()
                    {
                        // The writer stopped on an error (it reports it) or gave way.
                        return;
                    }
                    last = None;
                }
            }
            if let Some(position) = last {
                let _ = batches.send(Ok((batch, position)));
            }
        });
        for batch in received {
            let (batch, position) = batch?;
            let FileBatch {
                mut objects,
                sightings,
                indicators: mut lines,
            } = batch;
            // The registry first: if the add below fails, the round is read again, the
            // registry (which folds each sighting once) answers the same states, and the same
            // versions go in.
            for state in db.ioc_fold(&sightings, now_us())? {
                if let Some(line) = lines.remove(&state.indicator) {
                    objects.push(indicator_version(&line, &state)?);
                }
            }
            // An indicator no sighting of its file names (not written by this node's
            // conversions) goes in as the file carries it.
            for (_, line) in lines {
                objects.push(
                    parse_line(&line, None)
                        .map_err(|d| PublishError::Own(Invalid(d)))?
                        .0,
                );
            }
            db.taxii_add(&datasets_id(), &objects, Some((SOURCE_DATASETS, position)))?;
            if give_way() {
                // The reader stops at its next file or hand-over (the receiver is dropped).
                stopped.store(true, Ordering::Relaxed);
                return Ok(true);
            }
        }
        Ok(false)
    })?;
    let mark = db.taxii_watermark(SOURCE_HIDDEN_DANGERS)?;
    let changed = db.hidden_dangers_after(mark, 100)?;
    busy |= changed.len() == 100;
    let mut markings = crate::reports::ReportMarkings::new(db, hidden_danger_tlp);
    if let Some((last, _)) = changed.last() {
        let own = |o| parse_object(&Value::Object(o)).map_err(PublishError::Own);
        let mut objects: Vec<NewTaxiiObject> = hidden_danger_stix::producer_objects()
            .into_iter()
            .map(own)
            .collect::<Result<_, _>>()?;
        for (_, hd) in &changed {
            for o in hidden_danger_stix::objects(hd, markings.of(&hd.user)?)? {
                objects.push(own(o)?);
            }
        }
        db.taxii_add(
            &hidden_dangers_id(),
            &objects,
            Some((SOURCE_HIDDEN_DANGERS, *last)),
        )?;
    }
    Ok(busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cursors_round_trip_and_refuse_garbage() {
        let p = Position::from_backend(12345);
        assert_eq!(decode_cursor(&encode_cursor(p)), Some(p));
        // The encoding of cursors handed out before positions were typed.
        assert_eq!(decode_cursor("djE6MTIzNDU"), Some(p));
        assert_eq!(decode_cursor("12345"), None);
        assert_eq!(decode_cursor("!!"), None);
    }

    #[test]
    fn timestamps_have_microseconds() {
        assert_eq!(
            format_us(1_717_200_000_123_456),
            "2024-06-01T00:00:00.123456Z"
        );
        assert_eq!(
            parse_us("2024-06-01T00:00:00.123456Z"),
            Some(1_717_200_000_123_456)
        );
    }

    #[test]
    fn objects_are_checked() {
        let good = json!({"type": "indicator", "spec_version": "2.1",
            "id": "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f",
            "created": "2024-01-01T00:00:00.000Z", "modified": "2024-02-01T00:00:00.000Z",
            "pattern": "[ipv4-addr:value = '1.2.3.4']", "pattern_type": "stix", "valid_from": "2024-01-01T00:00:00Z"});
        let o = parse_object(&good).unwrap();
        assert_eq!(o.version, "2024-02-01T00:00:00.000Z");
        let sco = json!({"type": "ipv4-addr", "id": "ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4", "value": "198.51.100.3"});
        assert_eq!(parse_object(&sco).unwrap().version, "");
        let mut bad = good.clone();
        bad["id"] = json!("malware--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f");
        assert!(parse_object(&bad).unwrap_err().0.contains("indicator--"));
        let mut bad = good.clone();
        bad["spec_version"] = json!("2.0");
        assert!(parse_object(&bad).is_err());
        let mut bad = good.clone();
        bad["modified"] = json!("2023-01-01T00:00:00Z");
        assert!(parse_object(&bad).unwrap_err().0.contains("before"));
        let mut bad = good;
        bad.as_object_mut().unwrap().remove("created");
        assert!(parse_object(&bad).is_err());
        assert!(parse_object(&json!([1])).is_err());
        assert!(parse_object(&json!({"type": "Bad_Type", "id": "x"})).is_err());
    }

    /// A large round gives way after the commit during which load came back: the files
    /// committed are published and the watermark is past them, the rest waits for the next
    /// round, and the round says there is more to do. Without load, the same round takes all.
    #[test]
    fn a_large_round_gives_way_to_load_after_a_commit() {
        use br_cti_domain::model::{FileMeta, JobProgress, StixRecord, TaxiiQuery};
        use br_cti_domain::vocab::{DataType, IocKind, Tag};
        use br_cti_store::{JobStore, TaxiiStore, UploadStore};

        let dir = tempfile::tempdir().unwrap();
        let db = br_cti_store_local::SqliteStore::open(&dir.path().join("db")).unwrap();
        let blobs = br_cti_store_local::FsBlobStore::open(&dir.path().join("blobs")).unwrap();
        let source = Sha256Hex::parse(&"a".repeat(64)).unwrap();
        db.record_upload(
            &FileMeta {
                hash: source.clone(),
                size: 10,
                original_name: Some("a.csv".into()),
                created_at_ms: 1_700_000_000_000,
            },
            "t",
        )
        .unwrap();
        let job = db
            .create_job(&source, "p", &br_cti_domain::testing::stix_params(), 3, 3)
            .unwrap();
        let (_, fence) = db.claim_job("n", 60_000).unwrap().unwrap();
        let ip = |file: u64| {
            format!(
                r#"{{"type":"ipv4-addr","spec_version":"2.1","id":"ipv4-addr--00000000-0000-4000-8000-{file:012}","value":"10.0.0.{file}"}}"#
            )
        };
        let records: Vec<StixRecord> = (1..=3)
            .map(|batch| StixRecord {
                source_file_hash: source.clone(),
                stix_file_hash: blobs
                    .put(format!("{}\n", ip(batch)).as_bytes())
                    .unwrap()
                    .hash,
                job_id: job.id,
                batch,
                file_size: 10,
                rows: 1,
                objects: 1,
                stix_type: DataType::Honeypot,
                stix_tags: vec![Tag::Other],
                stix_iocs: vec![IocKind::Ip],
                ioc_ips_map: vec![],
                created_at: 1_700_000_000_000 + batch as i64,
                onchain: false,
                cti_file_path: None,
            })
            .collect();
        let progress = JobProgress {
            steps_done: 3,
            rows_done: 3,
            rows_rejected: 0,
            objects: 3,
            files: 3,
            errors: vec![],
            recent_steps: vec![1, 2, 3],
            run_ms: 1,
        };
        db.commit_stix_steps(job.id, fence, &records, &progress)
            .unwrap();
        // One file per commit.
        let size = RoundSize {
            files: 10,
            objects_per_commit: 1,
        };
        let policy = IndicatorPolicy::default();
        let published = || -> Vec<String> {
            let q = TaxiiQuery {
                after: Position::START,
                max_tlp: Tlp::Red,
                added_after: None,
                limit: 100,
                ids: vec![],
                types: vec!["ipv4-addr".into()],
                versions: vec![],
                spec_versions: vec![],
            };
            let (rows, _) = db.taxii_page(&datasets_id(), &q).unwrap();
            rows.into_iter().map(|r| r.id).collect()
        };
        let id = |file: u64| format!("ipv4-addr--00000000-0000-4000-8000-{file:012}");

        assert!(publish_once(&db, &blobs, Tlp::Green, &policy, size, &|| true).unwrap());
        assert_eq!(published(), [id(1)]);
        assert!(!publish_once(&db, &blobs, Tlp::Green, &policy, size, &|| false).unwrap());
        assert_eq!(published(), [id(1), id(2), id(3)]);
        assert_eq!(
            db.stix_files_after(db.taxii_watermark(SOURCE_DATASETS).unwrap(), 10)
                .unwrap()
                .len(),
            0
        );
    }

    /// A line of a STIX file is read for its members only, and checked like the same object
    /// sent to the inbox: the same description, the same refusals, the members publishing
    /// reads (escaped or not), and no others.
    #[test]
    fn a_line_is_checked_like_the_object_it_holds() {
        let green = Tlp::Green.marking_id();
        let lines = [
            format!(
                r#"{{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-01-01T00:00:00.000Z","modified":"2024-02-01T00:00:00.000Z","pattern":"[ipv4-addr:value = '1.2.3.4']","pattern_type":"stix","valid_from":"2024-01-01T00:00:00Z","object_marking_refs":["{green}"],"extensions":{{"x":[1,{{"y":null}}]}}}}"#
            ),
            r#"{"type":"sighting","spec_version":"2.1","id":"sighting--6b4e8e0e-2f7a-4a53-9f2f-5b2f1f0c9d11","created":"2024-01-01T00:00:00Z","modified":"2024-01-01T00:00:00Z","sighting_of_ref":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","first_seen":"2024-01-01T00:00:00Z","last_seen":"2024-01-02T00:00:00Z","count":3,"where_sighted_refs":["identity--0d3f9d3e-1b59-4f3c-8f67-6a3a3f8e1a11"]}"#.to_string(),
            r#"{"type":"\u0069pv4-addr","id":"ipv4-addr--28bb3599-77cd-5a82-a950-b5bc3caf07c4","value":"198.51.100.3"}"#.to_string(),
            r#"{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-03-01T00:00:00Z","modified":"2024-02-01T00:00:00Z"}"#.to_string(),
            r#"{"type":"indicator","spec_version":"2.0","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-01-01T00:00:00Z","modified":"2024-02-01T00:00:00Z"}"#.to_string(),
            r#"{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2024-01-01T00:00:00Z","modified":"2024-02-01T00:00:00Z","object_marking_refs":"tlp"}"#.to_string(),
        ];
        for line in &lines {
            let whole: Value = serde_json::from_str(line).unwrap();
            let read = parse_line(line, None);
            match parse_object(&whole) {
                Ok(expected) => {
                    let (object, members) = read.unwrap();
                    assert_eq!(object.body, TaxiiBody::Text(line.clone()));
                    assert_eq!(
                        NewTaxiiObject {
                            body: expected.body.clone(),
                            ..object
                        },
                        expected
                    );
                    for (name, value) in members.as_object().unwrap() {
                        assert_eq!(Some(value), whole.get(name), "{name} in {line}");
                    }
                    for name in ["type", "id", "sighting_of_ref", "count", "last_seen"] {
                        assert_eq!(members.get(name), whole.get(name), "{name} in {line}");
                    }
                    assert!(members.get("pattern").is_none() && members.get("value").is_none());
                }
                Err(Invalid(expected)) => assert_eq!(read.unwrap_err(), expected, "{line}"),
            }
        }
        assert_eq!(parse_line(&lines[1], None).unwrap().0.tlp, Tlp::Clear);
        assert_eq!(parse_line(&lines[0], None).unwrap().0.tlp, Tlp::Green);
        assert!(parse_line("[1]", None).is_err());
        assert!(parse_line(r#"{"type":"indicator","id":"#, None).is_err());
    }

    #[test]
    fn sightings_of_indicators_feed_the_registry_and_undated_ones_count_from_now() {
        let file = Sha256Hex::parse(&"a".repeat(64)).unwrap();
        let c = Confidence::new(80).unwrap();
        let sighting = |of: &str, first: &str, last: &str| {
            json!({"type": "sighting", "sighting_of_ref": of, "first_seen": first,
                "last_seen": last, "count": 4})
        };
        let ind = "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
        let s = indicator_sighting(
            &sighting(ind, "2024-06-01T10:00:00Z", "2024-06-02T10:00:00Z"),
            &file,
            c,
            1_000,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (
                s.first_us,
                s.last_us,
                s.count,
                s.confidence,
                s.valid_until_us
            ),
            (
                1_717_236_000_000_000,
                1_717_322_400_000_000,
                4,
                c,
                1_717_322_400_001_000
            )
        );
        // A sighting of an attack pattern is not the registry's.
        let attack = "attack-pattern--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f";
        assert_eq!(
            indicator_sighting(
                &sighting(attack, "2024-06-01T10:00:00Z", "2024-06-01T10:00:00Z"),
                &file,
                c,
                1_000
            ),
            Ok(None)
        );
        // Rows without a time: dated when the registry records them.
        let before = now_us();
        let s = indicator_sighting(
            &sighting(ind, "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z"),
            &file,
            c,
            1_000,
        )
        .unwrap()
        .unwrap();
        assert!(s.first_us >= before && s.first_us == s.last_us, "{s:?}");
        let missing = indicator_sighting(&json!({"sighting_of_ref": ind}), &file, c, 1_000);
        assert!(missing.unwrap_err().contains("`first_seen`"));
    }

    #[test]
    fn an_indicator_version_carries_the_registry_state() {
        let line = r#"{"type":"indicator","spec_version":"2.1","id":"indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f","created":"2026-11-23T00:00:00.000Z","modified":"2026-11-23T00:00:00.000Z","pattern":"[ipv4-addr:value = '8.8.8.8']","pattern_type":"stix","valid_from":"2026-11-23T00:00:00.000Z","object_marking_refs":["marking-definition--bab4a63c-aed9-4cf5-a766-dfca5abac2bb"]}"#;
        let state = IocState {
            indicator: "indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f".into(),
            first_us: 1_717_236_000_000_000,
            last_us: 1_717_322_400_000_000,
            files: 2,
            observations: 9,
            confidence: Confidence::new(75).unwrap(),
            valid_until_us: 1_717_495_200_000_000,
            modified_us: 1_796_000_000_123_456,
        };
        let v = indicator_version(line, &state).unwrap();
        assert_eq!(v.version_us, 1_796_000_000_123_456);
        assert_eq!(v.tlp, Tlp::Green);
        let o: Value = serde_json::from_str(v.body.text()).unwrap();
        assert_eq!(o["created"], "2026-11-23T00:00:00.000Z");
        assert_eq!(o["modified"], "2026-11-30T00:53:20.123456Z");
        assert_eq!(o["valid_from"], "2024-06-01T10:00:00.000000Z");
        assert_eq!(o["valid_until"], "2024-06-04T10:00:00.000000Z");
        assert_eq!(o["confidence"], 75);
        assert_eq!(o["pattern"], "[ipv4-addr:value = '8.8.8.8']");
        // A clock before the producer epoch never makes `modified` precede `created`.
        let early = IocState {
            modified_us: 1_000,
            ..state
        };
        let v = indicator_version(line, &early).unwrap();
        assert_eq!(v.version, "2026-11-23T00:00:00.000000Z");
    }
}
