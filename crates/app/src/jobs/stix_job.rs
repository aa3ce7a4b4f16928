//! The dataset → STIX conversion job: runs the engine with a sink that commits each file and
//! its record together with the job's progress.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::{JobError, Jobs};
use br_cti_domain::job::StixParams;
use br_cti_domain::model::{Fence, Job, JobProgress, JobStatus, StixRecord};
use br_cti_domain::time::now_ms;
use br_cti_engine::convert::{self, Batch, BatchSink, FileStore, Mapping, Settings, StoredFile};

/// At most this many finished steps are listed in `total_task_list`.
const RECENT_STEPS: usize = 100;

/// The engine's settings for a conversion's parameters.
pub(crate) fn settings(
    params: &StixParams,
    source_hash: &str,
    limits: br_cti_engine::dataset::DatasetLimits,
) -> Result<Settings, JobError> {
    let mapping = Mapping::parse(&params.mapping_text).map_err(JobError::Mapping)?;
    Ok(Settings {
        mapping: Arc::new(mapping),
        compress: params.compress,
        features: params
            .features
            .as_ref()
            .map(|f| f.iter().cloned().collect()),
        labels: params.labels.clone(),
        label_columns: params.label_columns.clone(),
        observed_time: stix::Timestamp::from_micros(params.observed_time_micros),
        source_hash: source_hash.to_string(),
        limits,
        indicators: params.indicators.clone(),
        tlp: params.tlp,
    })
}

/// Files go to the blob store (temporary name, fsync, rename): on the converting threads.
struct BlobFiles<'a> {
    jobs: &'a Jobs,
    fault: Option<Fault>,
}

/// A fault the tests inject (debug builds only) on the converting threads of one conversion.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Fault {
    Panic,
    Abort,
}

/// `BRCTI_TEST_FAULT=panic:PROCESS_ID` (or `abort:PROCESS_ID`) makes the conversions started
/// with that `process_id` panic (or abort the process) when they store a file. Release builds
/// ignore it.
fn injected_fault(process_id: &str) -> Option<Fault> {
    if !cfg!(debug_assertions) {
        return None;
    }
    let spec = std::env::var("BRCTI_TEST_FAULT").ok()?;
    let (kind, id) = spec.split_once(':')?;
    if id != process_id {
        return None;
    }
    match kind {
        "panic" => Some(Fault::Panic),
        "abort" => Some(Fault::Abort),
        _ => None,
    }
}

impl FileStore for BlobFiles<'_> {
    fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile> {
        match self.fault {
            Some(Fault::Panic) => panic!("injected fault (BRCTI_TEST_FAULT) while storing a file"),
            Some(Fault::Abort) => std::process::abort(),
            None => {}
        }
        let blob = self.jobs.blobs().put(bytes)?;
        Ok(StoredFile {
            hash: blob.hash,
            size: blob.size,
        })
    }
}

struct StixSink<'a> {
    jobs: &'a Jobs,
    job: &'a Job,
    fence: Fence,
    params: &'a StixParams,
    progress: JobProgress,
    /// Records of files that are durable but not yet committed.
    pending: Vec<StixRecord>,
    dirty: bool,
    cancel: &'a AtomicBool,
    started: Instant,
    base_run_ms: i64,
}

impl BatchSink for StixSink<'_> {
    fn batch(&mut self, batch: Batch) -> anyhow::Result<()> {
        let p = &mut self.progress;
        p.rows_done += batch.rows_read;
        p.rows_rejected += batch.rejected.len() as u64;
        convert::describe_rejections(&mut p.errors, &batch.rejected);
        p.objects += batch.objects;
        // The file is already durable (BlobFiles); its record is committed with the progress
        // in `flush`. A crash in between leaves a file that the resumed job writes again, byte
        // for byte, and records then.
        if let Some(file) = &batch.file {
            p.files += 1;
            self.pending.push(StixRecord {
                source_file_hash: self.job.file_hash.clone(),
                stix_file_hash: file.hash.clone(),
                job_id: self.job.id,
                batch: batch.index,
                file_size: file.size,
                rows: batch.rows_converted,
                objects: batch.objects,
                stix_type: self.params.stix_type,
                stix_tags: self.params.stix_tags.clone(),
                stix_iocs: self
                    .params
                    .stix_iocs
                    .clone()
                    .unwrap_or_else(|| batch.iocs.kinds()),
                ioc_ips_map: batch.ip_counts.into_iter().collect(),
                created_at: now_ms(),
                onchain: false,
                cti_file_path: None,
            });
        }
        p.steps_done = batch.index + 1;
        p.recent_steps.push(batch.index + 1);
        if p.recent_steps.len() > RECENT_STEPS {
            let excess = p.recent_steps.len() - RECENT_STEPS;
            p.recent_steps.drain(..excess);
        }
        self.dirty = true;
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        self.progress.run_ms = self.base_run_ms + self.started.elapsed().as_millis() as i64;
        self.jobs.meta().commit_stix_steps(
            self.job.id,
            self.fence,
            &self.pending,
            &self.progress,
        )?;
        self.pending.clear();
        self.dirty = false;
        Ok(())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

pub(super) fn run(
    jobs: &Jobs,
    job: &Job,
    fence: Fence,
    params: &StixParams,
    cancel: &AtomicBool,
) -> Result<JobStatus, JobError> {
    let settings = settings(
        params,
        job.file_hash.as_str(),
        jobs.inner.settings.dataset_limits,
    )?;
    let hash = &job.file_hash;
    let input = jobs
        .blobs()
        .open(hash)
        .map_err(JobError::OpenDataset)?
        .ok_or_else(|| JobError::MissingDataset(hash.clone()))?;
    let mut sink = StixSink {
        jobs,
        job,
        fence,
        params,
        progress: job.progress.clone(),
        pending: Vec::new(),
        dirty: false,
        cancel,
        started: Instant::now(),
        base_run_ms: job.progress.run_ms,
    };
    let summary = convert::convert(
        input,
        &settings,
        job.progress.steps_done,
        &BlobFiles {
            jobs,
            fault: injected_fault(&job.process_id),
        },
        &mut sink,
    )?;
    Ok(if summary.cancelled {
        JobStatus::Canceled
    } else {
        JobStatus::Succeeded
    })
}
