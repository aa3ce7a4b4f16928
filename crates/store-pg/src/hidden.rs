//! Reporting users and their hidden dangers.

use std::collections::HashMap;
use std::io;

use postgres::Row;
use postgres::types::{ToSql, Type};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::hidden_danger::HiddenDanger;
use br_cti_domain::model::{
    HiddenDangerFilter, HiddenDangerRevision, ReportClaim, ReportKey, StoredHiddenDanger,
    TokenBucket, Upsert, UserInfo,
};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::{IssueLevel, Tlp};
use br_cti_store::{HiddenDangerStore, StoreError};

use crate::{
    PgStore, count, get, hash, json_text, limit_offset, lock, numbered, parsed, pg, snapshot,
    xact_lock,
};

/// An item of a batch with what is stored of it.
struct Prepared<'a> {
    hd: &'a HiddenDanger,
    data: String,
    raw_sha: String,
    content: String,
    addresses: String,
}

/// A record's state while a batch is worked out.
struct Current {
    /// Its id when it is stored already.
    id: Option<i64>,
    revision: i64,
    content: String,
    /// The batch's last item that changed it.
    last: Option<usize>,
}

/// Records to write, column by column (one `UNNEST`).
#[derive(Default)]
struct RecordColumns<'a> {
    risk_id: Vec<&'a str>,
    revision: Vec<i64>,
    unit_name: Vec<&'a str>,
    issue_level: Vec<i64>,
    judge_state: Vec<&'a str>,
    notice_state: Vec<&'a str>,
    addresses: Vec<&'a str>,
    start_ms: Vec<i64>,
    end_ms: Vec<i64>,
    data: Vec<&'a str>,
    raw_event: Vec<&'a str>,
    raw_sha: Vec<&'a str>,
    content: Vec<&'a str>,
}

impl<'a> RecordColumns<'a> {
    fn push(&mut self, p: &'a Prepared<'a>, revision: i64) {
        self.risk_id.push(&p.hd.risk_id);
        self.revision.push(revision);
        self.unit_name.push(&p.hd.unit_name);
        self.issue_level.push(i64::from(p.hd.issue_level.number()));
        self.judge_state.push(p.hd.judge_state.as_str());
        self.notice_state.push(p.hd.notice_state.as_str());
        self.addresses.push(&p.addresses);
        self.start_ms.push(p.hd.start_ms);
        self.end_ms.push(p.hd.end_ms);
        self.data.push(&p.data);
        self.raw_event.push(&p.hd.raw_event);
        self.raw_sha.push(&p.raw_sha);
        self.content.push(&p.content);
    }
}

pub(crate) const HD_COLUMNS: &str =
    "id, user_name, risk_id, revision, data, raw_event, raw_event_sha256, created_at, updated_at";

pub(crate) fn hd_from_row(r: &Row) -> Result<StoredHiddenDanger, StoreError> {
    Ok(StoredHiddenDanger {
        id: get(r, 0)?,
        user: get(r, 1)?,
        risk_id: get(r, 2)?,
        revision: get(r, 3)?,
        data: get(r, 4)?,
        raw_event: get(r, 5)?,
        raw_event_sha256: hash(r, 6)?,
        created_at: get(r, 7)?,
        updated_at: get(r, 8)?,
    })
}

/// The stored state of a batch's records (`$1` the user, `$2` the risk ids): one probe of the
/// unique index per risk id, whatever the statistics say. Written as `risk_id = ANY($2)`, a
/// table autovacuum had not analysed yet (a node's first minutes of reports) was read through
/// every record of the user and filtered: 208 ms a batch of 500 at 216,000 records, against
/// 1.6 ms this way; hidden-danger ingest on PostgreSQL went from 5,614 to 13,227 items/s.
const STORED_STATES: &str = "SELECT h.risk_id, h.id, h.revision, h.content_sha256
     FROM UNNEST($2::text[]) AS k(risk_id)
     CROSS JOIN LATERAL (
         SELECT risk_id, id, revision, content_sha256 FROM hidden_dangers
         WHERE user_name = $1 AND risk_id = k.risk_id
     ) h";

type Args = Vec<Box<dyn ToSql + Sync>>;

/// The `WHERE` clause of a hidden-danger filter and its arguments (`$1` …).
fn hd_filter_sql(filter: &HiddenDangerFilter) -> (String, Args) {
    let mut clauses: Vec<String> = Vec::new();
    let mut args: Args = Vec::new();
    let arg = |args: &mut Args, v: Box<dyn ToSql + Sync>| {
        args.push(v);
        format!("${}", args.len())
    };
    if let Some(u) = &filter.user {
        let p = arg(&mut args, Box::new(u.clone()));
        clauses.push(format!("user_name = {p}"));
    }
    if let Some(u) = &filter.unit_name {
        let p = arg(&mut args, Box::new(u.clone()));
        clauses.push(format!("unit_name = {p}"));
    }
    if let Some(l) = filter.issue_level {
        let p = arg(&mut args, Box::new(i64::from(l.number())));
        clauses.push(format!("issue_level = {p}"));
    }
    if let Some(j) = &filter.judge_state {
        let p = arg(&mut args, Box::new(j.as_str().to_string()));
        clauses.push(format!("judge_state = {p}"));
    }
    if let Some(n) = &filter.notice_state {
        let p = arg(&mut args, Box::new(n.as_str().to_string()));
        clauses.push(format!("notice_state = {p}"));
    }
    if let Some(t) = filter.since_ms {
        let p = arg(&mut args, Box::new(t));
        clauses.push(format!("end_ms >= {p}"));
    }
    if let Some(t) = filter.until_ms {
        let p = arg(&mut args, Box::new(t));
        clauses.push(format!("start_ms <= {p}"));
    }
    if let Some(ip) = &filter.ip {
        let p = arg(&mut args, Box::new(ip.clone()));
        clauses.push(format!(
            "(data::jsonb ->> 'issueIP' = {p} OR addresses::jsonb @> jsonb_build_array({p}::text))"
        ));
    }
    let filter_sql = if clauses.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", clauses.join(" AND "))
    };
    (filter_sql, args)
}

fn refs(args: &Args) -> Vec<&(dyn ToSql + Sync)> {
    args.iter().map(|a| &**a as &(dyn ToSql + Sync)).collect()
}

impl HiddenDangerStore for PgStore {
    fn claim_report(
        &self,
        key: &ReportKey<'_>,
        body_sha256: &Sha256Hex,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<ReportClaim, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // Typed statements on this path (every report runs it): one round trip each instead of
        // a prepare and an execute.
        tx.execute_typed(
            "DELETE FROM hd_requests WHERE expires_ms < $1",
            &[(&now_ms, Type::INT8)],
        )
        .map_err(pg)?;
        // Two nodes inserting one key at once: the second waits for the first's commit and
        // then finds its row.
        let inserted = tx
            .execute_typed(
                "INSERT INTO hd_requests (user_name, timestamp, sign, body_sha256, expires_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    (&key.user, Type::TEXT),
                    (&key.timestamp, Type::TEXT),
                    (&key.sign, Type::TEXT),
                    (&body_sha256.as_str(), Type::TEXT),
                    (&now_ms.saturating_add(ttl_ms), Type::INT8),
                ],
            )
            .map_err(pg)?;
        let claim = if inserted == 1 {
            ReportClaim::Claimed
        } else {
            let r = tx
                .query_one(
                    "SELECT body_sha256, outcome, answer FROM hd_requests
                     WHERE user_name = $1 AND timestamp = $2 AND sign = $3",
                    &[&key.user, &key.timestamp, &key.sign],
                )
                .map_err(pg)?;
            let stored: String = get(&r, 0)?;
            ReportClaim::seen(body_sha256, &stored, get(&r, 1)?, get(&r, 2)?)
        };
        tx.commit().map_err(pg)?;
        Ok(claim)
    }

    fn settle_report(
        &self,
        key: &ReportKey<'_>,
        outcome: &str,
        answer: &str,
    ) -> Result<(), StoreError> {
        self.conn()?
            .execute_typed(
                "UPDATE hd_requests SET outcome = $4, answer = $5
                 WHERE user_name = $1 AND timestamp = $2 AND sign = $3",
                &[
                    (&key.user, Type::TEXT),
                    (&key.timestamp, Type::TEXT),
                    (&key.sign, Type::TEXT),
                    (&outcome, Type::TEXT),
                    (&answer, Type::TEXT),
                ],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn release_report(&self, key: &ReportKey<'_>) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "DELETE FROM hd_requests WHERE user_name = $1 AND timestamp = $2 AND sign = $3",
                &[&key.user, &key.timestamp, &key.sign],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn take_report_token(
        &self,
        user: &str,
        bucket: TokenBucket,
        now_ms: i64,
    ) -> Result<Result<(), f64>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // A row to lock, then read-modify-write under the lock: one bucket for all nodes.
        // Typed statements (one round trip each): the row stays locked until the commit.
        tx.execute_typed(
            "INSERT INTO hd_rate (user_name, tokens, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[
                (&user, Type::TEXT),
                (&bucket.burst.max(1.0), Type::FLOAT8),
                (&now_ms, Type::INT8),
            ],
        )
        .map_err(pg)?;
        let r = tx
            .query_typed_one(
                "SELECT tokens, at_ms FROM hd_rate WHERE user_name = $1 FOR UPDATE",
                &[(&user, Type::TEXT)],
            )
            .map_err(pg)?;
        let ((tokens, at), taken) = bucket.take(Some((get(&r, 0)?, get(&r, 1)?)), now_ms);
        tx.execute_typed(
            "UPDATE hd_rate SET tokens = $2, at_ms = $3 WHERE user_name = $1",
            &[
                (&user, Type::TEXT),
                (&tokens, Type::FLOAT8),
                (&at, Type::INT8),
            ],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(taken)
    }

    fn add_user(&self, name: &str, token: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let n = self
            .conn()?
            .execute(
                "INSERT INTO hd_users (name, token, created_at, rotated_at) VALUES ($1, $2, $3, $3)
                 ON CONFLICT (name) DO NOTHING",
                &[&name, &token, &now],
            )
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::Conflict(format!(
                "user {name:?} exists already"
            )));
        }
        Ok(())
    }

    fn user_token(&self, name: &str) -> Result<Option<String>, StoreError> {
        self.conn()?
            .query_typed_opt(
                "SELECT token FROM hd_users WHERE name = $1",
                &[(&name, Type::TEXT)],
            )
            .map_err(pg)?
            .map(|r| get(&r, 0))
            .transpose()
    }

    fn users(&self) -> Result<Vec<UserInfo>, StoreError> {
        self.conn()?
            .query(
                "SELECT name, created_at, rotated_at, tlp FROM hd_users ORDER BY name",
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(UserInfo {
                    name: get(r, 0)?,
                    created_at: get(r, 1)?,
                    rotated_at: get(r, 2)?,
                    tlp: parsed(r, 3, "user TLP level", Tlp::from_word)?,
                })
            })
            .collect()
    }

    fn rotate_user(&self, name: &str, token: &str) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .execute(
                "UPDATE hd_users SET token = $2, rotated_at = $3 WHERE name = $1",
                &[&name, &token, &now_ms()],
            )
            .map_err(pg)?
            > 0)
    }

    fn remove_user(&self, name: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        tx.execute("DELETE FROM taxii_grants WHERE user_name = $1", &[&name])
            .map_err(pg)?;
        let n = tx
            .execute("DELETE FROM hd_users WHERE name = $1", &[&name])
            .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(n > 0)
    }

    fn report_tlp(&self, name: &str) -> Result<Option<Tlp>, StoreError> {
        let row = self
            .conn()?
            .query_opt("SELECT report_tlp FROM hd_users WHERE name = $1", &[&name])
            .map_err(pg)?;
        let text: Option<String> = match row {
            Some(r) => get(&r, 0)?,
            None => None,
        };
        match text {
            None => Ok(None),
            Some(t) => Tlp::from_word(&t).map(Some).ok_or_else(|| {
                StoreError::Corrupt(format!("stored report TLP level {t:?} does not parse"))
            }),
        }
    }

    fn set_report_tlp(&self, name: &str, tlp: Option<Tlp>) -> Result<bool, StoreError> {
        Ok(self
            .conn()?
            .execute(
                "UPDATE hd_users SET report_tlp = $2 WHERE name = $1",
                &[&name, &tlp.map(Tlp::as_str)],
            )
            .map_err(pg)?
            == 1)
    }

    fn upsert_hidden_dangers(
        &self,
        user: &str,
        items: &[HiddenDanger],
    ) -> Result<Vec<Upsert>, StoreError> {
        // Serialise and hash before taking a connection. "Unchanged" is the domain's rule: the
        // same content digest as the stored record.
        let prepared: Vec<Prepared<'_>> = items
            .iter()
            .map(|hd| Prepared {
                hd,
                data: hd.fields_json(),
                raw_sha: hd.raw_event_sha256(),
                content: hd.content_digest(),
                addresses: json_text(&hd.addresses()),
            })
            .collect();
        let now = now_ms();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // One writer at a time: a record's revisions are numbered in order, and the publisher
        // follows the order of revisions.
        xact_lock(&mut tx, lock::HIDDEN_DANGERS)?;
        // The batch in four statements, whatever its size: the stored records of its risk ids,
        // then (worked out here, item by item, as if stored one at a time) the new records,
        // the changed ones and every revision.
        let mut risk_ids: Vec<&str> = items.iter().map(|hd| hd.risk_id.as_str()).collect();
        risk_ids.sort_unstable();
        risk_ids.dedup();
        let mut state: HashMap<&str, Current> = HashMap::new();
        for r in tx
            .query_typed(
                STORED_STATES,
                &[(&user, Type::TEXT), (&risk_ids, Type::TEXT_ARRAY)],
            )
            .map_err(pg)?
        {
            let risk: String = get(&r, 0)?;
            let Ok(i) = risk_ids.binary_search(&risk.as_str()) else {
                continue;
            };
            state.insert(
                risk_ids[i],
                Current {
                    id: Some(get(&r, 1)?),
                    revision: get(&r, 2)?,
                    content: get(&r, 3)?,
                    last: None,
                },
            );
        }
        let mut out = Vec::with_capacity(items.len());
        // Revisions in item order: (risk id, revision, item).
        let mut revisions: Vec<(&str, i64, usize)> = Vec::new();
        for (i, p) in prepared.iter().enumerate() {
            let risk = p.hd.risk_id.as_str();
            match state.get_mut(risk) {
                Some(cur) if cur.content == p.content => out.push(Upsert::Unchanged),
                Some(cur) => {
                    cur.revision += 1;
                    cur.content = p.content.clone();
                    cur.last = Some(i);
                    revisions.push((risk, cur.revision, i));
                    // Created earlier in this same batch: still a creation for the caller's
                    // first item, an update for this one.
                    out.push(Upsert::Updated);
                }
                None => {
                    state.insert(
                        risk,
                        Current {
                            id: None,
                            revision: 1,
                            content: p.content.clone(),
                            last: Some(i),
                        },
                    );
                    revisions.push((risk, 1, i));
                    out.push(Upsert::Created);
                }
            }
        }
        // New records (their final state), then the changed ones.
        let mut new = RecordColumns::default();
        let mut changed = RecordColumns::default();
        let mut changed_ids: Vec<i64> = Vec::new();
        for risk in &risk_ids {
            let Some(cur) = state.get(risk) else { continue };
            let Some(last) = cur.last else { continue };
            match cur.id {
                None => new.push(&prepared[last], cur.revision),
                Some(id) => {
                    changed.push(&prepared[last], cur.revision);
                    changed_ids.push(id);
                }
            }
        }
        let mut ids: HashMap<String, i64> = HashMap::new();
        if !new.risk_id.is_empty() {
            for r in tx
                .query_typed(
                    "INSERT INTO hidden_dangers (user_name, risk_id, revision, unit_name,
                         issue_level, judge_state, notice_state, addresses, start_ms, end_ms, data,
                         raw_event, raw_event_sha256, content_sha256, created_at, updated_at)
                     SELECT $1, risk_id, revision, unit_name, issue_level, judge_state,
                            notice_state, addresses, start_ms, end_ms, data, raw_event,
                            raw_event_sha256, content_sha256, $2, $2
                     FROM UNNEST($3::text[], $4::int8[], $5::text[], $6::int8[], $7::text[],
                                 $8::text[], $9::text[], $10::int8[], $11::int8[], $12::text[],
                                 $13::text[], $14::text[], $15::text[])
                          WITH ORDINALITY AS t(risk_id, revision, unit_name, issue_level,
                              judge_state, notice_state, addresses, start_ms, end_ms, data,
                              raw_event, raw_event_sha256, content_sha256, n)
                     ORDER BY n
                     RETURNING risk_id, id",
                    &[
                        (&user, Type::TEXT),
                        (&now, Type::INT8),
                        (&new.risk_id, Type::TEXT_ARRAY),
                        (&new.revision, Type::INT8_ARRAY),
                        (&new.unit_name, Type::TEXT_ARRAY),
                        (&new.issue_level, Type::INT8_ARRAY),
                        (&new.judge_state, Type::TEXT_ARRAY),
                        (&new.notice_state, Type::TEXT_ARRAY),
                        (&new.addresses, Type::TEXT_ARRAY),
                        (&new.start_ms, Type::INT8_ARRAY),
                        (&new.end_ms, Type::INT8_ARRAY),
                        (&new.data, Type::TEXT_ARRAY),
                        (&new.raw_event, Type::TEXT_ARRAY),
                        (&new.raw_sha, Type::TEXT_ARRAY),
                        (&new.content, Type::TEXT_ARRAY),
                    ],
                )
                .map_err(pg)?
            {
                ids.insert(get(&r, 0)?, get(&r, 1)?);
            }
        }
        if !changed_ids.is_empty() {
            tx.execute_typed(
                "UPDATE hidden_dangers h SET revision = t.revision, unit_name = t.unit_name,
                     issue_level = t.issue_level, judge_state = t.judge_state,
                     notice_state = t.notice_state, addresses = t.addresses,
                     start_ms = t.start_ms, end_ms = t.end_ms, data = t.data,
                     raw_event = t.raw_event, raw_event_sha256 = t.raw_event_sha256,
                     content_sha256 = t.content_sha256, updated_at = $1
                 FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::int8[], $6::text[],
                             $7::text[], $8::text[], $9::int8[], $10::int8[], $11::text[],
                             $12::text[], $13::text[], $14::text[])
                      AS t(id, revision, unit_name, issue_level, judge_state, notice_state,
                           addresses, start_ms, end_ms, data, raw_event, raw_event_sha256,
                           content_sha256)
                 WHERE h.id = t.id",
                &[
                    (&now, Type::INT8),
                    (&changed_ids, Type::INT8_ARRAY),
                    (&changed.revision, Type::INT8_ARRAY),
                    (&changed.unit_name, Type::TEXT_ARRAY),
                    (&changed.issue_level, Type::INT8_ARRAY),
                    (&changed.judge_state, Type::TEXT_ARRAY),
                    (&changed.notice_state, Type::TEXT_ARRAY),
                    (&changed.addresses, Type::TEXT_ARRAY),
                    (&changed.start_ms, Type::INT8_ARRAY),
                    (&changed.end_ms, Type::INT8_ARRAY),
                    (&changed.data, Type::TEXT_ARRAY),
                    (&changed.raw_event, Type::TEXT_ARRAY),
                    (&changed.raw_sha, Type::TEXT_ARRAY),
                    (&changed.content, Type::TEXT_ARRAY),
                ],
            )
            .map_err(pg)?;
        }
        if !revisions.is_empty() {
            let mut hd_id = Vec::with_capacity(revisions.len());
            let mut number = Vec::with_capacity(revisions.len());
            let mut data = Vec::with_capacity(revisions.len());
            let mut raw_event = Vec::with_capacity(revisions.len());
            let mut raw_sha = Vec::with_capacity(revisions.len());
            for (risk, revision, i) in &revisions {
                let id = match state[risk].id {
                    Some(id) => id,
                    None => *ids.get(*risk).ok_or_else(|| {
                        StoreError::Corrupt(format!("hidden danger {risk:?} was not inserted"))
                    })?,
                };
                hd_id.push(id);
                number.push(*revision);
                data.push(prepared[*i].data.as_str());
                raw_event.push(prepared[*i].hd.raw_event.as_str());
                raw_sha.push(prepared[*i].raw_sha.as_str());
            }
            tx.execute_typed(
                "INSERT INTO hidden_danger_revisions (hd_id, revision, data, raw_event,
                     raw_event_sha256, received_at)
                 SELECT hd_id, revision, data, raw_event, raw_event_sha256, $1
                 FROM UNNEST($2::int8[], $3::int8[], $4::text[], $5::text[], $6::text[])
                      WITH ORDINALITY AS t(hd_id, revision, data, raw_event, raw_event_sha256, n)
                 ORDER BY n",
                &[
                    (&now, Type::INT8),
                    (&hd_id, Type::INT8_ARRAY),
                    (&number, Type::INT8_ARRAY),
                    (&data, Type::TEXT_ARRAY),
                    (&raw_event, Type::TEXT_ARRAY),
                    (&raw_sha, Type::TEXT_ARRAY),
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)?;
        Ok(out)
    }

    fn hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StoredHiddenDanger>, u64), StoreError> {
        let (filter_sql, mut args) = hd_filter_sql(filter);
        let mut conn = self.conn()?;
        // One snapshot for the count and the page.
        let mut tx = snapshot(&mut conn)?;
        let total: i64 = get(
            &tx.query_one(
                &format!("SELECT COUNT(*) FROM hidden_dangers {filter_sql}"),
                &refs(&args),
            )
            .map_err(pg)?,
            0,
        )?;
        let (limit, offset) = limit_offset(page);
        args.push(Box::new(limit));
        args.push(Box::new(offset));
        let n = args.len();
        let rows = tx
            .query(
                &format!(
                    "SELECT {HD_COLUMNS} FROM hidden_dangers {filter_sql}
                     ORDER BY updated_at DESC, id DESC LIMIT ${} OFFSET ${n}",
                    n - 1
                ),
                &refs(&args),
            )
            .map_err(pg)?
            .iter()
            .map(hd_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        tx.commit().map_err(pg)?;
        Ok((rows, total.max(0) as u64))
    }

    fn hidden_danger_counts(
        &self,
        filter: &HiddenDangerFilter,
    ) -> Result<Vec<(String, IssueLevel, u64)>, StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        let mut conn = self.conn()?;
        let mut out = Vec::new();
        for r in conn
            .query(
                &format!(
                    "SELECT user_name, issue_level, count(*) FROM hidden_dangers {filter_sql}
                     GROUP BY user_name, issue_level ORDER BY user_name, issue_level"
                ),
                &refs(&args),
            )
            .map_err(pg)?
        {
            out.push((
                get(&r, 0)?,
                numbered(&r, 1, "issue level", IssueLevel::from_number)?,
                count(&r, 2)?,
            ));
        }
        Ok(out)
    }

    fn scan_hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        f: &mut dyn FnMut(StoredHiddenDanger) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        let mut conn = self.conn()?;
        // One snapshot, read through a cursor a batch at a time: memory stays bounded and the
        // other connections of the pool stay free for reports and pages meanwhile.
        let mut tx = snapshot(&mut conn)?;
        let portal = tx
            .bind(
                &format!(
                    "SELECT {HD_COLUMNS} FROM hidden_dangers {filter_sql}
                     ORDER BY updated_at DESC, id DESC"
                ),
                &refs(&args),
            )
            .map_err(pg)?;
        loop {
            let batch = tx.query_portal(&portal, 256).map_err(pg)?;
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                f(hd_from_row(r)?)?;
            }
        }
        tx.commit().map_err(pg)
    }

    fn hidden_danger(
        &self,
        user: &str,
        risk_id: &str,
    ) -> Result<Option<(StoredHiddenDanger, Vec<HiddenDangerRevision>)>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = snapshot(&mut conn)?;
        let Some(row) = tx
            .query_opt(
                &format!(
                    "SELECT {HD_COLUMNS} FROM hidden_dangers WHERE user_name = $1 AND risk_id = $2"
                ),
                &[&user, &risk_id],
            )
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let hd = hd_from_row(&row)?;
        let revisions = tx
            .query(
                "SELECT revision, data, raw_event_sha256, received_at FROM hidden_danger_revisions
                 WHERE hd_id = $1 ORDER BY revision",
                &[&hd.id],
            )
            .map_err(pg)?
            .iter()
            .map(|r| {
                Ok(HiddenDangerRevision {
                    revision: get(r, 0)?,
                    data: get(r, 1)?,
                    raw_event_sha256: hash(r, 2)?,
                    received_at: get(r, 3)?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        tx.commit().map_err(pg)?;
        Ok(Some((hd, revisions)))
    }
}

#[cfg(test)]
mod tests {
    use super::STORED_STATES;
    use crate::testing::fresh_schema;

    /// A batch's stored states are looked up by the unique index even before the table has
    /// statistics (a new node, a burst of reports before autovacuum comes round): never a scan
    /// of the user's records filtered by the batch's risk ids.
    #[test]
    fn stored_states_probe_the_index_before_any_analyze() {
        let db = fresh_schema();
        let mut conn = db.conn().unwrap();
        conn.batch_execute(
            "INSERT INTO hidden_dangers (user_name, risk_id, revision, unit_name, issue_level,
                 judge_state, notice_state, addresses, start_ms, end_ms, data, raw_event,
                 raw_event_sha256, content_sha256, created_at, updated_at)
             SELECT 'u', 'r-' || g, 1, 'unit', 1, 'judgeStateTrue', 'noticeStateNone', '[]', 0,
                    0, '{}', '{}', '', '', 0, 0
             FROM generate_series(1, 50000) g",
        )
        .unwrap();
        let wanted: Vec<String> = (0..500).map(|i| format!("r-{}", i * 90)).collect();
        let plan: Vec<String> = conn
            .query(&format!("EXPLAIN {STORED_STATES}"), &[&"u", &wanted])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("Index"), "{plan}");
        assert!(!plan.contains("Filter"), "{plan}");
        assert!(!plan.contains("Seq Scan on hidden_dangers"), "{plan}");
        let found = conn.query(STORED_STATES, &[&"u", &wanted]).unwrap();
        assert_eq!(found.len(), 499, "r-0 is not stored");
    }
}
