//! A PostgreSQL server for tests, and fresh empty stores on it.
//!
//! The server is `BRCTI_TEST_DATABASE_URL` when that is set; otherwise one private server per
//! test process, started from the machine's PostgreSQL binaries (`initdb`, `postgres`: Debian's
//! `postgresql` package, found under `/usr/lib/postgresql/*/bin`, in `BRCTI_PG_BIN`, or on
//! `PATH`) in a temporary directory, on a free loopback port, with `fsync` off. As root it runs
//! as the `postgres` user (`initdb` refuses root). A shell beside it waits on a pipe from the
//! test process: when the process ends, however it ends, the server is stopped and its
//! directory removed. A test that needs PostgreSQL and cannot start it fails, saying what is
//! missing; it never skips.

use std::io::Write;
use std::ops::Deref;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::{PgOptions, PgStore};
use br_cti_store::StoreError;

/// A running server: a connection URL (to the `postgres` database) and, when this process
/// started it, what keeps it alive.
pub struct Server {
    pub url: String,
    _guard: Option<Mutex<Child>>,
}

/// The test server of this process (started on first use).
pub fn server() -> &'static Server {
    static SERVER: OnceLock<Server> = OnceLock::new();
    SERVER.get_or_init(|| {
        if let Ok(url) = std::env::var("BRCTI_TEST_DATABASE_URL") {
            return Server { url, _guard: None };
        }
        match start() {
            Ok(server) => server,
            Err(e) => panic!("PostgreSQL is needed for this test and could not be started: {e}"),
        }
    })
}

/// The directory of PostgreSQL's server binaries.
fn bin_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("BRCTI_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").exists().then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .find(|d| d.join("initdb").exists() && d.join("postgres").exists())
        .ok_or_else(|| {
            "no PostgreSQL server binaries (initdb, postgres) under /usr/lib/postgresql/*/bin, \
             in BRCTI_PG_BIN or on PATH: install Debian's `postgresql` package \
             (`apt-get install postgresql`), or set BRCTI_TEST_DATABASE_URL to a server"
                .to_string()
        })
}

fn start() -> Result<Server, String> {
    let bin = bin_dir()?;
    let as_root = std::fs::metadata("/proc/self")
        .map_err(|e| e.to_string())?
        .uid()
        == 0;
    let dir = tempfile::Builder::new()
        .prefix("br-cti-pg-")
        .tempdir()
        .map_err(|e| format!("creating a directory for the server: {e}"))?
        .keep();
    let data = dir.join("data");
    // As root, PostgreSQL runs as `postgres`, which must own its directory.
    let run = |program: &Path| -> Command {
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    };
    if as_root {
        let status = Command::new("chown")
            .args(["postgres:postgres"])
            .arg(&dir)
            .status()
            .map_err(|e| format!("chown: {e}"))?;
        if !status.success() {
            return Err(
                "chown of the server directory to `postgres` failed (is there a \
                 `postgres` user? it comes with Debian's `postgresql` package)"
                    .into(),
            );
        }
    }
    let init = run(&bin.join("initdb"))
        .arg("-D")
        .arg(&data)
        .args([
            "-A",
            "trust",
            "-U",
            "brcti",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
            "--no-instructions",
        ])
        .output()
        .map_err(|e| format!("running {}: {e}", bin.join("initdb").display()))?;
    if !init.status.success() {
        return Err(format!(
            "initdb failed: {}",
            String::from_utf8_lossy(&init.stderr)
        ));
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let postgres = bin.join("postgres");
    let mut command = run(&postgres);
    command.arg("-D").arg(&data).arg("-p").arg(port.to_string());
    command.arg("-k").arg(&dir);
    for setting in [
        "listen_addresses=127.0.0.1",
        "fsync=off",
        "synchronous_commit=off",
        "full_page_writes=off",
        "max_connections=300",
    ] {
        command.args(["-c", setting]);
    }
    let program = format!("{:?}", command.get_program());
    let args: Vec<String> = command
        .get_args()
        .map(|a| shell_quote(&a.to_string_lossy()))
        .collect();
    let dir_q = shell_quote(&dir.to_string_lossy());
    // The watcher: starts the server, waits for the test process's pipe to close, stops the
    // server (fast shutdown) and removes its directory.
    let script = format!(
        "{program} {args} >{dir_q}/log 2>&1 &
         server=$!
         cat >/dev/null
         pid=$(head -n1 {dir_q}/data/postmaster.pid 2>/dev/null)
         [ -n \"$pid\" ] && kill -INT \"$pid\" 2>/dev/null
         while kill -0 \"$server\" 2>/dev/null; do sleep 0.1; done
         rm -rf {dir_q}",
        args = args.join(" ")
    );
    let mut child = Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting the server: {e}"))?;
    let url = format!("postgres://brcti@127.0.0.1:{port}/postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match postgres::Client::connect(&url, postgres::NoTls) {
            Ok(_) => break,
            Err(e) => {
                let log = std::fs::read_to_string(dir.join("log")).unwrap_or_default();
                if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
                    let _ = child.stdin.take().map(|mut s| s.flush());
                    return Err(format!(
                        "the server did not accept connections on port {port}: {e}\n{log}"
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    Ok(Server {
        url,
        _guard: Some(Mutex::new(child)),
    })
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A store on a schema of its own (new and empty), on the test server.
pub struct FreshSchema {
    store: PgStore,
    schema: String,
}

impl Deref for FreshSchema {
    type Target = PgStore;
    fn deref(&self) -> &PgStore {
        &self.store
    }
}

impl FreshSchema {
    /// Another store on the same schema (another node, or a restart).
    pub fn reopen(&self) -> PgStore {
        self.try_reopen().expect("reopening the schema")
    }

    pub fn try_reopen(&self) -> Result<PgStore, StoreError> {
        open_schema(&self.schema)
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// A connection URL that selects this schema (for a node started as a process).
    pub fn url(&self) -> String {
        schema_url(&self.schema)
    }
}

/// The test server's URL with `search_path` set to `schema`.
pub fn schema_url(schema: &str) -> String {
    let base = &server().url;
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-csearch_path%3D{schema}")
}

fn open_schema(schema: &str) -> Result<PgStore, StoreError> {
    PgStore::open_with(
        &server().url,
        &PgOptions {
            pool_size: 4,
            schema: Some(schema.to_string()),
            ..PgOptions::default()
        },
    )
}

/// A new, empty schema on the test server (named after this process and a counter).
pub fn new_schema() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let schema = format!(
        "t{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let mut admin = postgres::Client::connect(&server().url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test server {}: {e}", server().url));
    admin
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
    schema
}

/// A schema of the test server named by the caller, created when it does not exist yet (a
/// node restarted on the same data directory finds its records again).
pub fn ensure_schema(schema: &str) {
    let mut admin = postgres::Client::connect(&server().url, postgres::NoTls)
        .unwrap_or_else(|e| panic!("connecting to the test server {}: {e}", server().url));
    admin
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
        .unwrap_or_else(|e| panic!("creating schema {schema}: {e}"));
}

/// A store on a new, empty schema.
pub fn fresh_schema() -> FreshSchema {
    let schema = new_schema();
    let store = open_schema(&schema).unwrap_or_else(|e| panic!("opening schema {schema}: {e}"));
    FreshSchema { store, schema }
}
