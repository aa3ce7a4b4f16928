//! The PostgreSQL backend of the record traits (`br-cti-store`): what the embedded SQLite
//! database holds, in one PostgreSQL database that several nodes share.
//!
//! The traits are synchronous (the jobs run on threads of their own and the handlers call the
//! store through `spawn_blocking`), so this backend uses the blocking `postgres` client and an
//! `r2d2` pool of its connections: no second async runtime bridged into synchronous calls.
//!
//! Orders that readers page through with a "greater than the last position" cursor (TAXII
//! objects, the STIX records and hidden-danger revisions that the publisher follows) are
//! handed out under a transaction-scoped advisory lock, one per order: the next writer of that
//! order takes its positions only after the previous one committed, so a reader never pages
//! past a position whose row commits later. Other writes run concurrently.

mod hidden;
mod records;
mod taxii;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

use std::str::FromStr;
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::FromSql;
use postgres::{Client, NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::JobStatus;
use br_cti_store::{CollectionCount, JOB_STATES, RecordStore, StoreError, Summary};

/// Schema migrations, oldest first. Never edit a released migration: append a new one.
const MIGRATIONS: &[&str] = &[
    include_str!("schema_v1.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
    include_str!("schema_v7.sql"),
    include_str!("schema_v8.sql"),
];

/// Advisory lock keys (the ASCII of "br-cti" and a number).
mod lock {
    /// Held by the node that migrates the schema, so that nodes starting together take turns.
    pub(crate) const MIGRATE: i64 = 0x6272_2d63_7469_0001;
    /// The order of TAXII objects (`seq`, `date_added`).
    pub(crate) const TAXII: i64 = 0x6272_2d63_7469_0002;
    /// The order of STIX records (what the publisher follows).
    pub(crate) const STIX_RECORDS: i64 = 0x6272_2d63_7469_0003;
    /// Hidden dangers and the order of their revisions.
    pub(crate) const HIDDEN_DANGERS: i64 = 0x6272_2d63_7469_0004;
    /// The IOC registry (its folds read, then write, an indicator's state).
    pub(crate) const IOCS: i64 = 0x6272_2d63_7469_0005;
}

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;
type Conn = r2d2::PooledConnection<PostgresConnectionManager<NoTls>>;

/// The records of one node or of several, in a PostgreSQL database.
pub struct PgStore {
    pool: Pool,
    /// Where the database is, for messages (no password).
    target: String,
    /// TAXII rows this process added since it last refreshed the table's statistics.
    taxii_unanalyzed: std::sync::atomic::AtomicU64,
    /// The TAXII table's rows when this process last analysed it (PostgreSQL's estimate).
    taxii_analyzed_rows: std::sync::atomic::AtomicU64,
}

/// How to reach the database and how many connections to keep.
#[derive(Clone, Debug)]
pub struct PgOptions {
    /// Connections this process may hold at once.
    pub pool_size: u32,
    /// How long a caller waits for a connection before the call fails.
    pub connect_timeout: Duration,
    /// The schema to use (`search_path`); `None`: the user's default (`public`).
    pub schema: Option<String>,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            connect_timeout: Duration::from_secs(10),
            schema: None,
        }
    }
}

/// Where a connection string points, without its password.
fn describe(config: &postgres::Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .collect();
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{}:{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        port,
        config.get_dbname().unwrap_or("")
    )
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/dbname`, or the
    /// key=value form) and brings its schema up to date.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, &PgOptions::default())
    }

    pub fn open_with(url: &str, options: &PgOptions) -> Result<Self, StoreError> {
        let mut config = postgres::Config::from_str(url).map_err(|e| {
            StoreError::Backend(format!("the database URL does not parse: {e}").into())
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(options.connect_timeout);
        }
        if let Some(schema) = &options.schema {
            config.options(&format!("-c search_path={schema}"));
        }
        let target = describe(&config);
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(options.pool_size.max(1))
            .min_idle(Some(1))
            .connection_timeout(options.connect_timeout)
            .build(manager)
            .map_err(|e| unreachable_db(&target, e))?;
        let store = Self {
            pool,
            target,
            taxii_unanalyzed: std::sync::atomic::AtomicU64::new(0),
            taxii_analyzed_rows: std::sync::atomic::AtomicU64::new(0),
        };
        store.migrate()?;
        Ok(store)
    }

    /// Where the database is (no password).
    pub fn target(&self) -> &str {
        &self.target
    }

    fn conn(&self) -> Result<Conn, StoreError> {
        self.pool.get().map_err(|e| unreachable_db(&self.target, e))
    }

    /// Applies the migrations this database has not had, under an advisory lock: of nodes
    /// starting together one migrates, the others wait and find it done.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.execute("SELECT pg_advisory_lock($1)", &[&lock::MIGRATE])
            .map_err(pg)?;
        let result = apply_migrations(&mut conn);
        let unlocked = conn.execute("SELECT pg_advisory_unlock($1)", &[&lock::MIGRATE]);
        result?;
        unlocked.map_err(pg)?;
        Ok(())
    }

    /// The schema version of the database (migrations applied).
    pub fn schema_version(&self) -> Result<usize, StoreError> {
        let mut conn = self.conn()?;
        let v: Option<i64> = conn
            .query_one("SELECT max(version) FROM br_cti_schema", &[])
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        Ok(v.unwrap_or(0) as usize)
    }
}

fn apply_migrations(conn: &mut Client) -> Result<(), StoreError> {
    conn.batch_execute("CREATE TABLE IF NOT EXISTS br_cti_schema (version BIGINT PRIMARY KEY)")
        .map_err(pg)?;
    let current: Option<i64> = conn
        .query_one("SELECT max(version) FROM br_cti_schema", &[])
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    let current = current.unwrap_or(0) as usize;
    if current > MIGRATIONS.len() {
        return Err(StoreError::Conflict(format!(
            "the database's schema is version {current}, newer than this build knows ({}): run \
             the newer br-cti",
            MIGRATIONS.len()
        )));
    }
    for (i, migration) in MIGRATIONS.iter().enumerate().skip(current) {
        let mut tx = conn.transaction().map_err(pg)?;
        tx.batch_execute(migration).map_err(|e| {
            StoreError::Backend(format!("migrating the schema to version {}: {e}", i + 1).into())
        })?;
        tx.execute(
            "INSERT INTO br_cti_schema (version) VALUES ($1)",
            &[&((i + 1) as i64)],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        tracing::info!(version = i + 1, "database schema migrated");
    }
    Ok(())
}

fn unreachable_db(target: &str, e: r2d2::Error) -> StoreError {
    StoreError::Backend(format!("cannot reach the database {target}: {e}").into())
}

/// A PostgreSQL error as the storage traits report it: a full disk is [`StoreError::Full`].
pub(crate) fn pg(e: postgres::Error) -> StoreError {
    match e.code() {
        Some(code) if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY => {
            StoreError::Full(Box::new(e))
        }
        // "invalid byte sequence for encoding UTF8: 0x00": a text value holding U+0000.
        Some(code) if *code == SqlState::CHARACTER_NOT_IN_REPERTOIRE => StoreError::Unstorable(
            "a text value holds the character U+0000 (NUL), which is not accepted".into(),
        ),
        _ => StoreError::Backend(Box::new(e)),
    }
}

/// True when the error is a unique-constraint violation.
pub(crate) fn is_unique_violation(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::UNIQUE_VIOLATION)
}

/// Reads a column.
pub(crate) fn get<'a, T: FromSql<'a>>(r: &'a Row, column: usize) -> Result<T, StoreError> {
    r.try_get(column).map_err(pg)
}

/// Reads a non-negative count column.
pub(crate) fn count(r: &Row, column: usize) -> Result<u64, StoreError> {
    let n: i64 = get(r, column)?;
    u64::try_from(n).map_err(|_| corrupt(column, "count", &n.to_string()))
}

fn corrupt(column: usize, what: &str, value: &str) -> StoreError {
    StoreError::Corrupt(format!(
        "column {column}: stored {what} {value:?} does not parse"
    ))
}

/// Reads a text column and parses it; a value that does not parse is [`StoreError::Corrupt`],
/// never a default.
pub(crate) fn parsed<T>(
    r: &Row,
    column: usize,
    what: &'static str,
    parse: impl FnOnce(&str) -> Option<T>,
) -> Result<T, StoreError> {
    let text: String = get(r, column)?;
    parse(&text).ok_or_else(|| corrupt(column, what, &text))
}

/// Reads a number column and parses it.
pub(crate) fn numbered<T>(
    r: &Row,
    column: usize,
    what: &'static str,
    parse: impl FnOnce(u64) -> Option<T>,
) -> Result<T, StoreError> {
    let n: i64 = get(r, column)?;
    u64::try_from(n)
        .ok()
        .and_then(parse)
        .ok_or_else(|| corrupt(column, what, &n.to_string()))
}

/// Reads a hash column.
pub(crate) fn hash(r: &Row, column: usize) -> Result<Sha256Hex, StoreError> {
    parsed(r, column, "hash", |t| Sha256Hex::parse(t).ok())
}

/// Reads a JSON text column.
pub(crate) fn json<T: serde::de::DeserializeOwned>(
    r: &Row,
    column: usize,
    what: &'static str,
) -> Result<T, StoreError> {
    parsed(r, column, what, |t| serde_json::from_str(t).ok())
}

pub(crate) fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("serialising plain data cannot fail")
}

/// `LIMIT`/`OFFSET` of a 1-based page; no page: everything (`LIMIT NULL`).
/// A read-only transaction that sees one snapshot (counts and pages that agree).
pub(crate) fn snapshot(conn: &mut Conn) -> Result<postgres::Transaction<'_>, StoreError> {
    conn.build_transaction()
        .isolation_level(postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .map_err(pg)
}

pub(crate) fn limit_offset(page: Option<(u64, u64)>) -> (Option<i64>, i64) {
    match page {
        Some((page, size)) => (
            Some(size.min(i64::MAX as u64) as i64),
            page.saturating_sub(1)
                .saturating_mul(size)
                .min(i64::MAX as u64) as i64,
        ),
        None => (None, 0),
    }
}

/// Takes an advisory lock until the transaction ends.
pub(crate) fn xact_lock(tx: &mut postgres::Transaction<'_>, key: i64) -> Result<(), StoreError> {
    // The simple protocol: one round trip (a statement with parameters takes two, prepare and
    // execute), and the keys are this crate's constants.
    tx.batch_execute(&format!("SELECT pg_advisory_xact_lock({key})"))
        .map_err(pg)?;
    Ok(())
}

impl RecordStore for PgStore {
    fn check(&self) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        conn.query("SELECT 1 FROM files LIMIT 0", &[]).map_err(pg)?;
        Ok(())
    }

    /// Every commit is already in the database (PostgreSQL's own log and checkpoints).
    fn checkpoint(&self) -> Result<(), StoreError> {
        Ok(())
    }

    fn summary(&self, since_ms: i64) -> Result<Summary, StoreError> {
        let mut conn = self.conn()?;
        // One snapshot for every count.
        let mut tx = snapshot(&mut conn)?;
        let files = count(
            &tx.query_one("SELECT count(*) FROM files", &[])
                .map_err(pg)?,
            0,
        )?;
        let stored_bytes: i64 = get(
            &tx.query_one(
                "SELECT ((SELECT coalesce(sum(size), 0) FROM files)
                       + (SELECT coalesce(sum(file_size), 0) FROM stix_records))::BIGINT",
                &[],
            )
            .map_err(pg)?,
            0,
        )?;
        let stix_rows_since: i64 = get(
            &tx.query_one(
                "SELECT coalesce(sum(rows), 0)::BIGINT FROM stix_records WHERE created_at >= $1",
                &[&since_ms],
            )
            .map_err(pg)?,
            0,
        )?;
        let reports_since = count(
            &tx.query_one(
                "SELECT count(*) FROM hidden_danger_revisions WHERE received_at >= $1",
                &[&since_ms],
            )
            .map_err(pg)?,
            0,
        )?;
        let mut jobs: Vec<(JobStatus, u64)> = JOB_STATES.iter().map(|s| (*s, 0)).collect();
        for r in tx
            .query("SELECT status, count(*) FROM jobs GROUP BY status", &[])
            .map_err(pg)?
        {
            let status = parsed(&r, 0, "job status", JobStatus::parse)?;
            let n = count(&r, 1)?;
            if let Some(slot) = jobs.iter_mut().find(|(s, _)| *s == status) {
                slot.1 = n;
            }
        }
        let mut taxii = Vec::new();
        for r in tx
            .query(
                "SELECT c.collection, c.objects,
                        (SELECT max(date_added) FROM taxii_objects o
                         WHERE o.collection = c.collection)
                 FROM taxii_counts c WHERE c.objects > 0 ORDER BY c.collection",
                &[],
            )
            .map_err(pg)?
        {
            taxii.push(CollectionCount {
                collection: get(&r, 0)?,
                objects: count(&r, 1)?,
                newest_added_us: get(&r, 2)?,
            });
        }
        tx.commit().map_err(pg)?;
        Ok(Summary {
            files,
            stored_bytes: u64::try_from(stored_bytes).unwrap_or(0),
            jobs,
            stix_rows_since: u64::try_from(stix_rows_since).unwrap_or(0),
            reports_since,
            taxii,
        })
    }
}

#[cfg(test)]
mod contract {
    use crate::testing::{FreshSchema, fresh_schema};

    fn store() -> FreshSchema {
        fresh_schema()
    }

    br_cti_store::record_store_contract!(store);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::fresh_schema;
    use br_cti_domain::model::FileMeta;
    use br_cti_store::{JobStore, UploadStore};

    fn meta(byte: char) -> FileMeta {
        FileMeta {
            hash: Sha256Hex::parse(&byte.to_string().repeat(64)).unwrap(),
            size: 10,
            original_name: Some("a.csv".into()),
            created_at_ms: 1_700_000_000_000,
        }
    }

    /// Opening again (another node, a restart) finds the schema done and the data there.
    #[test]
    fn reopening_keeps_data_and_schema() {
        let fresh = fresh_schema();
        fresh.record_upload(&meta('a'), "t").unwrap();
        let again = fresh.reopen();
        assert_eq!(again.schema_version().unwrap(), MIGRATIONS.len());
        assert!(again.task("t").unwrap().is_some());
    }

    /// Nodes starting together migrate once: the others wait on the lock and find it done.
    #[test]
    fn concurrent_starts_migrate_once() {
        let fresh = fresh_schema();
        let stores: Vec<PgStore> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4).map(|_| s.spawn(|| fresh.reopen())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for store in &stores {
            assert_eq!(store.schema_version().unwrap(), MIGRATIONS.len());
        }
    }

    /// A stored value that does not parse is an error naming it, never a default.
    #[test]
    fn corrupt_values_are_errors() {
        let db = fresh_schema();
        let a = meta('a');
        db.record_upload(&a, "t").unwrap();
        let job = db
            .create_job(&a.hash, "p", &br_cti_domain::testing::stix_params(), 1, 1)
            .unwrap();
        db.conn()
            .unwrap()
            .execute(
                "UPDATE jobs SET status = 'exploded' WHERE id = $1",
                &[&job.id],
            )
            .unwrap();
        let err = db.job(job.id).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("\"exploded\""), "{err}");
    }

    /// Text with U+0000 is the request's fault, not an internal one: PostgreSQL refuses it.
    #[test]
    fn nul_characters_are_refused_as_unstorable() {
        let db = fresh_schema();
        let err = db.record_upload(&meta('a'), "a\u{0}b").unwrap_err();
        assert!(matches!(err, StoreError::Unstorable(_)), "{err}");
        let err = br_cti_store::HiddenDangerStore::user_token(&*db, "a\u{0}").unwrap_err();
        assert!(matches!(err, StoreError::Unstorable(_)), "{err}");
    }

    /// A database that cannot be reached is an error naming it (without the password).
    #[test]
    fn unreachable_database_is_named() {
        let options = PgOptions {
            connect_timeout: Duration::from_millis(500),
            ..PgOptions::default()
        };
        let err = PgStore::open_with("postgres://u:secret@127.0.0.1:1/db", &options)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            err.contains("cannot reach the database postgres://u@127.0.0.1:1/db"),
            "{err}"
        );
        assert!(!err.contains("secret"), "{err}");
    }

    fn taxii_object(writer: usize, i: usize) -> br_cti_domain::model::NewTaxiiObject {
        br_cti_domain::model::NewTaxiiObject {
            id: format!("ipv4-addr--00000000-0000-5000-8000-{writer:04}{i:08}"),
            kind: "ipv4-addr".into(),
            version: String::new(),
            version_us: 0,
            spec_version: "2.1".into(),
            body: br_cti_domain::model::TaxiiBody::Text("{}".into()),
            tlp: br_cti_domain::vocab::Tlp::Clear,
        }
    }

    /// Two nodes publish into one collection while a third pages through it with `next`
    /// cursors: the reader sees every object exactly once, none skipped because it committed
    /// after a later position was read.
    #[test]
    fn taxii_pages_are_exact_under_concurrent_writers() {
        use br_cti_domain::model::{Position, TaxiiQuery};
        use br_cti_store::TaxiiStore;
        use std::sync::atomic::{AtomicUsize, Ordering};
        const WRITERS: usize = 3;
        const BATCHES: usize = 150;
        const PER_BATCH: usize = 4;
        let fresh = fresh_schema();
        let writers: Vec<PgStore> = (0..WRITERS).map(|_| fresh.reopen()).collect();
        let done = AtomicUsize::new(0);
        let mut seen: Vec<String> = Vec::new();
        std::thread::scope(|s| {
            for (w, store) in writers.iter().enumerate() {
                let done = &done;
                s.spawn(move || {
                    for b in 0..BATCHES {
                        let batch: Vec<_> = (0..PER_BATCH)
                            .map(|k| taxii_object(w, b * PER_BATCH + k))
                            .collect();
                        store.taxii_add("c", &batch, None).unwrap();
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            let mut after = Position::START;
            loop {
                let finished = done.load(Ordering::SeqCst) == WRITERS;
                let query = TaxiiQuery {
                    after,
                    max_tlp: br_cti_domain::vocab::Tlp::Red,
                    added_after: None,
                    limit: 7,
                    ids: vec![],
                    types: vec![],
                    versions: vec![],
                    spec_versions: vec![],
                };
                let (page, more) = fresh.taxii_page("c", &query).unwrap();
                if let Some(last) = page.last() {
                    after = last.position;
                }
                seen.extend(page.into_iter().map(|o| o.id));
                if finished && !more {
                    break;
                }
            }
        });
        let total = WRITERS * BATCHES * PER_BATCH;
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "an object was served twice");
        assert_eq!(seen.len(), total, "objects were skipped by the cursor");
    }

    /// Two nodes starting the same conversion at once: one job, the other a conflict naming it.
    #[test]
    fn one_unfinished_job_per_file_across_nodes() {
        let fresh = fresh_schema();
        let a = meta('a');
        fresh.record_upload(&a, "t").unwrap();
        let nodes: Vec<PgStore> = (0..4).map(|_| fresh.reopen()).collect();
        for round in 0..10 {
            let results: Vec<Result<_, _>> = std::thread::scope(|s| {
                let handles: Vec<_> = nodes
                    .iter()
                    .map(|n| {
                        let hash = a.hash.clone();
                        s.spawn(move || {
                            n.create_job(&hash, "p", &br_cti_domain::testing::stix_params(), 1, 1)
                        })
                    })
                    .collect();
                handles.into_iter().map(|h| h.join().unwrap()).collect()
            });
            let created: Vec<_> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
            assert_eq!(created.len(), 1, "round {round}: {results:?}");
            for r in &results {
                if let Err(e) = r {
                    assert!(matches!(e, StoreError::Conflict(_)), "{e}");
                    assert!(
                        e.to_string().contains(&format!("job {}", created[0].id)),
                        "{e}"
                    );
                }
            }
            let (claimed, fence) = fresh.claim_job("n", 60_000).unwrap().unwrap();
            assert_eq!(claimed.id, created[0].id);
            fresh
                .finish_job(
                    created[0].id,
                    fence,
                    br_cti_domain::model::JobStatus::Succeeded,
                    None,
                )
                .unwrap();
        }
    }

    /// Nodes claiming at once each get another job, every job exactly once.
    #[test]
    fn concurrent_claims_take_distinct_jobs() {
        let fresh = fresh_schema();
        let mut ids = Vec::new();
        for (i, c) in "0123456789ab".chars().enumerate() {
            let f = meta(c);
            fresh.record_upload(&f, &format!("t{i}")).unwrap();
            ids.push(
                fresh
                    .create_job(&f.hash, "p", &br_cti_domain::testing::stix_params(), 1, 1)
                    .unwrap()
                    .id,
            );
        }
        let nodes: Vec<PgStore> = (0..4).map(|_| fresh.reopen()).collect();
        let mut claimed: Vec<i64> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .enumerate()
                .map(|(n, store)| {
                    s.spawn(move || {
                        let mut mine = Vec::new();
                        while let Some((job, _)) =
                            store.claim_job(&format!("n{n}"), 60_000).unwrap()
                        {
                            mine.push(job.id);
                        }
                        mine
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        claimed.sort();
        assert_eq!(claimed, ids);
    }

    /// A newer schema than this build knows is refused, not written to.
    #[test]
    fn newer_schema_is_refused() {
        let fresh = fresh_schema();
        fresh
            .conn()
            .unwrap()
            .execute("INSERT INTO br_cti_schema (version) VALUES (999)", &[])
            .unwrap();
        let err = fresh.try_reopen().err().expect("refused").to_string();
        assert!(err.contains("schema is version 999"), "{err}");
    }
}
