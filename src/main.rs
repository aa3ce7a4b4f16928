mod backup_cli;
mod cli;
mod node;
mod report_cli;
mod users_cli;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use br_cti_app::config::ConnLimits;
use br_cti_app::config::{
    CorsOrigins, DEFAULT_JOB_MAX_ATTEMPTS, DEFAULT_MAX_UPLOAD_BYTES, HiddenDangerLimits,
    ServeConfig,
};
use br_cti_domain::time::DisplayZone;
use br_cti_engine::dataset::DatasetLimits;

/// br-cti: a cyber-threat-intelligence data node.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the node: the HTTP APIs on an embedded database.
    Serve(Box<ServeArgs>),
    /// Print the column names of a dataset file (CSV, XLSX, XLS, JSON, JSON Lines), one per line.
    Features {
        /// The dataset file.
        file: PathBuf,
    },
    /// Convert a dataset to STIX 2.1 offline: JSON Lines files named by their SHA-256, or one bundle.
    Convert(cli::ConvertArgs),
    /// Manage the users allowed to report hidden dangers (add, list, rotate, remove).
    Users(users_cli::UsersArgs),
    /// Push hidden dangers (a JSON file) to the platform above, in signed batches with retries.
    Report(report_cli::ReportArgs),
    /// Copy the data directory consistently while the node runs (database, files, mappings)
    /// into a new directory, which `serve --data-dir` can then use as it is.
    Backup(backup_cli::BackupArgs),
}

#[derive(clap::Args)]
struct ServeArgs {
    /// Address to listen on. A non-loopback address needs --api-token or --insecure.
    #[arg(long, env = "BRCTI_LISTEN", default_value = "127.0.0.1:5000")]
    listen: SocketAddr,
    /// Directory holding everything the node owns (database and files).
    #[arg(long, env = "BRCTI_DATA_DIR", default_value = "./br-cti-data")]
    data_dir: PathBuf,
    /// Require `Authorization: Bearer <token>` on /data/*.
    #[arg(long, env = "BRCTI_API_TOKEN", hide_env_values = true)]
    api_token: Option<String>,
    /// Allow a non-loopback address without an API token.
    #[arg(long, env = "BRCTI_INSECURE")]
    insecure: bool,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "BRCTI_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    max_upload_bytes: u64,
    /// Browser origins allowed to call the API: `*` (any), `none`, or a comma-separated list.
    #[arg(long, env = "BRCTI_CORS_ORIGINS", default_value = "*", value_parser = CorsOrigins::parse)]
    cors_origins: CorsOrigins,
    /// Default mapping table for conversions (`dataset_field,stix_object,object_property,transformation`);
    /// default: the embedded table. Requests may name another one in <data-dir>/mappings/.
    #[arg(long, env = "BRCTI_MAPPING")]
    mapping: Option<PathBuf>,
    /// IP geolocation database in MaxMind format with the City layout (GeoLite2-City, DB-IP
    /// Lite City) for CTI statistics; without one, public addresses are located as unknown.
    #[arg(long, env = "BRCTI_GEOIP_DB")]
    geoip_db: Option<PathBuf>,
    /// Hidden-danger reports: largest request body, bytes.
    #[arg(long, env = "BRCTI_HD_MAX_BODY_BYTES", default_value_t = HiddenDangerLimits::default().max_body_bytes)]
    hd_max_body_bytes: u64,
    /// Hidden-danger reports: most items per request.
    #[arg(long, env = "BRCTI_HD_MAX_ITEMS", default_value_t = HiddenDangerLimits::default().max_items)]
    hd_max_items: usize,
    /// Hidden-danger reports: largest item, bytes of JSON.
    #[arg(long, env = "BRCTI_HD_MAX_ITEM_BYTES", default_value_t = HiddenDangerLimits::default().max_item_bytes)]
    hd_max_item_bytes: usize,
    /// Hidden-danger reports: requests per second per user (0: unlimited).
    #[arg(long, env = "BRCTI_HD_RATE", default_value_t = HiddenDangerLimits::default().rate_per_sec)]
    hd_rate: f64,
    /// Hidden-danger reports: burst of requests per user before the rate applies.
    #[arg(long, env = "BRCTI_HD_BURST", default_value_t = HiddenDangerLimits::default().burst)]
    hd_burst: f64,
    /// Hidden-danger reports: accepted clock difference of `timestamp`, seconds.
    #[arg(long, env = "BRCTI_HD_WINDOW_SECS", default_value_t = HiddenDangerLimits::default().window_secs)]
    hd_window_secs: u64,
    /// TAXII: let clients without credentials read the datasets and hidden-danger collections.
    #[arg(long, env = "BRCTI_TAXII_ANONYMOUS")]
    taxii_anonymous: bool,
    /// TAXII: largest `POST objects/` body, bytes (advertised as the API root's
    /// `max_content_length`).
    #[arg(long, env = "BRCTI_TAXII_MAX_CONTENT_LENGTH",
          default_value_t = br_cti_app::config::DEFAULT_TAXII_MAX_CONTENT_LENGTH,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 32)))]
    taxii_max_content_length: u64,
    /// Time zone of the record times the front ends display (`create_time`): an IANA name
    /// (Asia/Shanghai), UTC, an offset (+08:00) or `system` (the machine's local zone).
    #[arg(long, env = "BRCTI_TIME_ZONE", default_value = "system", value_parser = DisplayZone::parse)]
    time_zone: DisplayZone,
    /// Default `value` (points) of a CTI record, when a request gives none; also the answer of
    /// /data/get_default_points.
    #[arg(long, env = "BRCTI_DEFAULT_POINTS", default_value_t = 0.0, value_parser = parse_points)]
    default_points: f64,
    /// Runs of a job before it is failed for good when the node stops (is killed, runs out of
    /// memory, crashes) during each of them.
    #[arg(long, env = "BRCTI_JOB_MAX_ATTEMPTS", default_value_t = DEFAULT_JOB_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    job_max_attempts: u32,
    /// Client connections served at once; further ones wait until one ends.
    #[arg(long, env = "BRCTI_MAX_CONNECTIONS", default_value_t = ConnLimits::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "BRCTI_HEADER_TIMEOUT_SECS", default_value_t = ConnLimits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    header_timeout_secs: u64,
    /// Seconds a connection may stay silent while the node waits for it (a stalled upload, an
    /// idle keep-alive connection) before it is closed.
    #[arg(long, env = "BRCTI_IDLE_TIMEOUT_SECS", default_value_t = ConnLimits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    idle_timeout_secs: u64,
    /// Bytes of request bodies (hidden-danger reports, TAXII objects) held in memory at once,
    /// all requests together; a body that would pass it is refused with 503 and Retry-After.
    #[arg(long, env = "BRCTI_MAX_BODY_MEMORY_BYTES", default_value_t = br_cti_app::config::DEFAULT_MAX_BODY_MEMORY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_body_memory_bytes: u64,
    /// Datasets: bytes of one record (a CSV line or record, a JSON Lines line, an element of a
    /// JSON array).
    #[arg(long, env = "BRCTI_MAX_RECORD_BYTES", default_value_t = DatasetLimits::default().max_record_bytes,
          value_parser = clap::value_parser!(u64).range(1024..))]
    max_record_bytes: u64,
    /// Datasets: columns (CSV header fields, distinct keys of JSON objects).
    #[arg(long, env = "BRCTI_MAX_COLUMNS", default_value_t = DatasetLimits::default().max_columns,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_columns: u64,
    /// Datasets: bytes of one spreadsheet cell.
    #[arg(long, env = "BRCTI_MAX_CELL_BYTES", default_value_t = DatasetLimits::default().max_cell_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_cell_bytes: u64,
    /// XLSX: inflated bytes of the shared strings (held in memory while a workbook is read).
    #[arg(long, env = "BRCTI_XLSX_MAX_SHARED_STRINGS_BYTES",
          default_value_t = DatasetLimits::default().xlsx_max_shared_strings_bytes)]
    xlsx_max_shared_strings_bytes: u64,
    /// XLSX: inflated bytes of the worksheets and shared strings together.
    #[arg(long, env = "BRCTI_XLSX_MAX_INFLATED_BYTES",
          default_value_t = DatasetLimits::default().xlsx_max_inflated_bytes)]
    xlsx_max_inflated_bytes: u64,
    /// XLS: bytes of the workbook stream (the format is read whole, into memory).
    #[arg(long, env = "BRCTI_XLS_MAX_BYTES", default_value_t = DatasetLimits::default().xls_max_bytes)]
    xls_max_bytes: u64,
    /// XLS: cells of a worksheet's area, rows × columns (the format is laid out whole).
    #[arg(long, env = "BRCTI_XLS_MAX_CELLS", default_value_t = DatasetLimits::default().xls_max_cells)]
    xls_max_cells: u64,
}

/// Standard error for the log, never failing. tracing-subscriber reports a failed write with
/// `eprint!`, which panics when standard error itself cannot be written (a full disk under a
/// redirected log): every request that logs would then die unanswered. A log line that cannot
/// be written is dropped instead.
struct LogWriter(std::io::Stderr);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = self.0.write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        let _ = self.0.flush();
        Ok(())
    }
}

fn parse_points(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a number of points (0 or more)"))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(|| LogWriter(std::io::stderr()))
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BRCTI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Features { file } => features(&file),
        Command::Convert(args) => cli::convert_command(args),
        Command::Users(args) => users_cli::users_command(args),
        Command::Report(args) => report_cli::report_command(args),
        Command::Backup(args) => backup_cli::backup_command(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig {
        listen: args.listen,
        data_dir: args.data_dir,
        api_token: args.api_token.filter(|t| !t.is_empty()),
        insecure: args.insecure,
        max_upload_bytes: args.max_upload_bytes,
        cors: args.cors_origins,
        mapping: args.mapping,
        geoip_db: args.geoip_db,
        hidden_danger: HiddenDangerLimits {
            max_body_bytes: args.hd_max_body_bytes,
            max_items: args.hd_max_items,
            max_item_bytes: args.hd_max_item_bytes,
            rate_per_sec: args.hd_rate,
            burst: args.hd_burst,
            window_secs: args.hd_window_secs,
        },
        taxii_anonymous: args.taxii_anonymous,
        taxii_max_content_length: args.taxii_max_content_length,
        time_zone: args.time_zone,
        default_points: args.default_points,
        job_max_attempts: args.job_max_attempts,
        connections: ConnLimits {
            max_connections: args.max_connections as usize,
            header_timeout: std::time::Duration::from_secs(args.header_timeout_secs),
            idle_timeout: std::time::Duration::from_secs(args.idle_timeout_secs),
        },
        max_body_memory_bytes: args.max_body_memory_bytes,
        dataset_limits: DatasetLimits {
            max_record_bytes: args.max_record_bytes,
            max_columns: args.max_columns,
            xlsx_max_shared_strings_bytes: args.xlsx_max_shared_strings_bytes,
            xlsx_max_inflated_bytes: args.xlsx_max_inflated_bytes,
            max_cell_bytes: args.max_cell_bytes,
            xls_max_bytes: args.xls_max_bytes,
            xls_max_cells: args.xls_max_cells,
        },
    };
    tokio::runtime::Runtime::new()?.block_on(node::serve(config))
}

fn features(file: &std::path::Path) -> anyhow::Result<()> {
    let input = std::fs::File::open(file)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", file.display()))?;
    let columns = br_cti_engine::dataset::features(Box::new(input), &DatasetLimits::default())
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    for c in columns {
        println!("{c}");
    }
    Ok(())
}
