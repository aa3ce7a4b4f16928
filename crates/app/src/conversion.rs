//! Use cases of a dataset's conversion to STIX and of the CTI build that follows it: checks,
//! the job's parameters, saving and queueing it (one transaction with its task step).

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::job::{CtiParams, JobParams, StixParams};
use br_cti_domain::model::{Job, JobKind};
use br_cti_engine::convert::{Mapping, MappingFileError};
use br_cti_engine::dataset::{self, DatasetError};
use br_cti_store::RecordStore;

use crate::config::ServeConfig;
use crate::error::AppError;
use crate::jobs::Jobs;

/// Fails unless an uploaded file has this hash.
pub fn require_file(meta: &dyn RecordStore, hash: &Sha256Hex) -> Result<(), AppError> {
    match meta.file(hash) {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(AppError::NotFound(format!(
            "no uploaded file has hash {hash}"
        ))),
        Err(e) => Err(AppError::store("looking up the file", e)),
    }
}

/// The job of `kind` for the file that is queued or running, if any.
fn running_job(
    meta: &dyn RecordStore,
    kind: JobKind,
    hash: &Sha256Hex,
) -> Result<Option<Job>, AppError> {
    Ok(meta
        .latest_job(kind, hash)
        .map_err(|e| AppError::store("reading jobs", e))?
        .filter(|job| !job.status.is_finished()))
}

/// The text of a mapping named in a request: a plain file name in `<data-dir>/mappings/`.
fn named_mapping(config: &ServeConfig, name: &str) -> Result<String, AppError> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if !valid {
        return Err(AppError::Invalid(format!(
            "field `mapping`: {name:?} is not a mapping file name (letters, digits, '.', '_', '-')"
        )));
    }
    let dir = config.data_dir.join("mappings");
    match Mapping::read_file(&dir.join(name)) {
        Ok((text, _)) => Ok(text),
        Err(MappingFileError::Read { cause, .. }) => Err(AppError::Invalid(format!(
            "field `mapping`: cannot read {name:?} from {}: {cause}",
            dir.display()
        ))),
        Err(MappingFileError::Table { cause, .. }) => Err(AppError::Invalid(format!(
            "field `mapping`: {name}: {cause}"
        ))),
    }
}

/// A request to convert an uploaded dataset, its fields parsed. `params.labels` holds every
/// `stix_label` value; the use case tells column names from fixed labels.
pub struct ConversionRequest {
    pub file: Sha256Hex,
    pub process_id: String,
    pub params: StixParams,
}

/// Starts a conversion: the file exists and no conversion of it is running, the named mapping
/// reads, the requested feature columns exist; the rows are counted and the job is saved and
/// queued. Blocking (it reads the dataset).
pub fn start_conversion(
    jobs: &Jobs,
    config: &ServeConfig,
    default_mapping: &str,
    request: ConversionRequest,
) -> Result<Job, AppError> {
    let ConversionRequest {
        file: hash,
        process_id,
        mut params,
    } = request;
    params.tlp.get_or_insert(config.tlp);
    params.mapping_text = match params.mapping_name.as_deref() {
        Some(name) => named_mapping(config, name)?,
        None => default_mapping.to_string(),
    };
    let meta = &**jobs.meta();
    require_file(meta, &hash)?;
    // A job that ended while its ending could not be written (a full disk) still holds its
    // file's place in the database: write it first.
    jobs.settle();
    if let Some(job) = running_job(meta, JobKind::Stix, &hash)? {
        return Err(AppError::Conflict(format!(
            "a conversion of file {hash} is already {} (job {}); wait for it or cancel it with \
             /data/cancel_stix_process",
            job.status.as_str(),
            job.id
        )));
    }
    let open = || {
        jobs.blobs()
            .open(&hash)
            .map_err(|e| AppError::internal("opening the dataset", e))?
            .ok_or_else(|| {
                AppError::internal("opening the dataset", format!("blob {hash} is missing"))
            })
    };
    let unreadable = |e: DatasetError| AppError::Invalid(format!("cannot read file {hash}: {e}"));
    let columns = if params.features.is_some() || !params.labels.is_empty() {
        dataset::features(open()?, &config.dataset_limits).map_err(unreadable)?
    } else {
        Vec::new()
    };
    // `stix_label` values that name a column label each row with its value there.
    let (label_columns, labels): (Vec<String>, Vec<String>) = std::mem::take(&mut params.labels)
        .into_iter()
        .partition(|l| columns.contains(l));
    params.label_columns = label_columns;
    params.labels = labels;
    if let Some(features) = &params.features {
        let unknown: Vec<&String> = features.iter().filter(|f| !columns.contains(f)).collect();
        if !unknown.is_empty() {
            return Err(AppError::Invalid(format!(
                "field `stix_traffic_features`: {} not a column of this file (its columns: {})",
                unknown
                    .iter()
                    .map(|u| format!("{u:?}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                columns.join(";")
            )));
        }
    }
    let rows = dataset::count_rows(open()?, &config.dataset_limits).map_err(unreadable)?;
    let total_steps = rows.div_ceil(params.compress);
    let job = jobs.submit(
        &hash,
        &process_id,
        &JobParams::Stix(params),
        total_steps,
        rows,
    )?;
    tracing::info!(job = job.id, file = %job.file_hash, rows = job.rows_total, files = job.total_steps, "conversion queued");
    Ok(job)
}

/// Asks the conversion of a file that is queued or running to stop; answers its job.
pub fn cancel_conversion(jobs: &Jobs, hash: &Sha256Hex) -> Result<Job, AppError> {
    let job = running_job(&**jobs.meta(), JobKind::Stix, hash)?.ok_or_else(|| {
        AppError::NotFound(format!("no conversion of file {hash} is queued or running"))
    })?;
    jobs.cancel(job.id)
        .map_err(|e| AppError::store("canceling the job", e))?;
    Ok(job)
}

/// A request to build the CTI records of a converted file, its fields parsed. An empty
/// `params.cti_name` means the file's name; `params.records` is counted by the use case.
pub struct CtiBuildRequest {
    pub file: Sha256Hex,
    pub process_id: String,
    pub params: CtiParams,
}

/// Starts a CTI build: the file exists, has STIX records, and no conversion or CTI build of it
/// is running; the job is saved and queued.
pub fn start_cti_build(jobs: &Jobs, request: CtiBuildRequest) -> Result<Job, AppError> {
    let CtiBuildRequest {
        file: hash,
        process_id,
        mut params,
    } = request;
    let meta = &**jobs.meta();
    // Endings a full disk kept from the database are written first (see `Jobs::settle`).
    jobs.settle();
    require_file(meta, &hash)?;
    for (kind, what) in [
        (JobKind::Stix, "a conversion"),
        (JobKind::Cti, "a CTI build"),
    ] {
        if let Some(job) = running_job(meta, kind, &hash)? {
            return Err(AppError::Conflict(format!(
                "{what} of file {hash} is {} (job {}); wait for it to finish",
                job.status.as_str(),
                job.id
            )));
        }
    }
    let (_, records) = meta
        .stix_records(&hash, Some((1, 1)))
        .map_err(|e| AppError::store("counting STIX records", e))?;
    if records == 0 {
        return Err(AppError::Invalid(format!(
            "file {hash} has no STIX records: convert it first with /data/process_data_to_stix"
        )));
    }
    if params.cti_name.is_empty() {
        let file = meta
            .file(&hash)
            .map_err(|e| AppError::store("reading the file", e))?;
        params.cti_name = file
            .and_then(|f| f.original_name)
            .unwrap_or_else(|| format!("CTI {}", &hash.as_str()[..12]));
    }
    params.records = records;
    let job = jobs.submit(
        &hash,
        &process_id,
        &JobParams::Cti(params),
        records,
        records,
    )?;
    tracing::info!(job = job.id, file = %job.file_hash, records = job.total_steps, "CTI build queued");
    Ok(job)
}
