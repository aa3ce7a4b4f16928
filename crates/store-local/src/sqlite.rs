//! The embedded metadata store: one SQLite database in WAL mode, schema versioned by
//! `rusqlite_migration` (PRAGMA user_version) and migrated at open.

use std::io;
use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::job::JobParams;
use br_cti_domain::model::{
    CtiRecord, Fence, FileMeta, HiddenDangerFilter, HiddenDangerRevision, Job, JobKind,
    JobProgress, JobStatus, LeaseState, Publication, ReportClaim, ReportKey, Step, StepState,
    StepStatus, StixRecord, StoredHiddenDanger, TaskRecord, TokenBucket, Upsert, UserInfo,
};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::{
    DataType, IncentiveMechanism, IssueLevel, OpenSource, Tlp, TrafficType,
};
use br_cti_store::{
    CollectionCount, CtiStore, HiddenDangerStore, JOB_STATES, JobStore, RecordStore, StoreError,
    Summary, UploadStore,
};

/// Schema migrations, oldest first. Never edit a released migration: append a new one.
const MIGRATIONS: &[M<'static>] = &[
    M::up(
        "CREATE TABLE files (
         hash          TEXT PRIMARY KEY,
         size          INTEGER NOT NULL,
         original_name TEXT,
         created_at    INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE tasks (
         task_id          TEXT PRIMARY KEY,
         source_file_hash TEXT NOT NULL REFERENCES files(hash),
         created_at       INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX tasks_by_file ON tasks(source_file_hash, created_at);
     CREATE TABLE task_steps (
         task_id    TEXT NOT NULL REFERENCES tasks(task_id) ON DELETE CASCADE,
         step       INTEGER NOT NULL,
         status     TEXT NOT NULL,
         total_num  INTEGER NOT NULL,
         updated_at INTEGER NOT NULL,
         PRIMARY KEY (task_id, step)
     ) STRICT;",
    ),
    M::up(
        "CREATE TABLE jobs (
         id              INTEGER PRIMARY KEY AUTOINCREMENT,
         kind            TEXT NOT NULL,
         file_hash       TEXT NOT NULL REFERENCES files(hash),
         process_id      TEXT NOT NULL,
         params          TEXT NOT NULL,
         status          TEXT NOT NULL,
         total_steps     INTEGER NOT NULL,
         steps_done      INTEGER NOT NULL DEFAULT 0,
         rows_total      INTEGER NOT NULL DEFAULT 0,
         rows_done       INTEGER NOT NULL DEFAULT 0,
         rows_rejected   INTEGER NOT NULL DEFAULT 0,
         objects         INTEGER NOT NULL DEFAULT 0,
         files           INTEGER NOT NULL DEFAULT 0,
         errors          TEXT NOT NULL DEFAULT '[]',
         recent_steps    TEXT NOT NULL DEFAULT '[]',
         message         TEXT,
         cancel_requested INTEGER NOT NULL DEFAULT 0,
         created_at      INTEGER NOT NULL,
         started_at      INTEGER,
         finished_at     INTEGER,
         run_ms          INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     CREATE INDEX jobs_by_file ON jobs(kind, file_hash, id);
     CREATE INDEX jobs_unfinished ON jobs(status) WHERE status IN ('queued', 'running');
     CREATE TABLE stix_records (
         source_file_hash TEXT NOT NULL REFERENCES files(hash),
         stix_file_hash   TEXT NOT NULL,
         job_id           INTEGER NOT NULL REFERENCES jobs(id),
         batch            INTEGER NOT NULL,
         file_size        INTEGER NOT NULL,
         rows             INTEGER NOT NULL,
         objects          INTEGER NOT NULL,
         stix_type        INTEGER NOT NULL,
         stix_tags        TEXT NOT NULL,
         stix_iocs        TEXT NOT NULL,
         ioc_ips_map      TEXT NOT NULL,
         created_at       INTEGER NOT NULL,
         onchain          INTEGER NOT NULL DEFAULT 0,
         cti_file_path    TEXT,
         PRIMARY KEY (source_file_hash, stix_file_hash)
     ) STRICT;",
    ),
    M::up(
        "CREATE TABLE cti_records (
         source_file_hash      TEXT NOT NULL,
         cti_hash              TEXT NOT NULL,
         job_id                INTEGER NOT NULL REFERENCES jobs(id),
         cti_name              TEXT NOT NULL,
         cti_type              INTEGER NOT NULL,
         cti_traffic_type      INTEGER NOT NULL,
         open_source           INTEGER NOT NULL,
         description           TEXT NOT NULL,
         tags                  TEXT NOT NULL,
         iocs                  TEXT NOT NULL,
         value                 REAL NOT NULL,
         incentive_mechanism   INTEGER NOT NULL,
         data_size             INTEGER NOT NULL,
         stix_data             TEXT NOT NULL,
         stix_ipfs_hash        TEXT NOT NULL DEFAULT '',
         statistic_info        TEXT NOT NULL,
         data_source_hash      TEXT NOT NULL,
         data_source_ipfs_hash TEXT NOT NULL DEFAULT '',
         created_at            INTEGER NOT NULL,
         updated_at            INTEGER NOT NULL,
         onchain               INTEGER NOT NULL DEFAULT 0,
         cti_id                TEXT,
         PRIMARY KEY (source_file_hash, cti_hash),
         FOREIGN KEY (source_file_hash, cti_hash) REFERENCES stix_records(source_file_hash, stix_file_hash)
     ) STRICT;",
    ),
    M::up(
        "CREATE TABLE hd_users (
         name       TEXT PRIMARY KEY,
         token      TEXT NOT NULL,
         created_at INTEGER NOT NULL,
         rotated_at INTEGER NOT NULL
     ) STRICT;
     CREATE TABLE hidden_dangers (
         id               INTEGER PRIMARY KEY AUTOINCREMENT,
         user             TEXT NOT NULL,
         risk_id          TEXT NOT NULL,
         revision         INTEGER NOT NULL,
         unit_name        TEXT NOT NULL,
         issue_level      INTEGER NOT NULL,
         judge_state      TEXT NOT NULL,
         notice_state     TEXT NOT NULL,
         addresses        TEXT NOT NULL,
         start_ms         INTEGER NOT NULL,
         end_ms           INTEGER NOT NULL,
         data             TEXT NOT NULL,
         raw_event        TEXT NOT NULL,
         raw_event_sha256 TEXT NOT NULL,
         content_sha256   TEXT NOT NULL,
         created_at       INTEGER NOT NULL,
         updated_at       INTEGER NOT NULL,
         UNIQUE (user, risk_id)
     ) STRICT;
     CREATE INDEX hidden_dangers_by_update ON hidden_dangers(updated_at, id);
     CREATE TABLE hidden_danger_revisions (
         hd_id            INTEGER NOT NULL REFERENCES hidden_dangers(id),
         revision         INTEGER NOT NULL,
         data             TEXT NOT NULL,
         raw_event        TEXT NOT NULL,
         raw_event_sha256 TEXT NOT NULL,
         received_at      INTEGER NOT NULL,
         PRIMARY KEY (hd_id, revision)
     ) STRICT;",
    ),
    M::up(
        "CREATE TABLE taxii_objects (
         seq          INTEGER PRIMARY KEY AUTOINCREMENT,
         collection   TEXT NOT NULL,
         id           TEXT NOT NULL,
         type         TEXT NOT NULL,
         version      TEXT NOT NULL,
         version_us   INTEGER NOT NULL,
         spec_version TEXT NOT NULL,
         date_added   INTEGER NOT NULL,
         is_latest    INTEGER NOT NULL,
         is_first     INTEGER NOT NULL,
         object       TEXT NOT NULL,
         UNIQUE (collection, id, version)
     ) STRICT;
     CREATE INDEX taxii_latest ON taxii_objects(collection, is_latest, seq);
     CREATE INDEX taxii_all ON taxii_objects(collection, seq);
     CREATE INDEX taxii_added ON taxii_objects(collection, date_added);
     CREATE TABLE taxii_status (
         id                TEXT PRIMARY KEY,
         collection        TEXT NOT NULL,
         request_timestamp INTEGER NOT NULL,
         total             INTEGER NOT NULL,
         success_count     INTEGER NOT NULL,
         failure_count     INTEGER NOT NULL,
         successes         TEXT NOT NULL,
         failures          TEXT NOT NULL
     ) STRICT;
     CREATE TABLE taxii_grants (
         user       TEXT NOT NULL,
         collection TEXT NOT NULL,
         PRIMARY KEY (user, collection)
     ) STRICT;
     CREATE TABLE taxii_sync (
         source    TEXT PRIMARY KEY,
         watermark INTEGER NOT NULL
     ) STRICT;
     CREATE INDEX hd_users_by_token ON hd_users(token);",
    ),
    // Attempts are counted before each run (a job that keeps killing the process ends failed),
    // and one unfinished job per kind and file is enforced here, not only checked above. Jobs
    // that raced in before are ended first, the newest kept.
    M::up(
        "ALTER TABLE jobs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
     UPDATE jobs SET status = 'failed', finished_at = CAST(unixepoch('subsec') * 1000 AS INTEGER),
         message = 'superseded: another job of this kind for this file was started at the same time'
     WHERE status IN ('queued', 'running')
       AND id NOT IN (SELECT max(id) FROM jobs WHERE status IN ('queued', 'running') GROUP BY kind, file_hash);
     CREATE UNIQUE INDEX jobs_one_unfinished ON jobs(kind, file_hash) WHERE status IN ('queued', 'running');",
    ),
    // TLP: a TAXII object's most restricted marking (0 clear … 4 red; objects stored before
    // were unmarked, so clear), and the level each user may read (green unless granted).
    M::up(
        "ALTER TABLE taxii_objects ADD COLUMN tlp INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE hd_users ADD COLUMN tlp TEXT NOT NULL DEFAULT 'green';",
    ),
    // The TLP marking of a reporting platform's hidden dangers (NULL: the node's default).
    M::up("ALTER TABLE hd_users ADD COLUMN report_tlp TEXT;"),
    // Leases: the node running a job, a counter of its claims (the fence of its writes) and
    // when the lease ends unless renewed (ms; NULL: never leased, claimable when running).
    M::up(
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
     ALTER TABLE jobs ADD COLUMN lease_epoch INTEGER NOT NULL DEFAULT 0;
     ALTER TABLE jobs ADD COLUMN lease_until INTEGER;",
    ),
    // The report interface's replay protection and rate limits, in the database so that the
    // nodes sharing it share them.
    M::up(
        "CREATE TABLE hd_requests (
         user        TEXT NOT NULL,
         timestamp   TEXT NOT NULL,
         sign        TEXT NOT NULL,
         body_sha256 TEXT NOT NULL,
         outcome     TEXT,
         answer      TEXT,
         expires_ms  INTEGER NOT NULL,
         PRIMARY KEY (user, timestamp, sign)
     ) STRICT;
     CREATE INDEX hd_requests_expiry ON hd_requests(expires_ms);
     CREATE TABLE hd_rate (
         user   TEXT PRIMARY KEY,
         tokens REAL NOT NULL,
         at_ms  INTEGER NOT NULL
     ) STRICT;",
    ),
    // TAXII objects are found by an 8-byte key of (collection, id) instead of the unique
    // text index on (collection, id, version): that index took ids in random order and grew
    // to ~120 bytes an entry, so past a million objects every publishing commit rewrote
    // thousands of its pages (the uniqueness it kept is kept by `taxii_add`, inside the write
    // transaction). SQLite cannot drop a constraint: the table is copied, `seq` and the
    // AUTOINCREMENT counter kept.
    M::up(
        "CREATE TABLE taxii_objects_v2 (
         seq          INTEGER PRIMARY KEY AUTOINCREMENT,
         collection   TEXT NOT NULL,
         id           TEXT NOT NULL,
         id_key       INTEGER NOT NULL,
         type         TEXT NOT NULL,
         version      TEXT NOT NULL,
         version_us   INTEGER NOT NULL,
         spec_version TEXT NOT NULL,
         date_added   INTEGER NOT NULL,
         is_latest    INTEGER NOT NULL,
         is_first     INTEGER NOT NULL,
         object       TEXT NOT NULL,
         tlp          INTEGER NOT NULL DEFAULT 0
     ) STRICT;
     INSERT INTO taxii_objects_v2 (seq, collection, id, id_key, type, version, version_us,
         spec_version, date_added, is_latest, is_first, object, tlp)
     SELECT seq, collection, id, br_cti_taxii_key(collection, id), type, version, version_us,
         spec_version, date_added, is_latest, is_first, object, tlp
     FROM taxii_objects ORDER BY seq;
     UPDATE sqlite_sequence
     SET seq = max(seq, coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'taxii_objects'), 0))
     WHERE name = 'taxii_objects_v2';
     INSERT INTO sqlite_sequence (name, seq)
     SELECT 'taxii_objects_v2', seq FROM sqlite_sequence WHERE name = 'taxii_objects'
       AND NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'taxii_objects_v2');
     DROP TABLE taxii_objects;
     ALTER TABLE taxii_objects_v2 RENAME TO taxii_objects;
     CREATE INDEX taxii_by_key ON taxii_objects(id_key);
     CREATE INDEX taxii_latest ON taxii_objects(collection, is_latest, seq);
     CREATE INDEX taxii_all ON taxii_objects(collection, seq);
     CREATE INDEX taxii_added ON taxii_objects(collection, date_added);",
    ),
    // The object versions of each TAXII collection, kept by `taxii_add` and `taxii_delete` in
    // their transactions: counting 2,000,000 rows took the console's overview 375 ms.
    M::up(
        "CREATE TABLE taxii_counts (
         collection TEXT PRIMARY KEY,
         objects    INTEGER NOT NULL
     ) STRICT;
     INSERT INTO taxii_counts (collection, objects)
     SELECT collection, count(*) FROM taxii_objects GROUP BY collection;",
    ),
    // The IOC registry (`ioc_fold`): each (indicator, STIX file) sighting once, and per
    // indicator what they say together and the `modified` of its current version.
    M::up(
        "CREATE TABLE ioc_sightings (
         indicator  TEXT NOT NULL,
         file_hash  TEXT NOT NULL,
         first_us   INTEGER NOT NULL,
         last_us    INTEGER NOT NULL,
         count      INTEGER NOT NULL,
         confidence INTEGER NOT NULL,
         valid_until_us INTEGER NOT NULL,
         PRIMARY KEY (indicator, file_hash)
     ) STRICT;
     CREATE TABLE iocs (
         indicator    TEXT PRIMARY KEY,
         first_us     INTEGER NOT NULL,
         last_us      INTEGER NOT NULL,
         files        INTEGER NOT NULL,
         observations INTEGER NOT NULL,
         confidence   INTEGER NOT NULL,
         valid_until_us INTEGER NOT NULL,
         modified_us  INTEGER NOT NULL
     ) STRICT;",
    ),
    // Objects of the node's own STIX files are served from the files (`TaxiiBody::InFile`):
    // `body_ref` holds where (44 bytes) and `object` is empty. Copying each line into the
    // database was about a third of the publisher's writing after a conversion.
    M::up("ALTER TABLE taxii_objects ADD COLUMN body_ref BLOB;"),
    // `added_after` is found by a binary search on `seq` (`date_added` grows with it), so the
    // fifth index every publishing commit wrote goes.
    M::up("DROP INDEX taxii_added;"),
    // Pages of the latest versions (TAXII's default) read `(collection, is_latest, seq)`;
    // pages of other versions merge its `is_latest = 0` and `is_latest = 1` ranges by `seq`
    // (`taxii_page`), so the fourth b-tree every publishing commit wrote goes: 2,000,000
    // objects went into the table in 36.5 s instead of 41.2 s (`taxii_floor`).
    M::up("DROP INDEX taxii_all;"),
];

/// The lookup key of a TAXII object: the first 8 bytes of SHA-256 of its collection, a space
/// and its id (a collection id has no space). Keys of different ids may collide; lookups
/// compare the id too. SHA-256 rather than a faster hash because peers choose the ids of the
/// inbox: they cannot aim many ids at one key.
pub(crate) fn taxii_key(collection: &str, id: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(collection.as_bytes());
    h.update(b" ");
    h.update(id.as_bytes());
    let digest = h.finalize();
    i64::from_be_bytes(digest[..8].try_into().expect("8 bytes"))
}

/// Makes `br_cti_taxii_key(collection, id)` callable from SQL (the migration that adds the
/// key computes it for the rows already stored).
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "br_cti_taxii_key",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let collection: String = ctx.get(0)?;
            let id: String = ctx.get(1)?;
            Ok(taxii_key(&collection, &id))
        },
    )
}

pub struct SqliteStore {
    conn: Mutex<Connection>,
    /// The database file (long reads open a connection of their own).
    path: std::path::PathBuf,
    /// The file's device and inode when it was opened: a file deleted or replaced under the
    /// running node is noticed before each use.
    identity: (u64, u64),
    /// A bulk writer's checkpoints (see [`SqliteStore::open_bulk_writer`]).
    checkpointer: Option<Checkpointer>,
}

/// Pages of write-ahead log after which a bulk writer's commit checkpoints by itself, when
/// the background checkpoints have not kept the log short (about 200 MiB; SQLite's default is
/// 1,000 pages).
const BULK_AUTOCHECKPOINT_PAGES: i64 = 50_000;
/// The log a bulk writer leaves on disk once it has been moved into the database.
const BULK_LOG_LIMIT_BYTES: i64 = 64 << 20;
/// A bulk writer's page cache, in KiB (SQLite's negative `cache_size`): 64 MiB, filled only
/// as pages are used. A commit of 100,000 TAXII objects inserts keys all over the `id_key`
/// index (about 20 bytes an entry, some 40 MiB at 2,000,000 objects); in the 32 MiB of other
/// connections its pages were spilled to the log mid-transaction and read back. 128 MiB was
/// no faster (docs/benchmarks.md, "The TAXII lag: one collection index").
const BULK_CACHE_KIB: i64 = 64 << 10;

/// Moves a bulk writer's write-ahead log into the database file on a thread of its own, with a
/// connection of its own, after each of the writer's calls that changed rows: the copy and its
/// syncs then run beside the writer's next transaction instead of inside its commit (a third of
/// the TAXII publisher's time when it checkpointed every commit, 20,000 objects, by itself).
///
/// The thread is started by the writer's first write, from the writer's thread, so it runs at
/// the writer's priority: the publisher lowers its own (nice 10) so that conversions keep the
/// CPU, and a checkpointer started by the node's main thread took it from them.
struct Checkpointer {
    path: std::path::PathBuf,
    /// `None` when the thread could not be started (the writer then checkpoints by itself
    /// past [`BULK_AUTOCHECKPOINT_PAGES`]).
    nudge: std::sync::OnceLock<Option<std::sync::mpsc::SyncSender<()>>>,
}

impl Checkpointer {
    fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            nudge: std::sync::OnceLock::new(),
        }
    }

    fn spawn(path: &Path) -> Result<std::sync::mpsc::SyncSender<()>, StoreError> {
        let conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        // One nudge pending at most: calls made while a checkpoint runs are all served by the
        // next one.
        let (nudge, nudged) = std::sync::mpsc::sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("br-cti-checkpoint".into())
            .spawn(move || {
                // Ends when the writer's store is dropped.
                while nudged.recv().is_ok() {
                    // PASSIVE: as many frames as readers and the writer allow, waiting for
                    // neither; what is left goes with the next nudge.
                    let done = conn
                        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get::<_, i64>(0));
                    if let Err(e) = done {
                        tracing::debug!("background checkpoint: {e}");
                    }
                }
            })
            .map_err(|e| StoreError::Backend(format!("starting the checkpointer: {e}").into()))?;
        Ok(nudge)
    }

    fn nudge(&self) {
        let sender = self.nudge.get_or_init(|| match Self::spawn(&self.path) {
            Ok(sender) => Some(sender),
            Err(e) => {
                tracing::warn!(
                    "no background checkpoints for {} (its writer checkpoints by itself every \
                     {BULK_AUTOCHECKPOINT_PAGES} pages): {e}",
                    self.path.display()
                );
                None
            }
        });
        if let Some(sender) = sender {
            let _ = sender.try_send(());
        }
    }
}

/// Copies the database at `from` into a new file `to`, consistently, while other processes
/// read and write it (SQLite's online backup, a few pages at a time); then checks the copy.
pub fn backup_database(from: &Path, to: &Path) -> Result<(), StoreError> {
    let source = Connection::open_with_flags(
        from,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sql)?;
    source
        .busy_timeout(std::time::Duration::from_secs(10))
        .map_err(sql)?;
    let mut copy = Connection::open(to).map_err(sql)?;
    rusqlite::backup::Backup::new(&source, &mut copy)
        .map_err(sql)?
        .run_to_completion(256, std::time::Duration::from_millis(5), None)
        .map_err(sql)?;
    let check: String = copy
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(sql)?;
    if check != "ok" {
        return Err(StoreError::Conflict(format!(
            "the copy of the database failed its integrity check: {check}"
        )));
    }
    // A backup is one file: no write-ahead log beside it.
    copy.pragma_update(None, "journal_mode", "DELETE")
        .map_err(sql)?;
    drop(copy);
    std::fs::File::open(to)?.sync_all()?;
    Ok(())
}

/// SQLite maps `<db>-shm` into memory and writes `<db>-wal`: one it cannot write (immutable,
/// read-only, not a file) would make it fail late, or crash the process with SIGBUS when the
/// mapped file cannot grow. Refuse to open instead, naming the file.
/// A SQLite error as the storage traits report it: a full disk is [`StoreError::Full`], a
/// stored value that does not parse [`StoreError::Corrupt`].
pub(crate) fn sql(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::DiskFull => {
            StoreError::Full(Box::new(e))
        }
        rusqlite::Error::FromSqlConversionFailure(column, _, cause)
            if cause.is::<Corrupt>() || cause.is::<br_cti_domain::model::BadBodyRef>() =>
        {
            StoreError::Corrupt(format!("column {column}: {cause}"))
        }
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// A stored value that does not parse (never replaced by a default).
#[derive(Debug, thiserror::Error)]
#[error("stored {what} {value:?} does not parse")]
struct Corrupt {
    what: &'static str,
    value: String,
}

/// Reads a text column and parses it; a value that does not parse is an error of the row.
pub(crate) fn parsed<T>(
    r: &rusqlite::Row<'_>,
    column: usize,
    what: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> rusqlite::Result<T> {
    let text: String = r.get(column)?;
    parse(&text).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Text,
            Box::new(Corrupt { what, value: text }),
        )
    })
}

/// Reads a number column and parses it; a value that does not parse is an error of the row.
pub(crate) fn numbered<T>(
    r: &rusqlite::Row<'_>,
    column: usize,
    what: &'static str,
    parse: impl FnOnce(u64) -> Option<T>,
) -> rusqlite::Result<T> {
    let n: i64 = r.get(column)?;
    u64::try_from(n).ok().and_then(parse).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            column,
            rusqlite::types::Type::Integer,
            Box::new(Corrupt {
                what,
                value: n.to_string(),
            }),
        )
    })
}

/// Reads a task step's number.
fn step(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Step> {
    numbered(r, column, "task step", |n| {
        u8::try_from(n).ok().and_then(Step::from_number)
    })
}

/// Reads a hash column.
pub(crate) fn hash(r: &rusqlite::Row<'_>, column: usize) -> rusqlite::Result<Sha256Hex> {
    parsed(r, column, "hash", |t| Sha256Hex::parse(t).ok())
}

/// Reads a JSON text column.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    r: &rusqlite::Row<'_>,
    column: usize,
    what: &'static str,
) -> rusqlite::Result<T> {
    parsed(r, column, what, |t| serde_json::from_str(t).ok())
}

fn check_side_files(db: &Path) -> Result<(), StoreError> {
    for suffix in ["-shm", "-wal"] {
        let mut name = db.as_os_str().to_os_string();
        name.push(suffix);
        let side = std::path::PathBuf::from(name);
        if std::fs::symlink_metadata(&side).is_err() {
            continue;
        }
        // access(2), not open: closing a descriptor of `-shm` would drop every POSIX lock
        // this process holds on it (SQLite's other connections here included), and another
        // process would then take the file for unused and truncate it under our mapping.
        let writable = std::fs::metadata(&side).is_ok_and(|m| m.is_file())
            && rustix::fs::access(&side, rustix::fs::Access::WRITE_OK).is_ok();
        if !writable {
            return Err(StoreError::Conflict(format!(
                "{} exists but cannot be written (immutable, read-only or not a file); the \
                 database cannot be used safely: fix its attributes (`lsattr`, `chattr -i`) or \
                 remove it while no node runs",
                side.display()
            )));
        }
    }
    Ok(())
}

/// The device and inode of a file.
fn file_identity(path: &Path) -> io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        check_side_files(path)?;
        let mut conn = Connection::open(path).map_err(sql)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sql)?;
        // FULL: a commit is on disk before it is acknowledged, also across power loss.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(sql)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        // A page cache of up to 32 MiB per connection (SQLite's default is 2 MiB): a TAXII
        // file of thousands of objects touches four indexes, and with the default cache the
        // transaction spills pages to the log mid-way and reads them back.
        conn.pragma_update(None, "cache_size", -32_768)
            .map_err(sql)?;
        register_functions(&conn).map_err(sql)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|e| StoreError::Backend(format!("migrating the schema: {e}").into()))?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            identity: file_identity(path)?,
            checkpointer: None,
        })
    }

    /// A connection for a writer of large transactions (the TAXII publisher): its commits
    /// leave the write-ahead log to a background checkpoint (see [`Checkpointer`]) and move
    /// it into the database themselves only past [`BULK_AUTOCHECKPOINT_PAGES`]. Durability is
    /// the same (`synchronous = FULL`): only where the copy into the database file happens
    /// changes.
    pub fn open_bulk_writer(path: &Path) -> Result<Self, StoreError> {
        let mut store = Self::open(path)?;
        {
            let conn = store.conn.get_mut().unwrap_or_else(|p| p.into_inner());
            conn.pragma_update(None, "wal_autocheckpoint", BULK_AUTOCHECKPOINT_PAGES)
                .map_err(sql)?;
            conn.pragma_update(None, "journal_size_limit", BULK_LOG_LIMIT_BYTES)
                .map_err(sql)?;
            conn.pragma_update(None, "cache_size", -BULK_CACHE_KIB)
                .map_err(sql)?;
        }
        store.checkpointer = Some(Checkpointer::new(path));
        Ok(store)
    }

    pub(super) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        // SQLite keeps writing to the file it opened, even when that file was deleted or
        // another one put in its place: every acknowledged write would then be lost.
        if file_identity(&self.path).ok() != Some(self.identity) {
            return Err(StoreError::Replaced(self.path.display().to_string()));
        }
        let changes = conn.total_changes();
        let result = f(&mut conn);
        // After writes only: the publisher also polls (watermarks, running jobs) several times
        // a second, and a checkpoint per poll would sync the database file as often.
        if let Some(checkpointer) = &self.checkpointer
            && conn.total_changes() != changes
        {
            checkpointer.nudge();
        }
        result
    }
}

fn load_task(conn: &Connection, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
    let head: Option<(Sha256Hex, i64)> = conn
        .query_row(
            "SELECT source_file_hash, created_at FROM tasks WHERE task_id = ?1",
            [task_id],
            |r| Ok((hash(r, 0)?, r.get(1)?)),
        )
        .optional()
        .map_err(sql)?;
    let Some((source_file_hash, timestamp)) = head else {
        return Ok(None);
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT step, status, total_num FROM task_steps WHERE task_id = ?1 ORDER BY step",
        )
        .map_err(sql)?;
    let step_status = stmt
        .query_map([task_id], |r| {
            Ok(StepStatus {
                step: step(r, 0)?,
                status: parsed(r, 1, "step state", StepState::parse)?,
                total_num: r.get::<_, i64>(2)? as u64,
            })
        })
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    Ok(Some(TaskRecord {
        task_id: task_id.to_string(),
        source_file_hash,
        step_status,
        timestamp,
    }))
}

impl RecordStore for SqliteStore {
    fn checkpoint(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            let (busy, log, done): (i64, i64, i64) = conn
                .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(sql)?;
            if busy != 0 || (log >= 0 && done < log) {
                tracing::warn!(
                    pages = log,
                    checkpointed = done,
                    "the write-ahead log could not be moved into the database file completely"
                );
            }
            Ok(())
        })
    }

    fn check(&self) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.query_row("SELECT count(*) FROM files WHERE rowid = 0", [], |r| {
                r.get::<_, i64>(0)
            })
            .map_err(sql)?;
            Ok(())
        })
    }

    fn summary(&self, since_ms: i64) -> Result<Summary, StoreError> {
        self.with(|conn| {
            // One snapshot for every count.
            let tx = conn.transaction().map_err(sql)?;
            let one = |q: &str, args: &[&dyn rusqlite::ToSql]| -> Result<u64, StoreError> {
                tx.query_row(q, args, |r| r.get::<_, i64>(0))
                    .map(|n| n as u64)
                    .map_err(sql)
            };
            let files = one("SELECT count(*) FROM files", &[])?;
            let stored_bytes = one(
                "SELECT (SELECT coalesce(sum(size), 0) FROM files)
                      + (SELECT coalesce(sum(file_size), 0) FROM stix_records)",
                &[],
            )?;
            let stix_rows_since = one(
                "SELECT coalesce(sum(rows), 0) FROM stix_records WHERE created_at >= ?1",
                &[&since_ms],
            )?;
            let reports_since = one(
                "SELECT count(*) FROM hidden_danger_revisions WHERE received_at >= ?1",
                &[&since_ms],
            )?;
            let mut by_status: Vec<(JobStatus, u64)> = JOB_STATES.iter().map(|s| (*s, 0)).collect();
            {
                let mut stmt = tx
                    .prepare("SELECT status, count(*) FROM jobs GROUP BY status")
                    .map_err(sql)?;
                let rows = stmt
                    .query_map([], |r| {
                        Ok((
                            parsed(r, 0, "job status", JobStatus::parse)?,
                            r.get::<_, i64>(1)? as u64,
                        ))
                    })
                    .map_err(sql)?;
                for row in rows {
                    let (status, n) = row.map_err(sql)?;
                    if let Some(slot) = by_status.iter_mut().find(|(s, _)| *s == status) {
                        slot.1 = n;
                    }
                }
            }
            let taxii = {
                let mut stmt = tx
                    .prepare(
                        // The newest row of either range of `taxii_latest` (`date_added`
                        // grows with `seq`).
                        "SELECT c.collection, c.objects,
                             max(coalesce((SELECT date_added FROM taxii_objects o
                                  WHERE o.collection = c.collection AND o.is_latest = 0
                                  ORDER BY seq DESC LIMIT 1), 0),
                                 coalesce((SELECT date_added FROM taxii_objects o
                                  WHERE o.collection = c.collection AND o.is_latest = 1
                                  ORDER BY seq DESC LIMIT 1), 0))
                         FROM taxii_counts c WHERE c.objects > 0 ORDER BY c.collection",
                    )
                    .map_err(sql)?;
                stmt.query_map([], |r| {
                    Ok(CollectionCount {
                        collection: r.get(0)?,
                        objects: r.get::<_, i64>(1)? as u64,
                        newest_added_us: r.get(2)?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?
            };
            Ok(Summary {
                files,
                stored_bytes,
                jobs: by_status,
                stix_rows_since,
                reports_since,
                taxii,
            })
        })
    }
}

impl UploadStore for SqliteStore {
    fn record_upload(&self, file: &FileMeta, task_id: &str) -> Result<TaskRecord, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            tx.execute(
                "INSERT INTO files (hash, size, original_name, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(hash) DO NOTHING",
                params![
                    file.hash.as_str(),
                    file.size as i64,
                    file.original_name,
                    file.created_at_ms
                ],
            )
            .map_err(sql)?;
            if let Some(existing) = load_task(&tx, task_id)? {
                if existing.source_file_hash != file.hash {
                    return Err(StoreError::TaskConflict {
                        task_id: task_id.to_string(),
                        existing_file: existing.source_file_hash.to_string(),
                    });
                }
                return Ok(existing);
            }
            let now = file.created_at_ms;
            tx.execute(
                "INSERT INTO tasks (task_id, source_file_hash, created_at) VALUES (?1, ?2, ?3)",
                params![task_id, file.hash.as_str(), now],
            )
            .map_err(sql)?;
            for step in Step::ALL {
                let (state, total) = if step == Step::Upload {
                    (StepState::Finished, 1)
                } else {
                    (StepState::Pending, 0)
                };
                tx.execute(
                    "INSERT INTO task_steps (task_id, step, status, total_num, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![task_id, step.number(), state.as_str(), total, now],
                )
                .map_err(sql)?;
            }
            let record = load_task(&tx, task_id)?.expect("inserted in this transaction");
            tx.commit().map_err(sql)?;
            Ok(record)
        })
    }

    fn file(&self, hash: &Sha256Hex) -> Result<Option<FileMeta>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT size, original_name, created_at FROM files WHERE hash = ?1",
                [hash.as_str()],
                |r| {
                    Ok(FileMeta {
                        hash: hash.clone(),
                        size: r.get::<_, i64>(0)? as u64,
                        original_name: r.get(1)?,
                        created_at_ms: r.get(2)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
        })
    }

    fn files(&self, page: (u64, u64)) -> Result<(Vec<FileMeta>, u64), StoreError> {
        let (limit, offset) = limit_offset(Some(page));
        self.with(|conn| {
            let tx = conn.transaction().map_err(sql)?;
            let total: i64 = tx
                .query_row("SELECT count(*) FROM files", [], |r| r.get(0))
                .map_err(sql)?;
            let files = tx
                .prepare(
                    "SELECT hash, size, original_name, created_at FROM files
                     ORDER BY created_at DESC, hash LIMIT ?1 OFFSET ?2",
                )
                .map_err(sql)?
                .query_map([limit, offset], |r| {
                    Ok(FileMeta {
                        hash: hash(r, 0)?,
                        size: r.get::<_, i64>(1)? as u64,
                        original_name: r.get(2)?,
                        created_at_ms: r.get(3)?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            Ok((files, total as u64))
        })
    }

    fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        self.with(|conn| load_task(conn, task_id))
    }

    fn tasks_for_file(&self, hash: &Sha256Hex) -> Result<Vec<TaskRecord>, StoreError> {
        self.with(|conn| {
            let ids: Vec<String> = conn
                .prepare_cached(
                    "SELECT task_id FROM tasks WHERE source_file_hash = ?1 ORDER BY created_at, task_id",
                ).map_err(sql)?
                .query_map([hash.as_str()], |r| r.get(0)).map_err(sql)?
                .collect::<Result<_, _>>().map_err(sql)?;
            let mut out = Vec::with_capacity(ids.len());
            for id in ids {
                out.extend(load_task(conn, &id)?);
            }
            Ok(out)
        })
    }

    fn set_step_for_file(
        &self,
        hash: &Sha256Hex,
        step: Step,
        state: StepState,
        total_num: u64,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE task_steps SET status = ?1, total_num = ?2, updated_at = ?3
                 WHERE step = ?4 AND task_id IN (SELECT task_id FROM tasks WHERE source_file_hash = ?5)",
                params![state.as_str(), total_num as i64, now_ms(), step.number(), hash.as_str()],
            ).map_err(sql)?;
            Ok(())
        })
    }
}

const JOB_COLUMNS: &str = "id, kind, file_hash, process_id, params, status, total_steps, steps_done, rows_total, \
     rows_done, rows_rejected, objects, files, errors, recent_steps, message, cancel_requested, created_at, \
     started_at, finished_at, run_ms, attempts";

fn job_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Job> {
    Ok(Job {
        id: r.get(0)?,
        file_hash: hash(r, 2)?,
        process_id: r.get(3)?,
        params: {
            let kind = parsed(r, 1, "job kind", JobKind::parse)?;
            parsed(r, 4, "job parameters", |t| {
                JobParams::from_json(kind, t).ok()
            })?
        },
        status: parsed(r, 5, "job status", JobStatus::parse)?,
        total_steps: r.get::<_, i64>(6)? as u64,
        rows_total: r.get::<_, i64>(8)? as u64,
        progress: JobProgress {
            steps_done: r.get::<_, i64>(7)? as u64,
            rows_done: r.get::<_, i64>(9)? as u64,
            rows_rejected: r.get::<_, i64>(10)? as u64,
            objects: r.get::<_, i64>(11)? as u64,
            files: r.get::<_, i64>(12)? as u64,
            errors: json(r, 13, "job errors")?,
            recent_steps: json(r, 14, "job recent steps")?,
            run_ms: r.get(20)?,
        },
        message: r.get(15)?,
        cancel_requested: r.get::<_, i64>(16)? != 0,
        created_at: r.get(17)?,
        started_at: r.get(18)?,
        finished_at: r.get(19)?,
        attempts: r.get::<_, i64>(21)?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

const RECORD_COLUMNS: &str = "source_file_hash, stix_file_hash, job_id, batch, file_size, rows, objects, stix_type, \
     stix_tags, stix_iocs, ioc_ips_map, created_at, onchain, cti_file_path";

fn record_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StixRecord> {
    Ok(StixRecord {
        source_file_hash: hash(r, 0)?,
        stix_file_hash: hash(r, 1)?,
        job_id: r.get(2)?,
        batch: r.get::<_, i64>(3)? as u64,
        file_size: r.get::<_, i64>(4)? as u64,
        rows: r.get::<_, i64>(5)? as u64,
        objects: r.get::<_, i64>(6)? as u64,
        stix_type: numbered(r, 7, "STIX type", DataType::from_number)?,
        stix_tags: json(r, 8, "STIX tags")?,
        stix_iocs: json(r, 9, "STIX IOCs")?,
        ioc_ips_map: json(r, 10, "IOC address counts")?,
        created_at: r.get(11)?,
        onchain: r.get::<_, i64>(12)? != 0,
        cti_file_path: r.get(13)?,
    })
}

/// A transaction that takes the write lock at once. A deferred one that reads first would fail
/// with `SQLITE_BUSY` (without waiting) if another connection — the TAXII publisher, the users
/// CLI, another node — committed between its read and its first write.
pub(super) fn write_tx(conn: &mut Connection) -> rusqlite::Result<rusqlite::Transaction<'_>> {
    conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
}

/// SQL `LIMIT`/`OFFSET` of a 1-based page; no page: everything.
fn limit_offset(page: Option<(u64, u64)>) -> (i64, i64) {
    match page {
        Some((page, size)) => (
            size as i64,
            page.saturating_sub(1)
                .saturating_mul(size)
                .min(i64::MAX as u64) as i64,
        ),
        None => (-1, 0),
    }
}

pub(super) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data cannot fail")
}

impl JobStore for SqliteStore {
    fn create_job(
        &self,
        file_hash: &Sha256Hex,
        process_id: &str,
        params: &JobParams,
        total_steps: u64,
        rows_total: u64,
    ) -> Result<Job, StoreError> {
        let kind = params.kind();
        let params = params.to_json();
        let id = self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let unfinished: Option<(i64, String)> = tx
                .query_row(
                    "SELECT id, status FROM jobs WHERE kind = ?1 AND file_hash = ?2
                     AND status IN ('queued', 'running')",
                    params![kind.as_str(), file_hash.as_str()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional().map_err(sql)?;
            if let Some((id, status)) = unfinished {
                return Err(StoreError::Conflict(format!(
                    "job {id} of file {file_hash} is already {status}"
                )));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO jobs (kind, file_hash, process_id, params, status, total_steps, rows_total, created_at)
                 VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
                params![kind.as_str(), file_hash.as_str(), process_id, params, total_steps as i64, rows_total as i64, now],
            ).map_err(sql)?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "UPDATE task_steps SET status = ?1, total_num = ?2, updated_at = ?3
                 WHERE step = ?4 AND task_id IN (SELECT task_id FROM tasks WHERE source_file_hash = ?5)",
                params![StepState::Running.as_str(), total_steps as i64, now, kind.step().number(), file_hash.as_str()],
            ).map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(id)
        })?;
        Ok(self.job(id)?.expect("inserted above"))
    }

    fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?1"),
                [id],
                job_from_row,
            )
            .optional()
            .map_err(sql)
        })
    }

    fn latest_job(&self, kind: JobKind, file_hash: &Sha256Hex) -> Result<Option<Job>, StoreError> {
        self.with(|conn| {
            conn
                .query_row(
                    &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE kind = ?1 AND file_hash = ?2 ORDER BY id DESC LIMIT 1"),
                    params![kind.as_str(), file_hash.as_str()],
                    job_from_row,
                )
                .optional().map_err(sql)
        })
    }

    fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY id"
            )).map_err(sql)?;
            stmt.query_map([], job_from_row)
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)
        })
    }

    fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<(Job, Fence)>, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let now = now_ms();
            let id: Option<i64> = tx
                .query_row(
                    "SELECT id FROM jobs WHERE status IN ('queued', 'running')
                     AND (status = 'queued' OR lease_until IS NULL OR lease_until < ?1)
                     ORDER BY id LIMIT 1",
                    [now],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            let Some(id) = id else {
                return Ok(None);
            };
            let claimed = tx
                .query_row(
                    &format!(
                        "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, ?2),
                             attempts = attempts + 1, lease_owner = ?3,
                             lease_epoch = lease_epoch + 1, lease_until = ?4
                         WHERE id = ?1 RETURNING {JOB_COLUMNS}, lease_epoch"
                    ),
                    params![id, now, owner, now.saturating_add(lease_ms)],
                    |r| Ok((job_from_row(r)?, Fence::from_backend(r.get(22)?))),
                )
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(Some(claimed))
        })
    }

    fn renew_lease(&self, id: i64, fence: Fence, lease_ms: i64) -> Result<LeaseState, StoreError> {
        self.with(|conn| {
            let cancel: Option<i64> = conn
                .query_row(
                    "UPDATE jobs SET lease_until = ?3
                     WHERE id = ?1 AND lease_epoch = ?2 AND status = 'running'
                     RETURNING cancel_requested",
                    params![id, fence.to_backend(), now_ms().saturating_add(lease_ms)],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?;
            Ok(match cancel {
                Some(c) => LeaseState::Held {
                    cancel_requested: c != 0,
                },
                None => LeaseState::Lost,
            })
        })
    }

    fn expire_leases(&self) -> Result<u64, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE jobs SET lease_until = 0 WHERE status = 'running'",
                [],
            )
            .map(|n| n as u64)
            .map_err(sql)
        })
    }

    fn request_cancel(&self, id: i64) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute("UPDATE jobs SET cancel_requested = 1 WHERE id = ?1", [id])
                .map_err(sql)?;
            Ok(())
        })
    }

    fn finish_job(
        &self,
        id: i64,
        fence: Fence,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let n = conn
                .execute(
                    "UPDATE jobs SET status = ?2, message = ?3, finished_at = ?4, lease_until = NULL
                     WHERE id = ?1 AND lease_epoch = ?5",
                    params![id, status.as_str(), message, now_ms(), fence.to_backend()],
                )
                .map_err(sql)?;
            if n == 0 {
                return Err(StoreError::LeaseLost(id));
            }
            Ok(())
        })
    }

    fn commit_stix_steps(
        &self,
        job_id: i64,
        fence: Fence,
        records: &[StixRecord],
        progress: &JobProgress,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            update_progress(&tx, job_id, fence, progress)?;
            for r in records {
                tx.execute(
                    &format!(
                        "INSERT INTO stix_records ({RECORD_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 0, NULL)
                         ON CONFLICT(source_file_hash, stix_file_hash) DO UPDATE SET
                             stix_type = excluded.stix_type, stix_tags = excluded.stix_tags,
                             stix_iocs = excluded.stix_iocs, ioc_ips_map = excluded.ioc_ips_map"
                    ),
                    params![
                        r.source_file_hash.as_str(),
                        r.stix_file_hash.as_str(),
                        r.job_id,
                        r.batch as i64,
                        r.file_size as i64,
                        r.rows as i64,
                        r.objects as i64,
                        r.stix_type.number(),
                        json_text(&r.stix_tags),
                        json_text(&r.stix_iocs),
                        json_text(&r.ioc_ips_map),
                        r.created_at,
                    ],
                ).map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(())
        })
    }

    fn stix_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StixRecord>, u64), StoreError> {
        self.with(|conn| {
            let total: i64 = conn.query_row(
                "SELECT COUNT(*) FROM stix_records WHERE source_file_hash = ?1",
                [file_hash.as_str()],
                |r| r.get(0),
            ).map_err(sql)?;
            let (limit, offset) = limit_offset(page);
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS} FROM stix_records WHERE source_file_hash = ?1 ORDER BY rowid LIMIT ?2 OFFSET ?3"
            )).map_err(sql)?;
            let rows = stmt
                .query_map(params![file_hash.as_str(), limit, offset], record_from_row).map_err(sql)?
                .collect::<Result<Vec<_>, _>>().map_err(sql)?;
            Ok((rows, total as u64))
        })
    }

    fn stix_record(
        &self,
        file_hash: &Sha256Hex,
        stix_hash: &Sha256Hex,
    ) -> Result<Option<StixRecord>, StoreError> {
        self.with(|conn| {
            conn
                .query_row(
                    &format!(
                        "SELECT {RECORD_COLUMNS} FROM stix_records WHERE source_file_hash = ?1 AND stix_file_hash = ?2"
                    ),
                    params![file_hash.as_str(), stix_hash.as_str()],
                    record_from_row,
                )
                .optional().map_err(sql)
        })
    }
}

const CTI_COLUMNS: &str = "source_file_hash, cti_hash, job_id, cti_name, cti_type, cti_traffic_type, open_source, \
     description, tags, iocs, value, incentive_mechanism, data_size, stix_data, stix_ipfs_hash, statistic_info, \
     data_source_hash, data_source_ipfs_hash, created_at, updated_at, onchain, cti_id";

fn cti_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<CtiRecord> {
    Ok(CtiRecord {
        source_file_hash: hash(r, 0)?,
        cti_hash: hash(r, 1)?,
        job_id: r.get(2)?,
        cti_name: r.get(3)?,
        cti_type: numbered(r, 4, "CTI type", DataType::from_number)?,
        cti_traffic_type: numbered(r, 5, "traffic type", TrafficType::from_number)?,
        open_source: numbered(r, 6, "open_source", OpenSource::from_number)?,
        description: r.get(7)?,
        tags: json(r, 8, "CTI tags")?,
        iocs: json(r, 9, "CTI IOCs")?,
        value: r.get(10)?,
        incentive_mechanism: numbered(
            r,
            11,
            "incentive mechanism",
            IncentiveMechanism::from_number,
        )?,
        data_size: r.get::<_, i64>(12)? as u64,
        stix_data: r.get(13)?,
        stix_ipfs_hash: r.get(14)?,
        statistic_info: r.get(15)?,
        data_source_hash: hash(r, 16)?,
        data_source_ipfs_hash: r.get(17)?,
        created_at: r.get(18)?,
        updated_at: r.get(19)?,
        onchain: r.get::<_, i64>(20)? != 0,
        cti_id: r.get(21)?,
    })
}

/// Saves a job's progress if `fence` still holds it; [`StoreError::LeaseLost`] otherwise (the
/// caller's transaction is then dropped: nothing of it is written).
fn update_progress(
    tx: &rusqlite::Transaction<'_>,
    job_id: i64,
    fence: Fence,
    progress: &JobProgress,
) -> Result<(), StoreError> {
    let n = tx.execute(
        "UPDATE jobs SET steps_done = ?2, rows_done = ?3, rows_rejected = ?4, objects = ?5, files = ?6,
             errors = ?7, recent_steps = ?8, run_ms = ?9 WHERE id = ?1 AND lease_epoch = ?10",
        params![
            job_id,
            progress.steps_done as i64,
            progress.rows_done as i64,
            progress.rows_rejected as i64,
            progress.objects as i64,
            progress.files as i64,
            json_text(&progress.errors),
            json_text(&progress.recent_steps),
            progress.run_ms,
            fence.to_backend(),
        ],
    ).map_err(sql)?;
    if n == 0 {
        return Err(StoreError::LeaseLost(job_id));
    }
    Ok(())
}

impl CtiStore for SqliteStore {
    fn commit_cti_steps(
        &self,
        job_id: i64,
        fence: Fence,
        records: &[(CtiRecord, String)],
        progress: &JobProgress,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            update_progress(&tx, job_id, fence, progress)?;
            for (r, cti_file_path) in records {
                tx.execute(
                    &format!(
                        "INSERT INTO cti_records ({CTI_COLUMNS}) VALUES
                             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, '', ?15, ?16, '', ?17, ?17, 0, NULL)
                         ON CONFLICT(source_file_hash, cti_hash) DO UPDATE SET
                             job_id = excluded.job_id, cti_name = excluded.cti_name, cti_type = excluded.cti_type,
                             cti_traffic_type = excluded.cti_traffic_type, open_source = excluded.open_source,
                             description = excluded.description, tags = excluded.tags, iocs = excluded.iocs,
                             value = excluded.value, incentive_mechanism = excluded.incentive_mechanism,
                             data_size = excluded.data_size, stix_data = excluded.stix_data,
                             statistic_info = excluded.statistic_info, data_source_hash = excluded.data_source_hash,
                             updated_at = excluded.updated_at"
                    ),
                    params![
                        r.source_file_hash.as_str(),
                        r.cti_hash.as_str(),
                        job_id,
                        r.cti_name,
                        r.cti_type.number(),
                        r.cti_traffic_type.number(),
                        r.open_source.number(),
                        r.description,
                        json_text(&r.tags),
                        json_text(&r.iocs),
                        r.value,
                        r.incentive_mechanism.number(),
                        r.data_size as i64,
                        r.stix_data,
                        r.statistic_info,
                        r.data_source_hash.as_str(),
                        r.updated_at,
                    ],
                ).map_err(sql)?;
                tx.execute(
                    "UPDATE stix_records SET cti_file_path = ?3 WHERE source_file_hash = ?1 AND stix_file_hash = ?2",
                    params![r.source_file_hash.as_str(), r.cti_hash.as_str(), cti_file_path],
                ).map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(())
        })
    }

    fn cti_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<CtiRecord>, u64), StoreError> {
        self.with(|conn| {
            let total: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM cti_records WHERE source_file_hash = ?1",
                    [file_hash.as_str()],
                    |r| r.get(0),
                )
                .map_err(sql)?;
            let (limit, offset) = limit_offset(page);
            let columns = CTI_COLUMNS
                .split(", ")
                .map(|c| format!("c.{}", c.trim()))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {columns} FROM cti_records c JOIN stix_records s
                     ON s.source_file_hash = c.source_file_hash AND s.stix_file_hash = c.cti_hash
                 WHERE c.source_file_hash = ?1 ORDER BY s.rowid LIMIT ?2 OFFSET ?3"
                ))
                .map_err(sql)?;
            let rows = stmt
                .query_map(params![file_hash.as_str(), limit, offset], cti_from_row)
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            Ok((rows, total as u64))
        })
    }

    fn cti_record(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
    ) -> Result<Option<CtiRecord>, StoreError> {
        self.with(|conn| {
            conn
                .query_row(
                    &format!(
                        "SELECT {CTI_COLUMNS} FROM cti_records WHERE source_file_hash = ?1 AND cti_hash = ?2"
                    ),
                    params![file_hash.as_str(), cti_hash.as_str()],
                    cti_from_row,
                )
                .optional().map_err(sql)
        })
    }

    fn mark_cti_onchain(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
        publication: &Publication,
    ) -> Result<bool, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let changed = tx.execute(
                "UPDATE cti_records SET onchain = 1, cti_id = ?3,
                     stix_ipfs_hash = COALESCE(?4, stix_ipfs_hash),
                     data_source_ipfs_hash = COALESCE(?5, data_source_ipfs_hash), updated_at = ?6
                 WHERE source_file_hash = ?1 AND cti_hash = ?2",
                params![
                    file_hash.as_str(),
                    cti_hash.as_str(),
                    publication.cti_id,
                    publication.stix_ipfs_hash,
                    publication.data_source_ipfs_hash,
                    now_ms()
                ],
            ).map_err(sql)?;
            tx.execute(
                "UPDATE stix_records SET onchain = 1 WHERE source_file_hash = ?1 AND stix_file_hash = ?2",
                params![file_hash.as_str(), cti_hash.as_str()],
            ).map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(changed > 0)
        })
    }
}

pub(super) const HD_COLUMNS: &str =
    "id, user, risk_id, revision, data, raw_event, raw_event_sha256, created_at, updated_at";

pub(super) fn hd_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredHiddenDanger> {
    Ok(StoredHiddenDanger {
        id: r.get(0)?,
        user: r.get(1)?,
        risk_id: r.get(2)?,
        revision: r.get(3)?,
        data: r.get(4)?,
        raw_event: r.get(5)?,
        raw_event_sha256: hash(r, 6)?,
        created_at: r.get(7)?,
        updated_at: r.get(8)?,
    })
}

/// The `WHERE` clause of a hidden-danger filter and its arguments.
fn hd_filter_sql(filter: &HiddenDangerFilter) -> (String, Vec<rusqlite::types::Value>) {
    let mut clauses: Vec<&str> = Vec::new();
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    use rusqlite::types::Value as V;
    if let Some(u) = &filter.user {
        clauses.push("user = ?");
        args.push(V::Text(u.clone()));
    }
    if let Some(u) = &filter.unit_name {
        clauses.push("unit_name = ?");
        args.push(V::Text(u.clone()));
    }
    if let Some(l) = filter.issue_level {
        clauses.push("issue_level = ?");
        args.push(V::Integer(l.number().into()));
    }
    if let Some(j) = &filter.judge_state {
        clauses.push("judge_state = ?");
        args.push(V::Text(j.as_str().to_string()));
    }
    if let Some(n) = &filter.notice_state {
        clauses.push("notice_state = ?");
        args.push(V::Text(n.as_str().to_string()));
    }
    if let Some(t) = filter.since_ms {
        clauses.push("end_ms >= ?");
        args.push(V::Integer(t));
    }
    if let Some(t) = filter.until_ms {
        clauses.push("start_ms <= ?");
        args.push(V::Integer(t));
    }
    if let Some(ip) = &filter.ip {
        clauses.push(
            "(json_extract(data, '$.issueIP') = ? OR EXISTS (SELECT 1 FROM json_each(addresses) WHERE value = ?))",
        );
        args.push(V::Text(ip.clone()));
        args.push(V::Text(ip.clone()));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (filter_sql, args)
}

impl HiddenDangerStore for SqliteStore {
    fn claim_report(
        &self,
        key: &ReportKey<'_>,
        body_sha256: &Sha256Hex,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<ReportClaim, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            tx.execute("DELETE FROM hd_requests WHERE expires_ms < ?1", [now_ms])
                .map_err(sql)?;
            let inserted = tx
                .execute(
                    "INSERT INTO hd_requests (user, timestamp, sign, body_sha256, expires_ms)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                    params![
                        key.user,
                        key.timestamp,
                        key.sign,
                        body_sha256.as_str(),
                        now_ms.saturating_add(ttl_ms)
                    ],
                )
                .map_err(sql)?;
            let claim = if inserted == 1 {
                ReportClaim::Claimed
            } else {
                let (body, outcome, answer): (String, Option<String>, Option<String>) = tx
                    .query_row(
                        "SELECT body_sha256, outcome, answer FROM hd_requests
                         WHERE user = ?1 AND timestamp = ?2 AND sign = ?3",
                        params![key.user, key.timestamp, key.sign],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )
                    .map_err(sql)?;
                ReportClaim::seen(body_sha256, &body, outcome, answer)
            };
            tx.commit().map_err(sql)?;
            Ok(claim)
        })
    }

    fn settle_report(
        &self,
        key: &ReportKey<'_>,
        outcome: &str,
        answer: &str,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE hd_requests SET outcome = ?4, answer = ?5
                 WHERE user = ?1 AND timestamp = ?2 AND sign = ?3",
                params![key.user, key.timestamp, key.sign, outcome, answer],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    fn release_report(&self, key: &ReportKey<'_>) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "DELETE FROM hd_requests WHERE user = ?1 AND timestamp = ?2 AND sign = ?3",
                params![key.user, key.timestamp, key.sign],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    fn take_report_token(
        &self,
        user: &str,
        bucket: TokenBucket,
        now_ms: i64,
    ) -> Result<Result<(), f64>, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let state: Option<(f64, i64)> = tx
                .query_row(
                    "SELECT tokens, at_ms FROM hd_rate WHERE user = ?1",
                    [user],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()
                .map_err(sql)?;
            let ((tokens, at), taken) = bucket.take(state, now_ms);
            tx.execute(
                "INSERT INTO hd_rate (user, tokens, at_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT(user) DO UPDATE SET tokens = excluded.tokens, at_ms = excluded.at_ms",
                params![user, tokens, at],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(taken)
        })
    }

    fn add_user(&self, name: &str, token: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            let now = now_ms();
            let n = conn.execute(
                "INSERT INTO hd_users (name, token, created_at, rotated_at) VALUES (?1, ?2, ?3, ?3)
                 ON CONFLICT(name) DO NOTHING",
                params![name, token, now],
            ).map_err(sql)?;
            if n == 0 {
                return Err(StoreError::Conflict(format!(
                    "user {name:?} exists already"
                )));
            }
            Ok(())
        })
    }

    fn user_token(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT token FROM hd_users WHERE name = ?1")
                .map_err(sql)?
                .query_row([name], |r| r.get(0))
                .optional()
                .map_err(sql)
        })
    }

    fn users(&self) -> Result<Vec<UserInfo>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare("SELECT name, created_at, rotated_at, tlp FROM hd_users ORDER BY name")
                .map_err(sql)?;
            stmt.query_map([], |r| {
                Ok(UserInfo {
                    name: r.get(0)?,
                    created_at: r.get(1)?,
                    rotated_at: r.get(2)?,
                    tlp: parsed(r, 3, "user TLP level", Tlp::from_word)?,
                })
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)
        })
    }

    fn rotate_user(&self, name: &str, token: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .execute(
                    "UPDATE hd_users SET token = ?2, rotated_at = ?3 WHERE name = ?1",
                    params![name, token, now_ms()],
                )
                .map_err(sql)?
                > 0)
        })
    }

    fn report_tlp(&self, name: &str) -> Result<Option<Tlp>, StoreError> {
        self.with(|conn| {
            let text: Option<Option<String>> = conn
                .prepare_cached("SELECT report_tlp FROM hd_users WHERE name = ?1")
                .map_err(sql)?
                .query_row([name], |r| r.get(0))
                .optional()
                .map_err(sql)?;
            match text.flatten() {
                None => Ok(None),
                Some(t) => Tlp::from_word(&t).map(Some).ok_or_else(|| {
                    StoreError::Corrupt(format!("stored report TLP level {t:?} does not parse"))
                }),
            }
        })
    }

    fn set_report_tlp(&self, name: &str, tlp: Option<Tlp>) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE hd_users SET report_tlp = ?2 WHERE name = ?1",
                params![name, tlp.map(Tlp::as_str)],
            )
            .map(|n| n == 1)
            .map_err(sql)
        })
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            tx.execute("DELETE FROM taxii_grants WHERE user = ?1", [name])
                .map_err(sql)?;
            let n = tx
                .execute("DELETE FROM hd_users WHERE name = ?1", [name])
                .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(n > 0)
        })
    }

    fn upsert_hidden_dangers(
        &self,
        user: &str,
        items: &[br_cti_domain::hidden_danger::HiddenDanger],
    ) -> Result<Vec<Upsert>, StoreError> {
        // Serialise and hash outside the lock. "Unchanged" is the domain's rule: the same
        // content digest as the stored record.
        let prepared: Vec<(String, String, String, String)> = items
            .iter()
            .map(|hd| {
                (
                    hd.fields_json(),
                    hd.raw_event_sha256(),
                    hd.content_digest(),
                    json_text(&hd.addresses()),
                )
            })
            .collect();
        self.with(|conn| {
            let now = now_ms();
            let tx = write_tx(conn).map_err(sql)?;
            let mut out = Vec::with_capacity(items.len());
            {
                let mut find = tx.prepare_cached(
                    "SELECT id, revision, content_sha256 FROM hidden_dangers WHERE user = ?1 AND risk_id = ?2",
                ).map_err(sql)?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO hidden_dangers (user, risk_id, revision, unit_name, issue_level, judge_state,
                         notice_state, addresses, start_ms, end_ms, data, raw_event, raw_event_sha256,
                         content_sha256, created_at, updated_at)
                     VALUES (?1, ?2, 1, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?14)",
                ).map_err(sql)?;
                let mut update = tx.prepare_cached(
                    "UPDATE hidden_dangers SET revision = ?2, unit_name = ?3, issue_level = ?4, judge_state = ?5,
                         notice_state = ?6, addresses = ?7, start_ms = ?8, end_ms = ?9, data = ?10,
                         raw_event = ?11, raw_event_sha256 = ?12, content_sha256 = ?13, updated_at = ?14
                     WHERE id = ?1",
                ).map_err(sql)?;
                let mut revision = tx.prepare_cached(
                    "INSERT INTO hidden_danger_revisions (hd_id, revision, data, raw_event, raw_event_sha256, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                ).map_err(sql)?;
                for (hd, (data, raw_sha, content, addresses)) in items.iter().zip(&prepared) {
                    let existing: Option<(i64, i64, String)> = find
                        .query_row(params![user, hd.risk_id], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                        })
                        .optional().map_err(sql)?;
                    let (id, rev, outcome) = match existing {
                        Some((_, _, old)) if &old == content => {
                            out.push(Upsert::Unchanged);
                            continue;
                        }
                        Some((id, rev, _)) => {
                            update.execute(params![
                                id,
                                rev + 1,
                                hd.unit_name,
                                hd.issue_level.number(),
                                hd.judge_state.as_str(),
                                hd.notice_state.as_str(),
                                addresses,
                                hd.start_ms,
                                hd.end_ms,
                                data,
                                hd.raw_event,
                                raw_sha,
                                content,
                                now
                            ]).map_err(sql)?;
                            (id, rev + 1, Upsert::Updated)
                        }
                        None => {
                            insert.execute(params![
                                user,
                                hd.risk_id,
                                hd.unit_name,
                                hd.issue_level.number(),
                                hd.judge_state.as_str(),
                                hd.notice_state.as_str(),
                                addresses,
                                hd.start_ms,
                                hd.end_ms,
                                data,
                                hd.raw_event,
                                raw_sha,
                                content,
                                now
                            ]).map_err(sql)?;
                            (tx.last_insert_rowid(), 1, Upsert::Created)
                        }
                    };
                    revision.execute(params![id, rev, data, hd.raw_event, raw_sha, now]).map_err(sql)?;
                    out.push(outcome);
                }
            }
            tx.commit().map_err(sql)?;
            Ok(out)
        })
    }

    fn hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StoredHiddenDanger>, u64), StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        use rusqlite::types::Value as V;
        let (limit, offset) = limit_offset(page);
        self.with(|conn| {
            let total: i64 = conn.query_row(
                &format!("SELECT COUNT(*) FROM hidden_dangers {filter_sql}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            ).map_err(sql)?;
            let mut page_args = args.clone();
            page_args.push(V::Integer(limit));
            page_args.push(V::Integer(offset));
            let mut stmt = conn.prepare(&format!(
                "SELECT {HD_COLUMNS} FROM hidden_dangers {filter_sql} ORDER BY updated_at DESC, id DESC LIMIT ? OFFSET ?"
            )).map_err(sql)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(page_args.iter()), hd_from_row).map_err(sql)?
                .collect::<Result<Vec<_>, _>>().map_err(sql)?;
            Ok((rows, total as u64))
        })
    }

    fn hidden_danger_counts(
        &self,
        filter: &HiddenDangerFilter,
    ) -> Result<Vec<(String, IssueLevel, u64)>, StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        self.with(|conn| {
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT user, issue_level, count(*) FROM hidden_dangers {filter_sql}
                     GROUP BY user, issue_level ORDER BY user, issue_level"
                ))
                .map_err(sql)?;
            stmt.query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok((
                    r.get(0)?,
                    numbered(r, 1, "issue level", IssueLevel::from_number)?,
                    r.get::<_, i64>(2)? as u64,
                ))
            })
            .map_err(sql)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql)
        })
    }

    fn scan_hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        f: &mut dyn FnMut(StoredHiddenDanger) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        // A connection of its own: one statement reads one snapshot (WAL), and the store's
        // connection stays free for reports and pages meanwhile.
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(sql)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(sql)?;
        let mut stmt = conn.prepare(&format!(
            "SELECT {HD_COLUMNS} FROM hidden_dangers {filter_sql} ORDER BY updated_at DESC, id DESC"
        )).map_err(sql)?;
        let mut rows = stmt
            .query(rusqlite::params_from_iter(args.iter()))
            .map_err(sql)?;
        while let Some(row) = rows.next().map_err(sql)? {
            f(hd_from_row(row).map_err(sql)?)?;
        }
        Ok(())
    }

    fn hidden_danger(
        &self,
        user: &str,
        risk_id: &str,
    ) -> Result<Option<(StoredHiddenDanger, Vec<HiddenDangerRevision>)>, StoreError> {
        self.with(|conn| {
            let Some(hd) = conn
                .query_row(
                    &format!(
                        "SELECT {HD_COLUMNS} FROM hidden_dangers WHERE user = ?1 AND risk_id = ?2"
                    ),
                    params![user, risk_id],
                    hd_from_row,
                )
                .optional()
                .map_err(sql)?
            else {
                return Ok(None);
            };
            let mut stmt = conn.prepare_cached(
                "SELECT revision, data, raw_event_sha256, received_at FROM hidden_danger_revisions
                 WHERE hd_id = ?1 ORDER BY revision",
            ).map_err(sql)?;
            let revisions = stmt
                .query_map([hd.id], |r| {
                    Ok(HiddenDangerRevision {
                        revision: r.get(0)?,
                        data: r.get(1)?,
                        raw_event_sha256: hash(r, 2)?,
                        received_at: r.get(3)?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            Ok(Some((hd, revisions)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_files_that_cannot_be_written_are_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("br-cti.sqlite");
        drop(SqliteStore::open(&db).unwrap());
        // Not a file where SQLite maps its shared memory.
        std::fs::create_dir(dir.path().join("br-cti.sqlite-shm")).unwrap();
        let err = SqliteStore::open(&db).err().expect("refused").to_string();
        assert!(
            err.contains("br-cti.sqlite-shm exists but cannot be written"),
            "{err}"
        );
        std::fs::remove_dir(dir.path().join("br-cti.sqlite-shm")).unwrap();
        SqliteStore::open(&db).unwrap();
    }

    fn meta(byte: char) -> FileMeta {
        FileMeta {
            hash: Sha256Hex::parse(&byte.to_string().repeat(64)).unwrap(),
            size: 10,
            original_name: Some("a.csv".into()),
            created_at_ms: 1_700_000_000_000,
        }
    }

    #[test]
    fn migrations_are_valid() {
        let mut conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .unwrap();
    }

    /// The migration to keyed TAXII objects keeps every row, its position, and the counter
    /// of positions (a deleted last row's position is not handed out again).
    #[test]
    fn taxii_key_migration_keeps_rows_and_positions() {
        let mut conn = Connection::open_in_memory().unwrap();
        register_functions(&conn).unwrap();
        let migrations = Migrations::from_slice(MIGRATIONS);
        migrations.to_version(&mut conn, 10).unwrap();
        for (i, id) in ["indicator--a", "indicator--b", "indicator--c"]
            .iter()
            .enumerate()
        {
            conn.execute(
                "INSERT INTO taxii_objects (collection, id, type, version, version_us, spec_version,
                     date_added, is_latest, is_first, object, tlp)
                 VALUES ('c1', ?1, 'indicator', 'v', 1, '2.1', ?2, 1, 1, '{}', 2)",
                params![id, i as i64],
            )
            .unwrap();
        }
        conn.execute("DELETE FROM taxii_objects WHERE id = 'indicator--c'", [])
            .unwrap();
        migrations.to_latest(&mut conn).unwrap();
        // The collection's count starts from the rows there (migration 12).
        let counted: i64 = conn
            .query_row(
                "SELECT objects FROM taxii_counts WHERE collection = 'c1'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(counted, 2);
        let rows: Vec<(i64, String, i64, i64)> = conn
            .prepare("SELECT seq, id, id_key, tlp FROM taxii_objects ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            vec![
                (1, "indicator--a".into(), taxii_key("c1", "indicator--a"), 2),
                (2, "indicator--b".into(), taxii_key("c1", "indicator--b"), 2),
            ]
        );
        conn.execute(
            "INSERT INTO taxii_objects (collection, id, id_key, type, version, version_us,
                 spec_version, date_added, is_latest, is_first, object)
             VALUES ('c1', 'indicator--d', 0, 'indicator', 'v', 1, '2.1', 9, 1, 1, '{}')",
            [],
        )
        .unwrap();
        assert_eq!(conn.last_insert_rowid(), 4);
        let names: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_sequence WHERE name LIKE 'taxii%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(names, 1);
    }

    #[test]
    fn taxii_keys_differ_by_collection_and_id() {
        let k = taxii_key("c1", "indicator--a");
        assert_eq!(k, taxii_key("c1", "indicator--a"));
        assert_ne!(k, taxii_key("c2", "indicator--a"));
        assert_ne!(k, taxii_key("c1", "indicator--b"));
    }

    /// A stored value that does not parse is an error naming it, never a default.
    #[test]
    fn corrupt_values_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(&dir.path().join("m.sqlite")).unwrap();
        let a = meta('a');
        db.record_upload(&a, "t").unwrap();
        let job = db
            .create_job(&a.hash, "p", &br_cti_domain::testing::stix_params(), 1, 1)
            .unwrap();
        db.with(|conn| {
            conn.execute(
                "UPDATE jobs SET status = 'exploded' WHERE id = ?1",
                [job.id],
            )
            .map_err(sql)
        })
        .unwrap();
        let err = db.job(job.id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("\"exploded\""), "{err}");
        // Parameters outside their vocabulary (a data type 9) are not read as something else.
        let params = br_cti_domain::testing::stix_params()
            .to_json()
            .replace("\"stix_type\":2", "\"stix_type\":9");
        db.with(|conn| {
            conn.execute(
                "UPDATE jobs SET status = 'queued', params = ?2 WHERE id = ?1",
                rusqlite::params![job.id, params],
            )
            .map_err(sql)
        })
        .unwrap();
        let err = db.job(job.id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("job parameters"), "{err}");
    }

    #[test]
    fn reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        {
            let db = SqliteStore::open(&path).unwrap();
            db.record_upload(&meta('a'), "t").unwrap();
        }
        let db = SqliteStore::open(&path).unwrap();
        assert!(db.task("t").unwrap().is_some());
    }
}
