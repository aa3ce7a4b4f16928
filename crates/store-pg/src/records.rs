//! Uploads and their tasks, jobs, STIX and CTI records.

use postgres::GenericClient;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::job::JobParams;
use br_cti_domain::model::{
    CtiRecord, Fence, FileMeta, Job, JobKind, JobProgress, JobStatus, LeaseState, Publication,
    Step, StepState, StepStatus, StixRecord, TaskRecord,
};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::{DataType, IncentiveMechanism, OpenSource, TrafficType};
use br_cti_store::{CtiStore, JobStore, StoreError, UploadStore};

use crate::{
    PgStore, count, get, hash, is_unique_violation, json, json_text, limit_offset, lock, numbered,
    parsed, pg, snapshot, xact_lock,
};

fn load_task(
    conn: &mut impl GenericClient,
    task_id: &str,
) -> Result<Option<TaskRecord>, StoreError> {
    let Some(head) = conn
        .query_opt(
            "SELECT source_file_hash, created_at FROM tasks WHERE task_id = $1",
            &[&task_id],
        )
        .map_err(pg)?
    else {
        return Ok(None);
    };
    let mut step_status = Vec::new();
    for r in conn
        .query(
            "SELECT step, status, total_num FROM task_steps WHERE task_id = $1 ORDER BY step",
            &[&task_id],
        )
        .map_err(pg)?
    {
        step_status.push(StepStatus {
            step: numbered(&r, 0, "task step", |n| {
                u8::try_from(n).ok().and_then(Step::from_number)
            })?,
            status: parsed(&r, 1, "step state", StepState::parse)?,
            total_num: count(&r, 2)?,
        });
    }
    Ok(Some(TaskRecord {
        task_id: task_id.to_string(),
        source_file_hash: hash(&head, 0)?,
        step_status,
        timestamp: get(&head, 1)?,
    }))
}

impl UploadStore for PgStore {
    fn record_upload(&self, file: &FileMeta, task_id: &str) -> Result<TaskRecord, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        tx.execute(
            "INSERT INTO files (hash, size, original_name, created_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (hash) DO NOTHING",
            &[
                &file.hash.as_str(),
                &(file.size as i64),
                &file.original_name,
                &file.created_at_ms,
            ],
        )
        .map_err(pg)?;
        // The same task id from two nodes at once: one inserts, both then read the same task.
        let inserted = tx
            .execute(
                "INSERT INTO tasks (task_id, source_file_hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (task_id) DO NOTHING",
                &[&task_id, &file.hash.as_str(), &file.created_at_ms],
            )
            .map_err(pg)?;
        if inserted == 0 {
            let existing = load_task(&mut tx, task_id)?.ok_or_else(|| {
                StoreError::Conflict(format!("task {task_id:?} was removed meanwhile"))
            })?;
            if existing.source_file_hash != file.hash {
                return Err(StoreError::TaskConflict {
                    task_id: task_id.to_string(),
                    existing_file: existing.source_file_hash.to_string(),
                });
            }
            tx.commit().map_err(pg)?;
            return Ok(existing);
        }
        for step in Step::ALL {
            let (state, total) = if step == Step::Upload {
                (StepState::Finished, 1i64)
            } else {
                (StepState::Pending, 0)
            };
            tx.execute(
                "INSERT INTO task_steps (task_id, step, status, total_num, updated_at)
                 VALUES ($1, $2, $3, $4, $5)",
                &[
                    &task_id,
                    &i64::from(step.number()),
                    &state.as_str(),
                    &total,
                    &file.created_at_ms,
                ],
            )
            .map_err(pg)?;
        }
        let record = load_task(&mut tx, task_id)?.expect("inserted in this transaction");
        tx.commit().map_err(pg)?;
        Ok(record)
    }

    fn file(&self, hash: &Sha256Hex) -> Result<Option<FileMeta>, StoreError> {
        let mut conn = self.conn()?;
        let Some(r) = conn
            .query_opt(
                "SELECT size, original_name, created_at FROM files WHERE hash = $1",
                &[&hash.as_str()],
            )
            .map_err(pg)?
        else {
            return Ok(None);
        };
        Ok(Some(FileMeta {
            hash: hash.clone(),
            size: count(&r, 0)?,
            original_name: get(&r, 1)?,
            created_at_ms: get(&r, 2)?,
        }))
    }

    fn files(&self, page: (u64, u64)) -> Result<(Vec<FileMeta>, u64), StoreError> {
        let (limit, offset) = limit_offset(Some(page));
        let mut conn = self.conn()?;
        let mut tx = snapshot(&mut conn)?;
        let total = count(
            &tx.query_one("SELECT count(*) FROM files", &[])
                .map_err(pg)?,
            0,
        )?;
        let mut files = Vec::new();
        for r in tx
            .query(
                "SELECT hash, size, original_name, created_at FROM files
                 ORDER BY created_at DESC, hash LIMIT $1 OFFSET $2",
                &[&limit, &offset],
            )
            .map_err(pg)?
        {
            files.push(FileMeta {
                hash: hash(&r, 0)?,
                size: count(&r, 1)?,
                original_name: get(&r, 2)?,
                created_at_ms: get(&r, 3)?,
            });
        }
        tx.commit().map_err(pg)?;
        Ok((files, total))
    }

    fn task(&self, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
        load_task(&mut *self.conn()?, task_id)
    }

    fn tasks_for_file(&self, hash: &Sha256Hex) -> Result<Vec<TaskRecord>, StoreError> {
        let mut conn = self.conn()?;
        let ids: Vec<String> = conn
            .query(
                "SELECT task_id FROM tasks WHERE source_file_hash = $1 ORDER BY created_at, task_id",
                &[&hash.as_str()],
            )
            .map_err(pg)?
            .iter()
            .map(|r| get(r, 0))
            .collect::<Result<_, _>>()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(load_task(&mut *conn, &id)?);
        }
        Ok(out)
    }

    fn set_step_for_file(
        &self,
        hash: &Sha256Hex,
        step: Step,
        state: StepState,
        total_num: u64,
    ) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "UPDATE task_steps SET status = $1, total_num = $2, updated_at = $3
                 WHERE step = $4 AND task_id IN (SELECT task_id FROM tasks WHERE source_file_hash = $5)",
                &[
                    &state.as_str(),
                    &(total_num as i64),
                    &now_ms(),
                    &i64::from(step.number()),
                    &hash.as_str(),
                ],
            )
            .map_err(pg)?;
        Ok(())
    }
}

const JOB_COLUMNS: &str = "id, kind, file_hash, process_id, params, status, total_steps, steps_done, rows_total, \
     rows_done, rows_rejected, objects, files, errors, recent_steps, message, cancel_requested, created_at, \
     started_at, finished_at, run_ms, attempts";

fn job_from_row(r: &postgres::Row) -> Result<Job, StoreError> {
    let kind = parsed(r, 1, "job kind", JobKind::parse)?;
    let attempts: i64 = get(r, 21)?;
    Ok(Job {
        id: get(r, 0)?,
        file_hash: hash(r, 2)?,
        process_id: get(r, 3)?,
        params: parsed(r, 4, "job parameters", |t| {
            JobParams::from_json(kind, t).ok()
        })?,
        status: parsed(r, 5, "job status", JobStatus::parse)?,
        total_steps: count(r, 6)?,
        rows_total: count(r, 8)?,
        progress: JobProgress {
            steps_done: count(r, 7)?,
            rows_done: count(r, 9)?,
            rows_rejected: count(r, 10)?,
            objects: count(r, 11)?,
            files: count(r, 12)?,
            errors: json(r, 13, "job errors")?,
            recent_steps: json(r, 14, "job recent steps")?,
            run_ms: get(r, 20)?,
        },
        message: get(r, 15)?,
        cancel_requested: get(r, 16)?,
        created_at: get(r, 17)?,
        started_at: get(r, 18)?,
        finished_at: get(r, 19)?,
        attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

const RECORD_COLUMNS: &str = "source_file_hash, stix_file_hash, job_id, batch, file_size, rows, objects, stix_type, \
     stix_tags, stix_iocs, ioc_ips_map, created_at, onchain, cti_file_path";

fn record_from_row(r: &postgres::Row) -> Result<StixRecord, StoreError> {
    Ok(StixRecord {
        source_file_hash: hash(r, 0)?,
        stix_file_hash: hash(r, 1)?,
        job_id: get(r, 2)?,
        batch: count(r, 3)?,
        file_size: count(r, 4)?,
        rows: count(r, 5)?,
        objects: count(r, 6)?,
        stix_type: numbered(r, 7, "STIX type", DataType::from_number)?,
        stix_tags: json(r, 8, "STIX tags")?,
        stix_iocs: json(r, 9, "STIX IOCs")?,
        ioc_ips_map: json(r, 10, "IOC address counts")?,
        created_at: get(r, 11)?,
        onchain: get(r, 12)?,
        cti_file_path: get(r, 13)?,
    })
}

/// Saves a job's progress if `fence` still holds it; [`StoreError::LeaseLost`] otherwise (the
/// caller's transaction is then dropped: nothing of it is written). It runs first in a commit:
/// the job's row stays locked to the end of the transaction, so a claim by another node waits
/// for the commit, and then hands out a new fence.
fn update_progress(
    tx: &mut postgres::Transaction<'_>,
    job_id: i64,
    fence: Fence,
    progress: &JobProgress,
) -> Result<(), StoreError> {
    let n = tx.execute(
        "UPDATE jobs SET steps_done = $2, rows_done = $3, rows_rejected = $4, objects = $5, files = $6,
             errors = $7, recent_steps = $8, run_ms = $9 WHERE id = $1 AND lease_epoch = $10",
        &[
            &job_id,
            &(progress.steps_done as i64),
            &(progress.rows_done as i64),
            &(progress.rows_rejected as i64),
            &(progress.objects as i64),
            &(progress.files as i64),
            &json_text(&progress.errors),
            &json_text(&progress.recent_steps),
            &progress.run_ms,
            &fence.to_backend(),
        ],
    )
    .map_err(pg)?;
    if n == 0 {
        return Err(StoreError::LeaseLost(job_id));
    }
    Ok(())
}

impl PgStore {
    /// The unfinished job of a kind for a file, as a conflict naming it.
    fn unfinished_conflict(
        conn: &mut impl GenericClient,
        kind: JobKind,
        file_hash: &Sha256Hex,
    ) -> Result<Option<StoreError>, StoreError> {
        conn.query_opt(
            "SELECT id, status FROM jobs WHERE kind = $1 AND file_hash = $2
                 AND status IN ('queued', 'running')",
            &[&kind.as_str(), &file_hash.as_str()],
        )
        .map_err(pg)?
        .map(|r| -> Result<StoreError, StoreError> {
            let id: i64 = get(&r, 0)?;
            let status: String = get(&r, 1)?;
            Ok(StoreError::Conflict(format!(
                "job {id} of file {file_hash} is already {status}"
            )))
        })
        .transpose()
    }
}

impl JobStore for PgStore {
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
        let mut conn = self.conn()?;
        if let Some(conflict) = Self::unfinished_conflict(&mut *conn, kind, file_hash)? {
            return Err(conflict);
        }
        let mut tx = conn.transaction().map_err(pg)?;
        let now = now_ms();
        let inserted = tx.query_one(
            &format!(
                "INSERT INTO jobs (kind, file_hash, process_id, params, status, total_steps, rows_total, created_at)
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7) RETURNING {JOB_COLUMNS}"
            ),
            &[
                &kind.as_str(),
                &file_hash.as_str(),
                &process_id,
                &params,
                &(total_steps as i64),
                &(rows_total as i64),
                &now,
            ],
        );
        let row = match inserted {
            Ok(row) => row,
            // Another node started one in between: the unique index refuses the second.
            Err(e) if is_unique_violation(&e) => {
                drop(tx);
                return Err(Self::unfinished_conflict(&mut *conn, kind, file_hash)?
                    .unwrap_or_else(|| pg(e)));
            }
            Err(e) => return Err(pg(e)),
        };
        tx.execute(
            "UPDATE task_steps SET status = $1, total_num = $2, updated_at = $3
             WHERE step = $4 AND task_id IN (SELECT task_id FROM tasks WHERE source_file_hash = $5)",
            &[
                &StepState::Running.as_str(),
                &(total_steps as i64),
                &now,
                &i64::from(kind.step().number()),
                &file_hash.as_str(),
            ],
        )
        .map_err(pg)?;
        let job = job_from_row(&row)?;
        tx.commit().map_err(pg)?;
        Ok(job)
    }

    fn job(&self, id: i64) -> Result<Option<Job>, StoreError> {
        self.conn()?
            .query_opt(
                &format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1"),
                &[&id],
            )
            .map_err(pg)?
            .map(|r| job_from_row(&r))
            .transpose()
    }

    fn latest_job(&self, kind: JobKind, file_hash: &Sha256Hex) -> Result<Option<Job>, StoreError> {
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE kind = $1 AND file_hash = $2
                     ORDER BY id DESC LIMIT 1"
                ),
                &[&kind.as_str(), &file_hash.as_str()],
            )
            .map_err(pg)?
            .map(|r| job_from_row(&r))
            .transpose()
    }

    fn unfinished_jobs(&self) -> Result<Vec<Job>, StoreError> {
        self.conn()?
            .query(
                &format!(
                    "SELECT {JOB_COLUMNS} FROM jobs WHERE status IN ('queued', 'running') ORDER BY id"
                ),
                &[],
            )
            .map_err(pg)?
            .iter()
            .map(job_from_row)
            .collect()
    }

    fn claim_job(&self, owner: &str, lease_ms: i64) -> Result<Option<(Job, Fence)>, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        let now = now_ms();
        // SKIP LOCKED: nodes claiming at once each take another job, none waits on another.
        let Some(row) = tx
            .query_opt(
                "SELECT id FROM jobs WHERE status IN ('queued', 'running')
                 AND (status = 'queued' OR lease_until IS NULL OR lease_until < $1)
                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
                &[&now],
            )
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let id: i64 = get(&row, 0)?;
        let row = tx
            .query_one(
                &format!(
                    "UPDATE jobs SET status = 'running', started_at = COALESCE(started_at, $2),
                         attempts = attempts + 1, lease_owner = $3,
                         lease_epoch = lease_epoch + 1, lease_until = $4
                     WHERE id = $1 RETURNING {JOB_COLUMNS}, lease_epoch"
                ),
                &[&id, &now, &owner, &now.saturating_add(lease_ms)],
            )
            .map_err(pg)?;
        let claimed = (job_from_row(&row)?, Fence::from_backend(get(&row, 22)?));
        tx.commit().map_err(pg)?;
        Ok(Some(claimed))
    }

    fn renew_lease(&self, id: i64, fence: Fence, lease_ms: i64) -> Result<LeaseState, StoreError> {
        let row = self
            .conn()?
            .query_opt(
                "UPDATE jobs SET lease_until = $3
                 WHERE id = $1 AND lease_epoch = $2 AND status = 'running'
                 RETURNING cancel_requested",
                &[&id, &fence.to_backend(), &now_ms().saturating_add(lease_ms)],
            )
            .map_err(pg)?;
        Ok(match row {
            Some(r) => LeaseState::Held {
                cancel_requested: get(&r, 0)?,
            },
            None => LeaseState::Lost,
        })
    }

    fn expire_leases(&self) -> Result<u64, StoreError> {
        self.conn()?
            .execute(
                "UPDATE jobs SET lease_until = 0 WHERE status = 'running'",
                &[],
            )
            .map_err(pg)
    }

    fn request_cancel(&self, id: i64) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "UPDATE jobs SET cancel_requested = true WHERE id = $1",
                &[&id],
            )
            .map_err(pg)?;
        Ok(())
    }

    fn finish_job(
        &self,
        id: i64,
        fence: Fence,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        let n = self
            .conn()?
            .execute(
                "UPDATE jobs SET status = $2, message = $3, finished_at = $4, lease_until = NULL
                 WHERE id = $1 AND lease_epoch = $5",
                &[
                    &id,
                    &status.as_str(),
                    &message,
                    &now_ms(),
                    &fence.to_backend(),
                ],
            )
            .map_err(pg)?;
        if n == 0 {
            return Err(StoreError::LeaseLost(id));
        }
        Ok(())
    }

    fn commit_stix_steps(
        &self,
        job_id: i64,
        fence: Fence,
        records: &[StixRecord],
        progress: &JobProgress,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        update_progress(&mut tx, job_id, fence, progress)?;
        if !records.is_empty() {
            // The publisher follows this order: positions are handed out one writer at a time.
            xact_lock(&mut tx, lock::STIX_RECORDS)?;
        }
        let insert = tx
            .prepare(&format!(
                "INSERT INTO stix_records ({RECORD_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, false, NULL)
                 ON CONFLICT (source_file_hash, stix_file_hash) DO UPDATE SET
                     stix_type = excluded.stix_type, stix_tags = excluded.stix_tags,
                     stix_iocs = excluded.stix_iocs, ioc_ips_map = excluded.ioc_ips_map"
            ))
            .map_err(pg)?;
        for r in records {
            tx.execute(
                &insert,
                &[
                    &r.source_file_hash.as_str(),
                    &r.stix_file_hash.as_str(),
                    &r.job_id,
                    &(r.batch as i64),
                    &(r.file_size as i64),
                    &(r.rows as i64),
                    &(r.objects as i64),
                    &i64::from(r.stix_type.number()),
                    &json_text(&r.stix_tags),
                    &json_text(&r.stix_iocs),
                    &json_text(&r.ioc_ips_map),
                    &r.created_at,
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)
    }

    fn stix_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<StixRecord>, u64), StoreError> {
        let mut conn = self.conn()?;
        let total = conn
            .query_one(
                "SELECT COUNT(*) FROM stix_records WHERE source_file_hash = $1",
                &[&file_hash.as_str()],
            )
            .map_err(pg)?;
        let (limit, offset) = limit_offset(page);
        let rows = conn
            .query(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM stix_records WHERE source_file_hash = $1
                     ORDER BY seq LIMIT $2 OFFSET $3"
                ),
                &[&file_hash.as_str(), &limit, &offset],
            )
            .map_err(pg)?
            .iter()
            .map(record_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, count(&total, 0)?))
    }

    fn stix_record(
        &self,
        file_hash: &Sha256Hex,
        stix_hash: &Sha256Hex,
    ) -> Result<Option<StixRecord>, StoreError> {
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {RECORD_COLUMNS} FROM stix_records
                     WHERE source_file_hash = $1 AND stix_file_hash = $2"
                ),
                &[&file_hash.as_str(), &stix_hash.as_str()],
            )
            .map_err(pg)?
            .map(|r| record_from_row(&r))
            .transpose()
    }
}

const CTI_COLUMNS: &str = "source_file_hash, cti_hash, job_id, cti_name, cti_type, cti_traffic_type, open_source, \
     description, tags, iocs, value, incentive_mechanism, data_size, stix_data, stix_ipfs_hash, statistic_info, \
     data_source_hash, data_source_ipfs_hash, created_at, updated_at, onchain, cti_id";

fn cti_from_row(r: &postgres::Row) -> Result<CtiRecord, StoreError> {
    Ok(CtiRecord {
        source_file_hash: hash(r, 0)?,
        cti_hash: hash(r, 1)?,
        job_id: get(r, 2)?,
        cti_name: get(r, 3)?,
        cti_type: numbered(r, 4, "CTI type", DataType::from_number)?,
        cti_traffic_type: numbered(r, 5, "traffic type", TrafficType::from_number)?,
        open_source: numbered(r, 6, "open_source", OpenSource::from_number)?,
        description: get(r, 7)?,
        tags: json(r, 8, "CTI tags")?,
        iocs: json(r, 9, "CTI IOCs")?,
        value: get(r, 10)?,
        incentive_mechanism: numbered(
            r,
            11,
            "incentive mechanism",
            IncentiveMechanism::from_number,
        )?,
        data_size: count(r, 12)?,
        stix_data: get(r, 13)?,
        stix_ipfs_hash: get(r, 14)?,
        statistic_info: get(r, 15)?,
        data_source_hash: hash(r, 16)?,
        data_source_ipfs_hash: get(r, 17)?,
        created_at: get(r, 18)?,
        updated_at: get(r, 19)?,
        onchain: get(r, 20)?,
        cti_id: get(r, 21)?,
    })
}

impl CtiStore for PgStore {
    fn commit_cti_steps(
        &self,
        job_id: i64,
        fence: Fence,
        records: &[(CtiRecord, String)],
        progress: &JobProgress,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        update_progress(&mut tx, job_id, fence, progress)?;
        let upsert = tx
            .prepare(&format!(
                "INSERT INTO cti_records ({CTI_COLUMNS}) VALUES
                     ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, '', $15, $16, '', $17, $17, false, NULL)
                 ON CONFLICT (source_file_hash, cti_hash) DO UPDATE SET
                     job_id = excluded.job_id, cti_name = excluded.cti_name, cti_type = excluded.cti_type,
                     cti_traffic_type = excluded.cti_traffic_type, open_source = excluded.open_source,
                     description = excluded.description, tags = excluded.tags, iocs = excluded.iocs,
                     value = excluded.value, incentive_mechanism = excluded.incentive_mechanism,
                     data_size = excluded.data_size, stix_data = excluded.stix_data,
                     statistic_info = excluded.statistic_info, data_source_hash = excluded.data_source_hash,
                     updated_at = excluded.updated_at"
            ))
            .map_err(pg)?;
        let link = tx
            .prepare(
                "UPDATE stix_records SET cti_file_path = $3
                 WHERE source_file_hash = $1 AND stix_file_hash = $2",
            )
            .map_err(pg)?;
        for (r, cti_file_path) in records {
            tx.execute(
                &upsert,
                &[
                    &r.source_file_hash.as_str(),
                    &r.cti_hash.as_str(),
                    &job_id,
                    &r.cti_name,
                    &i64::from(r.cti_type.number()),
                    &i64::from(r.cti_traffic_type.number()),
                    &i64::from(r.open_source.number()),
                    &r.description,
                    &json_text(&r.tags),
                    &json_text(&r.iocs),
                    &r.value,
                    &i64::from(r.incentive_mechanism.number()),
                    &(r.data_size as i64),
                    &r.stix_data,
                    &r.statistic_info,
                    &r.data_source_hash.as_str(),
                    &r.updated_at,
                ],
            )
            .map_err(pg)?;
            tx.execute(
                &link,
                &[
                    &r.source_file_hash.as_str(),
                    &r.cti_hash.as_str(),
                    cti_file_path,
                ],
            )
            .map_err(pg)?;
        }
        tx.commit().map_err(pg)
    }

    fn cti_records(
        &self,
        file_hash: &Sha256Hex,
        page: Option<(u64, u64)>,
    ) -> Result<(Vec<CtiRecord>, u64), StoreError> {
        let mut conn = self.conn()?;
        let total = conn
            .query_one(
                "SELECT COUNT(*) FROM cti_records WHERE source_file_hash = $1",
                &[&file_hash.as_str()],
            )
            .map_err(pg)?;
        let (limit, offset) = limit_offset(page);
        let columns = CTI_COLUMNS
            .split(", ")
            .map(|c| format!("c.{}", c.trim()))
            .collect::<Vec<_>>()
            .join(", ");
        let rows = conn
            .query(
                &format!(
                    "SELECT {columns} FROM cti_records c JOIN stix_records s
                         ON s.source_file_hash = c.source_file_hash AND s.stix_file_hash = c.cti_hash
                     WHERE c.source_file_hash = $1 ORDER BY s.seq LIMIT $2 OFFSET $3"
                ),
                &[&file_hash.as_str(), &limit, &offset],
            )
            .map_err(pg)?
            .iter()
            .map(cti_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        Ok((rows, count(&total, 0)?))
    }

    fn cti_record(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
    ) -> Result<Option<CtiRecord>, StoreError> {
        self.conn()?
            .query_opt(
                &format!(
                    "SELECT {CTI_COLUMNS} FROM cti_records WHERE source_file_hash = $1 AND cti_hash = $2"
                ),
                &[&file_hash.as_str(), &cti_hash.as_str()],
            )
            .map_err(pg)?
            .map(|r| cti_from_row(&r))
            .transpose()
    }

    fn mark_cti_onchain(
        &self,
        file_hash: &Sha256Hex,
        cti_hash: &Sha256Hex,
        publication: &Publication,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn()?;
        let mut tx = conn.transaction().map_err(pg)?;
        let changed = tx
            .execute(
                "UPDATE cti_records SET onchain = true, cti_id = $3,
                     stix_ipfs_hash = COALESCE($4, stix_ipfs_hash),
                     data_source_ipfs_hash = COALESCE($5, data_source_ipfs_hash), updated_at = $6
                 WHERE source_file_hash = $1 AND cti_hash = $2",
                &[
                    &file_hash.as_str(),
                    &cti_hash.as_str(),
                    &publication.cti_id,
                    &publication.stix_ipfs_hash,
                    &publication.data_source_ipfs_hash,
                    &now_ms(),
                ],
            )
            .map_err(pg)?;
        tx.execute(
            "UPDATE stix_records SET onchain = true WHERE source_file_hash = $1 AND stix_file_hash = $2",
            &[&file_hash.as_str(), &cti_hash.as_str()],
        )
        .map_err(pg)?;
        tx.commit().map_err(pg)?;
        Ok(changed > 0)
    }
}
