//! The composition root: the one place that names the concrete backends (SQLite or PostgreSQL
//! for the records, see `backend.rs`; a local directory for the files) and wires the
//! application and the HTTP layer onto them.

use std::io::Write;
use std::sync::Arc;

use br_cti_app::config::{ServeConfig, prepare_data_dir};
use br_cti_app::jobs::{JobSettings, Jobs};
use br_cti_app::taxii::{PageBodies, Publisher, ReadAhead};
use br_cti_engine::convert::{DEFAULT_MAPPING, Mapping};
use br_cti_engine::cti::geo::GeoIp;
use br_cti_http::{AppState, Parts};
use br_cti_store::{BlobStore, RecordStore};

use crate::backend::{RecordBackend, open_blobs};

/// Opens the records (`<data-dir>/br-cti.sqlite`, or `--database-url`) and the blob store in the
/// data directory, starts
/// the scheduler and the publisher, and builds the state the HTTP layer serves.
pub fn open(config: ServeConfig) -> anyhow::Result<AppState> {
    prepare_data_dir(&config.data_dir)?;
    let default_mapping = match &config.mapping {
        None => DEFAULT_MAPPING.to_string(),
        Some(path) => Mapping::read_file(path)?.0,
    };
    let records = RecordBackend::open(&config.data_dir, config.database_url.as_deref())?;
    tracing::info!(records = records.describe(), "record store");
    let meta: Arc<dyn RecordStore> = records.connect()?;
    let blobs: Arc<dyn BlobStore> = open_blobs(
        &config.data_dir,
        config.blob_store.as_deref(),
        &config.blob_store_options,
    )?;
    tracing::info!(
        blobs = config.blob_store.as_deref().unwrap_or("the data directory"),
        "blob store"
    );
    let geo = match &config.geoip_db {
        None => GeoIp::none(),
        Some(path) => GeoIp::open(path)?,
    };
    tracing::info!(geoip = geo.description(), "IP geolocation");
    let jobs = Jobs::start(
        meta.clone(),
        blobs.clone(),
        Arc::new(geo),
        JobSettings {
            max_attempts: config.job_max_attempts,
            dataset_limits: config.dataset_limits,
            lease: config.job_lease,
            node_id: JobSettings::node_name(),
            sole_owner: matches!(records, RecordBackend::Sqlite(_)),
        },
    )?;
    // TAXII pages and the publisher have connections of their own (they never wait behind
    // ingest or jobs).
    let taxii_db = records.connect()?;
    // On an object store, a client paging in order finds the next pages read ahead (by
    // threads with a connection of their own).
    let taxii_bodies = if blobs.is_remote() {
        PageBodies::reading_ahead(blobs.clone(), records.connect()?, ReadAhead::OBJECT_STORE)?
    } else {
        PageBodies::direct(blobs.clone())
    };
    let publisher_db = records.connect_publisher()?;
    let publisher = Arc::new(Publisher::start(
        publisher_db,
        blobs.clone(),
        config.hidden_danger_tlp,
        config.indicators.clone(),
    ));
    Ok(AppState::new(Parts {
        config,
        blobs,
        meta,
        taxii_db,
        taxii_bodies,
        jobs,
        publisher,
        default_mapping,
    }))
}

/// Binds, prints `br-cti listening on http://ADDR` on standard output (tests read it to find a
/// random port), and serves until Ctrl-C or SIGTERM.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    config.check_exposure()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    // Opening the stores blocks (the PostgreSQL and S3 clients run their own I/O): not on a
    // thread that drives async tasks.
    let state = tokio::task::spawn_blocking(move || open(config)).await??;
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
    br_cti_http::serve(listener, state, shutdown_signal()).await;
    Ok(())
}
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

/// A node serving in this process, on a runtime of its own (API tests start one per test, on
/// a random port). Dropping it stops it: the server, the job worker and the publisher.
pub struct InProcess {
    addr: std::net::SocketAddr,
    jobs: Jobs,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl InProcess {
    /// Opens the node (as `serve` does, without the exposure check and the signals) and serves
    /// it on `config.listen` (port 0: any free port).
    pub fn start(config: ServeConfig) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let listener = runtime.block_on(tokio::net::TcpListener::bind(config.listen))?;
        let addr = listener.local_addr()?;
        let state = open(config)?;
        let jobs = state.jobs.clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("br-cti-node".into())
            .spawn(move || {
                runtime.block_on(br_cti_http::serve(listener, state, async {
                    let _ = stopped.await;
                }));
            })?;
        Ok(Self {
            addr,
            jobs,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// The job scheduler (tests wait for it to be idle instead of polling progress).
    pub fn jobs(&self) -> &Jobs {
        &self.jobs
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
