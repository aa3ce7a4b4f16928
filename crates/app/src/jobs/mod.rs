//! Durable jobs: every long operation is a row in the `jobs` table with its parameters and
//! progress. A worker thread runs queued jobs one at a time; at start, jobs left queued or
//! running by a previous process (a restart, a crash, `kill -9`) are queued again and resume
//! from their last committed step.
//!
//! Supervision: a job that panics fails with the panic's message and the worker lives on. Each
//! run is counted durably before it starts, so a job that keeps killing the process (out of
//! memory, an abort) fails after [`Jobs::start`]'s `max_attempts` runs instead of looping.
//!
//! Storage faults: when the end of a job cannot be written (the disk is full), the job is
//! still over: its ending is kept in memory, answered by [`Jobs::unsettled`], and written as
//! soon as the store takes it again (retried every few seconds and before a new job starts),
//! so the same conversion can be started again once space is freed, without a restart.

pub mod cti_job;
pub mod progress;
pub mod stix_job;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::Duration;

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::job::JobParams;
use br_cti_domain::model::{Job, JobStatus, StepState};
use br_cti_engine::convert::{ConvertError, MappingError};
use br_cti_engine::cti::geo::GeoIp;
use br_cti_engine::cti::stats::ScanError;
use br_cti_engine::supervise::Panic;
use br_cti_store::{BlobStore, RecordStore, StoreError};

use crate::error::AppError;

/// Why a job failed: the message its record keeps, which the progress answers show. A job's
/// owner needs the cause (a full disk, a missing file, a bad mapping), so storage faults are
/// named here, unlike in the answers to requests.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    #[error("{0}")]
    Mapping(#[from] MappingError),
    #[error("cannot open the dataset: {0}")]
    OpenDataset(std::io::Error),
    #[error("the dataset {0} is missing from the blob store")]
    MissingDataset(Sha256Hex),
    #[error(transparent)]
    Convert(#[from] ConvertError),
    #[error("{what}: {source}")]
    Store {
        what: &'static str,
        source: StoreError,
    },
    #[error("opening STIX file {hash}: {source}")]
    OpenStix {
        hash: Sha256Hex,
        source: std::io::Error,
    },
    #[error("STIX file {0} is missing from the blob store")]
    MissingStix(Sha256Hex),
    #[error("STIX file {hash}: {source}")]
    Scan { hash: Sha256Hex, source: ScanError },
    #[error("internal error: {0}")]
    Panic(Panic),
}

impl JobError {
    fn store(what: &'static str, source: StoreError) -> Self {
        JobError::Store { what, source }
    }
}

/// Handle to the job worker. Cloning shares it.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Inner>,
}

struct Inner {
    meta: Arc<dyn RecordStore>,
    blobs: Arc<dyn BlobStore>,
    geo: Arc<GeoIp>,
    max_attempts: u32,
    dataset_limits: br_cti_engine::dataset::DatasetLimits,
    queue: Mutex<mpsc::Sender<Msg>>,
    /// Jobs handed to the worker and not yet run to their end; `idle` is notified when it
    /// drops to zero.
    pending: Mutex<u64>,
    idle: Condvar,
    cancels: Mutex<HashMap<i64, Arc<AtomicBool>>>,
    /// Jobs that ended but whose ending could not be written yet.
    unsettled: Mutex<HashMap<i64, Ending>>,
}

/// What the worker is told.
enum Msg {
    Run(i64),
    Stop,
}

/// How a job ended, to be written to the store.
#[derive(Clone, Debug)]
pub struct Ending {
    job: Job,
    pub status: JobStatus,
    pub message: Option<String>,
}

/// How often endings that could not be written are tried again.
const SETTLE_INTERVAL: Duration = Duration::from_secs(2);

impl Jobs {
    /// Starts the worker and queues the jobs an earlier process left unfinished.
    pub fn start(
        meta: Arc<dyn RecordStore>,
        blobs: Arc<dyn BlobStore>,
        geo: Arc<GeoIp>,
        max_attempts: u32,
        dataset_limits: br_cti_engine::dataset::DatasetLimits,
    ) -> Result<Self, AppError> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let jobs = Jobs {
            inner: Arc::new(Inner {
                meta,
                blobs,
                geo,
                max_attempts: max_attempts.max(1),
                dataset_limits,
                queue: Mutex::new(tx),
                pending: Mutex::new(0),
                idle: Condvar::new(),
                cancels: Mutex::new(HashMap::new()),
                unsettled: Mutex::new(HashMap::new()),
            }),
        };
        let worker = jobs.clone();
        std::thread::Builder::new()
            .name("br-cti-jobs".into())
            .spawn(move || {
                loop {
                    let id = match rx.recv_timeout(SETTLE_INTERVAL) {
                        Ok(Msg::Run(id)) => id,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            worker.settle();
                            continue;
                        }
                        Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    };
                    worker.settle();
                    // `run` turns a job's panic into its failure; this catches what is left
                    // (bookkeeping), so that the worker never dies.
                    if let Err(panic) = br_cti_engine::supervise::catch(|| worker.run(id)) {
                        tracing::error!(job = id, "the job worker caught a panic: {panic}");
                    }
                    worker.done_one();
                }
                tracing::debug!("the job worker stopped");
            })
            .expect("spawning the job worker");
        let unfinished = jobs
            .inner
            .meta
            .unfinished_jobs()
            .map_err(|e| AppError::store("reading unfinished jobs", e))?;
        for job in unfinished {
            tracing::info!(job = job.id, kind = %job.kind(), file = %job.file_hash, steps_done = job.progress.steps_done, attempts = job.attempts, "resuming job");
            jobs.enqueue(job.id)?;
        }
        Ok(jobs)
    }

    pub fn meta(&self) -> &Arc<dyn RecordStore> {
        &self.inner.meta
    }

    pub fn blobs(&self) -> &Arc<dyn BlobStore> {
        &self.inner.blobs
    }

    pub fn geo(&self) -> &GeoIp {
        &self.inner.geo
    }

    /// Hands a saved job to the worker. Fails only when the worker is gone (the job then stays
    /// queued in the database and runs at the next start).
    pub(crate) fn enqueue(&self, id: i64) -> Result<(), AppError> {
        self.flag(id);
        *self.inner.pending.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let sent = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Msg::Run(id));
        if sent.is_err() {
            self.done_one();
            return Err(AppError::internal(
                "queueing the job",
                format!(
                    "the job worker is not running; job {id} stays queued and runs at the next start"
                ),
            ));
        }
        Ok(())
    }

    /// Saves a job with its parameters, marks its step of the file's tasks running (one
    /// transaction) and queues it.
    pub(crate) fn submit(
        &self,
        hash: &Sha256Hex,
        process_id: &str,
        params: &JobParams,
        total_steps: u64,
        rows_total: u64,
    ) -> Result<Job, AppError> {
        let job = self
            .inner
            .meta
            .create_job(hash, process_id, params, total_steps, rows_total)
            .map_err(|e| AppError::store("saving the job", e))?;
        self.enqueue(job.id)?;
        Ok(job)
    }

    fn done_one(&self) {
        let mut pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        *pending = pending.saturating_sub(1);
        if *pending == 0 {
            self.inner.idle.notify_all();
        }
    }

    /// Waits until every job handed to the worker has run to its end (or `timeout` passes);
    /// answers whether the worker is idle. Tests drive jobs to completion with it instead of
    /// polling their progress.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let pending = self.inner.pending.lock().unwrap_or_else(|p| p.into_inner());
        let (pending, _) = self
            .inner
            .idle
            .wait_timeout_while(pending, timeout, |n| *n > 0)
            .unwrap_or_else(|p| p.into_inner());
        *pending == 0
    }

    /// Stops the worker after the job it is running (queued jobs stay queued in the store and
    /// run at the next start).
    pub fn stop(&self) {
        let _ = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Msg::Stop);
    }

    fn flag(&self, id: i64) -> Arc<AtomicBool> {
        self.inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id)
            .or_default()
            .clone()
    }

    /// Asks a queued or running job to stop; it ends as `canceled` after its current step.
    pub fn cancel(&self, id: i64) -> Result<(), StoreError> {
        self.inner.meta.request_cancel(id)?;
        self.flag(id).store(true, Ordering::SeqCst);
        Ok(())
    }

    fn run(&self, id: i64) {
        let flag = self.flag(id);
        match self.inner.meta.job(id) {
            Ok(Some(job)) => self.run_job(job, &flag),
            Ok(None) => tracing::error!(job = id, "a queued job does not exist"),
            Err(e) => tracing::error!(job = id, "a queued job cannot be read: {e}"),
        }
        self.inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }

    fn run_job(&self, job: Job, flag: &AtomicBool) {
        let id = job.id;
        if job.status.is_finished() {
            return;
        }
        if job.cancel_requested || flag.load(Ordering::SeqCst) {
            return self.end(
                &job,
                JobStatus::Canceled,
                Some("canceled before it started"),
            );
        }
        let attempt = match self.inner.meta.start_attempt(id) {
            Ok(attempt) => attempt,
            Err(e) => {
                // Left queued: the next start of the node runs it.
                tracing::error!(
                    job = id,
                    "the job's attempt cannot be counted, so it does not run: {e}"
                );
                return;
            }
        };
        let max = self.inner.max_attempts;
        if attempt > max {
            return self.end(
                &job,
                JobStatus::Failed,
                Some(&format!(
                    "the node stopped during each of the {max} runs of this job (it was \
                     stopped, killed, ran out of memory or crashed), so it is not run again; \
                     start it anew once the cause is found (--job-max-attempts sets the \
                     number of runs)"
                )),
            );
        }
        tracing::info!(job = id, kind = %job.kind(), file = %job.file_hash, attempt, "job running");
        let result = br_cti_engine::supervise::catch(|| match &job.params {
            JobParams::Stix(params) => stix_job::run(self, &job, params, flag),
            JobParams::Cti(params) => cti_job::run(self, &job, params, flag),
        })
        .unwrap_or_else(|panic| Err(JobError::Panic(panic)));
        match result {
            Ok(JobStatus::Canceled) => {
                self.end(&job, JobStatus::Canceled, Some("canceled on request"))
            }
            Ok(status) => self.end(&job, status, None),
            Err(e) => self.end(&job, JobStatus::Failed, Some(&e.to_string())),
        }
    }

    /// Reflects the end of a job in its file's task records, in the step of its kind: files
    /// written for a conversion, records written for a CTI build.
    fn mark_step(&self, job: &Job, status: JobStatus) -> Result<(), StoreError> {
        let done = self
            .inner
            .meta
            .job(job.id)?
            .map(|j| j.progress.files)
            .unwrap_or(job.progress.files);
        let state = match status {
            JobStatus::Succeeded => StepState::Finished,
            JobStatus::Canceled => StepState::Pending,
            _ => StepState::Failed,
        };
        self.inner
            .meta
            .set_step_for_file(&job.file_hash, job.kind().step(), state, done)
    }

    /// The ending of a job that could not be written yet (the store refused it), if any.
    pub fn unsettled(&self, id: i64) -> Option<Ending> {
        self.inner
            .unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Writes the endings that could not be written before; answers whether none is left.
    pub(crate) fn settle(&self) -> bool {
        let pending: Vec<Ending> = self
            .inner
            .unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect();
        for e in pending {
            if self
                .write_end(&e.job, e.status, e.message.as_deref())
                .is_ok()
            {
                tracing::info!(job = e.job.id, "the job's ending is written now");
                self.inner
                    .unsettled
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&e.job.id);
            }
        }
        self.inner
            .unsettled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty()
    }

    /// Ends a job; an ending the store refuses is kept and written later (see `settle`).
    fn end(&self, job: &Job, status: JobStatus, message: Option<&str>) {
        match message {
            Some(m) => tracing::warn!(job = job.id, status = status.as_str(), "job ended: {m}"),
            None => tracing::info!(job = job.id, status = status.as_str(), "job ended"),
        }
        if let Err(e) = self.write_end(job, status, message) {
            tracing::error!(
                job = job.id,
                "the job's ending cannot be written ({e}); it is kept and written when the \
                 store takes it"
            );
            self.inner
                .unsettled
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(
                    job.id,
                    Ending {
                        job: job.clone(),
                        status,
                        message: message.map(str::to_string),
                    },
                );
        }
    }

    fn write_end(
        &self,
        job: &Job,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.mark_step(job, status)?;
        self.inner.meta.finish_job(job.id, status, message)
    }
}
