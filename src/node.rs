//! The composition root: the one place that names the concrete backends (SQLite and a local
//! directory) and wires the application and the HTTP layer onto them.

use std::io::Write;
use std::sync::Arc;

use br_cti_app::config::{ServeConfig, prepare_data_dir};
use br_cti_app::jobs::Jobs;
use br_cti_app::taxii::Publisher;
use br_cti_engine::convert::{DEFAULT_MAPPING, Mapping};
use br_cti_engine::cti::geo::GeoIp;
use br_cti_http::{AppState, Parts};
use br_cti_store::{BlobStore, MetaStore};
use br_cti_store_local::{FsBlobStore, SqliteStore};

/// Opens the data directory (`<data-dir>/br-cti.sqlite` and the blob store beside it), starts
/// the scheduler and the publisher, and builds the state the HTTP layer serves.
pub(crate) fn open(config: ServeConfig) -> anyhow::Result<AppState> {
    prepare_data_dir(&config.data_dir)?;
    let default_mapping = match &config.mapping {
        None => DEFAULT_MAPPING.to_string(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read mapping {}: {e}", path.display()))?;
            Mapping::parse(&text)
                .map_err(|e| anyhow::anyhow!("mapping {}: {e}", path.display()))?;
            text
        }
    };
    let db_path = config.data_dir.join("br-cti.sqlite");
    let meta: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&db_path)?);
    let blobs: Arc<dyn BlobStore> = Arc::new(FsBlobStore::open(&config.data_dir)?);
    let geo = match &config.geoip_db {
        None => GeoIp::none(),
        Some(path) => GeoIp::open(path)?,
    };
    tracing::info!(geoip = geo.description(), "IP geolocation");
    let jobs = Jobs::start(
        meta.clone(),
        blobs.clone(),
        Arc::new(geo),
        config.job_max_attempts,
        config.dataset_limits,
    )?;
    // TAXII pages and the publisher have connections of their own (they never wait behind
    // ingest or jobs).
    let taxii_db: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&db_path)?);
    let publisher_db: Arc<dyn MetaStore> = Arc::new(SqliteStore::open(&db_path)?);
    let publisher = Arc::new(Publisher::start(publisher_db, blobs.clone()));
    Ok(AppState::new(Parts {
        config,
        blobs,
        meta,
        taxii_db,
        jobs,
        publisher,
        default_mapping,
    }))
}

/// Binds, prints `br-cti listening on http://ADDR` on standard output (tests read it to find a
/// random port), and serves until Ctrl-C or SIGTERM.
pub(crate) async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.check_exposure().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let state = open(config)?;
    let addr = listener.local_addr()?;
    // Printed once, on standard output; the log line beside it says what was opened, not the
    // address again.
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %state.config.data_dir.display(),
        time_zone = state.config.time_zone.name(),
        "node ready"
    );
    let mut stdout = std::io::stdout();
    writeln!(stdout, "br-cti listening on http://{addr}")?;
    stdout.flush()?;
    br_cti_http::serve(listener, state).await;
    Ok(())
}
