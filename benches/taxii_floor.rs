//! How fast the embedded database can take TAXII objects at all: the floor under the
//! publisher's lag after a conversion. Writes `BENCH_OBJECTS` (default 2,000,000: what
//! 1,000,000 SDN rows give) new objects of about 850 bytes (an SDN file's mean line) into one
//! collection, 20,000 per transaction like the publisher (`BENCH_PER_COMMIT` to try others),
//! and prints seconds, objects/s and the database's size for each variant:
//!
//! - `store`: the node's own `SqliteStore::taxii_add` (version probe by key, insert, counts)
//!   on the publisher's kind of connection (`open_bulk_writer`: checkpoints on a thread of
//!   their own), each body a reference into a STIX file, as the publisher writes them;
//! - `store-text`: the same with the bodies in the database (as before 2026-12-02, and as
//!   objects pushed by peers are kept);
//! - `inline`: the same table, indexes and pragmas by hand (probe by key, insert): the
//!   statements alone;
//! - `inline-noadded`: without the `(collection, date_added)` index;
//! - `ref`: the body not stored (its file, offset and length instead), as if served from the
//!   STIX file;
//! - `ref-noadded`: both (the indexes of SQLite migration 15);
//! - `ref-latest`: `ref-noadded` without the `(collection, seq)` index either (migration 16:
//!   pages of other versions than the latest merge the latest and the older ones by `seq`).
//!
//! Run it:
//!
//!     cargo bench --bench taxii_floor
//!     BENCH_OBJECTS=500000 BENCH_VARIANTS=store,store-text cargo bench --bench taxii_floor
//!     BENCH_PER_COMMIT=100000 BENCH_VARIANTS=store cargo bench --bench taxii_floor
//!
//! Reading and parsing the STIX files is not in these figures (the publisher does it on a
//! second thread while the store writes).

use std::time::Instant;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::{BodyRef, NewTaxiiObject, TaxiiBody};
use br_cti_domain::vocab::Tlp;
use br_cti_store::TaxiiStore;
use br_cti_store_local::SqliteStore;
use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};

/// Objects per transaction unless `BENCH_PER_COMMIT` says otherwise: the publisher's.
const PER_COMMIT: usize = 20_000;
const COLLECTION: &str = "5d5b8e2e-6a53-5f0c-9d1e-2f6f7d3b8a11";

fn object(i: usize) -> NewTaxiiObject {
    let id = format!(
        "indicator--{}",
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, &i.to_le_bytes())
    );
    let modified = "2024-01-01T00:00:00.000Z";
    let mut text = format!(
        r#"{{"type":"indicator","spec_version":"2.1","id":"{id}","created":"{modified}","modified":"{modified}","name":"bench {i}","pattern":"[ipv4-addr:value = '10.{}.{}.{}']","pattern_type":"stix","valid_from":"{modified}","object_marking_refs":["{}"],"description":""#,
        i % 250,
        (i / 250) % 250,
        i % 200,
        Tlp::Green.marking_id()
    );
    while text.len() < 848 {
        text.push('x');
    }
    text.push_str("\"}");
    NewTaxiiObject {
        id,
        kind: "indicator".into(),
        version: modified.into(),
        version_us: 1_704_067_200_000_000,
        spec_version: "2.1".into(),
        body: TaxiiBody::Text(text),
        tlp: Tlp::Green,
    }
}

/// `object(i)` with its body a line of a STIX file (about 1,000 lines a file).
fn in_file(i: usize) -> NewTaxiiObject {
    let o = object(i);
    let len = o.body.text().len() as u32;
    NewTaxiiObject {
        body: TaxiiBody::InFile(BodyRef {
            file: Sha256Hex::from_digest(&Sha256::digest((i / 1000).to_le_bytes())),
            offset: (i % 1000) as u64 * (u64::from(len) + 1),
            len,
        }),
        ..o
    }
}

fn key(id: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(COLLECTION.as_bytes());
    h.update(b" ");
    h.update(id.as_bytes());
    i64::from_be_bytes(h.finalize()[..8].try_into().expect("8 bytes"))
}

/// Which indexes the table by hand has besides the key's.
#[derive(Clone, Copy, PartialEq)]
enum Indexes {
    /// `(collection, is_latest, seq)`, `(collection, seq)` and `(collection, date_added)`
    /// (migration 11).
    WithAdded,
    /// `(collection, is_latest, seq)` and `(collection, seq)` (migration 15).
    LatestAndAll,
    /// `(collection, is_latest, seq)` only (migration 16).
    Latest,
}

/// The node's table and indexes (SQLite migration 11) with three more columns for a body by
/// reference (file, offset, length: left empty when the body is inline), with or without the
/// body and with the indexes of a migration.
fn by_hand(
    path: &std::path::Path,
    total: usize,
    per_commit: usize,
    inline: bool,
    indexes: Indexes,
) {
    let mut conn = Connection::open(path).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.pragma_update(None, "cache_size", -32_768).unwrap();
    conn.execute_batch(
        "CREATE TABLE t (seq INTEGER PRIMARY KEY AUTOINCREMENT, collection TEXT NOT NULL,
           id TEXT NOT NULL, id_key INTEGER NOT NULL, type TEXT NOT NULL, version TEXT NOT NULL,
           version_us INTEGER NOT NULL, spec_version TEXT NOT NULL, date_added INTEGER NOT NULL,
           is_latest INTEGER NOT NULL, is_first INTEGER NOT NULL, object TEXT,
           file INTEGER, off INTEGER, len INTEGER, tlp INTEGER NOT NULL DEFAULT 0) STRICT;
         CREATE INDEX t_key ON t(id_key);
         CREATE INDEX t_latest ON t(collection, is_latest, seq);",
    )
    .unwrap();
    if indexes != Indexes::Latest {
        conn.execute_batch("CREATE INDEX t_all ON t(collection, seq);")
            .unwrap();
    }
    if indexes == Indexes::WithAdded {
        conn.execute_batch("CREATE INDEX t_added ON t(collection, date_added);")
            .unwrap();
    }
    let mut n = 0;
    while n < total {
        let tx = conn.transaction().unwrap();
        {
            // INDEXED BY: without statistics SQLite may pick a collection index and scan it.
            let mut probe = tx
                .prepare_cached(
                    "SELECT seq, version_us, is_latest, is_first FROM t INDEXED BY t_key
                     WHERE id_key = ?1 AND collection = ?2 AND id = ?3",
                )
                .unwrap();
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO t (collection, id, id_key, type, version, version_us,
                       spec_version, date_added, is_latest, is_first, object, file, off, len, tlp)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 1, 1, ?9, ?10, ?11, ?12, ?13)",
                )
                .unwrap();
            let end = (n + per_commit).min(total);
            let mut offset = 0i64;
            for i in n..end {
                let o = object(i);
                let k = key(&o.id);
                let known = probe
                    .query_map(params![k, COLLECTION, o.id], |r| r.get::<_, i64>(0))
                    .unwrap()
                    .count();
                assert_eq!(known, 0);
                let len = o.body.text().len() as i64;
                insert
                    .execute(params![
                        COLLECTION,
                        o.id,
                        k,
                        o.kind,
                        o.version,
                        o.version_us,
                        o.spec_version,
                        i as i64 + 1,
                        inline.then_some(o.body.text()),
                        (!inline).then_some(7),
                        (!inline).then_some(offset),
                        (!inline).then_some(len),
                        o.tlp.rank()
                    ])
                    .unwrap();
                offset += len + 1;
            }
            n = end;
        }
        tx.commit().unwrap();
    }
}

fn through_store(path: &std::path::Path, total: usize, per_commit: usize, by_reference: bool) {
    // The publisher's connection: checkpoints on a thread of their own.
    let store = SqliteStore::open_bulk_writer(path).unwrap();
    let mut n = 0;
    while n < total {
        let end = (n + per_commit).min(total);
        let objects: Vec<NewTaxiiObject> = if by_reference {
            (n..end).map(in_file).collect()
        } else {
            (n..end).map(object).collect()
        };
        let added = store.taxii_add(COLLECTION, &objects, None).unwrap();
        assert!(added.iter().all(|a| *a));
        n = end;
    }
}

fn main() {
    let total: usize = std::env::var("BENCH_OBJECTS")
        .map(|v| v.parse().expect("BENCH_OBJECTS"))
        .unwrap_or(2_000_000);
    let runs: usize = std::env::var("BENCH_RUNS")
        .map(|v| v.parse().expect("BENCH_RUNS"))
        .unwrap_or(1);
    let variants = std::env::var("BENCH_VARIANTS").unwrap_or_else(|_| {
        "store,store-text,inline,inline-noadded,ref,ref-noadded,ref-latest".into()
    });
    let per_commit: usize = std::env::var("BENCH_PER_COMMIT")
        .map(|v| v.parse().expect("BENCH_PER_COMMIT"))
        .unwrap_or(PER_COMMIT);
    println!("TAXII insert floor: {total} objects, {per_commit} per commit");
    for run in 1..=runs {
        for variant in variants.split(',') {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("floor.sqlite");
            let start = Instant::now();
            match variant {
                "store" => through_store(&path, total, per_commit, true),
                "store-text" => through_store(&path, total, per_commit, false),
                "inline" => by_hand(&path, total, per_commit, true, Indexes::WithAdded),
                "inline-noadded" => by_hand(&path, total, per_commit, true, Indexes::LatestAndAll),
                "ref" => by_hand(&path, total, per_commit, false, Indexes::WithAdded),
                "ref-noadded" => by_hand(&path, total, per_commit, false, Indexes::LatestAndAll),
                "ref-latest" => by_hand(&path, total, per_commit, false, Indexes::Latest),
                other => panic!("unknown variant {other:?}"),
            }
            let secs = start.elapsed().as_secs_f64();
            let bytes: u64 = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|e| e.unwrap().metadata().unwrap().len())
                .sum();
            println!(
                "run {run} {variant:>15}: {secs:6.1} s  {:>7.0} objects/s  database {} MB",
                total as f64 / secs,
                bytes / 1_000_000
            );
        }
    }
}
