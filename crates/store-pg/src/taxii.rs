//! TAXII collections in PostgreSQL. Every object version is a row; `seq` is the paging key.
//! Adds take the TAXII advisory lock for their transaction, so `seq` and `date_added` are
//! handed out in commit order even with several nodes writing: a reader that saw position `n`
//! never later finds a new row below `n`, and `added_after` pages exactly.

use std::collections::HashMap;

use postgres::types::ToSql;

use br_cti_domain::ioc::{Confidence, IocSighting, IocState};
use br_cti_domain::model::{
    NewTaxiiObject, Position, RecordedStixFile, StoredHiddenDanger, TaxiiBody, TaxiiObject,
    TaxiiQuery, TaxiiStatus, VersionMatch,
};
use br_cti_domain::vocab::{DataType, Tlp};
use br_cti_store::{StoreError, TaxiiStore};

use crate::hidden::{HD_COLUMNS, hd_from_row};
use crate::{PgStore, count, get, hash, lock, numbered, parsed, pg, xact_lock};

fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

type Args = Vec<Box<dyn ToSql + Sync>>;

fn push(args: &mut Args, v: impl ToSql + Sync + 'static) -> String {
    args.push(Box::new(v));
    format!("${}", args.len())
}

/// The SQL condition of a list of `match[version]` values (OR-ed); none means `last`.
fn version_clause(versions: &[VersionMatch], args: &mut Args) -> String {
    if versions.is_empty() {
        return "is_latest".into();
    }
    let parts: Vec<String> = versions
        .iter()
        .map(|v| match v {
            VersionMatch::Last => "is_latest".to_string(),
            VersionMatch::First => "is_first".to_string(),
            VersionMatch::All => "true".to_string(),
            VersionMatch::At(us) => format!("version_us = {}", push(args, *us)),
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

fn in_clause(column: &str, values: &[String], args: &mut Args) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    Some(format!(
        "{column} = ANY({}::text[])",
        push(args, values.to_vec())
    ))
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect()
}

/// A version of an id: a stored row, or one of this batch's new rows.
#[derive(Clone, Copy)]
enum Row {
    Stored(i64),
    New(usize),
}

struct Version {
    row: Row,
    version_us: i64,
    latest: bool,
    first: bool,
}

/// The new rows of a batch, column by column (inserted with one `UNNEST`).
#[derive(Default)]
struct NewRows<'a> {
    id: Vec<&'a str>,
    kind: Vec<&'a str>,
    version: Vec<&'a str>,
    version_us: Vec<i64>,
    spec_version: Vec<&'a str>,
    date_added: Vec<i64>,
    is_latest: Vec<bool>,
    is_first: Vec<bool>,
    object: Vec<&'a str>,
    tlp: Vec<i64>,
    body_ref: Vec<Option<Vec<u8>>>,
}

/// Rows per `INSERT` (bounds one statement's parameters).
const INSERT_ROWS: usize = 4096;

impl<'a> NewRows<'a> {
    fn push(&mut self, o: &'a NewTaxiiObject, date_added: i64, latest: bool, first: bool) {
        self.id.push(&o.id);
        self.kind.push(&o.kind);
        self.version.push(&o.version);
        self.version_us.push(o.version_us);
        self.spec_version.push(&o.spec_version);
        self.date_added.push(date_added);
        self.is_latest.push(latest);
        self.is_first.push(first);
        self.object.push(o.body.text());
        self.tlp.push(i64::from(o.tlp.rank()));
        self.body_ref.push(o.body.reference().map(|r| r.to_vec()));
    }

    /// Inserts the rows in their order (`seq` follows it).
    fn insert(
        &self,
        tx: &mut postgres::Transaction<'_>,
        collection: &str,
    ) -> Result<(), StoreError> {
        let statement = tx
            .prepare(
                "INSERT INTO taxii_objects (collection, id, type, version, version_us, spec_version,
                     date_added, is_latest, is_first, object, tlp, body_ref)
                 SELECT $1, id, type, version, version_us, spec_version, date_added, is_latest,
                        is_first, object, tlp, body_ref
                 FROM UNNEST($2::text[], $3::text[], $4::text[], $5::int8[], $6::text[],
                             $7::int8[], $8::bool[], $9::bool[], $10::text[], $11::int8[],
                             $12::bytea[])
                      WITH ORDINALITY AS t(id, type, version, version_us, spec_version,
                                           date_added, is_latest, is_first, object, tlp,
                                           body_ref, n)
                 ORDER BY n",
            )
            .map_err(pg)?;
        let mut start = 0;
        while start < self.id.len() {
            let end = (start + INSERT_ROWS).min(self.id.len());
            let r = start..end;
            tx.execute(
                &statement,
                &[
                    &collection,
                    &&self.id[r.clone()],
                    &&self.kind[r.clone()],
                    &&self.version[r.clone()],
                    &&self.version_us[r.clone()],
                    &&self.spec_version[r.clone()],
                    &&self.date_added[r.clone()],
                    &&self.is_latest[r.clone()],
                    &&self.is_first[r.clone()],
                    &&self.object[r.clone()],
                    &&self.tlp[r.clone()],
                    &&self.body_ref[r],
                ],
            )
            .map_err(pg)?;
            start = end;
        }
        Ok(())
    }
}

/// TAXII rows added (by this process) after which the table's statistics are refreshed, at
/// least; in a larger table, a fifth of the rows it had when last analysed.
const ANALYZE_AFTER_ROWS: u64 = 50_000;

impl PgStore {
    /// Refreshes the TAXII table's statistics after a bulk of inserts. Without it, until
    /// autovacuum comes round (a minute or more), the planner still believes the table small
    /// and reads a page by collecting and sorting every later row (measured: 35-140 ms a page
    /// at 200,000 rows, 0.5 ms after `ANALYZE`). Once the table is large its statistics stay
    /// good for longer: after every 50,000 rows, `ANALYZE` took about a sixth of PostgreSQL's
    /// time while 2,000,000 objects were published.
    fn note_taxii_rows(&self, rows: u64) {
        use std::sync::atomic::Ordering;
        let total = self.taxii_unanalyzed.fetch_add(rows, Ordering::Relaxed) + rows;
        let threshold =
            ANALYZE_AFTER_ROWS.max(self.taxii_analyzed_rows.load(Ordering::Relaxed) / 5);
        if total < threshold {
            return;
        }
        self.taxii_unanalyzed.store(0, Ordering::Relaxed);
        let analyzed = self.conn().and_then(|mut c| {
            c.batch_execute("ANALYZE taxii_objects").map_err(pg)?;
            let row = c
                .query_one(
                    "SELECT greatest(reltuples, 0)::int8 FROM pg_class
                     WHERE oid = 'taxii_objects'::regclass",
                    &[],
                )
                .map_err(pg)?;
            get::<i64>(&row, 0)
        });
        match analyzed {
            Ok(rows) => self
                .taxii_analyzed_rows
                .store(rows.max(0) as u64, Ordering::Relaxed),
            Err(e) => tracing::warn!("refreshing the TAXII table's statistics: {e}"),
        }
    }
}

impl TaxiiStore for PgStore {
    fn taxii_add(
        &self,
        collection: &str,
        objects: &[NewTaxiiObject],
        watermark: Option<(&str, Position)>,
    ) -> Result<Vec<bool>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        xact_lock(&mut tx, lock::TAXII)?;
        let last: i64 = match tx
            .query_opt(
                "SELECT date_added FROM taxii_objects ORDER BY seq DESC LIMIT 1",
                &[],
            )
            .map_err(pg)?
        {
            Some(r) => get(&r, 0)?,
            None => 0,
        };
        let mut date_added = now_us().max(last + 1);
        // Every stored version of the batch's ids, in one query (a batch is a whole STIX
        // file: thousands of objects, one round trip instead of one per object).
        let mut ids: Vec<&str> = objects.iter().map(|o| o.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut known: HashMap<&str, Vec<Version>> = HashMap::new();
        for r in tx
            .query(
                "SELECT id, seq, version_us, is_latest, is_first FROM taxii_objects
                 WHERE collection = $1 AND id = ANY($2)",
                &[&collection, &ids],
            )
            .map_err(pg)?
        {
            let id: String = get(&r, 0)?;
            let id = *ids
                .binary_search(&id.as_str())
                .ok()
                .map(|i| &ids[i])
                .expect("asked for");
            known.entry(id).or_default().push(Version {
                row: Row::Stored(get(&r, 1)?),
                version_us: get(&r, 2)?,
                latest: get(&r, 3)?,
                first: get(&r, 4)?,
            });
        }
        let mut new = NewRows::default();
        let (mut unflag_latest, mut unflag_first) = (Vec::new(), Vec::new());
        let mut added = Vec::with_capacity(objects.len());
        for o in objects {
            let versions = known.entry(o.id.as_str()).or_default();
            // One instant is one version, however it is written (`Z`, `.000Z`, `+08:00`).
            if versions.iter().any(|v| v.version_us == o.version_us) {
                added.push(false);
                continue;
            }
            let mut is_latest = true;
            let mut is_first = true;
            for v in versions.iter_mut() {
                if v.latest {
                    if o.version_us >= v.version_us {
                        v.latest = false;
                        match v.row {
                            Row::Stored(seq) => unflag_latest.push(seq),
                            Row::New(i) => new.is_latest[i] = false,
                        }
                    } else {
                        is_latest = false;
                    }
                }
                if v.first {
                    if o.version_us < v.version_us {
                        v.first = false;
                        match v.row {
                            Row::Stored(seq) => unflag_first.push(seq),
                            Row::New(i) => new.is_first[i] = false,
                        }
                    } else {
                        is_first = false;
                    }
                }
            }
            versions.push(Version {
                row: Row::New(new.id.len()),
                version_us: o.version_us,
                latest: is_latest,
                first: is_first,
            });
            new.push(o, date_added, is_latest, is_first);
            date_added += 1;
            added.push(true);
        }
        if !unflag_latest.is_empty() {
            tx.execute(
                "UPDATE taxii_objects SET is_latest = false WHERE seq = ANY($1)",
                &[&unflag_latest],
            )
            .map_err(pg)?;
        }
        if !unflag_first.is_empty() {
            tx.execute(
                "UPDATE taxii_objects SET is_first = false WHERE seq = ANY($1)",
                &[&unflag_first],
            )
            .map_err(pg)?;
        }
        let new_rows = new.id.len();
        new.insert(&mut tx, collection)?;
        if new_rows > 0 {
            tx.execute(
                "INSERT INTO taxii_counts (collection, objects) VALUES ($1, $2)
                 ON CONFLICT (collection) DO UPDATE SET objects = taxii_counts.objects + excluded.objects",
                &[&collection, &(new_rows as i64)],
            )
            .map_err(pg)?;
        }
        if let Some((source, mark)) = watermark {
            tx.execute(
                "INSERT INTO taxii_sync (source, watermark) VALUES ($1, $2)
                 ON CONFLICT (source) DO UPDATE SET watermark = excluded.watermark",
                &[&source, &mark.to_backend()],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        drop(conn);
        self.note_taxii_rows(new_rows as u64);
        Ok(added)
    }

    fn taxii_page(
        &self,
        collection: &str,
        q: &TaxiiQuery,
    ) -> Result<(Vec<TaxiiObject>, bool), StoreError> {
        let mut conn = self.conn()?;
        let mut after = q.after.to_backend();
        if let Some(t) = q.added_after {
            // date_added grows with seq: turn the time into a position (one index probe).
            let bound = conn
                .query_opt(
                    "SELECT seq FROM taxii_objects WHERE collection = $1 AND date_added > $2
                     ORDER BY date_added LIMIT 1",
                    &[&collection, &t],
                )
                .map_err(pg)?;
            match bound {
                Some(r) => after = after.max(get::<i64>(&r, 0)? - 1),
                None => return Ok((Vec::new(), false)),
            }
        }
        let mut args: Args = Vec::new();
        let mut clauses = vec![
            format!("collection = {}", push(&mut args, collection.to_string())),
            format!("seq > {}", push(&mut args, after)),
            format!("tlp <= {}", push(&mut args, i64::from(q.max_tlp.rank()))),
            version_clause(&q.versions, &mut args),
        ];
        clauses.extend(in_clause("id", &q.ids, &mut args));
        clauses.extend(in_clause("type", &q.types, &mut args));
        clauses.extend(in_clause("spec_version", &q.spec_versions, &mut args));
        let limit = push(&mut args, q.limit.min(i64::MAX as u64 - 1) as i64 + 1);
        const COLUMNS: &str = "seq, id, type, version, spec_version, date_added, object, body_ref";
        let range = |latest: bool| {
            format!(
                "SELECT {COLUMNS} FROM taxii_objects
                 WHERE is_latest = {latest} AND {} ORDER BY seq LIMIT {limit}",
                clauses.join(" AND ")
            )
        };
        // The only collection index by position is `(collection, is_latest, seq)`: a page of
        // latest versions is one range of it; any other page merges the first `limit + 1`
        // rows of both ranges by `seq`, so it too reads O(limit) rows.
        let statement = if q.versions.iter().all(|v| *v == VersionMatch::Last) {
            range(true)
        } else {
            format!(
                "SELECT {COLUMNS} FROM (({}) UNION ALL ({})) AS page ORDER BY seq LIMIT {limit}",
                range(false),
                range(true)
            )
        };
        let mut rows = conn
            .query(&statement, &refs(&args))
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(TaxiiObject {
                    position: Position::from_backend(get(r, 0)?),
                    id: get(r, 1)?,
                    kind: get(r, 2)?,
                    version: get(r, 3)?,
                    spec_version: get(r, 4)?,
                    date_added: get(r, 5)?,
                    body: TaxiiBody::from_stored(get(r, 6)?, get::<Option<&[u8]>>(r, 7)?)
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let more = rows.len() as u64 > q.limit;
        rows.truncate(q.limit as usize);
        Ok((rows, more))
    }

    fn taxii_delete(
        &self,
        collection: &str,
        id: &str,
        versions: &[VersionMatch],
        max_tlp: Tlp,
    ) -> Result<u64, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        xact_lock(&mut tx, lock::TAXII)?;
        let mut args: Args = Vec::new();
        let c = push(&mut args, collection.to_string());
        let i = push(&mut args, id.to_string());
        let t = push(&mut args, i64::from(max_tlp.rank()));
        let versions = if versions.is_empty() {
            vec![VersionMatch::All]
        } else {
            versions.to_vec()
        };
        let clause = version_clause(&versions, &mut args);
        let n = tx
            .execute(
                &format!(
                    "DELETE FROM taxii_objects WHERE collection = {c} AND id = {i} AND tlp <= {t} AND {clause}"
                ),
                &refs(&args),
            )
            .map_err(pg)?;
        tx.execute(
            "UPDATE taxii_counts SET objects = objects - $2 WHERE collection = $1",
            &[&collection, &(n as i64)],
        )
        .map_err(pg)?;
        // The remaining versions get their first/last flags back.
        tx.execute(
            "UPDATE taxii_objects SET
                 is_latest = seq = (SELECT seq FROM taxii_objects WHERE collection = $1 AND id = $2
                                    ORDER BY version_us DESC, seq DESC LIMIT 1),
                 is_first = seq = (SELECT seq FROM taxii_objects WHERE collection = $1 AND id = $2
                                   ORDER BY version_us ASC, seq ASC LIMIT 1)
             WHERE collection = $1 AND id = $2",
            &[&collection, &id],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(n)
    }

    fn taxii_save_status(&self, s: &TaxiiStatus) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO taxii_status (id, collection, request_timestamp, total, success_count,
                     failure_count, successes, failures) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &s.id,
                    &s.collection,
                    &s.request_timestamp,
                    &(s.total as i64),
                    &(s.success_count as i64),
                    &(s.failure_count as i64),
                    &s.successes,
                    &s.failures,
                ],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn taxii_status(&self, id: &str) -> Result<Option<TaxiiStatus>, StoreError> {
        self.conn()?
            .query_opt(
                "SELECT id, collection, request_timestamp, total, success_count, failure_count,
                     successes, failures FROM taxii_status WHERE id = $1",
                &[&id],
            )
            .map_err(pg)?
            .map(|r| {
                Ok(TaxiiStatus {
                    id: get(&r, 0)?,
                    collection: get(&r, 1)?,
                    request_timestamp: get(&r, 2)?,
                    total: count(&r, 3)?,
                    success_count: count(&r, 4)?,
                    failure_count: count(&r, 5)?,
                    successes: get(&r, 6)?,
                    failures: get(&r, 7)?,
                })
            })
            .transpose()
    }

    fn user_by_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.conn()?
            .query_opt("SELECT name FROM hd_users WHERE token = $1", &[&token])
            .map_err(pg)?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn user_tlp(&self, user: &str) -> Result<Option<Tlp>, StoreError> {
        self.conn()?
            .query_opt("SELECT tlp FROM hd_users WHERE name = $1", &[&user])
            .map_err(pg)?
            .map(|r| parsed(&r, 0, "user TLP level", Tlp::from_word))
            .transpose()
    }

    fn set_user_tlp(&self, user: &str, tlp: Tlp) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .execute(
                "UPDATE hd_users SET tlp = $2 WHERE name = $1",
                &[&user, &tlp.as_str()],
            )
            .map_err(pg)?
            == 1)
    }

    fn taxii_grants(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.conn()?
            .query(
                "SELECT collection FROM taxii_grants WHERE user_name = $1 ORDER BY 1",
                &[&user],
            )
            .map_err(pg)?
            .iter()
            .map(|r| get(r, 0))
            .collect()
    }

    fn taxii_grant(&self, user: &str, collection: &str) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO taxii_grants (user_name, collection) VALUES ($1, $2)
                 ON CONFLICT DO NOTHING",
                &[&user, &collection],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn taxii_revoke(&self, user: &str, collection: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .execute(
                "DELETE FROM taxii_grants WHERE user_name = $1 AND collection = $2",
                &[&user, &collection],
            )
            .map_err(pg)?
            > 0)
    }

    fn taxii_watermark(&self, source: &str) -> Result<Position, StoreError> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT watermark FROM taxii_sync WHERE source = $1",
                &[&source],
            )
            .map_err(pg)?
            .map(|r| get(&r, 0))
            .transpose()?
            .map_or(Position::START, Position::from_backend))
    }

    fn stix_files_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<RecordedStixFile>, StoreError> {
        self.conn()?
            .query(
                "SELECT r.seq, r.stix_file_hash, r.stix_type, r.source_file_hash, r.batch,
                     (j.params::jsonb ->> 'indicator_valid_days')::bigint
                 FROM stix_records r LEFT JOIN jobs j ON j.id = r.job_id
                 WHERE r.seq > $1 ORDER BY r.seq LIMIT $2",
                &[
                    &watermark.to_backend(),
                    &(limit.min(i64::MAX as u64) as i64),
                ],
            )
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(RecordedStixFile {
                    position: Position::from_backend(get(r, 0)?),
                    stix_file_hash: hash(r, 1)?,
                    data_type: numbered(r, 2, "STIX type", DataType::from_number)?,
                    source_file_hash: hash(r, 3)?,
                    batch: count(r, 4)?,
                    indicator_valid_days: get::<Option<i64>>(r, 5)?
                        .map(br_cti_domain::ioc::stored_valid_days)
                        .transpose()
                        .map_err(StoreError::Corrupt)?,
                })
            })
            .collect()
    }

    fn ioc_fold(
        &self,
        sightings: &[IocSighting],
        now_us: i64,
    ) -> Result<Vec<IocState>, StoreError> {
        if sightings.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        xact_lock(&mut tx, lock::IOCS)?;
        // The new (indicator, file) pairs, in one statement.
        let column = |f: &dyn Fn(&IocSighting) -> i64| sightings.iter().map(f).collect::<Vec<_>>();
        let ids: Vec<&str> = sightings.iter().map(|s| s.indicator.as_str()).collect();
        let files: Vec<&str> = sightings.iter().map(|s| s.file.as_str()).collect();
        let confidences: Vec<i16> = sightings
            .iter()
            .map(|s| i16::from(s.confidence.get()))
            .collect();
        let mut inserted: std::collections::HashSet<(String, String)> = tx
            .query(
                "INSERT INTO ioc_sightings (indicator, file_hash, first_us, last_us, count, confidence,
                     valid_until_us)
                 SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
                     $5::bigint[], $6::smallint[], $7::bigint[])
                 ON CONFLICT (indicator, file_hash) DO NOTHING
                 RETURNING indicator, file_hash",
                &[
                    &ids,
                    &files,
                    &column(&|s| s.first_us),
                    &column(&|s| s.last_us),
                    &column(&|s| s.count.min(i64::MAX as u64) as i64),
                    &confidences,
                    &column(&|s| s.valid_until_us),
                ],
            )
            .map_err(pg)?
            .iter()
            .map(|r| Ok((get(r, 0)?, get(r, 1)?)))
            .collect::<Result<_, StoreError>>()?;
        let mut unique = ids.clone();
        unique.sort_unstable();
        unique.dedup();
        let mut states: HashMap<String, IocState> = HashMap::new();
        for r in tx
            .query(
                "SELECT indicator, first_us, last_us, files, observations, confidence, modified_us,
                     valid_until_us
                 FROM iocs WHERE indicator = ANY($1)",
                &[&unique],
            )
            .map_err(pg)?
        {
            let indicator: String = get(&r, 0)?;
            let confidence: i16 = get(&r, 5)?;
            states.insert(
                indicator.clone(),
                IocState {
                    indicator,
                    first_us: get(&r, 1)?,
                    last_us: get(&r, 2)?,
                    files: count(&r, 3)?,
                    observations: count(&r, 4)?,
                    confidence: Confidence::from_stored(confidence.into())
                        .map_err(|e| StoreError::Corrupt(format!("the IOC registry: {e}")))?,
                    modified_us: get(&r, 6)?,
                    valid_until_us: get(&r, 7)?,
                },
            );
        }
        let mut changed: Vec<String> = Vec::new();
        for s in sightings {
            // Taken, so that a pair given twice in one call is folded once.
            if !inserted.remove(&(s.indicator.clone(), s.file.as_str().to_string())) {
                continue;
            }
            states
                .entry(s.indicator.clone())
                .or_insert_with(|| IocState::empty(&s.indicator))
                .fold(s, now_us);
            changed.push(s.indicator.clone());
        }
        changed.sort_unstable();
        changed.dedup();
        if !changed.is_empty() {
            let rows: Vec<&IocState> = changed.iter().map(|id| &states[id]).collect();
            let big = |f: &dyn Fn(&IocState) -> i64| rows.iter().map(|s| f(s)).collect::<Vec<_>>();
            tx.execute(
                "INSERT INTO iocs (indicator, first_us, last_us, files, observations, confidence,
                     modified_us, valid_until_us)
                 SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::bigint[],
                     $5::bigint[], $6::smallint[], $7::bigint[], $8::bigint[])
                 ON CONFLICT (indicator) DO UPDATE SET first_us = excluded.first_us,
                     last_us = excluded.last_us, files = excluded.files,
                     observations = excluded.observations, confidence = excluded.confidence,
                     modified_us = excluded.modified_us, valid_until_us = excluded.valid_until_us",
                &[
                    &changed,
                    &big(&|s| s.first_us),
                    &big(&|s| s.last_us),
                    &big(&|s| s.files.min(i64::MAX as u64) as i64),
                    &big(&|s| s.observations.min(i64::MAX as u64) as i64),
                    &rows
                        .iter()
                        .map(|s| i16::from(s.confidence.get()))
                        .collect::<Vec<_>>(),
                    &big(&|s| s.modified_us),
                    &big(&|s| s.valid_until_us),
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        let mut order = Vec::with_capacity(unique.len());
        let mut seen = std::collections::HashSet::new();
        for s in sightings {
            if seen.insert(s.indicator.as_str())
                && let Some(state) = states.remove(&s.indicator)
            {
                order.push(state);
            }
        }
        Ok(order)
    }

    fn hidden_dangers_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<(Position, StoredHiddenDanger)>, StoreError> {
        let columns = HD_COLUMNS
            .split(", ")
            .map(|c| format!("h.{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.conn()?
            .query(
                &format!(
                    "SELECT {columns}, r.seq FROM hidden_danger_revisions r
                     JOIN hidden_dangers h ON h.id = r.hd_id
                     WHERE r.seq > $1 ORDER BY r.seq LIMIT $2"
                ),
                &[
                    &watermark.to_backend(),
                    &(limit.min(i64::MAX as u64) as i64),
                ],
            )
            .map_err(pg)?
            .iter()
            .map(|r| Ok((Position::from_backend(get(r, 9)?), hd_from_row(r)?)))
            .collect()
    }
}
