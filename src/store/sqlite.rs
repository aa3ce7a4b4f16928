//! The embedded metadata store: one SQLite database in WAL mode, schema versioned by
//! `rusqlite_migration` (PRAGMA user_version) and migrated at open.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};

use super::{
    FileMeta, MetaStore, STEP_UPLOAD, STEPS, StepState, StepStatus, StoreError, TaskRecord,
};
use crate::hash::Sha256Hex;
use crate::time_util::now_ms;

/// Schema migrations, oldest first. Never edit a released migration: append a new one.
const MIGRATIONS: &[M<'static>] = &[M::up(
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
)];

pub struct SqliteStore {
    conn: Mutex<Connection>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit is on disk before it is acknowledged, also across power loss.
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        Migrations::from_slice(MIGRATIONS).to_latest(&mut conn)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut conn)
    }
}

fn load_task(conn: &Connection, task_id: &str) -> Result<Option<TaskRecord>, StoreError> {
    let head: Option<(String, i64)> = conn
        .query_row(
            "SELECT source_file_hash, created_at FROM tasks WHERE task_id = ?1",
            [task_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((source_file_hash, timestamp)) = head else {
        return Ok(None);
    };
    let mut stmt = conn.prepare_cached(
        "SELECT step, status, total_num FROM task_steps WHERE task_id = ?1 ORDER BY step",
    )?;
    let step_status = stmt
        .query_map([task_id], |r| {
            let status: String = r.get(1)?;
            Ok(StepStatus {
                step: r.get(0)?,
                status: StepState::parse(&status).unwrap_or(StepState::Failed),
                total_num: r.get::<_, i64>(2)? as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(TaskRecord {
        task_id: task_id.to_string(),
        source_file_hash,
        step_status,
        timestamp,
    }))
}

impl MetaStore for SqliteStore {
    fn record_upload(&self, file: &FileMeta, task_id: &str) -> Result<TaskRecord, StoreError> {
        self.with(|conn| {
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO files (hash, size, original_name, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT(hash) DO NOTHING",
                params![
                    file.hash.as_str(),
                    file.size as i64,
                    file.original_name,
                    file.created_at_ms
                ],
            )?;
            if let Some(existing) = load_task(&tx, task_id)? {
                if existing.source_file_hash != file.hash.as_str() {
                    return Err(StoreError::TaskConflict {
                        task_id: task_id.to_string(),
                        existing_file: existing.source_file_hash,
                    });
                }
                return Ok(existing);
            }
            let now = file.created_at_ms;
            tx.execute(
                "INSERT INTO tasks (task_id, source_file_hash, created_at) VALUES (?1, ?2, ?3)",
                params![task_id, file.hash.as_str(), now],
            )?;
            for step in STEPS {
                let (state, total) = if step == STEP_UPLOAD {
                    (StepState::Finished, 1)
                } else {
                    (StepState::Pending, 0)
                };
                tx.execute(
                    "INSERT INTO task_steps (task_id, step, status, total_num, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                    params![task_id, step, state.as_str(), total, now],
                )?;
            }
            let record = load_task(&tx, task_id)?.expect("inserted in this transaction");
            tx.commit()?;
            Ok(record)
        })
    }

    fn file(&self, hash: &Sha256Hex) -> Result<Option<FileMeta>, StoreError> {
        self.with(|conn| {
            Ok(conn
                .query_row(
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
                .optional()?)
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
                )?
                .query_map([hash.as_str()], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
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
        step: u8,
        state: StepState,
        total_num: u64,
    ) -> Result<(), StoreError> {
        self.with(|conn| {
            conn.execute(
                "UPDATE task_steps SET status = ?1, total_num = ?2, updated_at = ?3
                 WHERE step = ?4 AND task_id IN (SELECT task_id FROM tasks WHERE source_file_hash = ?5)",
                params![state.as_str(), total_num as i64, now_ms(), step, hash.as_str()],
            )?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::STEP_STIX;

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
        assert!(Migrations::from_slice(MIGRATIONS).validate().is_ok());
    }

    #[test]
    fn upload_tasks_and_steps() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteStore::open(&dir.path().join("m.sqlite")).unwrap();
        let a = meta('a');
        let rec = db.record_upload(&a, "1001").unwrap();
        assert_eq!(rec.step_status.len(), 4);
        assert_eq!(rec.step_status[0].status, StepState::Finished);
        assert_eq!(rec.step_status[1].status, StepState::Pending);
        // Same task, same file: the same record.
        assert_eq!(db.record_upload(&a, "1001").unwrap(), rec);
        // New task for a known file: its own record.
        let rec2 = db.record_upload(&a, "1002").unwrap();
        assert_eq!(rec2.task_id, "1002");
        // Known task for another file: refused.
        let err = db.record_upload(&meta('b'), "1001").unwrap_err();
        assert!(matches!(err, StoreError::TaskConflict { .. }));
        db.set_step_for_file(&a.hash, STEP_STIX, StepState::Finished, 7)
            .unwrap();
        let tasks = db.tasks_for_file(&a.hash).unwrap();
        assert_eq!(tasks.len(), 2);
        for t in tasks {
            assert_eq!(t.step_status[1].status, StepState::Finished);
            assert_eq!(t.step_status[1].total_num, 7);
        }
        assert_eq!(db.file(&a.hash).unwrap().unwrap().size, 10);
        assert!(db.file(&meta('c').hash).unwrap().is_none());
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
