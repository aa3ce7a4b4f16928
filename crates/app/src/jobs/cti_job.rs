//! The STIX → CTI job: one CTI record per STIX record of a file, with statistics computed from
//! the STIX file. Records are committed in groups with the job's progress, so a resumed job
//! continues after the last committed record.

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{JobError, Jobs};
use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::job::CtiParams;
use br_cti_domain::model::{CtiRecord, Fence, Job, JobStatus, StixRecord};
use br_cti_domain::time::now_ms;
use br_cti_domain::vocab::TrafficType;
use br_cti_engine::cti::stats::{Statistics, scan_stix};

/// At most this many records per transaction, and at most this long between commits.
const GROUP_RECORDS: usize = 64;
const GROUP_TIME: Duration = Duration::from_millis(500);
/// Records are read from the store this many at a time.
const PAGE: u64 = 256;
const RECENT_STEPS: usize = 100;

/// Where the front ends (and anyone) read a CTI record: its `cti_file_path`.
pub(crate) fn cti_path(file_hash: &Sha256Hex, cti_hash: &Sha256Hex) -> String {
    format!("/data/get_cti_record?file_hash={file_hash}&cti_hash={cti_hash}")
}

/// The CTI record of one STIX record (its statistics given).
pub(crate) fn record(
    params: &CtiParams,
    stix: &StixRecord,
    index: u64,
    stix_location: String,
    statistics: &Statistics,
    job_id: i64,
) -> CtiRecord {
    let tags = params
        .tags
        .clone()
        .unwrap_or_else(|| stix.stix_tags.clone());
    let cti_name = if params.records > 1 {
        format!("{} ({}/{})", params.cti_name, index + 1, params.records)
    } else {
        params.cti_name.clone()
    };
    let now = now_ms();
    CtiRecord {
        source_file_hash: stix.source_file_hash.clone(),
        cti_hash: stix.stix_file_hash.clone(),
        job_id,
        cti_name,
        cti_type: params.cti_type.unwrap_or(stix.stix_type),
        cti_traffic_type: params
            .cti_traffic_type
            .unwrap_or_else(|| TrafficType::from_tags(&tags)),
        open_source: params.open_source,
        description: params.description.clone(),
        iocs: stix.stix_iocs.clone(),
        tags,
        value: params.value,
        incentive_mechanism: params.incentive_mechanism,
        data_size: stix.file_size,
        stix_data: stix_location,
        stix_ipfs_hash: String::new(),
        statistic_info: serde_json::to_string(statistics)
            .expect("serialising plain data cannot fail"),
        data_source_hash: stix.source_file_hash.clone(),
        data_source_ipfs_hash: String::new(),
        created_at: now,
        updated_at: now,
        onchain: false,
        cti_id: None,
    }
}

pub(super) fn run(
    jobs: &Jobs,
    job: &Job,
    fence: Fence,
    params: &CtiParams,
    cancel: &AtomicBool,
) -> Result<JobStatus, JobError> {
    let hash = &job.file_hash;
    let meta = jobs.meta();
    let started = Instant::now();
    let mut progress = job.progress.clone();
    let mut pending: Vec<(CtiRecord, String)> = Vec::new();
    let mut last_commit = Instant::now();
    let commit = |pending: &mut Vec<(CtiRecord, String)>,
                  progress: &mut br_cti_domain::model::JobProgress|
     -> Result<(), JobError> {
        progress.run_ms = job.progress.run_ms + started.elapsed().as_millis() as i64;
        meta.commit_cti_steps(job.id, fence, pending, progress)
            .map_err(|e| JobError::store("saving CTI records", e))?;
        pending.clear();
        Ok(())
    };
    loop {
        // Records are listed in a stable order: skip what a previous run committed.
        let (page, _) = meta
            .stix_records(hash, Some((progress.steps_done / PAGE + 1, PAGE)))
            .map_err(|e| JobError::store("listing STIX records", e))?;
        let skip = (progress.steps_done % PAGE) as usize;
        if page.len() <= skip || progress.steps_done >= job.total_steps {
            break;
        }
        for stix in &page[skip..] {
            if progress.steps_done >= job.total_steps {
                break;
            }
            if cancel.load(Ordering::Relaxed) {
                commit(&mut pending, &mut progress)?;
                return Ok(JobStatus::Canceled);
            }
            let stix_hash = &stix.stix_file_hash;
            let file = jobs
                .blobs()
                .open(stix_hash)
                .map_err(|source| JobError::OpenStix {
                    hash: stix_hash.clone(),
                    source,
                })?
                .ok_or_else(|| JobError::MissingStix(stix_hash.clone()))?;
            let scan = scan_stix(BufReader::with_capacity(256 * 1024, file)).map_err(|source| {
                JobError::Scan {
                    hash: stix_hash.clone(),
                    source,
                }
            })?;
            let statistics = Statistics::build(scan.ip_counts, jobs.geo());
            let record = record(
                params,
                stix,
                progress.steps_done,
                jobs.blobs().locate(stix_hash),
                &statistics,
                job.id,
            );
            pending.push((record, cti_path(hash, stix_hash)));
            progress.steps_done += 1;
            progress.rows_done += 1;
            progress.objects += scan.objects;
            progress.files += 1;
            progress.recent_steps.push(progress.steps_done);
            if progress.recent_steps.len() > RECENT_STEPS {
                progress.recent_steps.remove(0);
            }
            if pending.len() >= GROUP_RECORDS || last_commit.elapsed() >= GROUP_TIME {
                commit(&mut pending, &mut progress)?;
                last_commit = Instant::now();
            }
        }
    }
    commit(&mut pending, &mut progress)?;
    Ok(JobStatus::Succeeded)
}
