//! The arguments of `br-cti serve` (flags and their environment variables) and the
//! configuration they make.

use std::net::SocketAddr;
use std::path::PathBuf;

use br_cti_app::config::{
    ConnLimits, CorsOrigins, DEFAULT_JOB_LEASE_SECS, DEFAULT_JOB_MAX_ATTEMPTS,
    DEFAULT_MAX_UPLOAD_BYTES, HiddenDangerLimits, ServeConfig,
};
use br_cti_domain::ioc::{IndicatorPolicy, MAX_VALID_DAYS, TypeConfidence};
use br_cti_domain::time::DisplayZone;
use br_cti_domain::vocab::Tlp;
use br_cti_engine::dataset::DatasetLimits;

#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on. A non-loopback address needs --api-token or --insecure.
    #[arg(long, env = "BRCTI_LISTEN", default_value = "127.0.0.1:5000")]
    pub listen: SocketAddr,
    /// Directory holding everything the node owns (database and files).
    #[arg(long, env = "BRCTI_DATA_DIR", default_value = "./br-cti-data")]
    pub data_dir: PathBuf,
    /// Keep the records in this PostgreSQL database (`postgres://user:password@host:port/db`)
    /// instead of the embedded SQLite file: several nodes on one database share their jobs,
    /// users and TAXII collections. The schema is created or migrated at start.
    #[arg(long, env = "BRCTI_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Keep uploads and STIX files in an S3-compatible bucket (AWS S3, Ceph RGW, Garage):
    /// `s3://bucket/prefix`, with the endpoint, region and credentials of the usual AWS_*
    /// variables (AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP=true for plain HTTP). Default: the data directory.
    #[arg(long, env = "BRCTI_BLOB_STORE")]
    pub blob_store: Option<String>,
    /// A setting of the bucket's client, over the AWS_* variables (repeatable): KEY=VALUE with
    /// object_store's S3 keys, e.g. endpoint=http://127.0.0.1:3900, region=garage,
    /// allow_http=true, virtual_hosted_style_request=true. Prefer the environment for secrets.
    #[arg(long = "blob-store-option", value_name = "KEY=VALUE")]
    pub blob_store_options: Vec<String>,
    /// Require `Authorization: Bearer <token>` on /data/*.
    #[arg(long, env = "BRCTI_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Allow a non-loopback address without an API token.
    #[arg(long, env = "BRCTI_INSECURE")]
    pub insecure: bool,
    /// Largest accepted upload, in bytes.
    #[arg(long, env = "BRCTI_MAX_UPLOAD_BYTES", default_value_t = DEFAULT_MAX_UPLOAD_BYTES)]
    pub max_upload_bytes: u64,
    /// Browser origins allowed to call the API: `*` (any), `none`, or a comma-separated list.
    #[arg(long, env = "BRCTI_CORS_ORIGINS", default_value = "*", value_parser = CorsOrigins::parse)]
    pub cors_origins: CorsOrigins,
    /// Default mapping table for conversions (`dataset_field,stix_object,object_property,transformation`);
    /// default: the embedded table. Requests may name another one in <data-dir>/mappings/.
    #[arg(long, env = "BRCTI_MAPPING")]
    pub mapping: Option<PathBuf>,
    /// IP geolocation database in MaxMind format with the City layout (GeoLite2-City, DB-IP
    /// Lite City) for CTI statistics; without one, public addresses are located as unknown.
    #[arg(long, env = "BRCTI_GEOIP_DB")]
    pub geoip_db: Option<PathBuf>,
    /// Hidden-danger reports: largest request body, bytes.
    #[arg(long, env = "BRCTI_HD_MAX_BODY_BYTES", default_value_t = HiddenDangerLimits::default().max_body_bytes)]
    pub hd_max_body_bytes: u64,
    /// Hidden-danger reports: most items per request.
    #[arg(long, env = "BRCTI_HD_MAX_ITEMS", default_value_t = HiddenDangerLimits::default().max_items)]
    pub hd_max_items: usize,
    /// Hidden-danger reports: largest item, bytes of JSON.
    #[arg(long, env = "BRCTI_HD_MAX_ITEM_BYTES", default_value_t = HiddenDangerLimits::default().max_item_bytes)]
    pub hd_max_item_bytes: usize,
    /// Hidden-danger reports: requests per second per user (0: unlimited).
    #[arg(long, env = "BRCTI_HD_RATE", default_value_t = HiddenDangerLimits::default().rate_per_sec)]
    pub hd_rate: f64,
    /// Hidden-danger reports: burst of requests per user before the rate applies.
    #[arg(long, env = "BRCTI_HD_BURST", default_value_t = HiddenDangerLimits::default().burst)]
    pub hd_burst: f64,
    /// Hidden-danger reports: accepted clock difference of `timestamp`, seconds.
    #[arg(long, env = "BRCTI_HD_WINDOW_SECS", default_value_t = HiddenDangerLimits::default().window_secs)]
    pub hd_window_secs: u64,
    /// TAXII: let clients without credentials read the datasets and hidden-danger collections
    /// (the objects marked TLP:CLEAR).
    #[arg(long, env = "BRCTI_TAXII_ANONYMOUS")]
    pub taxii_anonymous: bool,
    /// TLP marking of a conversion's STIX when its request names none (`tlp`): clear, green,
    /// amber, amber+strict or red.
    #[arg(long, env = "BRCTI_TLP", default_value = "green", value_parser = parse_tlp)]
    pub tlp: Tlp,
    /// TLP marking of the hidden dangers' STIX (they name vulnerable organisations).
    #[arg(long, env = "BRCTI_HIDDEN_DANGER_TLP", default_value = "amber", value_parser = parse_tlp)]
    pub hidden_danger_tlp: Tlp,
    /// Days an indicator stays valid after its last sighting (`valid_until` of the versions
    /// the TAXII publisher writes), 1-3650.
    #[arg(long, env = "BRCTI_INDICATOR_VALID_DAYS",
          default_value_t = IndicatorPolicy::default().valid_days(),
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_VALID_DAYS)))]
    pub indicator_valid_days: u32,
    /// Confidence (0-100) that a dataset type gives its indicators, as TYPE=N with the type's
    /// number (`stix_type`); repeat or separate with commas. Defaults: 1=70 (malicious
    /// traffic), 2=80 (honeypot), 3=75 (botnet), 4=70 (application attacks), 5=60
    /// (open-source intelligence). An indicator takes the highest of the datasets that sighted it.
    #[arg(long, env = "BRCTI_INDICATOR_CONFIDENCE", value_delimiter = ',')]
    pub indicator_confidence: Vec<TypeConfidence>,
    /// TAXII: largest `POST objects/` body, bytes (advertised as the API root's
    /// `max_content_length`).
    #[arg(long, env = "BRCTI_TAXII_MAX_CONTENT_LENGTH",
          default_value_t = br_cti_app::config::DEFAULT_TAXII_MAX_CONTENT_LENGTH,
          value_parser = clap::value_parser!(u64).range(1024..=(1 << 32)))]
    pub taxii_max_content_length: u64,
    /// Time zone of the record times the front ends display (`create_time`): an IANA name
    /// (Asia/Shanghai), UTC, an offset (+08:00) or `system` (the machine's local zone).
    #[arg(long, env = "BRCTI_TIME_ZONE", default_value = "system", value_parser = DisplayZone::parse)]
    pub time_zone: DisplayZone,
    /// Default `value` (points) of a CTI record, when a request gives none; also the answer of
    /// /data/get_default_points.
    #[arg(long, env = "BRCTI_DEFAULT_POINTS", default_value_t = 0.0, value_parser = parse_points)]
    pub default_points: f64,
    /// Runs of a job before it is failed for good when the node stops (is killed, runs out of
    /// memory, crashes) during each of them.
    #[arg(long, env = "BRCTI_JOB_MAX_ATTEMPTS", default_value_t = DEFAULT_JOB_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub job_max_attempts: u32,
    /// Seconds a node's claim on a job lasts unless renewed (it renews it a few times per
    /// lease). With --database-url, another node takes over a job whose node stopped this long
    /// ago; a node that owns its SQLite database takes over at once when it starts.
    #[arg(long, env = "BRCTI_JOB_LEASE_SECS", default_value_t = DEFAULT_JOB_LEASE_SECS,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub job_lease_secs: u64,
    /// Client connections served at once; further ones wait until one ends.
    #[arg(long, env = "BRCTI_MAX_CONNECTIONS", default_value_t = ConnLimits::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub max_connections: u64,
    /// Seconds a client has to send a request's headers.
    #[arg(long, env = "BRCTI_HEADER_TIMEOUT_SECS", default_value_t = ConnLimits::default().header_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub header_timeout_secs: u64,
    /// Seconds a connection may stay silent while the node waits for it (a stalled upload, an
    /// idle keep-alive connection) before it is closed.
    #[arg(long, env = "BRCTI_IDLE_TIMEOUT_SECS", default_value_t = ConnLimits::default().idle_timeout.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub idle_timeout_secs: u64,
    /// Bytes of request bodies (hidden-danger reports, TAXII objects) held in memory at once,
    /// all requests together; a body that would pass it is refused with 503 and Retry-After.
    #[arg(long, env = "BRCTI_MAX_BODY_MEMORY_BYTES", default_value_t = br_cti_app::config::DEFAULT_MAX_BODY_MEMORY_BYTES,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_body_memory_bytes: u64,
    /// Datasets: bytes of one record (a CSV line or record, a JSON Lines line, an element of a
    /// JSON array).
    #[arg(long, env = "BRCTI_MAX_RECORD_BYTES", default_value_t = DatasetLimits::default().max_record_bytes,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_record_bytes: u64,
    /// Datasets: columns (CSV header fields, distinct keys of JSON objects).
    #[arg(long, env = "BRCTI_MAX_COLUMNS", default_value_t = DatasetLimits::default().max_columns,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_columns: u64,
    /// Datasets: bytes of one spreadsheet cell.
    #[arg(long, env = "BRCTI_MAX_CELL_BYTES", default_value_t = DatasetLimits::default().max_cell_bytes,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_cell_bytes: u64,
    /// XLSX: inflated bytes of the shared strings (held in memory while a workbook is read).
    #[arg(long, env = "BRCTI_XLSX_MAX_SHARED_STRINGS_BYTES",
          default_value_t = DatasetLimits::default().xlsx_max_shared_strings_bytes)]
    pub xlsx_max_shared_strings_bytes: u64,
    /// XLSX: inflated bytes of the worksheets and shared strings together.
    #[arg(long, env = "BRCTI_XLSX_MAX_INFLATED_BYTES",
          default_value_t = DatasetLimits::default().xlsx_max_inflated_bytes)]
    pub xlsx_max_inflated_bytes: u64,
    /// XLS: bytes of the workbook stream (the format is read whole, into memory).
    #[arg(long, env = "BRCTI_XLS_MAX_BYTES", default_value_t = DatasetLimits::default().xls_max_bytes)]
    pub xls_max_bytes: u64,
    /// XLS: cells of a worksheet's area, rows × columns (the format is laid out whole).
    #[arg(long, env = "BRCTI_XLS_MAX_CELLS", default_value_t = DatasetLimits::default().xls_max_cells)]
    pub xls_max_cells: u64,
}

impl ServeArgs {
    pub fn into_config(self) -> ServeConfig {
        let args = self;
        ServeConfig {
            listen: args.listen,
            data_dir: args.data_dir,
            database_url: args.database_url.filter(|u| !u.is_empty()),
            blob_store: args.blob_store.filter(|u| !u.is_empty()),
            blob_store_options: args.blob_store_options,
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
            tlp: args.tlp,
            hidden_danger_tlp: args.hidden_danger_tlp,
            indicators: args.indicator_confidence.iter().fold(
                IndicatorPolicy::default()
                    .with_valid_days(args.indicator_valid_days)
                    .expect("the flag's parser bounds the days"),
                |policy, TypeConfidence(ty, c)| policy.with_confidence(*ty, *c),
            ),
            taxii_max_content_length: args.taxii_max_content_length,
            time_zone: args.time_zone,
            default_points: args.default_points,
            job_max_attempts: args.job_max_attempts,
            job_lease: std::time::Duration::from_secs(args.job_lease_secs),
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
        }
    }

    /// Parses `serve`'s flags alone (for tests that run a node in-process).
    pub fn parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        #[derive(clap::Parser)]
        struct Serve {
            #[command(flatten)]
            args: ServeArgs,
        }
        <Serve as clap::Parser>::try_parse_from(args).map(|s| s.args)
    }
}

/// A TLP level by its word (any case).
pub fn parse_tlp(s: &str) -> Result<Tlp, String> {
    Tlp::from_word_ignoring_case(s.trim())
        .ok_or_else(|| format!("{s:?} is not a TLP level ({})", Tlp::words()))
}

fn parse_points(s: &str) -> Result<f64, String> {
    s.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v >= 0.0)
        .ok_or_else(|| format!("{s:?} is not a number of points (0 or more)"))
}
