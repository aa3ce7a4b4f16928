//! The STIX → CTI job: one CTI record per STIX record of a file, with statistics computed from
//! the STIX file. Records are committed in groups with the job's progress, so a resumed job
//! continues after the last committed record.

use std::io::BufReader;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::Jobs;
use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::model::{CtiRecord, Job, JobStatus, StixRecord};
use br_cti_domain::time::now_ms;
use br_cti_engine::cti::stats::{Statistics, scan_stix};
use br_cti_engine::cti::traffic_type_from_tags;

/// At most this many records per transaction, and at most this long between commits.
const GROUP_RECORDS: usize = 64;
const GROUP_TIME: Duration = Duration::from_millis(500);
/// Records are read from the store this many at a time.
const PAGE: u64 = 256;
const RECENT_STEPS: usize = 100;

/// A validated CTI request, stored with the job.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CtiParams {
    /// `None`: each STIX record's own type.
    pub cti_type: Option<u8>,
    pub cti_name: String,
    pub open_source: u8,
    pub description: String,
    pub value: f64,
    pub incentive_mechanism: u8,
    /// `None`: implied by the record's tags (5g, satellite, sdn), else 0.
    pub cti_traffic_type: Option<u8>,
    /// `None`: each STIX record's own tags.
    pub tags: Option<Vec<String>>,
    /// Number of STIX records when the job was started (names are numbered `k/N`).
    pub records: u64,
}

/// Where the front ends (and anyone) read a CTI record: its `cti_file_path`.
pub(crate) fn cti_path(file_hash: &Sha256Hex, cti_hash: &Sha256Hex) -> String {
    format!("/data/get_cti_record?file_hash={file_hash}&cti_hash={cti_hash}")
}

impl CtiParams {
    /// The CTI record of one STIX record (its statistics given).
    pub fn record(
        &self,
        stix: &StixRecord,
        index: u64,
        stix_location: String,
        statistics: &Statistics,
        job_id: i64,
    ) -> CtiRecord {
        let tags = self.tags.clone().unwrap_or_else(|| stix.stix_tags.clone());
        let cti_name = if self.records > 1 {
            format!("{} ({}/{})", self.cti_name, index + 1, self.records)
        } else {
            self.cti_name.clone()
        };
        let now = now_ms();
        CtiRecord {
            source_file_hash: stix.source_file_hash.clone(),
            cti_hash: stix.stix_file_hash.clone(),
            job_id,
            cti_name,
            cti_type: self.cti_type.unwrap_or(stix.stix_type),
            cti_traffic_type: self
                .cti_traffic_type
                .unwrap_or_else(|| traffic_type_from_tags(&tags)),
            open_source: self.open_source,
            description: self.description.clone(),
            iocs: stix.stix_iocs.clone(),
            tags,
            value: self.value,
            incentive_mechanism: self.incentive_mechanism,
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
}

pub(super) fn run(jobs: &Jobs, job: &Job, cancel: &AtomicBool) -> Result<JobStatus, String> {
    let params: CtiParams =
        serde_json::from_str(&job.params).map_err(|e| format!("unreadable job parameters: {e}"))?;
    let hash = &job.file_hash;
    let meta = jobs.meta();
    let started = Instant::now();
    let mut progress = job.progress.clone();
    let mut pending: Vec<(CtiRecord, String)> = Vec::new();
    let mut last_commit = Instant::now();
    let commit = |pending: &mut Vec<(CtiRecord, String)>,
                  progress: &mut br_cti_domain::model::JobProgress|
     -> Result<(), String> {
        progress.run_ms = job.progress.run_ms + started.elapsed().as_millis() as i64;
        meta.commit_cti_steps(job.id, pending, progress)
            .map_err(|e| format!("saving CTI records: {e}"))?;
        pending.clear();
        Ok(())
    };
    loop {
        // Records are listed in a stable order: skip what a previous run committed.
        let (page, _) = meta
            .stix_records(hash, Some((progress.steps_done / PAGE + 1, PAGE)))
            .map_err(|e| format!("listing STIX records: {e}"))?;
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
                .map_err(|e| format!("opening STIX file {stix_hash}: {e}"))?
                .ok_or_else(|| format!("STIX file {stix_hash} is missing from the blob store"))?;
            let scan = scan_stix(BufReader::with_capacity(256 * 1024, file))
                .map_err(|e| format!("STIX file {stix_hash}: {e}"))?;
            let statistics = Statistics::build(scan.ip_counts, jobs.geo());
            let record = params.record(
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
