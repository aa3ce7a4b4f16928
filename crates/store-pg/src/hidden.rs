//! Reporting users and their hidden dangers.

use std::io;

use postgres::types::ToSql;
use postgres::{IsolationLevel, Row};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::hidden_danger::HiddenDanger;
use br_cti_domain::model::{
    HiddenDangerFilter, HiddenDangerRevision, ReportClaim, ReportKey, StoredHiddenDanger,
    TokenBucket, Upsert, UserInfo,
};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::Tlp;
use br_cti_store::{HiddenDangerStore, StoreError};

use crate::{PgStore, get, hash, json_text, limit_offset, lock, parsed, pg, xact_lock};

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
        tx.execute("DELETE FROM hd_requests WHERE expires_ms < $1", &[&now_ms])
            .map_err(pg)?;
        // Two nodes inserting one key at once: the second waits for the first's commit and
        // then finds its row.
        let inserted = tx
            .execute(
                "INSERT INTO hd_requests (user_name, timestamp, sign, body_sha256, expires_ms)
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                &[
                    &key.user,
                    &key.timestamp,
                    &key.sign,
                    &body_sha256.as_str(),
                    &now_ms.saturating_add(ttl_ms),
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
            .execute(
                "UPDATE hd_requests SET outcome = $4, answer = $5
                 WHERE user_name = $1 AND timestamp = $2 AND sign = $3",
                &[&key.user, &key.timestamp, &key.sign, &outcome, &answer],
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
        tx.execute(
            "INSERT INTO hd_rate (user_name, tokens, at_ms) VALUES ($1, $2, $3)
             ON CONFLICT DO NOTHING",
            &[&user, &bucket.burst.max(1.0), &now_ms],
        )
        .map_err(pg)?;
        let r = tx
            .query_one(
                "SELECT tokens, at_ms FROM hd_rate WHERE user_name = $1 FOR UPDATE",
                &[&user],
            )
            .map_err(pg)?;
        let ((tokens, at), taken) = bucket.take(Some((get(&r, 0)?, get(&r, 1)?)), now_ms);
        tx.execute(
            "UPDATE hd_rate SET tokens = $2, at_ms = $3 WHERE user_name = $1",
            &[&user, &tokens, &at],
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
            .query_opt("SELECT token FROM hd_users WHERE name = $1", &[&name])
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
        let now = now_ms();
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        // One writer at a time: a record's revisions are numbered in order, and the publisher
        // follows the order of revisions.
        xact_lock(&mut tx, lock::HIDDEN_DANGERS)?;
        let find = tx
            .prepare(
                "SELECT id, revision, content_sha256 FROM hidden_dangers
                 WHERE user_name = $1 AND risk_id = $2",
            )
            .map_err(pg)?;
        let insert = tx
            .prepare(
                "INSERT INTO hidden_dangers (user_name, risk_id, revision, unit_name, issue_level,
                     judge_state, notice_state, addresses, start_ms, end_ms, data, raw_event,
                     raw_event_sha256, content_sha256, created_at, updated_at)
                 VALUES ($1, $2, 1, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14)
                 RETURNING id",
            )
            .map_err(pg)?;
        let update = tx
            .prepare(
                "UPDATE hidden_dangers SET revision = $2, unit_name = $3, issue_level = $4,
                     judge_state = $5, notice_state = $6, addresses = $7, start_ms = $8, end_ms = $9,
                     data = $10, raw_event = $11, raw_event_sha256 = $12, content_sha256 = $13,
                     updated_at = $14
                 WHERE id = $1",
            )
            .map_err(pg)?;
        let revision = tx
            .prepare(
                "INSERT INTO hidden_danger_revisions (hd_id, revision, data, raw_event,
                     raw_event_sha256, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .map_err(pg)?;
        let mut out = Vec::with_capacity(items.len());
        for (hd, (data, raw_sha, content, addresses)) in items.iter().zip(&prepared) {
            let existing = tx.query_opt(&find, &[&user, &hd.risk_id]).map_err(pg)?;
            let level = i64::from(hd.issue_level.number());
            let (id, rev, outcome): (i64, i64, Upsert) = match existing {
                Some(r) if get::<String>(&r, 2)? == *content => {
                    out.push(Upsert::Unchanged);
                    continue;
                }
                Some(r) => {
                    let id: i64 = get(&r, 0)?;
                    let rev: i64 = get::<i64>(&r, 1)? + 1;
                    tx.execute(
                        &update,
                        &[
                            &id,
                            &rev,
                            &hd.unit_name,
                            &level,
                            &hd.judge_state.as_str(),
                            &hd.notice_state.as_str(),
                            addresses,
                            &hd.start_ms,
                            &hd.end_ms,
                            data,
                            &hd.raw_event,
                            raw_sha,
                            content,
                            &now,
                        ],
                    )
                    .map_err(pg)?;
                    (id, rev, Upsert::Updated)
                }
                None => {
                    let row = tx
                        .query_one(
                            &insert,
                            &[
                                &user,
                                &hd.risk_id,
                                &hd.unit_name,
                                &level,
                                &hd.judge_state.as_str(),
                                &hd.notice_state.as_str(),
                                addresses,
                                &hd.start_ms,
                                &hd.end_ms,
                                data,
                                &hd.raw_event,
                                raw_sha,
                                content,
                                &now,
                            ],
                        )
                        .map_err(pg)?;
                    (get(&row, 0)?, 1, Upsert::Created)
                }
            };
            tx.execute(&revision, &[&id, &rev, data, &hd.raw_event, raw_sha, &now])
                .map_err(pg)?;
            out.push(outcome);
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
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
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

    fn scan_hidden_dangers(
        &self,
        filter: &HiddenDangerFilter,
        f: &mut dyn FnMut(StoredHiddenDanger) -> io::Result<()>,
    ) -> Result<(), StoreError> {
        let (filter_sql, args) = hd_filter_sql(filter);
        let mut conn = self.conn()?;
        // One snapshot, read through a cursor a batch at a time: memory stays bounded and the
        // other connections of the pool stay free for reports and pages meanwhile.
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
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
        let mut tx = conn
            .build_transaction()
            .isolation_level(IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .map_err(pg)?;
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
