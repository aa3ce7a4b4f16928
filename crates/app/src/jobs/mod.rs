//! Durable jobs: every long operation is a row in the `jobs` table with its parameters and
//! progress. A worker thread claims jobs one at a time and runs them; any node of a shared
//! database may claim any job. A claim is a lease that the node renews while it runs the job
//! (a second thread, a few times per lease); every commit of a step and the ending carry the
//! lease's fence, which the store checks, so a node that lost its lease (it stalled or was cut
//! off past the lease's end, and another node claimed the job) cannot write. A job whose node
//! died (a restart, a crash, `kill -9`) is claimed again when its lease ends (at once by a
//! node that owns its database alone) and resumes from its last committed step. A cancel is
//! written to the job's record, so it works from any node: the running node sees it when it
//! renews.
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
use br_cti_domain::model::{Fence, Job, JobStatus, LeaseState, StepState};
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

/// How the node runs jobs.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// Runs of a job before it is failed for good when nodes keep stopping during it.
    pub max_attempts: u32,
    pub dataset_limits: br_cti_engine::dataset::DatasetLimits,
    /// How long a node's claim on a job lasts unless renewed (it renews it a few times per
    /// lease while it runs the job).
    pub lease: Duration,
    /// This node's name in the leases it holds.
    pub node_id: String,
    /// The node owns its database alone (the embedded SQLite file): at start, whatever was
    /// running belonged to a process that has stopped, and is taken over at once instead of
    /// when its lease ends. Nodes sharing a database wait for the lease.
    pub sole_owner: bool,
}

impl JobSettings {
    /// A name for this process: the host's name, the process id and a random suffix.
    pub fn node_name() -> String {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "node".into());
        let mut bytes = [0u8; 3];
        getrandom::fill(&mut bytes).expect("the operating system's random source failed");
        format!("{host}:{}:{}", std::process::id(), hex::encode(bytes))
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
    settings: JobSettings,
    queue: Mutex<mpsc::Sender<Msg>>,
    /// Wake-ups of the worker, and the last one after which it found nothing to claim; `idle`
    /// is notified when it catches up.
    rounds: Mutex<Rounds>,
    idle: Condvar,
    stopping: AtomicBool,
    cancels: Mutex<HashMap<i64, Arc<AtomicBool>>>,
    /// The job this node runs now, and its lease.
    current: Mutex<Option<Running>>,
    /// Jobs that ended but whose ending could not be written yet.
    unsettled: Mutex<HashMap<i64, Ending>>,
}

#[derive(Default)]
struct Rounds {
    wanted: u64,
    idle_through: u64,
}

/// The job running on this node.
struct Running {
    id: i64,
    fence: Fence,
    cancel: Arc<AtomicBool>,
    /// Set when the lease was lost: another node took the job over.
    lost: Arc<AtomicBool>,
}

/// What the worker is told.
enum Msg {
    Wake,
    Stop,
}

/// How a job ended, to be written to the store.
#[derive(Clone, Debug)]
pub struct Ending {
    job: Job,
    fence: Fence,
    pub status: JobStatus,
    pub message: Option<String>,
}

/// How often endings that could not be written are tried again.
const SETTLE_INTERVAL: Duration = Duration::from_secs(2);

impl Jobs {
    /// Starts the worker, which claims and runs jobs until [`Jobs::stop`]: those saved here,
    /// those saved by other nodes of the same database, and those an earlier process left
    /// unfinished (they resume from their last committed step).
    pub fn start(
        meta: Arc<dyn RecordStore>,
        blobs: Arc<dyn BlobStore>,
        geo: Arc<GeoIp>,
        mut settings: JobSettings,
    ) -> Result<Self, AppError> {
        settings.max_attempts = settings.max_attempts.max(1);
        settings.lease = settings.lease.max(Duration::from_millis(100));
        if settings.sole_owner {
            let n = meta
                .expire_leases()
                .map_err(|e| AppError::store("taking over unfinished jobs", e))?;
            if n > 0 {
                tracing::info!(jobs = n, "jobs left running by the previous process resume");
            }
        }
        // A node of a shared database looks for work from other nodes (and for leases that
        // ended) often; one that owns its database is woken by its own submissions.
        let poll = if settings.sole_owner {
            SETTLE_INTERVAL
        } else {
            (settings.lease / 4).clamp(Duration::from_millis(50), Duration::from_secs(1))
        };
        let heartbeat =
            (settings.lease / 4).clamp(Duration::from_millis(25), Duration::from_secs(5));
        let (tx, rx) = mpsc::channel::<Msg>();
        let jobs = Jobs {
            inner: Arc::new(Inner {
                meta,
                blobs,
                geo,
                settings,
                queue: Mutex::new(tx),
                rounds: Mutex::new(Rounds {
                    wanted: 1,
                    idle_through: 0,
                }),
                idle: Condvar::new(),
                stopping: AtomicBool::new(false),
                cancels: Mutex::new(HashMap::new()),
                current: Mutex::new(None),
                unsettled: Mutex::new(HashMap::new()),
            }),
        };
        let worker = jobs.clone();
        std::thread::Builder::new()
            .name("br-cti-jobs".into())
            .spawn(move || {
                loop {
                    worker.claim_and_run();
                    match rx.recv_timeout(poll) {
                        Ok(Msg::Wake) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                        Ok(Msg::Stop) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
                    }
                    if worker.inner.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                }
                tracing::debug!("the job worker stopped");
            })
            .expect("spawning the job worker");
        let beating = Arc::downgrade(&jobs.inner);
        std::thread::Builder::new()
            .name("br-cti-lease".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(heartbeat);
                    let Some(inner) = beating.upgrade() else {
                        break;
                    };
                    if inner.stopping.load(Ordering::SeqCst) {
                        break;
                    }
                    (Jobs { inner }).renew();
                }
            })
            .expect("spawning the lease keeper");
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

    /// Claims and runs jobs until none is claimable (or the worker stops); then records the
    /// round as idle.
    fn claim_and_run(&self) {
        let round = self
            .inner
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wanted;
        loop {
            if self.inner.stopping.load(Ordering::SeqCst) {
                return;
            }
            self.settle();
            let settings = &self.inner.settings;
            let lease_ms = settings.lease.as_millis().min(i64::MAX as u128) as i64;
            match self.inner.meta.claim_job(&settings.node_id, lease_ms) {
                Ok(Some((job, fence))) => {
                    let id = job.id;
                    // `run_claimed` turns a job's panic into its failure; this catches what is
                    // left (bookkeeping), so that the worker never dies.
                    if let Err(panic) =
                        br_cti_engine::supervise::catch(|| self.run_claimed(job, fence))
                    {
                        tracing::error!(job = id, "the job worker caught a panic: {panic}");
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // Nothing is lost: queued jobs stay queued in the store.
                    tracing::warn!("looking for a job to run failed: {e}");
                    break;
                }
            }
        }
        let mut rounds = self.inner.rounds.lock().unwrap_or_else(|p| p.into_inner());
        rounds.idle_through = rounds.idle_through.max(round);
        if rounds.idle_through >= rounds.wanted {
            self.inner.idle.notify_all();
        }
    }

    /// Renews the lease of the job this node runs; passes on a cancel asked on any node, and
    /// stops the run when another node took the job over.
    fn renew(&self) {
        let (id, fence, cancel, lost) = {
            let current = self.inner.current.lock().unwrap_or_else(|p| p.into_inner());
            let Some(r) = current.as_ref() else {
                return;
            };
            (r.id, r.fence, r.cancel.clone(), r.lost.clone())
        };
        let lease_ms = self.inner.settings.lease.as_millis().min(i64::MAX as u128) as i64;
        match self.inner.meta.renew_lease(id, fence, lease_ms) {
            Ok(LeaseState::Held { cancel_requested }) => {
                if cancel_requested {
                    cancel.store(true, Ordering::SeqCst);
                }
            }
            Ok(LeaseState::Lost) => {
                if !lost.swap(true, Ordering::SeqCst) {
                    tracing::warn!(
                        job = id,
                        "this node's lease on the job ended and another node took it over: \
                         the run here stops without writing"
                    );
                }
                cancel.store(true, Ordering::SeqCst);
            }
            // The lease may run out meanwhile: the fence then refuses this node's writes.
            Err(e) => tracing::warn!(job = id, "renewing the job's lease failed: {e}"),
        }
    }

    /// Wakes the worker (a job was saved). Fails only when the worker is gone (the job then
    /// stays queued in the database and runs at the next start, or on another node).
    pub(crate) fn wake(&self) -> Result<(), AppError> {
        self.inner
            .rounds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .wanted += 1;
        let sent = self
            .inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(Msg::Wake);
        if sent.is_err() {
            return Err(AppError::internal(
                "queueing the job",
                "the job worker is not running; the job stays queued and runs at the next start"
                    .to_string(),
            ));
        }
        Ok(())
    }

    /// Saves a job with its parameters, marks its step of the file's tasks running (one
    /// transaction) and wakes the worker.
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
        self.wake()?;
        Ok(job)
    }

    /// Waits until the worker has found nothing more to claim since the last job was saved
    /// here (or `timeout` passes); answers whether it has. Tests drive jobs to completion with
    /// it instead of polling their progress.
    pub fn wait_idle(&self, timeout: Duration) -> bool {
        let rounds = self.inner.rounds.lock().unwrap_or_else(|p| p.into_inner());
        let (rounds, _) = self
            .inner
            .idle
            .wait_timeout_while(rounds, timeout, |r| r.idle_through < r.wanted)
            .unwrap_or_else(|p| p.into_inner());
        rounds.idle_through >= rounds.wanted
    }

    /// Stops the worker after the job it is running (queued jobs stay queued in the store and
    /// run at the next start, or on another node).
    pub fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
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

    /// Asks a queued or running job to stop; it ends as `canceled` after its current step
    /// (on another node, once that node renews its lease).
    pub fn cancel(&self, id: i64) -> Result<(), StoreError> {
        self.inner.meta.request_cancel(id)?;
        let running_here = self
            .inner
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|r| r.id == id);
        if running_here {
            self.flag(id).store(true, Ordering::SeqCst);
        }
        Ok(())
    }

    fn run_claimed(&self, job: Job, fence: Fence) {
        let id = job.id;
        let cancel = self.flag(id);
        let lost = Arc::new(AtomicBool::new(false));
        *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(Running {
            id,
            fence,
            cancel: cancel.clone(),
            lost: lost.clone(),
        });
        // A cancel that came after the claim read the job but before the line above found no
        // job running here, and only marked it in the store; the heartbeat would pass it on
        // a few seconds later, after a short job had ended as succeeded. Renewing the lease
        // now reads the mark: `cancel` marks the store before it looks for the running job,
        // and this looks at the store after the job is registered, so one of them sees the other.
        self.renew();
        let result = br_cti_engine::supervise::catch(|| self.run_job(&job, fence, &cancel, &lost));
        *self.inner.current.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.inner
            .cancels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Err(panic) = result {
            tracing::error!(job = id, "the job's bookkeeping panicked: {panic}");
        }
    }

    fn run_job(&self, job: &Job, fence: Fence, cancel: &AtomicBool, lost: &AtomicBool) {
        let id = job.id;
        if job.cancel_requested {
            return self.end(
                job,
                fence,
                JobStatus::Canceled,
                Some("canceled before it started"),
            );
        }
        let attempt = job.attempts;
        let max = self.inner.settings.max_attempts;
        if attempt > max {
            return self.end(
                job,
                fence,
                JobStatus::Failed,
                Some(&format!(
                    "the node stopped during each of the {max} runs of this job (it was \
                     stopped, killed, ran out of memory or crashed), so it is not run again; \
                     start it anew once the cause is found (--job-max-attempts sets the \
                     number of runs)"
                )),
            );
        }
        if job.progress.steps_done > 0 || attempt > 1 {
            tracing::info!(job = id, kind = %job.kind(), file = %job.file_hash, steps_done = job.progress.steps_done, attempt, "resuming job");
        }
        tracing::info!(job = id, kind = %job.kind(), file = %job.file_hash, attempt, node = %self.inner.settings.node_id, "job running");
        let result = br_cti_engine::supervise::catch(|| match &job.params {
            JobParams::Stix(params) => stix_job::run(self, job, fence, params, cancel),
            JobParams::Cti(params) => cti_job::run(self, job, fence, params, cancel),
        })
        .unwrap_or_else(|panic| Err(JobError::Panic(panic)));
        if lost.load(Ordering::SeqCst) {
            tracing::info!(
                job = id,
                "the job continues on the node that took it over; nothing more is written here"
            );
            return;
        }
        match result {
            Ok(JobStatus::Canceled) => {
                self.end(job, fence, JobStatus::Canceled, Some("canceled on request"))
            }
            Ok(status) => self.end(job, fence, status, None),
            Err(e) => self.end(job, fence, JobStatus::Failed, Some(&e.to_string())),
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
            let written = self.write_end(&e.job, e.fence, e.status, e.message.as_deref());
            if written.is_ok() || matches!(written, Err(StoreError::LeaseLost(_))) {
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
    fn end(&self, job: &Job, fence: Fence, status: JobStatus, message: Option<&str>) {
        match message {
            Some(m) => tracing::warn!(job = job.id, status = status.as_str(), "job ended: {m}"),
            None => tracing::info!(job = job.id, status = status.as_str(), "job ended"),
        }
        let written = self.write_end(job, fence, status, message);
        if let Err(StoreError::LeaseLost(_)) = written {
            tracing::warn!(
                job = job.id,
                "another node took the job over before its ending was written; it decides the end"
            );
            return;
        }
        if let Err(e) = written {
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
                        fence,
                        status,
                        message: message.map(str::to_string),
                    },
                );
        }
    }

    /// Ends the job (fenced: refused when another node took it over), then its file's step.
    fn write_end(
        &self,
        job: &Job,
        fence: Fence,
        status: JobStatus,
        message: Option<&str>,
    ) -> Result<(), StoreError> {
        self.inner.meta.finish_job(job.id, fence, status, message)?;
        self.mark_step(job, status)
    }
}
