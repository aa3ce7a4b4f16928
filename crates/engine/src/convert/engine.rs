//! The conversion engine.
//!
//! Each data row becomes an `observed-data` whose `object_refs` are the row's observables: the
//! flow's end addresses (`ipv4-addr`, `ipv6-addr` or `domain-name` by value), a
//! `network-traffic` (when the row has a protocol and an address), the payload `artifact` and
//! the `url`. Columns with no standard home stay in one property-extension, as a list of
//! `{"name", "value"}` pairs (any column name survives, and the validator stays silent). Attack
//! names and threat actors become `attack-pattern`/`threat-actor` objects, and one `sighting`
//! per file and attack links them to the observations. The sources a dataset shows acting
//! maliciously become `indicator`s, sighted once per file (see `indicators.rs`).
//!
//! Rows are grouped in batches of `compress` rows (by position in the file); a batch is one JSON
//! Lines file that holds every object its lines reference, the producer `identity` and the
//! `extension-definition` included. Everything is a pure function of the file's bytes and the
//! settings: ids, timestamps and bytes are reproducible.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::net::IpAddr;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use base64::Engine as _;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use stix::Timestamp;
use stix::objects::{property_extension_definition, sdo};

use super::indicators::{self, Indicated, Indicator};
use super::json_out::{Column, Flow, Name, Obj};
use super::mapping::{End, Mapping, Target};
use crate::dataset::{self, Cell, DatasetError, Row};
use crate::producer::{
    PRODUCER_TLP, mark, marked_producer_identity, marking_definitions, node_sighting,
    producer_epoch, producer_identity_id,
};
use br_cti_domain::io::ReadSeek;
use br_cti_domain::net::{is_host_name, normalise_mac};
use br_cti_domain::vocab::{IndicatorRule, IocKind, Tlp};

const MAX_KEPT_ERRORS: usize = 100;

/// An object id (or an address value), shared rather than copied between the places a row
/// uses it.
type Id = Arc<str>;

/// The property-extension that holds dataset columns.
pub(crate) fn extension_definition_id() -> String {
    stix::sdo_id("extension-definition", b"br-cti dataset columns v1")
}

fn producer_objects() -> [Map<String, Value>; 2] {
    let [identity, mut extension] = [
        marked_producer_identity(),
        property_extension_definition(
            extension_definition_id(),
            &producer_identity_id(),
            producer_epoch(),
            "br-cti dataset columns",
            "Dataset columns that have no standard STIX property, kept with their original names.",
            "A property-extension with one property, `columns`: a list of objects, each with \
             `name` (the dataset column name, as in the source file) and `value` (the cell: a \
             string, number or boolean; nested JSON is kept as its compact JSON text). Empty \
             cells are left out.",
            "1.0",
        ),
    ];
    mark(&mut extension, Some(PRODUCER_TLP));
    [identity, extension]
}

/// What a conversion is asked to do. Everything that changes the output is in [`Self::digest`].
#[derive(Clone, Debug)]
pub struct Settings {
    pub mapping: Arc<Mapping>,
    /// Rows per STIX file.
    pub compress: u64,
    /// When set, only these unmapped columns are kept in the extension (the front ends'
    /// `stix_traffic_features`); mapped columns are always converted.
    pub features: Option<HashSet<String>>,
    /// The observation time of rows that have none.
    pub observed_time: Timestamp,
    /// Labels given to every observed-data (the front ends' `stix_label`, when it names no
    /// column).
    pub labels: Vec<String>,
    /// Columns whose value labels each row's observed-data (the front ends' `stix_label`,
    /// when it names a column: the 分类标签 select lists the dataset's columns).
    pub label_columns: Vec<String>,
    /// SHA-256 of the dataset file.
    pub source_hash: String,
    /// Which observables become indicators; `None`: none.
    pub indicators: Option<IndicatorRule>,
    /// The TLP marking of every object made from the data; `None`: unmarked (conversions
    /// saved before markings existed).
    pub tlp: Option<Tlp>,
    /// What the dataset file may hold (not part of the digest: a limit refuses a file, it
    /// never changes the objects).
    pub limits: crate::dataset::DatasetLimits,
}

impl Settings {
    /// Identifies the settings that shape the objects (not `compress`, which only groups them).
    pub fn digest(&self) -> String {
        let mut features: Vec<&String> = self.features.iter().flatten().collect();
        features.sort();
        let mut h = Sha256::new();
        h.update(self.source_hash.as_bytes());
        h.update([0]);
        h.update(self.mapping.digest().as_bytes());
        h.update([0]);
        h.update(self.observed_time.micros().to_le_bytes());
        for l in &self.labels {
            h.update(l.as_bytes());
            h.update([0]);
        }
        if !self.label_columns.is_empty() {
            h.update([0xfe]);
            for c in &self.label_columns {
                h.update(c.as_bytes());
                h.update([0]);
            }
        }
        h.update([0xff]);
        h.update([u8::from(self.features.is_some())]);
        for f in features {
            h.update(f.as_bytes());
            h.update([0]);
        }
        if let Some(tlp) = self.tlp {
            h.update([0xfc]);
            h.update(tlp.as_str().as_bytes());
        }
        // Absent from the digests of conversions saved before indicators existed.
        if let Some(rule) = &self.indicators {
            h.update([0xfd, u8::from(rule.attack_rows_only)]);
            for t in &rule.types {
                h.update(t.as_str().as_bytes());
                h.update([0]);
            }
        }
        hex::encode(h.finalize())
    }
}

/// Which IOC kinds (the front ends' vocabulary) a file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IocKinds {
    pub ip: bool,
    pub port: bool,
    pub flow_feature: bool,
    pub hash: bool,
    pub url: bool,
    pub payload: bool,
}

impl IocKinds {
    /// The kinds present, in the vocabulary's order.
    pub fn kinds(&self) -> Vec<IocKind> {
        [
            (self.ip, IocKind::Ip),
            (self.port, IocKind::Port),
            (self.flow_feature, IocKind::FlowFeature),
            (self.hash, IocKind::Hash),
            (self.url, IocKind::Url),
            (self.payload, IocKind::Payload),
        ]
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, kind)| kind)
        .collect()
    }

    fn merge(&mut self, o: IocKinds) {
        self.ip |= o.ip;
        self.port |= o.port;
        self.flow_feature |= o.flow_feature;
        self.hash |= o.hash;
        self.url |= o.url;
        self.payload |= o.payload;
    }
}

/// One batch of rows, converted.
#[derive(Debug)]
pub struct Batch {
    /// 0-based batch number: rows `index * compress ..`.
    pub index: u64,
    pub rows_read: u64,
    pub rows_converted: u64,
    /// (0-based row index, reason) of the rows that could not be converted.
    pub rejected: Vec<(u64, String)>,
    /// The JSON Lines file; empty when no row of the batch was converted.
    pub bytes: Vec<u8>,
    pub objects: u64,
    /// IP address value → occurrences in the batch's rows.
    pub ip_counts: BTreeMap<String, u64>,
    pub iocs: IocKinds,
    /// Where [`FileStore::store`] put `bytes` (set before the batch reaches the sink).
    pub file: Option<StoredFile>,
}

/// A STIX file made durable under its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// SHA-256 of the bytes: the file's name.
    pub hash: br_cti_domain::hash::Sha256Hex,
    pub size: u64,
}

/// Stores the JSON Lines files. Called on the converting threads, in any order, so that
/// hashing, writing and syncing files run in parallel; a stored file is only *counted* when
/// its batch reaches the [`BatchSink`], in order. Files are content-addressed: storing the same
/// bytes twice (a resumed job) is harmless.
pub trait FileStore: Sync {
    fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile>;
}

/// Receives batches in order. The server's sink records them durably; the CLI's reports them.
pub trait BatchSink {
    fn batch(&mut self, batch: Batch) -> anyhow::Result<()>;
    /// Called when no further batch is ready yet, and at the end: a sink may group its
    /// commits (one database transaction for several files).
    fn flush(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Polled between rows; true stops the conversion.
    fn cancelled(&self) -> bool {
        false
    }
}

#[derive(Debug, Default, Clone)]
pub struct ConvertSummary {
    pub rows_read: u64,
    pub rows_converted: u64,
    pub rows_rejected: u64,
    pub batches: u64,
    pub files: u64,
    pub objects: u64,
    pub cancelled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("{0}")]
    Dataset(#[from] DatasetError),
    #[error("{0:#}")]
    Sink(anyhow::Error),
}

/// Converts the rows of `input` from batch `start_batch` on (earlier batches are read and
/// skipped: they were committed by an earlier run), handing each batch to `sink`.
pub fn convert(
    input: Box<dyn ReadSeek>,
    settings: &Settings,
    start_batch: u64,
    files: &dyn FileStore,
    sink: &mut dyn BatchSink,
) -> Result<ConvertSummary, ConvertError> {
    let compress = settings.compress.max(1);
    let skip_rows = start_batch * compress;
    // Batches are independent: they are converted (and their files written) in parallel and
    // handed to the sink in order. Storing a file waits on the disk, so there are more
    // converting threads than cores. At most `window` batches are read and not yet handed to
    // the sink, wherever they are, which bounds memory whatever the input size (one more is
    // being read).
    let window = (WINDOW_ROWS / compress).clamp(2, MAX_WINDOW as u64) as usize;
    let workers = window.min(CONVERT_THREADS);
    let stop = AtomicBool::new(false);
    let (work_tx, work_rx) = crossbeam_channel::bounded::<RowBatch>(window);
    let (done_tx, done_rx) = crossbeam_channel::bounded::<(u64, anyhow::Result<Batch>)>(window);
    // One permit per batch in flight: the reader takes one before handing a batch over, the
    // sink side gives it back when that batch is emitted (or dropped after a stop). Dropping
    // the receiving end releases a reader that waits, for good.
    let (permit_tx, permit_rx) = crossbeam_channel::bounded::<()>(window);
    let mut summary = ConvertSummary::default();
    let mut sink_error = None;
    let read_result = std::thread::scope(|scope| {
        let stop = &stop;
        let reader = scope.spawn(move || {
            let mut current = RowBatch {
                index: start_batch,
                rows: Vec::new(),
            };
            let hand_over =
                |batch: RowBatch| permit_tx.send(()).is_ok() && work_tx.send(batch).is_ok();
            let result = dataset::for_each_row(input, &settings.limits, &mut |index, row| {
                if stop.load(Ordering::Relaxed) {
                    return ControlFlow::Break(());
                }
                if index < skip_rows {
                    return ControlFlow::Continue(());
                }
                current.rows.push((index, row));
                if (index + 1) % compress == 0 {
                    let next = RowBatch {
                        index: current.index + 1,
                        rows: Vec::with_capacity(current.rows.len()),
                    };
                    if !hand_over(std::mem::replace(&mut current, next)) {
                        return ControlFlow::Break(());
                    }
                }
                ControlFlow::Continue(())
            });
            if result.is_ok() && !current.rows.is_empty() && !stop.load(Ordering::Relaxed) {
                hand_over(current);
            }
            result
        });
        for _ in 0..workers {
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            scope.spawn(move || {
                let mut converter = RowConverter::new(settings);
                for rows in work_rx {
                    let index = rows.index;
                    // A panic (a bug, a third-party parser) fails this batch, in order, like
                    // any error: the pipeline drains and stops instead of waiting for it.
                    let outcome = crate::supervise::catch(|| {
                        let mut batch = converter.convert_batch(rows);
                        let stored = if batch.bytes.is_empty() {
                            Ok(())
                        } else {
                            files.store(&batch.bytes).map(|f| batch.file = Some(f))
                        };
                        stored.map(|_| batch)
                    });
                    let outcome = outcome.unwrap_or_else(|panic| {
                        converter = RowConverter::new(settings);
                        Err(anyhow::anyhow!(
                            "internal error while converting STIX file {}: {panic}",
                            index + 1
                        ))
                    });
                    if done_tx.send((index, outcome)).is_err() {
                        break;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        let mut permits = Some(permit_rx);
        let mut ready: BTreeMap<u64, anyhow::Result<Batch>> = BTreeMap::new();
        let mut next = start_batch;
        let fail =
            |e: anyhow::Error, sink_error: &mut Option<anyhow::Error>, permits: &mut Option<_>| {
                if sink_error.is_none() {
                    *sink_error = Some(e);
                }
                stop.store(true, Ordering::Relaxed);
                *permits = None;
            };
        for (index, batch) in done_rx.iter() {
            ready.insert(index, batch);
            while let Some(batch) = ready.remove(&next) {
                next += 1;
                if let Some(p) = &permits {
                    let _ = p.recv();
                }
                if stop.load(Ordering::Relaxed) {
                    continue; // draining after a stop
                }
                match batch {
                    Err(e) => fail(e, &mut sink_error, &mut permits),
                    Ok(_) if sink.cancelled() => {
                        summary.cancelled = true;
                        stop.store(true, Ordering::Relaxed);
                        permits = None;
                    }
                    Ok(batch) => {
                        if let Err(e) = emit(batch, &mut summary, sink) {
                            fail(e, &mut sink_error, &mut permits);
                        }
                    }
                }
            }
            if done_rx.is_empty()
                && let Err(e) = sink.flush()
            {
                fail(e, &mut sink_error, &mut permits);
            }
        }
        if let Err(e) = sink.flush() {
            fail(e, &mut sink_error, &mut permits);
        }
        reader.join().unwrap_or_else(|panic| {
            Err(DatasetError::Io(std::io::Error::other(format!(
                "internal error in the dataset reader: {}",
                crate::supervise::panic_message(panic.as_ref())
            ))))
        })
    });
    if let Some(e) = sink_error {
        return Err(ConvertError::Sink(e));
    }
    read_result?;
    Ok(summary)
}

/// Threads converting batches and storing their files (the reader and the sink run beside
/// them). Storing waits on the disk (direct writes, fsync), so there are more of them than
/// cores: while one waits, the others convert.
const CONVERT_THREADS: usize = 4;
/// Rows read and not yet handed to the sink, at most (rounded to whole batches, and at least
/// two batches so that storing one overlaps converting the next): about 25 MB of STIX for
/// typical rows. Larger `stix_compress` values hold two of their batches.
const WINDOW_ROWS: u64 = 16_000;
/// Batches in flight, at most.
const MAX_WINDOW: usize = 8;

/// The rows of one batch, read and not yet converted.
struct RowBatch {
    index: u64,
    rows: Vec<(u64, dataset::RowResult)>,
}

fn emit(
    batch: Batch,
    summary: &mut ConvertSummary,
    sink: &mut dyn BatchSink,
) -> anyhow::Result<()> {
    summary.rows_read += batch.rows_read;
    summary.rows_converted += batch.rows_converted;
    summary.rows_rejected += batch.rejected.len() as u64;
    summary.batches += 1;
    summary.objects += batch.objects;
    if !batch.bytes.is_empty() {
        summary.files += 1;
    }
    sink.batch(batch)
}

/// Keeps the first [`MAX_KEPT_ERRORS`] row errors as `row N: reason` strings.
pub fn describe_rejections(errors: &mut Vec<String>, rejected: &[(u64, String)]) {
    for (index, reason) in rejected {
        if errors.len() >= MAX_KEPT_ERRORS {
            break;
        }
        // Reasons quote short excerpts already; this bounds any other (a reader's message).
        let reason = match reason.char_indices().nth(MAX_REASON_CHARS) {
            Some((cut, _)) => format!("{}… ({} bytes)", &reason[..cut], reason.len()),
            None => reason.clone(),
        };
        errors.push(format!("row {}: {reason}", index + 1));
    }
}

/// Characters of a cell value quoted in a rejection reason; longer values are cut and their
/// size given (a 1 MB value must not make every progress answer 1 MB).
const EXCERPT_CHARS: usize = 64;
/// Characters of a whole rejection reason kept in the progress.
const MAX_REASON_CHARS: usize = 400;

/// A cell's text quoted for a message: `"10.0.0.300"`, or `"aaaa…" (1048576 bytes)`.
pub(super) fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}… ({} bytes)", &text[..cut], text.len()),
    }
}

/// A cell value for a message: strings as [`excerpt`], other JSON as its (cut) text.
fn value_excerpt(v: &Value) -> String {
    match v {
        Value::String(s) => excerpt(s),
        other => {
            let text = other.to_string();
            match text.char_indices().nth(EXCERPT_CHARS) {
                None => text,
                Some((cut, _)) => format!("{}… ({} bytes)", &text[..cut], text.len()),
            }
        }
    }
}

/// A sighted domain object (attack pattern or threat actor) and its observations in a batch.
struct Sighted {
    object: Map<String, Value>,
    observed: Vec<String>,
    first: Timestamp,
    last: Timestamp,
}

struct BatchBuilder {
    index: u64,
    rows_read: u64,
    rows_converted: u64,
    rejected: Vec<(u64, String)>,
    lines: Vec<u8>,
    objects: u64,
    written: HashSet<Id>,
    sighted: BTreeMap<String, Sighted>,
    /// Indicators the file saw, by id.
    indicated: BTreeMap<Id, Indicated>,
    ip_counts: BTreeMap<String, u64>,
    iocs: IocKinds,
    /// The marking of the data's objects.
    tlp: Option<Tlp>,
}

impl BatchBuilder {
    fn new(index: u64, tlp: Option<Tlp>) -> Self {
        Self {
            tlp,
            index,
            rows_read: 0,
            rows_converted: 0,
            rejected: Vec::new(),
            lines: Vec::new(),
            objects: 0,
            written: HashSet::default(),
            sighted: BTreeMap::new(),
            indicated: BTreeMap::new(),
            ip_counts: BTreeMap::new(),
            iocs: IocKinds::default(),
        }
    }

    fn push(&mut self, object: &Map<String, Value>) {
        if self.lines.is_empty() {
            self.head();
        }
        self.write_line(object);
    }

    /// What every file starts with: the producer objects and the marking-definitions.
    fn head(&mut self) {
        for head in producer_objects() {
            self.write_line(&head);
        }
        for marking in marking_definitions(self.tlp) {
            self.write_line(&marking);
        }
    }

    fn write_line(&mut self, object: &Map<String, Value>) {
        stix::write_jsonl_line(&mut self.lines, object).expect("writing to memory cannot fail");
        self.objects += 1;
    }

    /// Writes a serialised object line (ending in `\n`).
    fn push_line(&mut self, line: &[u8]) {
        self.begin_line().extend_from_slice(line);
    }

    /// The file's buffer, for one more object line to be written into it.
    fn begin_line(&mut self) -> &mut Vec<u8> {
        if self.lines.is_empty() {
            self.head();
        }
        self.objects += 1;
        &mut self.lines
    }

    /// Writes an object line unless this file already holds the object.
    fn push_line_once(&mut self, id: &Id, line: impl FnOnce() -> Vec<u8>) {
        if !self.written.contains(id) {
            self.written.insert(id.clone());
            self.push_line(&line());
        }
    }

    fn finish(mut self) -> Batch {
        let sighted = std::mem::take(&mut self.sighted);
        let identity = producer_identity_id();
        for (id, s) in sighted {
            self.push(&s.object);
            let mut sighting = node_sighting(
                &identity,
                &format!("{id}|{}", s.observed.join(",")),
                &id,
                s.first,
                s.last,
                s.observed.len() as u64,
                Some(&s.observed),
            );
            mark(&mut sighting, self.tlp);
            self.push(&sighting);
        }
        let indicated = std::mem::take(&mut self.indicated);
        for seen in indicated.values() {
            for mut object in indicators::objects(seen, &identity) {
                mark(&mut object, self.tlp);
                self.push(&object);
            }
        }
        Batch {
            index: self.index,
            rows_read: self.rows_read,
            rows_converted: self.rows_converted,
            rejected: self.rejected,
            bytes: self.lines,
            objects: self.objects,
            ip_counts: self.ip_counts,
            iocs: self.iocs,
            file: None,
        }
    }
}

/// A mapped cell: where it goes, and where it came from (to fall back to the extension).
struct Mapped {
    target: Target,
    column: Name,
    value: Value,
}

struct RowConverter<'s> {
    settings: &'s Settings,
    settings_digest: String,
    extension_id: String,
    identity_id: String,
    /// Cell text → (id, SCO type, STIX value), so that repeated addresses are hashed once.
    address_ids: HashMap<String, (Id, &'static str, Id)>,
    /// Observable id → its indicator, if it makes one (computed once per observable).
    indicators: HashMap<Id, Option<Arc<Indicator>>>,
    /// Column name → its target and a shared copy of the name (one allocation per column,
    /// not per cell).
    targets: HashMap<String, (Option<Target>, Name)>,
    /// Reused buffers for canonical JSON and id seeds.
    canon: String,
    seed: String,
    /// Size of the last file, to reserve the next one's buffer at once.
    last_size: usize,
    /// (mapped, extension) cells of the last row.
    widths: (usize, usize),
    /// The last (first, last) observation times and their text (many rows share them).
    times: Option<((Timestamp, Timestamp), [String; 2])>,
}

/// Text cells become numbers when they are numbers.
fn typed(cell: Cell<'_>) -> Value {
    match cell {
        Cell::Json(v) => v.clone(),
        Cell::Text(s) => {
            let t = s.trim();
            if let Ok(i) = t.parse::<i64>()
                && !(t.len() > 1
                    && (t.starts_with('0') || t.starts_with("-0") || t.starts_with('+')))
            {
                return Value::from(i);
            }
            let numeric = t
                .bytes()
                .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'e' | b'E' | b'+'))
                && t.bytes().any(|b| b.is_ascii_digit());
            if numeric
                && let Ok(f) = t.parse::<f64>()
                && let Some(n) = serde_json::Number::from_f64(f)
            {
                return Value::Number(n);
            }
            Value::String(s.to_string())
        }
    }
}

/// An extension cell: scalars as they are, nested JSON as its compact text.
fn extension_value(v: Value) -> Value {
    match v {
        Value::Object(_) | Value::Array(_) => Value::String(v.to_string()),
        other => other,
    }
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

fn as_int(column: &str, v: &Value, max: u64) -> Result<u64, String> {
    let n = match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    match n {
        Some(n) if n <= max => Ok(n),
        _ => Err(format!(
            "column `{column}`: {} is not an integer from 0 to {max}",
            value_excerpt(v)
        )),
    }
}

/// The SCO type of an address value, and the value as STIX writes it.
fn address_type(value: &str) -> Option<(&'static str, String)> {
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(_)) => Some(("ipv4-addr", value.to_string())),
        Ok(IpAddr::V6(_)) => Some(("ipv6-addr", value.to_string())),
        Err(_) => {
            if let Some(mac) = normalise_mac(value) {
                Some(("mac-addr", mac))
            } else if value.strip_suffix('.').unwrap_or(value).contains('.') && is_host_name(value)
            {
                // A cell is taken for a domain name only with a dot: single words
                // ("unknown", "localhost") are not.
                Some(("domain-name", value.to_ascii_lowercase()))
            } else {
                None
            }
        }
    }
}

/// Protocol names: split on delimiters, lower-case, placeholders dropped.
fn protocols(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |s: &str| {
        for p in s.split([',', ';', '/', '|', ' ', '+']) {
            let p = p.trim().to_ascii_lowercase();
            if !p.is_empty()
                && !matches!(
                    p.as_str(),
                    "null" | "none" | "nan" | "-" | "n/a" | "unknown"
                )
                && !out.contains(&p)
            {
                out.push(p);
            }
        }
    };
    match v {
        Value::Array(items) => items.iter().for_each(|i| add(&as_text(i))),
        other => add(&as_text(other)),
    }
    out
}

/// `type/subtype` with RFC 6838 characters (the validator wants IANA media types; this keeps
/// values such as `HTTP_GET` out of `mime_type`).
fn is_media_type(s: &str) -> bool {
    const TOP: [&str; 9] = [
        "application",
        "audio",
        "font",
        "image",
        "message",
        "model",
        "multipart",
        "text",
        "video",
    ];
    let Some((top, sub)) = s.split_once('/') else {
        return false;
    };
    TOP.contains(&top)
        && !sub.is_empty()
        && sub
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
}

fn is_benign(v: &Value) -> bool {
    let t = as_text(v).to_ascii_lowercase();
    matches!(
        t.as_str(),
        "" | "0" | "0.0" | "false" | "benign" | "normal" | "none" | "null" | "nan"
    )
}

impl<'s> RowConverter<'s> {
    fn new(settings: &'s Settings) -> Self {
        Self {
            settings,
            settings_digest: settings.digest(),
            extension_id: extension_definition_id(),
            identity_id: producer_identity_id(),
            address_ids: HashMap::default(),
            indicators: HashMap::default(),
            targets: HashMap::default(),
            times: None,
            canon: String::with_capacity(1024),
            seed: String::with_capacity(96),
            last_size: 0,
            widths: (8, 8),
        }
    }

    fn target(&mut self, column: &str) -> Option<Target> {
        self.column(column).0
    }

    fn column(&mut self, column: &str) -> (Option<Target>, Name) {
        if let Some((t, name)) = self.targets.get(column) {
            return (*t, name.clone());
        }
        let t = self.settings.mapping.target(column);
        let name: Name = Arc::from(column);
        self.targets.insert(column.to_string(), (t, name.clone()));
        (t, name)
    }

    fn convert_batch(&mut self, rows: RowBatch) -> Batch {
        let mut batch = BatchBuilder::new(rows.index, self.settings.tlp);
        // Files of a dataset are alike in size: reserve what the last one took.
        batch.lines.reserve(self.last_size + self.last_size / 8);
        for (index, row) in rows.rows {
            batch.rows_read += 1;
            let outcome = match row {
                Ok(row) => row
                    .with_row(|row| self.convert(index, row, &mut batch))
                    .map_err(|e| e.0)
                    .and_then(|converted| converted),
                Err(reason) => Err(reason),
            };
            if let Err(reason) = outcome {
                batch.rejected.push((index, reason));
            }
        }
        let batch = batch.finish();
        self.last_size = batch.bytes.len();
        batch
    }

    fn convert(
        &mut self,
        index: u64,
        row: &dyn Row,
        batch: &mut BatchBuilder,
    ) -> Result<(), String> {
        // Sized from the previous row: rows of a dataset are alike.
        let mut mapped: Vec<Mapped> = Vec::with_capacity(self.widths.0);
        let mut extension: Vec<Column> = Vec::with_capacity(self.widths.1);
        let settings = self.settings;
        let mut row_labels: Vec<String> = Vec::new();
        row.for_each_cell(&mut |column, cell| {
            if cell.is_blank() {
                return;
            }
            if settings.label_columns.iter().any(|c| c == column) {
                let label = as_text(&typed(cell));
                if !label.is_empty() && !row_labels.contains(&label) {
                    row_labels.push(label);
                }
            }
            let (target, name) = self.column(column);
            match target {
                Some(Target::Extension) | None => {
                    if self
                        .settings
                        .features
                        .as_ref()
                        .is_none_or(|f| f.contains(column))
                    {
                        extension.push((name, extension_value(typed(cell))));
                    }
                }
                Some(target) => {
                    let value = typed(cell);
                    if mapped.iter().any(|m| m.target == target) {
                        // A second column for the same property: keep it as data.
                        extension.push((name, extension_value(value)));
                    } else {
                        mapped.push(Mapped {
                            target,
                            column: name,
                            value,
                        });
                    }
                }
            }
        });
        self.widths = (mapped.len().max(1), extension.len().max(1));
        self.build(index, mapped, extension, row_labels, batch)
    }

    /// The id of an SCO whose only id-contributing property present is `key` (a string):
    /// addresses, URLs, artifacts without hashes.
    fn single_property_id(&mut self, sco_type: &str, key: &str, value: &str) -> Id {
        self.canon.clear();
        self.canon.push_str("{\"");
        self.canon.push_str(key);
        self.canon.push_str("\":");
        stix::jcs::write_string(value, &mut self.canon);
        self.canon.push('}');
        stix::id::sco_id_from_canonical(sco_type, &self.canon).into()
    }

    fn address(&mut self, column: &str, value: &Value) -> Result<(Id, &'static str, Id), String> {
        let text: std::borrow::Cow<str> = match value {
            Value::String(s) => std::borrow::Cow::Borrowed(s.trim()),
            other => std::borrow::Cow::Owned(as_text(other)),
        };
        if let Some((id, ty, value)) = self.address_ids.get(text.as_ref()) {
            return Ok((id.clone(), ty, value.clone()));
        }
        let (ty, value) = address_type(&text).ok_or_else(|| {
            format!(
                "column `{column}`: {} is not an IP address, MAC address or host name",
                excerpt(&text)
            )
        })?;
        let id = self.single_property_id(ty, "value", &value);
        let value: Id = value.into();
        if self.address_ids.len() < 1_000_000 {
            self.address_ids
                .insert(text.into_owned(), (id.clone(), ty, value.clone()));
        }
        Ok((id, ty, value))
    }

    fn build(
        &mut self,
        index: u64,
        mapped: Vec<Mapped>,
        mut extension: Vec<Column>,
        row_labels: Vec<String>,
        batch: &mut BatchBuilder,
    ) -> Result<(), String> {
        let mut iocs = IocKinds::default();
        let mut pending: Vec<(Id, Pending)> = Vec::with_capacity(4); // SCOs to write first
        let mut refs: Vec<Id> = Vec::with_capacity(4);
        let mut ends: [Option<Id>; 2] = [None, None];
        let mut ips: Vec<Id> = Vec::with_capacity(2);
        // Observables the row shows acting (a flow's source, a listed observable, a URL), kept
        // only when the conversion makes indicators.
        let indicating = self.settings.indicators.is_some();
        let mut sources: Vec<(Id, &'static str, Id)> = Vec::new();
        // Flow properties: ports [src, dst], counts [src bytes, dst bytes, src packets, dst
        // packets], times [start, end].
        let mut ports: [Option<u64>; 2] = [None, None];
        let mut counts: [Option<u64>; 4] = [None; 4];
        let mut flow_times: [Option<String>; 2] = [None, None];
        let mut nt_sources: Vec<Column> = Vec::with_capacity(mapped.len()); // to fall back to the extension
        let mut first: Option<Timestamp> = None;
        let mut last: Option<Timestamp> = None;
        let mut protos: Vec<String> = Vec::new();
        let mut payload: Option<Column> = None;
        let mut url: Option<Column> = None;
        let mut sighted: Vec<(&'static str, String)> = Vec::new();
        let mut dst_port = None;
        let mut mime_override: Option<String> = None;

        let parse_time = |column: &str, v: &Value| -> Result<Timestamp, String> {
            let t = match v {
                Value::Number(n) => n.as_f64().and_then(|f| {
                    if f.abs() >= 1e12 {
                        Timestamp::from_unix_seconds_f64(f / 1000.0)
                    } else {
                        Timestamp::from_unix_seconds_f64(f)
                    }
                }),
                other => Timestamp::parse(&as_text(other), time::UtcOffset::UTC),
            };
            t.ok_or_else(|| format!("column `{column}`: {} is not a time", value_excerpt(v)))
        };

        for Mapped {
            target,
            column,
            value,
        } in mapped
        {
            match target {
                Target::Address(end) => {
                    let (id, ty, text) = self.address(&column, &value)?;
                    if ty.starts_with("ipv") {
                        ips.push(text.clone());
                    }
                    if indicating && end == End::Src {
                        sources.push((id.clone(), ty, text.clone()));
                    }
                    pending.push((id.clone(), Pending::Address(ty, text)));
                    ends[end as usize] = Some(id);
                    iocs.ip = true;
                    nt_sources.push((column, value));
                }
                Target::Observable => {
                    let (id, ty, text) = self.address(&column, &value)?;
                    if ty.starts_with("ipv") {
                        ips.push(text.clone());
                    }
                    if indicating {
                        sources.push((id.clone(), ty, text.clone()));
                    }
                    pending.push((id.clone(), Pending::Address(ty, text)));
                    refs.push(id);
                    iocs.ip = true;
                }
                Target::Port(end) => {
                    let port = as_int(&column, &value, 65535)?;
                    if end == End::Dst {
                        dst_port = Some(port);
                    }
                    ports[end as usize] = Some(port);
                    iocs.port = true;
                    nt_sources.push((column, value));
                }
                Target::Protocols => {
                    protos = protocols(&value);
                    nt_sources.push((column, value));
                }
                Target::Packets(end) | Target::ByteCount(end) => {
                    let n = as_int(&column, &value, i64::MAX as u64)?;
                    let slot = match (target, end) {
                        (Target::Packets(_), End::Src) => 2,
                        (Target::Packets(_), End::Dst) => 3,
                        (_, End::Src) => 0,
                        (_, End::Dst) => 1,
                    };
                    counts[slot] = Some(n);
                    iocs.flow_feature = true;
                    nt_sources.push((column, value));
                }
                Target::FlowStart | Target::FlowEnd => {
                    let t = parse_time(&column, &value)?;
                    flow_times[usize::from(target == Target::FlowEnd)] = Some(t.to_string());
                    nt_sources.push((column, value));
                }
                Target::FirstObserved => first = Some(parse_time(&column, &value)?),
                Target::LastObserved => last = Some(parse_time(&column, &value)?),
                Target::Url => url = Some((column, value)),
                Target::Payload => payload = Some((column, value)),
                Target::MimeType => {
                    let t = as_text(&value).to_ascii_lowercase();
                    if is_media_type(&t) {
                        mime_override = Some(t);
                    } else {
                        extension.push((column, extension_value(value)));
                    }
                }
                Target::AttackPattern => {
                    if is_benign(&value) {
                        extension.push((column, extension_value(value)));
                    } else {
                        let text = as_text(&value);
                        let name = match self.settings.mapping.attack_name(&column, &text) {
                            Some(readable) => readable.to_string(),
                            None if value.is_string() => text,
                            None => format!("{column}={text}"),
                        };
                        sighted.push(("attack-pattern", name));
                    }
                }
                Target::ThreatActor => sighted.push(("threat-actor", as_text(&value))),
                Target::Extension => extension.push((column, extension_value(value))),
            }
        }

        // The payload: an artifact (base64 of its bytes; JSON is kept as its compact text).
        let mut artifact_id = None;
        if let Some((column, value)) = payload {
            let (bytes, mime) = match &value {
                Value::Object(m) if m.is_empty() => (None, None),
                Value::Array(a) if a.is_empty() => (None, None),
                Value::Object(_) | Value::Array(_) => {
                    (Some(value.to_string()), Some("application/json"))
                }
                Value::String(s) if s.is_empty() => (None, None),
                Value::String(s) => (Some(s.clone()), None),
                other => (Some(other.to_string()), None),
            };
            if let Some(bytes) = bytes {
                let payload_bin =
                    base64::engine::general_purpose::STANDARD.encode(bytes.as_bytes());
                // Only `payload_bin` contributes to the id (there are no hashes).
                let id = self.single_property_id("artifact", "payload_bin", &payload_bin);
                let mime = mime_override.or(mime.map(str::to_string));
                pending.push((id.clone(), Pending::Artifact(mime, payload_bin)));
                artifact_id = Some(id);
                iocs.payload = true;
            } else {
                let _ = column;
            }
        }

        // The URL: absolute as given; a path is completed with the flow's destination.
        if let Some((column, value)) = url {
            let text = as_text(&value);
            let absolute = if text.contains("://") {
                Some(text.clone())
            } else if text.starts_with('/') {
                ends[1]
                    .as_ref()
                    .and(self.dst_host(&nt_sources))
                    .map(|host| {
                        let (scheme, default) = if dst_port == Some(443) {
                            ("https", 443)
                        } else {
                            ("http", 80)
                        };
                        match dst_port {
                            Some(p) if p != default => format!("{scheme}://{host}:{p}{text}"),
                            _ => format!("{scheme}://{host}{text}"),
                        }
                    })
            } else {
                None
            };
            match absolute {
                Some(u) => {
                    let id = self.single_property_id("url", "value", &u);
                    let u: Id = u.into();
                    if indicating {
                        sources.push((id.clone(), "url", u.clone()));
                    }
                    pending.push((id.clone(), Pending::Address("url", u)));
                    refs.push(id);
                    iocs.url = true;
                }
                None => extension.push((column, extension_value(value))),
            }
        }

        // The flow, when the row has a protocol and at least one end.
        let has_flow = !protos.is_empty() && (ends[0].is_some() || ends[1].is_some());
        let mut observed_columns: Vec<Column> = Vec::new();
        let mut flow_object: Option<Flow> = None;
        let flow_id = if has_flow {
            let [start, end] = flow_times;
            let flow = Flow {
                src_ref: ends[0].as_deref(),
                dst_ref: ends[1].as_deref(),
                start,
                end,
                src_port: ports[0],
                dst_port: ports[1],
                protocols: &protos,
                src_byte_count: counts[0],
                dst_byte_count: counts[1],
                src_packets: counts[2],
                dst_packets: counts[3],
                src_payload_ref: artifact_id.as_deref(),
                columns: &extension,
            };
            let id: Id = flow.id(&self.extension_id, &mut self.canon).into();
            flow_object = Some(flow);
            if !extension.is_empty() {
                iocs.flow_feature = true;
            }
            Some(id)
        } else {
            // No flow: its ends are plain observables, its other cells data.
            for end in ends.iter().flatten() {
                refs.push(end.clone());
            }
            observed_columns = extension;
            for (column, value) in nt_sources {
                if self
                    .target(&column)
                    .is_some_and(|t| !matches!(t, Target::Address(_)))
                {
                    observed_columns.push((column, extension_value(value)));
                }
            }
            if !observed_columns.is_empty() {
                iocs.flow_feature = true;
            }
            if let Some(a) = &artifact_id {
                refs.push(a.clone());
            }
            None
        };
        if let Some(f) = &flow_id {
            refs.insert(0, f.clone());
            for end in ends.iter().flatten().rev() {
                refs.insert(0, end.clone());
            }
            if let Some(a) = &artifact_id {
                refs.push(a.clone());
            }
        }
        if refs.is_empty() {
            return Err("no observable in this row (no address, URL or payload)".into());
        }
        let first = first.unwrap_or(self.settings.observed_time);
        let last = last.unwrap_or(first);
        if last < first {
            return Err(format!(
                "last_observed {last} is before first_observed {first}"
            ));
        }

        // Committed: write the row's objects.
        self.seed.clear();
        self.seed.push_str(&self.settings_digest);
        self.seed.push('|');
        self.seed.push_str(itoa::Buffer::new().format(index));
        let observed_id = stix::sdo_id("observed-data", self.seed.as_bytes());
        for (id, object) in pending {
            let marking = self.settings.tlp.map(Tlp::marking_id);
            batch.push_line_once(&id, || match object {
                Pending::Address(ty, value) => address_line(ty, &id, &value, marking),
                Pending::Artifact(mime, payload) => {
                    let mut line = Vec::with_capacity(payload.len() + 160);
                    let mut o = Obj::new(&mut line);
                    o.plain("type", "artifact")
                        .plain("spec_version", "2.1")
                        .plain("id", &id);
                    if let Some(m) = &mime {
                        o.str("mime_type", m);
                    }
                    o.plain("payload_bin", &payload); // base64
                    if let Some(m) = marking {
                        o.plain_list("object_marking_refs", &[m]);
                    }
                    o.end();
                    line.push(b'\n');
                    line
                }
            });
        }
        // The flow and the observation are written straight into the file.
        if let (Some(flow), Some(id)) = (&flow_object, &flow_id)
            && batch.written.insert(id.clone())
        {
            let marking = self.settings.tlp.map(Tlp::marking_id);
            flow.write(id, &self.extension_id, marking, batch.begin_line());
        }
        refs.dedup();
        // One format for the four times (microseconds, always six digits): consumers that
        // compare `modified` with `first_observed` (misp-stix) parse both the same way.
        if self.times.as_ref().is_none_or(|(k, _)| *k != (first, last)) {
            let text = [first.to_micros_string(), last.to_micros_string()];
            self.times = Some(((first, last), text));
        }
        let times = &self.times.as_ref().expect("set above").1;
        let line = batch.begin_line();
        let mut od = Obj::new(line);
        od.plain("type", "observed-data")
            .plain("spec_version", "2.1")
            .plain("id", &observed_id)
            .plain("created_by_ref", &self.identity_id)
            .plain("created", &times[0])
            .plain("modified", &times[1])
            .plain("first_observed", &times[0])
            .plain("last_observed", &times[1])
            .u64("number_observed", 1);
        if row_labels.is_empty() {
            if !self.settings.labels.is_empty() {
                od.strs("labels", &self.settings.labels);
            }
        } else {
            let mut labels = self.settings.labels.clone();
            for l in row_labels {
                if !labels.contains(&l) {
                    labels.push(l);
                }
            }
            od.strs("labels", &labels);
        }
        od.plain_list("object_refs", &refs);
        if !observed_columns.is_empty() {
            od.columns_extension(&self.extension_id, &observed_columns);
        }
        if let Some(t) = self.settings.tlp {
            od.plain_list("object_marking_refs", &[t.marking_id()]);
        }
        od.end();
        line.push(b'\n');
        let mut attacks: Vec<String> = Vec::new();
        for (kind, name) in sighted {
            // One object per name and marking: the same name under another marking is another
            // object (its content differs by `object_marking_refs`).
            let id = match self.settings.tlp {
                None => stix::sdo_id(kind, name.as_bytes()),
                Some(t) => stix::sdo_id(kind, format!("{name}\u{0}{}", t.as_str()).as_bytes()),
            };
            if indicating && kind == "attack-pattern" {
                attacks.push(id.clone());
            }
            let entry = batch.sighted.entry(id.clone()).or_insert_with(|| {
                let mut o = sdo(
                    kind,
                    id.clone(),
                    producer_epoch(),
                    producer_epoch(),
                    Some(&self.identity_id),
                );
                o.insert("name".into(), json!(name));
                mark(&mut o, self.settings.tlp);
                if kind == "attack-pattern"
                    && let Some(t) = self.settings.mapping.technique(&name)
                {
                    o.insert(
                        "external_references".into(),
                        json!([{
                            "source_name": t.source_name,
                            "external_id": t.external_id,
                            "url": t.url,
                        }]),
                    );
                }
                Sighted {
                    object: o,
                    observed: Vec::new(),
                    first,
                    last,
                }
            });
            entry.observed.push(observed_id.clone());
            entry.first = entry.first.min(first);
            entry.last = entry.last.max(last);
        }
        self.indicate(
            Shown {
                row: index,
                observation: &observed_id,
                first,
                last,
                attacks: &attacks,
            },
            sources,
            batch,
        );
        for ip in ips {
            match batch.ip_counts.get_mut(ip.as_ref()) {
                Some(n) => *n += 1,
                None => {
                    batch.ip_counts.insert(ip.to_string(), 1);
                }
            }
        }
        batch.iocs.merge(iocs);
        batch.rows_converted += 1;
        Ok(())
    }

    /// Records the row's sources that the conversion's rule makes indicators of (none when
    /// the rule is off, or asks for rows naming an attack and this one names none).
    fn indicate(
        &mut self,
        shown: Shown<'_>,
        sources: Vec<(Id, &'static str, Id)>,
        batch: &mut BatchBuilder,
    ) {
        let Some(rule) = &self.settings.indicators else {
            return;
        };
        if rule.attack_rows_only && shown.attacks.is_empty() {
            return;
        }
        for (observable, ty, value) in sources {
            let indicator = match self.indicators.get(&observable) {
                Some(known) => known.clone(),
                None => {
                    let made =
                        indicators::indicator(rule, ty, &value, self.settings.tlp).map(Arc::new);
                    if self.indicators.len() < 1_000_000 {
                        self.indicators.insert(observable.clone(), made.clone());
                    }
                    made
                }
            };
            let Some(indicator) = indicator else {
                continue;
            };
            let seen = batch
                .indicated
                .entry(indicator.id.clone())
                .or_insert_with(|| Indicated {
                    indicator,
                    observable,
                    first_observation: shown.observation.to_string(),
                    count: 0,
                    last_row: u64::MAX,
                    first: shown.first,
                    last: shown.last,
                    attacks: Default::default(),
                });
            if seen.last_row != shown.row {
                seen.last_row = shown.row;
                seen.count += 1;
            }
            seen.first = seen.first.min(shown.first);
            seen.last = seen.last.max(shown.last);
            for attack in shown.attacks {
                if !seen.attacks.contains(attack) {
                    seen.attacks.insert(attack.clone());
                }
            }
        }
    }

    /// The destination host text of the row (for completing relative URLs).
    fn dst_host(&mut self, sources: &[Column]) -> Option<String> {
        sources
            .iter()
            .find_map(|(column, value)| match self.target(column) {
                Some(Target::Address(End::Dst)) => {
                    let t = as_text(value);
                    Some(if t.contains(':') { format!("[{t}]") } else { t })
                }
                _ => None,
            })
    }
}

/// What a row showed, for the indicators of its sources.
struct Shown<'a> {
    row: u64,
    observation: &'a str,
    first: Timestamp,
    last: Timestamp,
    /// Ids of the attack-patterns the row names.
    attacks: &'a [String],
}

/// An SCO of the row, written only if the file does not hold it yet.
enum Pending {
    /// An object with a `value` (addresses, URLs).
    Address(&'static str, Id),
    /// An artifact: mime type, base64 payload.
    Artifact(Option<String>, String),
}

/// An address SCO whose id is already known (computed once per distinct value).
fn address_line(ty: &str, id: &str, value: &str, marking: Option<&str>) -> Vec<u8> {
    let mut line = Vec::with_capacity(128);
    let mut o = Obj::new(&mut line);
    o.plain("type", ty)
        .plain("spec_version", "2.1")
        .plain("id", id)
        .str("value", value);
    if let Some(m) = marking {
        o.plain_list("object_marking_refs", &[m]);
    }
    o.end();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[derive(Default)]
    struct Collect(Vec<Batch>);

    struct HashOnly;

    impl FileStore for HashOnly {
        fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile> {
            Ok(StoredFile {
                hash: br_cti_domain::hash::Sha256Hex::from_digest(&Sha256::digest(bytes)),
                size: bytes.len() as u64,
            })
        }
    }

    impl BatchSink for Collect {
        fn batch(&mut self, batch: Batch) -> anyhow::Result<()> {
            self.0.push(batch);
            Ok(())
        }
    }

    fn settings(compress: u64) -> Settings {
        Settings {
            mapping: Arc::new(Mapping::default_table()),
            compress,
            features: None,
            observed_time: Timestamp::from_micros(0),
            labels: Vec::new(),
            label_columns: Vec::new(),
            source_hash: "ab".repeat(32),
            limits: Default::default(),
            indicators: None,
            tlp: None,
        }
    }

    fn run(data: &str, compress: u64) -> (ConvertSummary, Vec<Batch>) {
        run_with(data, &settings(compress))
    }

    fn run_with(data: &str, settings: &Settings) -> (ConvertSummary, Vec<Batch>) {
        let mut sink = Collect::default();
        let summary = convert(
            Box::new(Cursor::new(data.as_bytes().to_vec())),
            settings,
            0,
            &HashOnly,
            &mut sink,
        )
        .unwrap();
        (summary, sink.0)
    }

    fn objects(batch: &Batch) -> Vec<Value> {
        batch
            .bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    fn of_type<'a>(objs: &'a [Value], ty: &str) -> Vec<&'a Value> {
        objs.iter().filter(|o| o["type"] == ty).collect()
    }

    #[test]
    fn every_row_is_converted_or_rejected_and_the_last_batch_is_kept() {
        let mut csv = String::from("src,dst,Protocol,sport,label\n");
        for i in 0..150 {
            match i {
                10 => csv.push_str("10.0.0.1,not an ip!,TCP,80,0\n"),
                20 => csv.push_str("10.0.0.1,10.0.0.2,TCP,99999,0\n"),
                30 => csv.push_str("10.0.0.1,10.0.0.2\n"),
                _ => csv.push_str(&format!(
                    "10.0.0.{},10.0.0.2,TCP,{},0\n",
                    i % 20 + 1,
                    1000 + i
                )),
            }
        }
        let (summary, batches) = run(&csv, 100);
        assert_eq!(summary.rows_read, 150);
        assert_eq!(summary.rows_converted, 147);
        assert_eq!(summary.rows_rejected, 3);
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].rows_read, 50);
        let reasons: Vec<&str> = batches[0]
            .rejected
            .iter()
            .map(|(_, r)| r.as_str())
            .collect();
        assert_eq!(batches[0].rejected[0].0, 10);
        assert!(reasons[0].contains("column `dst`"), "{reasons:?}");
        assert!(reasons[1].contains("column `sport`: 99999"), "{reasons:?}");
        assert!(
            reasons[2].contains("2 fields where the header has 5"),
            "{reasons:?}"
        );
        let objs = objects(&batches[1]);
        assert_eq!(of_type(&objs, "observed-data").len(), 50);
        // Each address once per file; the producer objects lead every file.
        assert_eq!(objs[0]["type"], "identity");
        assert_eq!(objs[1]["type"], "extension-definition");
        let mut ids: Vec<&str> = objs.iter().map(|o| o["id"].as_str().unwrap()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n, "no object twice in a file");
    }

    #[test]
    fn label_columns_label_each_row_with_its_value() {
        let data = "src,dst,Class,attack\n1.2.3.4,5.6.7.8,DDoS,x\n1.2.3.4,5.6.7.8,,y\n1.2.3.4,5.6.7.8,7,z\n";
        let mut s = settings(10);
        s.labels = vec!["lab".to_string()];
        s.label_columns = vec!["Class".to_string()];
        let objs = objects(&run_with(data, &s).1[0]);
        let od = of_type(&objs, "observed-data");
        assert_eq!(od[0]["labels"], json!(["lab", "DDoS"]));
        assert_eq!(
            od[1]["labels"],
            json!(["lab"]),
            "an empty value adds no label"
        );
        assert_eq!(od[2]["labels"], json!(["lab", "7"]));
        // Without literal labels, an empty value means no labels at all.
        s.labels.clear();
        let objs = objects(&run_with(data, &s).1[0]);
        let od = of_type(&objs, "observed-data");
        assert_eq!(od[0]["labels"], json!(["DDoS"]));
        assert!(od[1].get("labels").is_none());
        // The setting shapes the objects: it is part of the digest.
        assert_ne!(s.digest(), settings(10).digest());
    }

    #[test]
    fn rejection_reasons_quote_a_short_excerpt() {
        let huge = "9".repeat(1 << 20);
        let data = format!("src,dst,sport\n1.2.3.4,{huge}x,80\n1.2.3.4,5.6.7.8,{huge}\n");
        let (summary, batches) = run(&data, 10);
        assert_eq!(summary.rows_rejected, 2);
        for (_, reason) in &batches[0].rejected {
            assert!(
                reason.len() < 200,
                "{} bytes: {}",
                reason.len(),
                &reason[..200]
            );
            assert!(
                reason.contains("(1048577 bytes)") || reason.contains("(1048576 bytes)"),
                "{reason}"
            );
        }
        let mut errors = Vec::new();
        describe_rejections(&mut errors, &[(0, "x".repeat(5000))]);
        assert!(
            errors[0].len() < 500 && errors[0].ends_with("(5000 bytes)"),
            "{}",
            errors[0]
        );
    }

    #[test]
    fn protocols_labels_and_placeholders() {
        let (_, batches) = run(
            "src,dst,protocol,label\n1.2.3.4,5.6.7.8,TCP/HTTP,DDoS\n1.2.3.4,5.6.7.8,NULL,0\n",
            10,
        );
        let objs = objects(&batches[0]);
        let flows = of_type(&objs, "network-traffic");
        assert_eq!(flows.len(), 1, "a row without a protocol has no flow");
        assert_eq!(flows[0]["protocols"], json!(["tcp", "http"]));
        let aps = of_type(&objs, "attack-pattern");
        assert_eq!(aps.len(), 1);
        assert_eq!(aps[0]["name"], "DDoS");
        let sightings = of_type(&objs, "sighting");
        assert_eq!(sightings[0]["count"], 1);
        assert_eq!(sightings[0]["sighting_of_ref"], aps[0]["id"]);
        // The benign label and the placeholder protocol stay as data on the second row.
        let od = of_type(&objs, "observed-data");
        let ext = &od[1]["extensions"][extension_definition_id()];
        assert_eq!(ext["extension_type"], "property-extension");
        assert_eq!(
            ext["columns"],
            json!([{"name": "label", "value": 0}, {"name": "protocol", "value": "NULL"}])
        );
    }

    #[test]
    fn addresses_by_value() {
        let (summary, batches) = run(
            "src,dst,protocol\n2001:db8::1,example.com,udp\nAA-BB-CC-DD-EE-FF,10.0.0.1,tcp\n",
            10,
        );
        assert_eq!(summary.rows_rejected, 0);
        let objs = objects(&batches[0]);
        assert_eq!(of_type(&objs, "ipv6-addr").len(), 1);
        assert_eq!(of_type(&objs, "domain-name")[0]["value"], "example.com");
        assert_eq!(of_type(&objs, "mac-addr")[0]["value"], "aa:bb:cc:dd:ee:ff");
        assert_eq!(batches[0].ip_counts.get("2001:db8::1"), Some(&1));
        assert!(!batches[0].ip_counts.contains_key("example.com"));
    }

    #[test]
    fn honeypot_rows() {
        let line = r#"{"time": 1697326037.9948566, "src": "173.214.166.170", "dst": "101.33.192.242", "protocol": "HTTP", "sport": 49420, "dport": 8080, "action": "HTTP_GET", "payload": {"GET": "/"}, "url": "/x?y=1", "attack": "HTTP GET请求访问"}"#;
        let empty = r#"{"time": 1697326037.992695, "src": "173.214.166.170", "dst": "101.33.192.242", "protocol": "TCP", "payload": {}, "url": null}"#;
        let (_, batches) = run(&format!("{line}\n{empty}\n"), 10);
        let objs = objects(&batches[0]);
        assert_eq!(
            of_type(&objs, "url")[0]["value"],
            "http://101.33.192.242:8080/x?y=1"
        );
        let artifacts = of_type(&objs, "artifact");
        assert_eq!(artifacts.len(), 1, "an empty payload is no artifact");
        assert_eq!(artifacts[0]["mime_type"], "application/json");
        let od = of_type(&objs, "observed-data");
        assert_eq!(od[0]["first_observed"], "2023-10-14T23:27:17.994857Z");
        assert_eq!(od[0]["created"], od[0]["first_observed"]);
        let flow = of_type(&objs, "network-traffic")[0];
        assert_eq!(flow["src_payload_ref"], artifacts[0]["id"]);
        assert_eq!(flow["dst_port"], 8080);
    }

    #[test]
    fn every_object_carries_the_marking() {
        use br_cti_domain::vocab::{DataType, Tlp};
        let data = "src,dst,Protocol,label,payload,url\n\
                    8.8.8.8,5.6.7.8,tcp,ddos,abc,/x\n\
                    8.8.4.4,5.6.7.8,udp,0,,\n";
        let mut s = settings(10);
        s.indicators = Some(DataType::MaliciousTraffic.default_indicators());
        s.tlp = Some(Tlp::Amber);
        let (_, batches) = run_with(data, &s);
        let objs = objects(&batches[0]);
        let ids: HashSet<&str> = objs.iter().map(|o| o["id"].as_str().unwrap()).collect();
        for o in &objs {
            let expected = match o["type"].as_str().unwrap() {
                "marking-definition" => continue,
                "identity" | "extension-definition" => Tlp::Clear,
                _ => Tlp::Amber,
            };
            assert_eq!(
                o["object_marking_refs"],
                json!([expected.marking_id()]),
                "{o}"
            );
            assert!(
                ids.contains(expected.marking_id()),
                "the definition is in the file"
            );
        }
        assert!(of_type(&objs, "indicator").len() == 1);
        // Another marking is another indicator (its content differs), the same IOC.
        s.tlp = Some(Tlp::Green);
        let (_, green) = run_with(data, &s);
        let green = objects(&green[0]);
        assert_ne!(
            of_type(&green, "indicator")[0]["id"],
            of_type(&objs, "indicator")[0]["id"]
        );
        assert_eq!(
            of_type(&green, "indicator")[0]["pattern"],
            of_type(&objs, "indicator")[0]["pattern"]
        );
    }

    #[test]
    fn attacks_get_readable_names_and_techniques() {
        let data = "src,dst,Protocol,label,attack\n\
                    1.2.3.4,5.6.7.8,tcp,1,\n\
                    1.2.3.4,5.6.7.8,tcp,,Port Scan\n\
                    1.2.3.4,5.6.7.8,tcp,2,\n";
        let (_, batches) = run(data, 10);
        let objs = objects(&batches[0]);
        let attacks = of_type(&objs, "attack-pattern");
        let by_name = |n: &str| {
            attacks
                .iter()
                .find(|a| a["name"] == n)
                .unwrap_or_else(|| panic!("{n}: {attacks:?}"))
        };
        let ddos = by_name("DDoS flood");
        assert_eq!(ddos["external_references"][0]["external_id"], "T1498");
        assert_eq!(
            ddos["external_references"][0]["url"],
            "https://attack.mitre.org/techniques/T1498/"
        );
        assert_eq!(
            by_name("Port Scan")["external_references"][0]["external_id"],
            "T1046"
        );
        // A label the table does not name keeps its column=value name, without a technique.
        assert!(by_name("label=2").get("external_references").is_none());
    }

    #[test]
    fn indicators_for_the_sources_a_rule_selects() {
        use br_cti_domain::vocab::DataType;
        // Two public sources (one twice, once written in a long IPv6 form), a private one, and
        // a benign row; the label column names the attack.
        let data = "src,dst,Protocol,label\n\
                    8.8.4.4,10.0.0.1,tcp,ddos\n\
                    2606:4700:0:0:0:0:0:1111,10.0.0.1,tcp,ddos\n\
                    2606:4700::1111,10.0.0.1,tcp,portscan\n\
                    192.168.1.9,10.0.0.1,tcp,ddos\n\
                    1.0.0.1,10.0.0.1,tcp,BENIGN\n";
        let mut s = settings(100);
        s.indicators = Some(DataType::MaliciousTraffic.default_indicators());
        let (_, batches) = run_with(data, &s);
        let objs = objects(&batches[0]);
        let ids: HashSet<&str> = objs.iter().map(|o| o["id"].as_str().unwrap()).collect();
        let indicators = of_type(&objs, "indicator");
        let mut patterns: Vec<&str> = indicators
            .iter()
            .map(|i| i["pattern"].as_str().unwrap())
            .collect();
        patterns.sort();
        // The benign row's source and the private address are no indicators.
        assert_eq!(
            patterns,
            [
                "[ipv4-addr:value = '8.8.4.4']",
                "[ipv6-addr:value = '2606:4700::1111']"
            ]
        );
        for i in &indicators {
            assert_eq!(i["pattern_type"], "stix");
            assert_eq!(i["indicator_types"], json!(["malicious-activity"]));
        }
        // Every reference resolves inside the file.
        let relationships = of_type(&objs, "relationship");
        for r in &relationships {
            assert!(ids.contains(r["source_ref"].as_str().unwrap()), "{r}");
            assert!(ids.contains(r["target_ref"].as_str().unwrap()), "{r}");
        }
        let based_on = relationships
            .iter()
            .filter(|r| r["relationship_type"] == "based-on")
            .count();
        assert_eq!(based_on, 2);
        // The IPv6 source attacked twice, naming two attacks.
        let v6 = indicators
            .iter()
            .find(|i| i["pattern"].as_str().unwrap().contains("2606"))
            .unwrap();
        let indicates: Vec<_> = relationships
            .iter()
            .filter(|r| r["relationship_type"] == "indicates" && r["source_ref"] == v6["id"])
            .collect();
        assert_eq!(indicates.len(), 2);
        let sighting = of_type(&objs, "sighting")
            .into_iter()
            .find(|x| x["sighting_of_ref"] == v6["id"])
            .unwrap();
        assert_eq!(sighting["count"], 2);
        assert_eq!(
            sighting["where_sighted_refs"],
            json!([producer_identity_id()])
        );
        assert!(sighting.get("observed_data_refs").is_none());
        assert!(
            sighting["first_seen"].as_str().unwrap() <= sighting["last_seen"].as_str().unwrap()
        );
        // The same IOC in another dataset is the same indicator; without a rule there is none.
        let mut other = settings(100);
        other.source_hash = "cd".repeat(32);
        other.indicators = Some(DataType::Honeypot.default_indicators());
        let (_, again) = run_with("src,dst,Protocol\n8.8.4.4,1.2.3.4,udp\n", &other);
        let again = objects(&again[0]);
        let same = of_type(&again, "indicator");
        assert_eq!(same.len(), 1);
        assert!(indicators.iter().any(|i| i["id"] == same[0]["id"]));
        assert!(
            same[0]
                == *indicators
                    .iter()
                    .find(|i| i["id"] == same[0]["id"])
                    .unwrap()
        );
        let (_, none) = run(data, 100);
        assert!(of_type(&objects(&none[0]), "indicator").is_empty());
    }

    #[test]
    fn output_is_reproducible_and_resumable() {
        let mut csv = String::from("src,dst,Protocol,tot_dur\n");
        for i in 0..250 {
            csv.push_str(&format!(
                "10.0.0.{},10.0.0.{},UDP,{}.0\n",
                i % 7 + 1,
                i % 5 + 1,
                45006000000u64 + i
            ));
        }
        let (_, a) = run(&csv, 100);
        let (_, b) = run(&csv, 100);
        assert_eq!(a.len(), 3);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.bytes, y.bytes);
        }
        // Resuming from batch 1 gives the same later batches.
        let mut sink = Collect::default();
        convert(
            Box::new(Cursor::new(csv.into_bytes())),
            &settings(100),
            1,
            &HashOnly,
            &mut sink,
        )
        .unwrap();
        assert_eq!(sink.0.len(), 2);
        assert_eq!(sink.0[0].index, 1);
        assert_eq!(sink.0[0].bytes, a[1].bytes);
        assert_eq!(sink.0[1].bytes, a[2].bytes);
    }

    /// A CSV of `rows` good rows.
    fn flows(rows: u64) -> String {
        let mut csv = String::from("src,dst,Protocol\n");
        for i in 0..rows {
            csv.push_str(&format!("10.0.{}.{},10.1.0.1,TCP\n", i / 250, i % 250 + 1));
        }
        csv
    }

    /// Fails to store the file of one batch (recognised by its first row's source address).
    struct FailOn(String);

    impl FileStore for FailOn {
        fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile> {
            let text = std::str::from_utf8(bytes).unwrap();
            anyhow::ensure!(!text.contains(&self.0), "disk full");
            HashOnly.store(bytes)
        }
    }

    /// Accepts `n` batches, then fails or asks to stop.
    struct Until {
        n: usize,
        cancel: bool,
        got: Vec<u64>,
    }

    impl BatchSink for Until {
        fn batch(&mut self, batch: Batch) -> anyhow::Result<()> {
            anyhow::ensure!(self.got.len() < self.n, "database gone");
            self.got.push(batch.index);
            Ok(())
        }
        fn cancelled(&self) -> bool {
            self.cancel && self.got.len() >= self.n
        }
    }

    fn run_into(
        csv: &str,
        compress: u64,
        files: &dyn FileStore,
        sink: &mut dyn BatchSink,
    ) -> Result<ConvertSummary, ConvertError> {
        let input = Box::new(Cursor::new(csv.as_bytes().to_vec()));
        convert(input, &settings(compress), 0, files, sink)
    }

    #[test]
    fn a_failure_or_a_cancel_stops_in_order_without_hanging() {
        // Small batches: many more than the window, so the reader must wait for permits.
        let csv = flows(5_000);
        for compress in [10, 1_000, 20_000] {
            // A file that cannot be stored: the batches before it are handed on, none after.
            let mut sink = Until {
                n: usize::MAX,
                cancel: false,
                got: Vec::new(),
            };
            let fail_at = 3.min(5_000 / compress);
            let first_row = fail_at * compress;
            let marker = format!("\"10.0.{}.{}\"", first_row / 250, first_row % 250 + 1);
            let e = run_into(&csv, compress, &FailOn(marker), &mut sink).unwrap_err();
            assert!(e.to_string().contains("disk full"), "{e}");
            assert_eq!(
                sink.got,
                (0..fail_at).collect::<Vec<_>>(),
                "compress {compress}"
            );

            // The sink fails at its third batch.
            let mut sink = Until {
                n: 2,
                cancel: false,
                got: Vec::new(),
            };
            let e = run_into(&csv, compress, &HashOnly, &mut sink);
            if 5_000 / compress > 2 {
                assert!(e.unwrap_err().to_string().contains("database gone"));
                assert_eq!(sink.got, vec![0, 1]);
            } else {
                assert!(e.is_ok());
            }

            // Cancelled after two batches.
            let mut sink = Until {
                n: 2,
                cancel: true,
                got: Vec::new(),
            };
            let summary = run_into(&csv, compress, &HashOnly, &mut sink).unwrap();
            if 5_000 / compress > 2 {
                assert!(summary.cancelled);
                assert_eq!(sink.got, vec![0, 1]);
                assert_eq!(summary.rows_read, 2 * compress);
            } else {
                assert!(!summary.cancelled);
            }
        }
    }
}
