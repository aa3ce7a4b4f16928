//! Node configuration, shared by the CLI (`main.rs`) and the tests.

use br_cti_domain::ioc::IndicatorPolicy;
use br_cti_domain::vocab::Tlp;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use br_cti_domain::error::Invalid;

use br_cti_domain::time::DisplayZone;

/// Default cap on one uploaded file: 1 GiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 1 << 30;

/// Which origins may call the API from a browser.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin (the old server's behaviour; safe on loopback, and the API is not
    /// cookie-authenticated).
    Any,
    /// No CORS headers at all.
    None,
    /// Only these origins (e.g. `http://localhost:3000`).
    List(Vec<String>),
}

impl CorsOrigins {
    /// Parses `*`, `none`, or a comma-separated list of origins.
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let s = s.trim();
        match s {
            "*" => Ok(Self::Any),
            "" | "none" => Ok(Self::None),
            _ => {
                let list: Vec<String> = s
                    .split(',')
                    .map(|o| o.trim().trim_end_matches('/').to_string())
                    .filter(|o| !o.is_empty())
                    .collect();
                for o in &list {
                    if !(o.starts_with("http://") || o.starts_with("https://")) {
                        return Err(Invalid(format!(
                            "CORS origin {o:?} must start with http:// or https:// (or use '*' or 'none')"
                        )));
                    }
                }
                Ok(Self::List(list))
            }
        }
    }
}

/// Creates the data directory when it does not exist yet, and says so on standard error (a
/// mistyped `--data-dir` is then noticed rather than silently starting an empty node).
pub fn prepare_data_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("cannot create data directory {}: {e}", dir.display()))?;
    let shown = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    // Not eprintln!: a standard error that cannot be written must not stop the node.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "br-cti: created a new, empty data directory {}",
        shown.display()
    );
    Ok(())
}

#[derive(Clone, Debug)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// A PostgreSQL database for the records (`--database-url`), shared by several nodes;
    /// `None`: the embedded SQLite database in the data directory.
    pub database_url: Option<String>,
    /// An S3-compatible bucket for uploads and STIX files (`--blob-store s3://bucket/prefix`);
    /// `None`: the data directory.
    pub blob_store: Option<String>,
    /// Settings of the bucket's client (`KEY=VALUE`, over the AWS_* environment).
    pub blob_store_options: Vec<String>,
    pub api_token: Option<String>,
    pub insecure: bool,
    pub max_upload_bytes: u64,
    pub cors: CorsOrigins,
    /// The server's default mapping table (`--mapping`); `None`: the embedded one.
    pub mapping: Option<PathBuf>,
    /// A MaxMind-format database for IP locations (`--geoip-db`); `None`: locations unknown.
    pub geoip_db: Option<PathBuf>,
    /// Limits of the hidden-danger report interface.
    pub hidden_danger: HiddenDangerLimits,
    /// TAXII: let clients without credentials read the node's read collections (objects
    /// marked TLP:CLEAR only).
    pub taxii_anonymous: bool,
    /// The TLP marking of a conversion's objects when its request names none.
    pub tlp: Tlp,
    /// The TLP marking of the hidden dangers' STIX (they name vulnerable organisations).
    pub hidden_danger_tlp: Tlp,
    /// How long indicators stay valid after their last sighting, and how sure each dataset
    /// type makes the node (the versions the TAXII publisher writes).
    pub indicators: IndicatorPolicy,
    /// Largest TAXII `POST objects/` body, bytes (the API root's `max_content_length`).
    pub taxii_max_content_length: u64,
    /// The zone of the record times the front ends display (`create_time`).
    pub time_zone: DisplayZone,
    /// The `value` of a CTI record when a request gives none (and the answer of
    /// `/data/get_default_points`).
    pub default_points: f64,
    /// Runs of a job before it is failed for good when the node keeps stopping during it.
    pub job_max_attempts: u32,
    /// How long a node's claim on a job lasts unless renewed.
    pub job_lease: Duration,
    /// Client connections: how many at once, header and idle timeouts.
    pub connections: ConnLimits,
    /// What an uploaded dataset may hold.
    pub dataset_limits: br_cti_engine::dataset::DatasetLimits,
    /// Bytes of request bodies held in memory at once, all requests together.
    pub max_body_memory_bytes: u64,
}

/// The bounds of client connections.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Default bytes of request bodies held in memory at once, all requests together.
pub const DEFAULT_MAX_BODY_MEMORY_BYTES: u64 = 256 << 20;

/// Default largest TAXII `POST objects/` body: 32 MiB.
pub const DEFAULT_TAXII_MAX_CONTENT_LENGTH: u64 = 32 << 20;

/// Shortest API token accepted on a non-loopback address.
pub(crate) const MIN_EXPOSED_TOKEN_CHARS: usize = 16;

/// Default runs of a job that the node keeps stopping during (a crash loop ends there).
pub const DEFAULT_JOB_MAX_ATTEMPTS: u32 = 3;

/// Default seconds of a node's claim on a job (renewed every few seconds while it runs).
pub const DEFAULT_JOB_LEASE_SECS: u64 = 30;

/// Limits of `addHiddenDanger`; over a limit the request is refused whole and nothing is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenDangerLimits {
    /// Largest request body, bytes.
    pub max_body_bytes: u64,
    /// Most items in one `dataValues`.
    pub max_items: usize,
    /// Largest item (its JSON text), bytes.
    pub max_item_bytes: usize,
    /// Requests per second per user, on average (0: no limit).
    pub rate_per_sec: f64,
    /// Requests a user may send at once before the rate applies.
    pub burst: f64,
    /// Accepted clock difference of `timestamp`, seconds.
    pub window_secs: u64,
}

impl Default for HiddenDangerLimits {
    fn default() -> Self {
        HiddenDangerLimits {
            max_body_bytes: 16 << 20,
            max_items: 1000,
            max_item_bytes: 256 << 10,
            rate_per_sec: 20.0,
            burst: 40.0,
            window_secs: 300,
        }
    }
}

impl ServeConfig {
    /// Refuses configurations that would expose an unauthenticated node to the network.
    pub fn check_exposure(&self) -> Result<(), Invalid> {
        self.exposure().map_err(Invalid)
    }

    fn exposure(&self) -> Result<(), String> {
        if let Some(token) = &self.api_token {
            if token.trim().is_empty() {
                return Err(
                    "the API token (--api-token or BRCTI_API_TOKEN) is blank: give a real one, \
                     or none at all on a loopback address"
                        .into(),
                );
            }
            if token.trim() != token {
                return Err(
                    "the API token (--api-token or BRCTI_API_TOKEN) starts or ends with white \
                     space, which clients cannot send in a header: remove it"
                        .into(),
                );
            }
            let chars = token.chars().count();
            if !self.listen.ip().is_loopback() && chars < MIN_EXPOSED_TOKEN_CHARS {
                return Err(format!(
                    "the API token has {chars} characters; a node listening on {} (not a \
                     loopback address) needs at least {MIN_EXPOSED_TOKEN_CHARS} (for example \
                     `openssl rand -hex 32`)",
                    self.listen
                ));
            }
            return Ok(());
        }
        if self.listen.ip().is_loopback() || self.insecure {
            return Ok(());
        }
        Err(format!(
            "refusing to listen on {} without authentication: it is not a loopback address. \
             Set an API token (--api-token or BRCTI_API_TOKEN) or pass --insecure",
            self.listen
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, token: Option<&str>, insecure: bool) -> ServeConfig {
        ServeConfig {
            listen: listen.parse().unwrap(),
            data_dir: PathBuf::from("x"),
            database_url: None,
            blob_store: None,
            blob_store_options: Vec::new(),
            api_token: token.map(str::to_string),
            insecure,
            max_upload_bytes: DEFAULT_MAX_UPLOAD_BYTES,
            cors: CorsOrigins::Any,
            mapping: None,
            geoip_db: None,
            hidden_danger: HiddenDangerLimits::default(),
            taxii_anonymous: false,
            tlp: Tlp::Green,
            hidden_danger_tlp: Tlp::Amber,
            indicators: IndicatorPolicy::default(),
            taxii_max_content_length: DEFAULT_TAXII_MAX_CONTENT_LENGTH,
            time_zone: DisplayZone::utc(),
            default_points: 0.0,
            job_max_attempts: DEFAULT_JOB_MAX_ATTEMPTS,
            job_lease: Duration::from_secs(DEFAULT_JOB_LEASE_SECS),
            connections: ConnLimits::default(),
            dataset_limits: Default::default(),
            max_body_memory_bytes: DEFAULT_MAX_BODY_MEMORY_BYTES,
        }
    }

    #[test]
    fn exposure_rules() {
        assert!(cfg("127.0.0.1:5000", None, false).check_exposure().is_ok());
        assert!(cfg("[::1]:5000", None, false).check_exposure().is_ok());
        let err = cfg("0.0.0.0:5000", None, false)
            .check_exposure()
            .unwrap_err();
        assert!(err.0.contains("--api-token"), "{err}");
        let long = "0123456789abcdef";
        assert!(
            cfg("0.0.0.0:5000", Some(long), false)
                .check_exposure()
                .is_ok()
        );
        // Blank, padded and short tokens are refused; short ones only off loopback.
        for (listen, token, needle) in [
            ("0.0.0.0:5000", " ", "blank"),
            ("127.0.0.1:5000", "", "blank"),
            ("0.0.0.0:5000", "  0123456789abcdef  ", "white space"),
            ("127.0.0.1:5000", "tok ", "white space"),
            ("0.0.0.0:5000", "t", "at least 16"),
        ] {
            let err = cfg(listen, Some(token), false)
                .check_exposure()
                .unwrap_err();
            assert!(err.0.contains(needle), "{token:?}: {err}");
        }
        assert!(
            cfg("127.0.0.1:5000", Some("t"), false)
                .check_exposure()
                .is_ok()
        );
        assert!(cfg("0.0.0.0:5000", None, true).check_exposure().is_ok());
    }

    #[test]
    fn cors_parsing() {
        assert_eq!(CorsOrigins::parse("*").unwrap(), CorsOrigins::Any);
        assert_eq!(CorsOrigins::parse("none").unwrap(), CorsOrigins::None);
        assert_eq!(
            CorsOrigins::parse("http://a:3000/, https://b").unwrap(),
            CorsOrigins::List(vec!["http://a:3000".into(), "https://b".into()])
        );
        assert!(CorsOrigins::parse("a.example").is_err());
    }
}
