//! TAXII collections in the embedded database. Every object version is a row; `seq` (insertion
//! order) is the paging key, so a page costs O(limit) on the `(collection, is_latest, seq)`
//! index whatever the collection's size. `date_added` is assigned inside the writing
//! transaction as strictly increasing microseconds, so it orders like `seq` also when several
//! nodes share one database.

use std::collections::HashMap;

use rusqlite::types::Value as V;
use rusqlite::{OptionalExtension, params, params_from_iter};

use crate::sqlite::SqliteStore;
use crate::sqlite::{HD_COLUMNS, hash, hd_from_row, numbered, parsed, sql, taxii_key, write_tx};
use br_cti_domain::ioc::{Confidence, IocSighting, IocState};
use br_cti_domain::model::{
    NewTaxiiObject, Position, RecordedStixFile, StoredHiddenDanger, TaxiiBody, TaxiiObject,
    TaxiiQuery, TaxiiStatus, VersionMatch,
};
use br_cti_domain::vocab::{DataType, Tlp};
use br_cti_store::{StoreError, TaxiiStore};

/// A conversion's stored indicator validity, refused when out of range.
fn valid_days(v: Option<i64>) -> rusqlite::Result<Option<u32>> {
    v.map(br_cti_domain::ioc::stored_valid_days)
        .transpose()
        .map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Integer, e.into())
        })
}

/// A stored confidence, refused when out of range (the registry was written by something else).
fn stored_confidence(v: i64) -> rusqlite::Result<Confidence> {
    Confidence::from_stored(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(4, rusqlite::types::Type::Integer, Box::new(e))
    })
}

fn now_us() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1000) as i64
}

/// The position of the first object, of any collection, added after `t` (microseconds), or
/// `None` when there is none. `date_added` grows with `seq` across the whole table (each add
/// starts past the last row's), so a binary search on `seq` finds it: about 25 probes of the
/// table's own b-tree, where an index on `(collection, date_added)` cost every publishing
/// commit a fifth index to write. The page's own conditions then skip other collections.
fn first_added_after(conn: &rusqlite::Connection, t: i64) -> Result<Option<i64>, StoreError> {
    let mut at = conn
        .prepare_cached(
            "SELECT seq, date_added FROM taxii_objects WHERE seq >= ?1 ORDER BY seq LIMIT 1",
        )
        .map_err(sql)?;
    let mut probe = |from: i64| -> Result<Option<(i64, i64)>, StoreError> {
        at.query_row([from], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
            .map_err(sql)
    };
    let Some((last_seq, _)) = last_row(conn)?.filter(|&(_, added)| added > t) else {
        return Ok(None);
    };
    // The first row at or past any position below `lo` was added at or before `t`; the first
    // at or past `hi` after it.
    let (mut lo, mut hi) = (0i64, last_seq);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        match probe(mid)? {
            Some((_, added)) if added > t => hi = mid,
            _ => lo = mid + 1,
        }
    }
    Ok(probe(hi)?.map(|(seq, _)| seq))
}

/// The position and `date_added` of the table's last row, of any collection.
fn last_row(conn: &rusqlite::Connection) -> Result<Option<(i64, i64)>, StoreError> {
    conn.query_row(
        "SELECT seq, date_added FROM taxii_objects ORDER BY seq DESC LIMIT 1",
        [],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )
    .optional()
    .map_err(sql)
}

/// The SQL condition of a list of `match[version]` values (OR-ed); none means `last`.
fn version_clause(versions: &[VersionMatch], args: &mut Vec<V>) -> String {
    if versions.is_empty() {
        return "is_latest = 1".into();
    }
    let parts: Vec<String> = versions
        .iter()
        .map(|v| match v {
            VersionMatch::Last => "is_latest = 1".to_string(),
            VersionMatch::First => "is_first = 1".to_string(),
            VersionMatch::All => "1".to_string(),
            VersionMatch::At(us) => {
                args.push(V::Integer(*us));
                "version_us = ?".to_string()
            }
        })
        .collect();
    format!("({})", parts.join(" OR "))
}

fn in_clause(column: &str, values: &[String], args: &mut Vec<V>) -> Option<String> {
    if values.is_empty() {
        return None;
    }
    args.extend(values.iter().map(|v| V::Text(v.clone())));
    Some(format!(
        "{column} IN ({})",
        vec!["?"; values.len()].join(", ")
    ))
}

impl TaxiiStore for SqliteStore {
    fn taxii_add(
        &self,
        collection: &str,
        objects: &[NewTaxiiObject],
        watermark: Option<(&str, Position)>,
    ) -> Result<Vec<bool>, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let mut added = Vec::with_capacity(objects.len());
            {
                let last = last_row(&tx)?.map_or(0, |(_, added)| added);
                let mut date_added = now_us().max(last + 1);
                // All versions of the id, by its 8-byte key: one probe of a small index,
                // whatever the collection's size. `INDEXED BY`: the node never runs `ANALYZE`,
                // and without statistics SQLite may take a `(collection, …)` index for the
                // lookup and scan the collection (it does for the same table built by hand).
                let mut versions = tx
                    .prepare_cached(
                        "SELECT seq, version, version_us, is_latest, is_first
                     FROM taxii_objects INDEXED BY taxii_by_key
                     WHERE id_key = ?1 AND collection = ?2 AND id = ?3",
                    )
                    .map_err(sql)?;
                let mut unflag_latest = tx
                    .prepare_cached("UPDATE taxii_objects SET is_latest = 0 WHERE seq = ?1")
                    .map_err(sql)?;
                let mut unflag_first = tx
                    .prepare_cached("UPDATE taxii_objects SET is_first = 0 WHERE seq = ?1")
                    .map_err(sql)?;
                let mut insert = tx.prepare_cached(
                    "INSERT INTO taxii_objects (collection, id, id_key, type, version, version_us,
                         spec_version, date_added, is_latest, is_first, object, tlp, body_ref)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                ).map_err(sql)?;
                for o in objects {
                    let key = taxii_key(collection, &o.id);
                    let known: Vec<(i64, String, i64, bool, bool)> = versions
                        .query_map(params![key, collection, o.id], |r| {
                            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
                        })
                        .map_err(sql)?
                        .collect::<Result<_, _>>()
                        .map_err(sql)?;
                    // One instant is one version, however it is written (`Z`, `.000Z`, `+08:00`).
                    if known.iter().any(|k| k.2 == o.version_us) {
                        added.push(false);
                        continue;
                    }
                    let cur_latest = known.iter().find(|k| k.3).map(|k| (k.0, k.2));
                    let cur_first = known.iter().find(|k| k.4).map(|k| (k.0, k.2));
                    let is_latest = match cur_latest {
                        None => true,
                        Some((seq, v)) if o.version_us >= v => {
                            unflag_latest.execute([seq]).map_err(sql)?;
                            true
                        }
                        Some(_) => false,
                    };
                    let is_first = match cur_first {
                        None => true,
                        Some((seq, v)) if o.version_us < v => {
                            unflag_first.execute([seq]).map_err(sql)?;
                            true
                        }
                        Some(_) => false,
                    };
                    insert
                        .execute(params![
                            collection,
                            o.id,
                            key,
                            o.kind,
                            o.version,
                            o.version_us,
                            o.spec_version,
                            date_added,
                            is_latest,
                            is_first,
                            o.body.text(),
                            o.tlp.rank(),
                            o.body.reference().as_ref().map(|r| &r[..])
                        ])
                        .map_err(sql)?;
                    date_added += 1;
                    added.push(true);
                }
            }
            let new_rows = added.iter().filter(|a| **a).count() as i64;
            if new_rows > 0 {
                tx.execute(
                    "INSERT INTO taxii_counts (collection, objects) VALUES (?1, ?2)
                     ON CONFLICT(collection) DO UPDATE SET objects = objects + excluded.objects",
                    params![collection, new_rows],
                )
                .map_err(sql)?;
            }
            if let Some((source, mark)) = watermark {
                tx.execute(
                    "INSERT INTO taxii_sync (source, watermark) VALUES (?1, ?2)
                     ON CONFLICT(source) DO UPDATE SET watermark = excluded.watermark",
                    params![source, mark.to_backend()],
                )
                .map_err(sql)?;
            }
            tx.commit().map_err(sql)?;
            Ok(added)
        })
    }

    fn taxii_page(
        &self,
        collection: &str,
        q: &TaxiiQuery,
    ) -> Result<(Vec<TaxiiObject>, bool), StoreError> {
        self.with(|conn| {
            let mut after = q.after.to_backend();
            if let Some(t) = q.added_after {
                match first_added_after(conn, t)? {
                    Some(seq) => after = after.max(seq - 1),
                    None => return Ok((Vec::new(), false)),
                }
            }
            // The conditions of a page besides the version, and their arguments.
            let mut args: Vec<V> = vec![
                V::Text(collection.to_string()),
                V::Integer(after),
                V::Integer(q.max_tlp.rank().into()),
            ];
            let mut clauses = vec![
                "collection = ?".to_string(),
                "seq > ?".to_string(),
                "tlp <= ?".to_string(),
                version_clause(&q.versions, &mut args),
            ];
            if !q.ids.is_empty() {
                // By the ids' keys (an index probe each), then the ids themselves.
                let keys: Vec<String> = q
                    .ids
                    .iter()
                    .map(|id| taxii_key(collection, id).to_string())
                    .collect();
                clauses.push(format!("id_key IN ({})", keys.join(", ")));
            }
            clauses.extend(in_clause("id", &q.ids, &mut args));
            clauses.extend(in_clause("type", &q.types, &mut args));
            clauses.extend(in_clause("spec_version", &q.spec_versions, &mut args));
            let limit = V::Integer(q.limit as i64 + 1);
            const COLUMNS: &str =
                "seq, id, type, version, spec_version, date_added, object, body_ref";
            let range = |latest: u8| {
                format!(
                    "SELECT {COLUMNS} FROM taxii_objects
                     WHERE is_latest = {latest} AND {} ORDER BY seq LIMIT ?",
                    clauses.join(" AND ")
                )
            };
            // The only collection index is `(collection, is_latest, seq)`: a page of latest
            // versions is one range of it; any other page merges the first `limit + 1` rows
            // of both ranges by `seq`, so it too reads O(limit) rows.
            let latest_only = q.versions.iter().all(|v| *v == VersionMatch::Last);
            let (statement, args) = if latest_only {
                let mut one = args;
                one.push(limit);
                (range(1), one)
            } else {
                let mut both = Vec::with_capacity(2 * args.len() + 3);
                for _ in 0..2 {
                    both.extend(args.iter().cloned());
                    both.push(limit.clone());
                }
                both.push(limit);
                (
                    format!(
                        "SELECT {COLUMNS} FROM (SELECT * FROM ({}) UNION ALL SELECT * FROM ({}))
                         ORDER BY seq LIMIT ?",
                        range(0),
                        range(1)
                    ),
                    both,
                )
            };
            let mut stmt = conn.prepare_cached(&statement).map_err(sql)?;
            let mut rows = stmt
                .query_map(params_from_iter(args.iter()), |r| {
                    Ok(TaxiiObject {
                        position: Position::from_backend(r.get(0)?),
                        id: r.get(1)?,
                        kind: r.get(2)?,
                        version: r.get(3)?,
                        spec_version: r.get(4)?,
                        date_added: r.get(5)?,
                        body: TaxiiBody::from_stored(
                            r.get(6)?,
                            r.get::<_, Option<Vec<u8>>>(7)?.as_deref(),
                        )
                        .map_err(|e| {
                            rusqlite::Error::FromSqlConversionFailure(
                                7,
                                rusqlite::types::Type::Blob,
                                Box::new(e),
                            )
                        })?,
                    })
                })
                .map_err(sql)?
                .collect::<Result<Vec<_>, _>>()
                .map_err(sql)?;
            let more = rows.len() as u64 > q.limit;
            rows.truncate(q.limit as usize);
            Ok((rows, more))
        })
    }

    fn taxii_delete(
        &self,
        collection: &str,
        id: &str,
        versions: &[VersionMatch],
        max_tlp: Tlp,
    ) -> Result<u64, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let key = taxii_key(collection, id);
            let mut args = vec![
                V::Integer(key),
                V::Text(collection.to_string()),
                V::Text(id.to_string()),
                V::Integer(max_tlp.rank().into()),
            ];
            let versions = if versions.is_empty() {
                vec![VersionMatch::All]
            } else {
                versions.to_vec()
            };
            let clause = version_clause(&versions, &mut args);
            let n = tx
                .execute(
                    &format!(
                        "DELETE FROM taxii_objects INDEXED BY taxii_by_key
                     WHERE id_key = ? AND collection = ? AND id = ? AND tlp <= ? AND {clause}"
                    ),
                    params_from_iter(args.iter()),
                )
                .map_err(sql)?;
            tx.execute(
                "UPDATE taxii_counts SET objects = objects - ?2 WHERE collection = ?1",
                params![collection, n as i64],
            )
            .map_err(sql)?;
            // The remaining versions get their first/last flags back.
            tx.execute(
                "UPDATE taxii_objects INDEXED BY taxii_by_key SET is_latest = 0, is_first = 0
                 WHERE id_key = ?1 AND collection = ?2 AND id = ?3",
                params![key, collection, id],
            )
            .map_err(sql)?;
            tx.execute(
                "UPDATE taxii_objects SET is_latest = 1 WHERE seq = (SELECT seq FROM taxii_objects INDEXED BY taxii_by_key
                     WHERE id_key = ?1 AND collection = ?2 AND id = ?3
                     ORDER BY version_us DESC, seq DESC LIMIT 1)",
                params![key, collection, id],
            )
            .map_err(sql)?;
            tx.execute(
                "UPDATE taxii_objects SET is_first = 1 WHERE seq = (SELECT seq FROM taxii_objects INDEXED BY taxii_by_key
                     WHERE id_key = ?1 AND collection = ?2 AND id = ?3
                     ORDER BY version_us ASC, seq ASC LIMIT 1)",
                params![key, collection, id],
            )
            .map_err(sql)?;
            tx.commit().map_err(sql)?;
            Ok(n as u64)
        })
    }

    fn taxii_save_status(&self, s: &TaxiiStatus) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO taxii_status (id, collection, request_timestamp, total, success_count,
                     failure_count, successes, failures) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    s.id,
                    s.collection,
                    s.request_timestamp,
                    s.total as i64,
                    s.success_count as i64,
                    s.failure_count as i64,
                    s.successes,
                    s.failures
                ],
            )
            .map_err(sql)?;
            Ok(())
        })
    }

    fn taxii_status(&self, id: &str) -> Result<Option<TaxiiStatus>, StoreError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT id, collection, request_timestamp, total, success_count, failure_count,
                         successes, failures FROM taxii_status WHERE id = ?1",
                [id],
                |r| {
                    Ok(TaxiiStatus {
                        id: r.get(0)?,
                        collection: r.get(1)?,
                        request_timestamp: r.get(2)?,
                        total: r.get::<_, i64>(3)? as u64,
                        success_count: r.get::<_, i64>(4)? as u64,
                        failure_count: r.get::<_, i64>(5)? as u64,
                        successes: r.get(6)?,
                        failures: r.get(7)?,
                    })
                },
            )
            .optional()
            .map_err(sql)
        })
    }

    fn user_by_token(&self, token: &str) -> Result<Option<String>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT name FROM hd_users WHERE token = ?1")
                .map_err(sql)?
                .query_row([token], |r| r.get(0))
                .optional()
                .map_err(sql)
        })
    }

    fn user_tlp(&self, user: &str) -> Result<Option<Tlp>, StoreError> {
        self.with(|conn| {
            conn.prepare_cached("SELECT tlp FROM hd_users WHERE name = ?1")
                .map_err(sql)?
                .query_row([user], |r| parsed(r, 0, "user TLP level", Tlp::from_word))
                .optional()
                .map_err(sql)
        })
    }

    fn set_user_tlp(&self, user: &str, tlp: Tlp) -> Result<bool, StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE hd_users SET tlp = ?2 WHERE name = ?1",
                params![user, tlp.as_str()],
            )
            .map(|n| n == 1)
            .map_err(sql)
        })
    }

    fn taxii_grants(&self, user: &str) -> Result<Vec<String>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached("SELECT collection FROM taxii_grants WHERE user = ?1 ORDER BY 1")
                .map_err(sql)?;
            stmt.query_map([user], |r| r.get(0))
                .map_err(sql)?
                .collect::<Result<_, _>>()
                .map_err(sql)
        })
    }

    fn taxii_grant(&self, user: &str, collection: &str) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "INSERT INTO taxii_grants (user, collection) VALUES (?1, ?2) ON CONFLICT DO NOTHING",
                params![user, collection],
            ).map_err(sql)?;
            Ok(())
        })
    }

    fn taxii_revoke(&self, user: &str, collection: &str) -> Result<bool, StoreError> {
        self.with(|conn| {
            Ok(conn
                .execute(
                    "DELETE FROM taxii_grants WHERE user = ?1 AND collection = ?2",
                    params![user, collection],
                )
                .map_err(sql)?
                > 0)
        })
    }

    fn taxii_watermark(&self, source: &str) -> Result<Position, StoreError> {
        self.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT watermark FROM taxii_sync WHERE source = ?1",
                    [source],
                    |r| r.get(0),
                )
                .optional()
                .map_err(sql)?
                .map_or(Position::START, Position::from_backend))
        })
    }

    fn stix_files_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<RecordedStixFile>, StoreError> {
        self.with(|conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT r.rowid, r.stix_file_hash, r.stix_type, r.source_file_hash, r.batch,
                     json_extract(j.params, '$.indicator_valid_days')
                 FROM stix_records r LEFT JOIN jobs j ON j.id = r.job_id
                 WHERE r.rowid > ?1 ORDER BY r.rowid LIMIT ?2",
                )
                .map_err(sql)?;
            stmt.query_map(params![watermark.to_backend(), limit as i64], |r| {
                Ok(RecordedStixFile {
                    position: Position::from_backend(r.get(0)?),
                    stix_file_hash: hash(r, 1)?,
                    data_type: numbered(r, 2, "STIX type", DataType::from_number)?,
                    source_file_hash: hash(r, 3)?,
                    batch: r.get::<_, i64>(4)? as u64,
                    indicator_valid_days: valid_days(r.get(5)?)?,
                })
            })
            .map_err(sql)?
            .collect::<Result<_, _>>()
            .map_err(sql)
        })
    }

    fn ioc_fold(
        &self,
        sightings: &[IocSighting],
        now_us: i64,
    ) -> Result<Vec<IocState>, StoreError> {
        self.with(|conn| {
            let tx = write_tx(conn).map_err(sql)?;
            let mut order: Vec<&str> = Vec::new();
            let mut states: HashMap<&str, IocState> = HashMap::new();
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT OR IGNORE INTO ioc_sightings
                         (indicator, file_hash, first_us, last_us, count, confidence, valid_until_us)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(sql)?;
                let mut read = tx
                    .prepare_cached(
                        "SELECT first_us, last_us, files, observations, confidence, modified_us,
                         valid_until_us FROM iocs WHERE indicator = ?1",
                    )
                    .map_err(sql)?;
                let mut write = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO iocs (indicator, first_us, last_us, files,
                         observations, confidence, modified_us, valid_until_us)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                    )
                    .map_err(sql)?;
                for s in sightings {
                    let id = s.indicator.as_str();
                    if !states.contains_key(id) {
                        let known = read
                            .query_row([id], |r| {
                                Ok(IocState {
                                    indicator: id.to_string(),
                                    first_us: r.get(0)?,
                                    last_us: r.get(1)?,
                                    files: r.get::<_, i64>(2)? as u64,
                                    observations: r.get::<_, i64>(3)? as u64,
                                    confidence: stored_confidence(r.get(4)?)?,
                                    modified_us: r.get(5)?,
                                    valid_until_us: r.get(6)?,
                                })
                            })
                            .optional()
                            .map_err(sql)?;
                        order.push(id);
                        if let Some(known) = known {
                            states.insert(id, known);
                        }
                    }
                    let inserted = insert
                        .execute(params![
                            id,
                            s.file.as_str(),
                            s.first_us,
                            s.last_us,
                            s.count.min(i64::MAX as u64) as i64,
                            s.confidence.get(),
                            s.valid_until_us
                        ])
                        .map_err(sql)?
                        == 1;
                    if !inserted {
                        continue;
                    }
                    let state = states.entry(id).or_insert_with(|| IocState::empty(id));
                    state.fold(s, now_us);
                    write
                        .execute(params![
                            id,
                            state.first_us,
                            state.last_us,
                            state.files as i64,
                            state.observations.min(i64::MAX as u64) as i64,
                            state.confidence.get(),
                            state.modified_us,
                            state.valid_until_us
                        ])
                        .map_err(sql)?;
                }
            }
            tx.commit().map_err(sql)?;
            Ok(order
                .into_iter()
                .filter_map(|id| states.remove(id))
                .collect())
        })
    }

    fn hidden_dangers_after(
        &self,
        watermark: Position,
        limit: u64,
    ) -> Result<Vec<(Position, StoredHiddenDanger)>, StoreError> {
        self.with(|conn| {
            let columns = HD_COLUMNS
                .split(", ")
                .map(|c| format!("h.{c}"))
                .collect::<Vec<_>>()
                .join(", ");
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {columns}, r.rowid FROM hidden_danger_revisions r JOIN hidden_dangers h ON h.id = r.hd_id
                 WHERE r.rowid > ?1 ORDER BY r.rowid LIMIT ?2"
            )).map_err(sql)?;
            stmt
                .query_map(params![watermark.to_backend(), limit as i64], |r| {
                    Ok((Position::from_backend(r.get(9)?), hd_from_row(r)?))
                }).map_err(sql)?
                .collect::<Result<_, _>>().map_err(sql)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use br_cti_domain::model::NewTaxiiObject;
    use br_cti_store::HiddenDangerStore;

    fn object(i: usize) -> NewTaxiiObject {
        NewTaxiiObject {
            id: format!("ipv4-addr--00000000-0000-5000-8000-{i:012}"),
            kind: "ipv4-addr".into(),
            version: String::new(),
            version_us: 0,
            spec_version: "2.1".into(),
            body: TaxiiBody::Text("{}".into()),
            tlp: Tlp::Clear,
        }
    }

    /// Two connections writing at once (the ingest path and the TAXII publisher) both succeed:
    /// write transactions take the lock up front instead of failing with SQLITE_BUSY when the
    /// other commits between their first read and first write.
    #[test]
    fn concurrent_writers_wait_for_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let a = SqliteStore::open(&path).unwrap();
        let b = SqliteStore::open(&path).unwrap();
        a.add_user("u", "t").unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..300 {
                    b.taxii_add(
                        "c",
                        &[object(i)],
                        Some(("x", Position::from_backend(i as i64))),
                    )
                    .unwrap();
                }
            });
            for i in 0..300 {
                let item = br_cti_domain::testing::sample(&format!("r{i}"));
                a.upsert_hidden_dangers("u", &[item]).unwrap();
            }
        });
        assert_eq!(b.taxii_watermark("x").unwrap(), Position::from_backend(299));
    }

    /// The publisher's connection leaves its checkpoints to a thread of its own: a commit far
    /// below the writer's own threshold still reaches the database file, and the objects are
    /// all there for another connection.
    #[test]
    fn a_bulk_writer_checkpoints_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.sqlite");
        let writer = SqliteStore::open_bulk_writer(&path).unwrap();
        let before = std::fs::metadata(&path).unwrap().len();
        // About 8 MB: 2,000 pages, past SQLite's default threshold (1,000) and far below the
        // bulk writer's.
        let body = format!("{{\"x\":\"{}\"}}", "y".repeat(2_000));
        let objects: Vec<NewTaxiiObject> = (0..4_000)
            .map(|i| NewTaxiiObject {
                body: TaxiiBody::Text(body.clone()),
                ..object(i)
            })
            .collect();
        writer.taxii_add("c", &objects, None).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let size = std::fs::metadata(&path).unwrap().len();
            if size > before + 7_000_000 {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {size} bytes (from {before}): nothing was \
                 checkpointed"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let reader = rusqlite::Connection::open(&path).unwrap();
        let count: i64 = reader
            .query_row(
                "SELECT count(*) FROM taxii_objects WHERE collection = 'c'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(count, 4_000);
    }

    /// A body reference that is not 44 bytes (the database changed by hand or damaged) is a
    /// corrupt value, as on PostgreSQL, not a fault of the database engine.
    #[test]
    fn a_damaged_body_reference_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(&dir.path().join("m.sqlite")).unwrap();
        db.taxii_add("c", &[object(1)], None).unwrap();
        db.with(|conn| {
            conn.execute("UPDATE taxii_objects SET body_ref = x'010203'", [])
                .map_err(sql)
        })
        .unwrap();
        let q = TaxiiQuery {
            after: Position::START,
            max_tlp: Tlp::Red,
            added_after: None,
            limit: 10,
            ids: vec![],
            types: vec![],
            versions: vec![],
            spec_versions: vec![],
        };
        let err = db.taxii_page("c", &q).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        assert!(err.to_string().contains("3 bytes, not 44"), "{err}");
    }
}
