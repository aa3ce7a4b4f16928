//! Offline commands: the conversion engine writing to files, with a progress bar on a terminal.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{BufWriter, IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use sha2::{Digest, Sha256};

use br_cti_domain::hash::Sha256Hex;
use br_cti_domain::vocab::{DataType, IndicatorRule, IndicatorType, Tlp};
use br_cti_engine::convert::{self, Batch, BatchSink, FileStore, Mapping, Settings, StoredFile};
use br_cti_engine::grouping::{FileTitle, GroupingSpool};

/// `br-cti convert`: a dataset to STIX 2.1 offline, as JSON Lines files named by their SHA-256
/// or as one bundle.
#[derive(clap::Args, Debug)]
pub(crate) struct ConvertArgs {
    /// The dataset file (CSV, XLSX, XLS, JSON, JSON Lines).
    pub file: PathBuf,
    /// A mapping table (`dataset_field,stix_object,object_property,transformation`); default: the embedded one.
    #[arg(long)]
    pub mapping: Option<PathBuf>,
    /// Rows per STIX file.
    #[arg(long, default_value_t = 100)]
    pub compress: u64,
    /// Observation time of rows without a time column (RFC 3339).
    #[arg(long, default_value = "1970-01-01T00:00:00Z", value_parser = parse_time)]
    pub observed_time: stix::Timestamp,
    /// Directory for the JSON Lines files (default: ./stix-out).
    #[arg(long, conflicts_with = "bundle")]
    pub out: Option<PathBuf>,
    /// Write one STIX bundle to this file instead.
    #[arg(long)]
    pub bundle: Option<PathBuf>,
    /// What the dataset holds (as the API's stix_type): 1 malicious traffic, 2 honeypot,
    /// 3 botnet, 4 application attacks, 5 open-source intelligence. It decides which
    /// observables become indicators.
    #[arg(long = "type", default_value = "1", value_parser = parse_data_type)]
    pub data_type: DataType,
    /// Which observable types become indicators (`ipv4-addr,ipv6-addr,domain-name,url`), or
    /// `none`; default: the rule of --type.
    #[arg(long, value_delimiter = ',')]
    pub indicators: Option<Vec<String>>,
    /// TLP marking of every object: clear, green, amber, amber+strict or red.
    #[arg(long, default_value = "green", value_parser = br_cti::serve_args::parse_tlp)]
    pub tlp: Tlp,
}

fn parse_data_type(s: &str) -> Result<DataType, String> {
    s.trim()
        .parse::<u64>()
        .ok()
        .and_then(DataType::from_number)
        .ok_or_else(|| format!("{s:?} is not a dataset type ({})", DataType::range()))
}

/// The indicator rule of the command's flags.
fn indicator_rule(args: &ConvertArgs) -> anyhow::Result<Option<IndicatorRule>> {
    let default = args.data_type.default_indicators();
    let Some(words) = &args.indicators else {
        return Ok(Some(default));
    };
    if words.len() == 1 && words[0].trim().eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let types = words
        .iter()
        .map(|w| {
            IndicatorType::from_word_ignoring_case(w.trim()).ok_or_else(|| {
                anyhow::anyhow!(
                    "--indicators: {w:?} is not one of {} (or none)",
                    IndicatorType::words()
                )
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Some(default.narrowed_to(&types)).filter(|r| !r.types.is_empty()))
}

fn parse_time(s: &str) -> Result<stix::Timestamp, String> {
    stix::Timestamp::parse(s, time::UtcOffset::UTC)
        .ok_or_else(|| format!("{s:?} is not a time (RFC 3339, e.g. 2024-06-01T00:00:00Z)"))
}

/// SHA-256 of a file, streamed.
pub(crate) fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

pub(crate) fn load_mapping(path: Option<&Path>) -> anyhow::Result<Mapping> {
    match path {
        None => Ok(Mapping::default_table()),
        Some(p) => Ok(Mapping::read_file(p).map_err(anyhow::Error::new)?.1),
    }
}

/// Writes each file as `<DIR>/<sha256>.jsonl` (temporary name, then rename), on the
/// converting threads.
struct DirFiles {
    dir: PathBuf,
}

impl FileStore for DirFiles {
    fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile> {
        let hash = Sha256Hex::from_digest(&Sha256::digest(bytes));
        let dest = self.dir.join(format!("{hash}.jsonl"));
        let tmp = self.dir.join(format!(".{hash}.jsonl.tmp"));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, &dest)?;
        Ok(StoredFile {
            hash,
            size: bytes.len() as u64,
        })
    }
}

/// For a bundle, the files are not written: their bytes go into the bundle in order.
struct NoFiles;

impl FileStore for NoFiles {
    fn store(&self, bytes: &[u8]) -> anyhow::Result<StoredFile> {
        Ok(StoredFile {
            hash: Sha256Hex::from_digest(&Sha256::digest(bytes)),
            size: bytes.len() as u64,
        })
    }
}

/// Reports progress and rejected rows.
struct DirSink {
    bar: ProgressBar,
    errors_shown: usize,
}

/// Writes every object once into one bundle.
struct BundleSink {
    writer: stix::BundleWriter<BufWriter<File>>,
    /// The ids of what was written, for the bundle's grouping.
    grouping: GroupingSpool,
    seen: HashSet<String>,
    written: u64,
    bar: ProgressBar,
    errors_shown: usize,
}

fn show_rejections(bar: &ProgressBar, shown: &mut usize, batch: &Batch) {
    for (row, reason) in &batch.rejected {
        if *shown < 20 {
            bar.suspend(|| eprintln!("row {}: {reason}", row + 1));
        } else if *shown == 20 {
            bar.suspend(|| eprintln!("(further rejected rows are counted, not shown)"));
        }
        *shown += 1;
    }
}

impl BatchSink for DirSink {
    fn batch(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.bar.inc(batch.rows_read);
        show_rejections(&self.bar, &mut self.errors_shown, &batch);
        Ok(())
    }
}

/// The `"id"` of a JSON line written by the engine (it is always the third key).
fn line_id(line: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(line).ok()?;
    let start = text.find("\"id\":\"")? + 6;
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

impl BatchSink for BundleSink {
    fn batch(&mut self, batch: Batch) -> anyhow::Result<()> {
        self.bar.inc(batch.rows_read);
        show_rejections(&self.bar, &mut self.errors_shown, &batch);
        let writer = &mut self.writer;
        for line in batch.bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            let id = line_id(line).unwrap_or_default();
            // Observations are unique per row; everything else may repeat across batches.
            let unique = id.starts_with("observed-data--") || id.starts_with("sighting--");
            if unique || self.seen.insert(id.to_string()) {
                writer.write_raw(line)?;
                self.grouping.note_line(line)?;
                self.written += 1;
            }
        }
        Ok(())
    }
}

fn progress_bar(total: Option<u64>) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    match total {
        Some(n) => ProgressBar::new(n).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} rows {per_sec} eta {eta}")
                .expect("valid template"),
        ),
        None => ProgressBar::new_spinner(),
    }
}

pub(crate) fn convert_command(args: ConvertArgs) -> anyhow::Result<()> {
    if args.out.is_some() && args.bundle.is_some() {
        bail!("--out and --bundle are exclusive: write JSON Lines files or one bundle");
    }
    if args.compress == 0 {
        bail!("--compress must be at least 1 (rows per STIX file)");
    }
    let start = Instant::now();
    let source_hash = file_sha256(&args.file)?;
    let mapping = Arc::new(load_mapping(args.mapping.as_deref())?);
    let settings = Settings {
        mapping,
        compress: args.compress,
        features: None,
        observed_time: args.observed_time,
        labels: Vec::new(),
        label_columns: Vec::new(),
        source_hash: source_hash.clone(),
        limits: Default::default(),
        indicators: indicator_rule(&args)?,
        tlp: Some(args.tlp),
    };
    let open = || -> anyhow::Result<Box<dyn br_cti_domain::io::ReadSeek>> {
        Ok(Box::new(File::open(&args.file).with_context(|| {
            format!("cannot open {}", args.file.display())
        })?))
    };
    // Refuse what is not a dataset before creating any output.
    br_cti_engine::dataset::sniff(&mut open()?).with_context(|| args.file.display().to_string())?;
    let total = if std::io::stderr().is_terminal() {
        Some(
            br_cti_engine::dataset::count_rows(open()?, &Default::default())
                .with_context(|| args.file.display().to_string())?,
        )
    } else {
        None
    };
    let bar = progress_bar(total);
    let summary = match &args.bundle {
        Some(path) => {
            let file =
                File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
            let bundle_id = stix::objects::bundle_id(
                format!("{}|{}", settings.digest(), args.compress).as_bytes(),
            );
            let mut sink = BundleSink {
                writer: stix::BundleWriter::begin(BufWriter::new(file), &bundle_id)?,
                grouping: GroupingSpool::new().context("creating a temporary file")?,
                seen: HashSet::new(),
                written: 0,
                bar: bar.clone(),
                errors_shown: 0,
            };
            let summary = convert::convert(open()?, &settings, 0, &NoFiles, &mut sink)
                .with_context(|| args.file.display().to_string())?;
            // The bundle's grouping, named after the input file.
            let BundleSink {
                mut writer,
                grouping,
                written,
                ..
            } = sink;
            let source = Sha256Hex::parse(&source_hash).context("the input's hash")?;
            let dataset = args.file.file_name().map(|n| n.to_string_lossy());
            let title = FileTitle {
                dataset: dataset.as_deref(),
                cti_name: None,
                source: &source,
                batch: None,
                data_type: args.data_type,
            };
            let grouped = u64::from(grouping.refs() > 0);
            grouping.write_into(&mut writer, &bundle_id, &title)?;
            let mut out = writer.finish()?;
            out.flush()?;
            out.get_ref().sync_all()?;
            // One bundle, each object once, and its grouping.
            convert::ConvertSummary {
                objects: written + grouped,
                files: 1,
                ..summary
            }
        }
        None => {
            let dir = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from("stix-out"));
            fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let mut sink = DirSink {
                bar: bar.clone(),
                errors_shown: 0,
            };
            convert::convert(open()?, &settings, 0, &DirFiles { dir }, &mut sink)
                .with_context(|| args.file.display().to_string())?
        }
    };
    bar.finish_and_clear();
    let secs = start.elapsed().as_secs_f64();
    let target = match (&args.bundle, &args.out) {
        (Some(b), _) => format!("bundle {}", b.display()),
        (None, Some(d)) => format!("directory {}", d.display()),
        (None, None) => "directory stix-out".to_string(),
    };
    println!(
        "{}: {} rows, {} converted, {} rejected; {} objects in {} files; {:.2} s ({:.0} rows/s) -> {target}",
        args.file.display(),
        summary.rows_read,
        summary.rows_converted,
        summary.rows_rejected,
        summary.objects,
        summary.files,
        secs,
        summary.rows_read as f64 / secs.max(1e-9),
    );
    if summary.rows_converted == 0 {
        if let Some(path) = &args.bundle {
            // A bundle of no observations is no result: leave nothing behind.
            let _ = fs::remove_file(path);
        }
        if summary.rows_read == 0 {
            bail!(
                "{}: nothing was converted: the file has no data rows",
                args.file.display()
            );
        }
        bail!(
            "{}: nothing was converted: every one of the {} rows was rejected (see the reasons above)",
            args.file.display(),
            summary.rows_read
        );
    }
    Ok(())
}
