//! `br-cti migrate-store`: moves a node's data directory (its SQLite database, and its files
//! when `--blob-store` is given) to PostgreSQL and an S3-compatible bucket, so that several
//! nodes can serve it. Every table is copied from one consistent snapshot of the SQLite file,
//! in one PostgreSQL transaction, keeping ids and positions (TAXII cursors, the publisher's
//! watermarks and job ids stay valid); then every row count is compared. Files are streamed to
//! the bucket and checked against their hash; CTI records that name a file's local path are
//! pointed at its place in the bucket. Nothing is removed from the data directory.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::{Context, bail};
use postgres::NoTls;
use rusqlite::types::ValueRef;
use sha2::{Digest, Sha256};

use br_cti_store::BlobStore;
use br_cti_store_local::{FsBlobStore, SqliteStore};
use br_cti_store_pg::PgStore;
use br_cti_store_s3::S3BlobStore;

#[derive(clap::Args, Debug)]
pub(crate) struct MigrateArgs {
    /// The data directory to move (stop its node first: what it writes later is not moved).
    #[arg(long, env = "BRCTI_DATA_DIR", default_value = "./br-cti-data")]
    pub data_dir: PathBuf,
    /// The PostgreSQL database to fill (it must hold no br-cti data yet).
    #[arg(long, env = "BRCTI_DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// The bucket to copy the files to (`s3://bucket/prefix`, as for `serve`); without it the
    /// files stay in the data directory.
    #[arg(long, env = "BRCTI_BLOB_STORE")]
    pub blob_store: Option<String>,
    /// A setting of the bucket's client (as for `serve`).
    #[arg(long = "blob-store-option", value_name = "KEY=VALUE")]
    pub blob_store_options: Vec<String>,
}

/// How a column is written for PostgreSQL.
#[derive(Clone, Copy)]
enum Kind {
    /// Integers, text and reals as they are.
    Plain,
    /// SQLite's 0/1 as a boolean.
    Bool,
}

struct Table {
    name: &'static str,
    /// (SQLite expression, PostgreSQL column, kind).
    columns: &'static [(&'static str, &'static str, Kind)],
    /// The identity column whose sequence continues after the copied values.
    identity: Option<&'static str>,
}

use Kind::{Bool as B, Plain as P};

/// Every table of the schema, parents before children (foreign keys).
const TABLES: &[Table] = &[
    Table {
        name: "files",
        columns: &[
            ("hash", "hash", P),
            ("size", "size", P),
            ("original_name", "original_name", P),
            ("created_at", "created_at", P),
        ],
        identity: None,
    },
    Table {
        name: "tasks",
        columns: &[
            ("task_id", "task_id", P),
            ("source_file_hash", "source_file_hash", P),
            ("created_at", "created_at", P),
        ],
        identity: None,
    },
    Table {
        name: "task_steps",
        columns: &[
            ("task_id", "task_id", P),
            ("step", "step", P),
            ("status", "status", P),
            ("total_num", "total_num", P),
            ("updated_at", "updated_at", P),
        ],
        identity: None,
    },
    Table {
        name: "jobs",
        columns: &[
            ("id", "id", P),
            ("kind", "kind", P),
            ("file_hash", "file_hash", P),
            ("process_id", "process_id", P),
            ("params", "params", P),
            ("status", "status", P),
            ("total_steps", "total_steps", P),
            ("steps_done", "steps_done", P),
            ("rows_total", "rows_total", P),
            ("rows_done", "rows_done", P),
            ("rows_rejected", "rows_rejected", P),
            ("objects", "objects", P),
            ("files", "files", P),
            ("errors", "errors", P),
            ("recent_steps", "recent_steps", P),
            ("message", "message", P),
            ("cancel_requested", "cancel_requested", B),
            ("created_at", "created_at", P),
            ("started_at", "started_at", P),
            ("finished_at", "finished_at", P),
            ("run_ms", "run_ms", P),
            ("attempts", "attempts", P),
            ("lease_owner", "lease_owner", P),
            ("lease_epoch", "lease_epoch", P),
            ("lease_until", "lease_until", P),
        ],
        identity: Some("id"),
    },
    Table {
        name: "stix_records",
        columns: &[
            ("rowid", "seq", P),
            ("source_file_hash", "source_file_hash", P),
            ("stix_file_hash", "stix_file_hash", P),
            ("job_id", "job_id", P),
            ("batch", "batch", P),
            ("file_size", "file_size", P),
            ("rows", "rows", P),
            ("objects", "objects", P),
            ("stix_type", "stix_type", P),
            ("stix_tags", "stix_tags", P),
            ("stix_iocs", "stix_iocs", P),
            ("ioc_ips_map", "ioc_ips_map", P),
            ("created_at", "created_at", P),
            ("onchain", "onchain", B),
            ("cti_file_path", "cti_file_path", P),
        ],
        identity: Some("seq"),
    },
    Table {
        name: "cti_records",
        columns: &[
            ("source_file_hash", "source_file_hash", P),
            ("cti_hash", "cti_hash", P),
            ("job_id", "job_id", P),
            ("cti_name", "cti_name", P),
            ("cti_type", "cti_type", P),
            ("cti_traffic_type", "cti_traffic_type", P),
            ("open_source", "open_source", P),
            ("description", "description", P),
            ("tags", "tags", P),
            ("iocs", "iocs", P),
            ("value", "value", P),
            ("incentive_mechanism", "incentive_mechanism", P),
            ("data_size", "data_size", P),
            ("stix_data", "stix_data", P),
            ("stix_ipfs_hash", "stix_ipfs_hash", P),
            ("statistic_info", "statistic_info", P),
            ("data_source_hash", "data_source_hash", P),
            ("data_source_ipfs_hash", "data_source_ipfs_hash", P),
            ("created_at", "created_at", P),
            ("updated_at", "updated_at", P),
            ("onchain", "onchain", B),
            ("cti_id", "cti_id", P),
        ],
        identity: None,
    },
    Table {
        name: "hd_users",
        columns: &[
            ("name", "name", P),
            ("token", "token", P),
            ("created_at", "created_at", P),
            ("rotated_at", "rotated_at", P),
            ("tlp", "tlp", P),
            ("report_tlp", "report_tlp", P),
        ],
        identity: None,
    },
    Table {
        name: "hidden_dangers",
        columns: &[
            ("id", "id", P),
            ("user", "user_name", P),
            ("risk_id", "risk_id", P),
            ("revision", "revision", P),
            ("unit_name", "unit_name", P),
            ("issue_level", "issue_level", P),
            ("judge_state", "judge_state", P),
            ("notice_state", "notice_state", P),
            ("addresses", "addresses", P),
            ("start_ms", "start_ms", P),
            ("end_ms", "end_ms", P),
            ("data", "data", P),
            ("raw_event", "raw_event", P),
            ("raw_event_sha256", "raw_event_sha256", P),
            ("content_sha256", "content_sha256", P),
            ("created_at", "created_at", P),
            ("updated_at", "updated_at", P),
        ],
        identity: Some("id"),
    },
    Table {
        name: "hidden_danger_revisions",
        columns: &[
            ("rowid", "seq", P),
            ("hd_id", "hd_id", P),
            ("revision", "revision", P),
            ("data", "data", P),
            ("raw_event", "raw_event", P),
            ("raw_event_sha256", "raw_event_sha256", P),
            ("received_at", "received_at", P),
        ],
        identity: Some("seq"),
    },
    Table {
        name: "taxii_objects",
        columns: &[
            ("seq", "seq", P),
            ("collection", "collection", P),
            ("id", "id", P),
            ("type", "type", P),
            ("version", "version", P),
            ("version_us", "version_us", P),
            ("spec_version", "spec_version", P),
            ("date_added", "date_added", P),
            ("is_latest", "is_latest", B),
            ("is_first", "is_first", B),
            ("object", "object", P),
            ("tlp", "tlp", P),
            ("body_ref", "body_ref", P),
        ],
        identity: Some("seq"),
    },
    Table {
        name: "taxii_status",
        columns: &[
            ("id", "id", P),
            ("collection", "collection", P),
            ("request_timestamp", "request_timestamp", P),
            ("total", "total", P),
            ("success_count", "success_count", P),
            ("failure_count", "failure_count", P),
            ("successes", "successes", P),
            ("failures", "failures", P),
        ],
        identity: None,
    },
    Table {
        name: "taxii_grants",
        columns: &[("user", "user_name", P), ("collection", "collection", P)],
        identity: None,
    },
    Table {
        name: "taxii_sync",
        columns: &[("source", "source", P), ("watermark", "watermark", P)],
        identity: None,
    },
    Table {
        name: "taxii_counts",
        columns: &[("collection", "collection", P), ("objects", "objects", P)],
        identity: None,
    },
    Table {
        name: "ioc_sightings",
        columns: &[
            ("indicator", "indicator", P),
            ("file_hash", "file_hash", P),
            ("first_us", "first_us", P),
            ("last_us", "last_us", P),
            ("count", "count", P),
            ("confidence", "confidence", P),
            ("valid_until_us", "valid_until_us", P),
        ],
        identity: None,
    },
    Table {
        name: "iocs",
        columns: &[
            ("indicator", "indicator", P),
            ("first_us", "first_us", P),
            ("last_us", "last_us", P),
            ("files", "files", P),
            ("observations", "observations", P),
            ("confidence", "confidence", P),
            ("valid_until_us", "valid_until_us", P),
            ("modified_us", "modified_us", P),
        ],
        identity: None,
    },
    Table {
        name: "hd_requests",
        columns: &[
            ("user", "user_name", P),
            ("timestamp", "timestamp", P),
            ("sign", "sign", P),
            ("body_sha256", "body_sha256", P),
            ("outcome", "outcome", P),
            ("answer", "answer", P),
            ("expires_ms", "expires_ms", P),
        ],
        identity: None,
    },
    Table {
        name: "hd_rate",
        columns: &[
            ("user", "user_name", P),
            ("tokens", "tokens", P),
            ("at_ms", "at_ms", P),
        ],
        identity: None,
    },
];

/// One field in PostgreSQL's COPY text format.
fn copy_field(out: &mut String, value: ValueRef<'_>, kind: Kind) -> anyhow::Result<()> {
    match (value, kind) {
        (ValueRef::Null, _) => out.push_str("\\N"),
        (ValueRef::Integer(i), Kind::Bool) => out.push(if i != 0 { 't' } else { 'f' }),
        (ValueRef::Integer(i), Kind::Plain) => write!(out, "{i}")?,
        (ValueRef::Real(r), _) => write!(out, "{r}")?,
        (ValueRef::Text(t), _) => {
            let text = std::str::from_utf8(t).context("a text value is not UTF-8")?;
            for c in text.chars() {
                match c {
                    '\\' => out.push_str("\\\\"),
                    '\t' => out.push_str("\\t"),
                    '\n' => out.push_str("\\n"),
                    '\r' => out.push_str("\\r"),
                    '\0' => {
                        bail!("a text value holds a NUL character, which PostgreSQL cannot store")
                    }
                    c => out.push(c),
                }
            }
        }
        // bytea: `\x` and hexadecimal digits, the backslash escaped for COPY.
        (ValueRef::Blob(b), _) => {
            out.push_str("\\\\x");
            out.push_str(&hex::encode(b));
        }
    }
    Ok(())
}

pub(crate) fn migrate_command(args: MigrateArgs) -> anyhow::Result<()> {
    let path = args.data_dir.join("br-cti.sqlite");
    if !path.is_file() {
        bail!(
            "{} holds no node database (br-cti.sqlite): is --data-dir right?",
            args.data_dir.display()
        );
    }
    // The SQLite schema up to date (a data directory of an older version), then the target's.
    drop(SqliteStore::open(&path)?);
    let target = PgStore::open(&args.database_url)?;
    let bucket = match &args.blob_store {
        Some(url) => Some(S3BlobStore::open(url, &args.blob_store_options)?),
        None => None,
    };
    let mut pg = postgres::Client::connect(&args.database_url, NoTls)
        .with_context(|| format!("connecting to {}", target.target()))?;
    let held: i64 = pg
        .query_one(
            "SELECT (SELECT count(*) FROM files) + (SELECT count(*) FROM jobs)
                  + (SELECT count(*) FROM hd_users) + (SELECT count(*) FROM taxii_objects)",
            &[],
        )?
        .get(0);
    if held > 0 {
        bail!(
            "the database {} already holds br-cti data: migrate into an empty one",
            target.target()
        );
    }
    let mut sqlite = rusqlite::Connection::open_with_flags(
        &path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    sqlite.busy_timeout(std::time::Duration::from_secs(10))?;
    // One read transaction: every table from the same snapshot.
    let snapshot = sqlite.transaction()?;
    let mut tx = pg.transaction()?;
    let mut counts = Vec::new();
    for table in TABLES {
        let from: Vec<&str> = table.columns.iter().map(|c| c.0).collect();
        let to: Vec<&str> = table.columns.iter().map(|c| c.1).collect();
        let mut stmt = snapshot.prepare(&format!(
            "SELECT {} FROM {} ORDER BY rowid",
            from.join(", "),
            table.name
        ))?;
        let mut rows = stmt.query([])?;
        let mut writer = tx.copy_in(&format!(
            "COPY {} ({}) FROM STDIN",
            table.name,
            to.join(", ")
        ))?;
        let mut line = String::new();
        let mut n = 0u64;
        while let Some(row) = rows.next()? {
            line.clear();
            for (i, (_, _, kind)) in table.columns.iter().enumerate() {
                if i > 0 {
                    line.push('\t');
                }
                copy_field(&mut line, row.get_ref(i)?, *kind)
                    .with_context(|| format!("table {}, row {}", table.name, n + 1))?;
            }
            line.push('\n');
            writer.write_all(line.as_bytes())?;
            n += 1;
        }
        writer.finish()?;
        if let Some(column) = table.identity {
            tx.execute(
                &format!(
                    "SELECT setval(pg_get_serial_sequence('{0}', '{1}'),
                         COALESCE((SELECT max({1}) FROM {0}), 0) + 1, false)",
                    table.name, column
                ),
                &[],
            )?;
        }
        let copied: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {}", table.name), &[])?
            .get(0);
        if copied as u64 != n {
            bail!(
                "table {}: {n} rows read, {copied} in the database",
                table.name
            );
        }
        counts.push((table.name, n));
    }
    tx.commit()?;
    drop(snapshot);
    for (name, n) in &counts {
        println!("{name}: {n} rows");
    }
    println!(
        "records of {} copied to {}",
        path.display(),
        target.target()
    );
    if let Some(bucket) = bucket {
        move_files(&args.data_dir, &bucket, &mut pg)?;
    }
    Ok(())
}

/// Streams every file of the data directory into the bucket (each checked against its hash;
/// one there already with the same size is kept), then points CTI records that name a local
/// path at the bucket.
fn move_files(
    data_dir: &std::path::Path,
    bucket: &S3BlobStore,
    pg: &mut postgres::Client,
) -> anyhow::Result<()> {
    let local = FsBlobStore::open(data_dir)?;
    let blobs = local.list()?;
    let (mut copied, mut kept, mut bytes) = (0u64, 0u64, 0u64);
    let total = blobs.len();
    for (i, (hash, size)) in blobs.iter().enumerate() {
        if bucket.size(hash)? == Some(*size) {
            kept += 1;
            continue;
        }
        let mut input = local
            .open(hash)?
            .with_context(|| format!("file {hash} vanished from the data directory"))?;
        let mut staged = bucket.stage()?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = input.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            staged.write_all(&buf[..n])?;
        }
        let stored = staged.commit()?;
        let read = br_cti_domain::hash::Sha256Hex::from_digest(&hasher.finalize());
        if stored.hash != *hash || read != *hash {
            bail!("file {hash} does not match its name (read as {read}): it was not moved");
        }
        copied += 1;
        bytes += size;
        if (i + 1) % 1000 == 0 {
            println!("files: {}/{total}", i + 1);
        }
    }
    println!(
        "files: {copied} copied ({bytes} bytes), {kept} already in {}",
        bucket.url()
    );
    let mut tx = pg.transaction()?;
    let rows = tx.query(
        "SELECT source_file_hash, cti_hash, stix_data FROM cti_records",
        &[],
    )?;
    let mut moved = 0;
    for r in rows {
        let (source, cti, stix_data): (String, String, String) = (r.get(0), r.get(1), r.get(2));
        let Ok(hash) = br_cti_domain::hash::Sha256Hex::parse(&cti) else {
            continue;
        };
        if stix_data == local.locate(&hash) {
            tx.execute(
                "UPDATE cti_records SET stix_data = $3 WHERE source_file_hash = $1 AND cti_hash = $2",
                &[&source, &cti, &bucket.locate(&hash)],
            )?;
            moved += 1;
        }
    }
    tx.commit()?;
    println!("CTI records pointed at the bucket: {moved}");
    Ok(())
}
